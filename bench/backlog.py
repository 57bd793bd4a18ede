"""A backlog of exactly N readings, published flat out by the simulators' load mode.

`siaga simulate --devices N --rate max` runs for a duration, not a count, so a backlog
sized by a guessed flat-out rate came out 30-100 % larger than planned, and different for
each system. This runs the same load mode (`simulators.load.LoadRun`, one shared
connection, QoS 1, the same devices, seed and payloads) with one change: the connection
offers no more room once the planned number of messages is handed over, and the run
stops there. It prints the load mode's summary line, with the broker's acknowledged
count, which the harness checks against the plan.

    python -m bench.backlog -c FILE --devices N --readings R [--batch B] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from devices.registry import Device
from devices.topics import TopicScheme
from siaga.settings import load_settings
from simulators.connection import Acks, Tag
from simulators.fleet import Outlet, Outlets
from simulators.load import LoadConfig, LoadRun, synthetic_devices
from simulators.pool import Pool, PoolConfig

TIMEOUT_S = 600.0  # a bound, never reached: the load mode does 25,000 readings/s here


class _Capped:
    """A connection that takes `messages` more messages, then no more, and sets `done`."""

    def __init__(self, outlet: Outlet, messages: int, done: asyncio.Event) -> None:
        self._outlet = outlet
        self._left = messages
        self._done = done

    def room(self) -> int:
        return min(self._outlet.room(), self._left)

    def publish(self, topic: str, payload: bytes, tag: Tag, readings: int,
                retain: bool = False) -> None:
        self._outlet.publish(topic, payload, tag, readings, retain)
        self._left -= 1
        if self._left == 0:
            self._done.set()  # the load run checks this before its next chunk

    async def wait_for_room(self, timeout_s: float) -> bool:
        if self._left == 0:
            return False
        return await self._outlet.wait_for_room(timeout_s)

    async def drain(self, timeout_s: float) -> bool:
        return await self._outlet.drain(timeout_s)

    def acks(self) -> Acks:
        return self._outlet.acks()


class _CappedPool:
    """The pool's connections, the publishing one capped (acks still come from all)."""

    def __init__(self, pool: Pool, messages: int, done: asyncio.Event) -> None:
        self._pool = pool
        self._messages = messages
        self._done = done
        self._capped: dict[int, _Capped] = {}

    def for_device(self, device_id: str) -> Outlet:
        outlet = self._pool.for_device(device_id)
        if id(outlet) not in self._capped:
            self._capped[id(outlet)] = _Capped(outlet, self._messages, self._done)
        return self._capped[id(outlet)]

    @property
    def connections(self) -> Sequence[Outlet]:
        return self._pool.connections


async def publish(config: LoadConfig, devices: Sequence[Device], messages: int) -> str:
    """Publish `messages` messages flat out; the load mode's summary as it prints it."""
    done = asyncio.Event()
    topics = TopicScheme(config.topic_prefix)
    pool_config = PoolConfig(config.address, shared=True, window=config.window,
                             qos=config.qos, client_prefix=config.client_id + "-")

    @contextlib.asynccontextmanager
    async def capped(devs: Sequence[Device]) -> AsyncIterator[Outlets]:
        # As LoadRun opens its pool by default (every device `online` first), capped.
        async with Pool(devs, pool_config, topics) as pool:
            yield _CappedPool(pool, messages, done)

    summary = await LoadRun(devices, config, open_outlets=capped).run(done)
    return str(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=Path, required=True,
                        help="a siaga config file (its mqtt: section)")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--readings", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.readings % args.batch:
        parser.error(f"--readings {args.readings} is not a whole number of batches of "
                     f"{args.batch}")
    mqtt = load_settings(args.config).mqtt
    config = LoadConfig(mqtt.address(), mqtt.topic_prefix, rate=None,
                        batch=args.batch, duration_s=TIMEOUT_S, seed=args.seed, qos=mqtt.qos)
    print(asyncio.run(publish(config, synthetic_devices(args.devices),
                              args.readings // args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
