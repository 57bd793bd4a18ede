"""The connections a fleet publishes over: one per device (with its own will), or one shared."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from devices.registry import Device
from devices.topics import TopicScheme
from siaga_core.mqttloop import BrokerAddress
from simulators.connection import OFFLINE, ONLINE, BrokerUnavailable, Connection

STRAY = "stray"  # the client id suffix of the connection for ids outside the fleet
STATUS_TIMEOUT_S = 10.0  # how long a status round may wait for the window to open


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How the fleet's devices reach the broker."""

    address: BrokerAddress
    shared: bool = False  # one connection for all; else one per device
    window: int = 1000  # unacknowledged messages per connection
    qos: int = 1
    client_prefix: str = "siaga-sim-"  # per device: prefix + device id; shared: + "shared"


class Pool:
    """The fleet's connections, opened together and closed together.

    Per device, each connection has the device's client id and last will, and says
    `online`/`offline` itself; messages for ids outside the fleet (an unknown-device
    fault) go over one more connection of their own. Shared, one connection says every
    device's `online` at the start and `offline` at the end.
    """

    def __init__(self, devices: Sequence[Device], config: PoolConfig,
                 topics: TopicScheme) -> None:
        self._devices = list(devices)
        self._config = config
        self._topics = topics
        self._by_device: dict[str, Connection] = {}
        self._fallback: Connection | None = None

    async def __aenter__(self) -> Pool:
        config = self._config
        if not config.shared:
            for device in self._devices:
                status = self._topics.status(device.kind, device.id)
                self._by_device[device.id] = self._connection(config.client_prefix + device.id,
                                                              status)
        suffix = "shared" if config.shared else STRAY
        self._fallback = self._connection(config.client_prefix + suffix, None)
        try:
            await self._open_all()
            if config.shared:
                await self._say_status(ONLINE)
            # Each device is known `online` (retained at the broker) before its first reading.
            async with asyncio.TaskGroup() as group:
                for connection in self.connections:
                    group.create_task(connection.drain(STATUS_TIMEOUT_S))
        except BaseException:
            await self._close_all()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._config.shared and exc_type is None:
            await self._say_status(OFFLINE)
        await self._close_all()

    async def _open_all(self) -> None:
        """Opens the connections concurrently: 25 CONNECT round trips take the time of one."""
        try:
            async with asyncio.TaskGroup() as group:
                for connection in self.connections:
                    group.create_task(connection.open())
        except BaseExceptionGroup as errors:
            # One unreachable broker fails every connection alike: one error says it.
            unavailable = errors.subgroup(BrokerUnavailable)
            if unavailable is None:
                raise
            first = unavailable.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def _close_all(self) -> None:
        """Closes every connection at once, each draining its own window first."""
        async with asyncio.TaskGroup() as group:
            for connection in self.connections:
                group.create_task(connection.close())

    def _connection(self, client_id: str, status_topic: str | None) -> Connection:
        config = self._config
        return Connection(config.address, client_id, window=config.window, qos=config.qos,
                          status_topic=status_topic)

    async def _say_status(self, status: bytes) -> None:
        """The shared connection's `online`/`offline` for every device, retained."""
        connection = self._fallback
        assert connection is not None
        for device in self._devices:
            if connection.room() <= 0 and not await connection.wait_for_room(STATUS_TIMEOUT_S):
                return  # the broker stopped acknowledging: the summary shows what was sent
            connection.publish_status(self._topics.status(device.kind, device.id), status)

    @property
    def connections(self) -> list[Connection]:
        shared = [] if self._fallback is None else [self._fallback]
        return [*self._by_device.values(), *shared]

    def for_device(self, device_id: str) -> Connection:
        """The connection `device_id` publishes over."""
        connection = self._by_device.get(device_id, self._fallback)
        assert connection is not None, "the pool is not open"
        return connection

    async def drop(self, device_id: str) -> None:
        """Cuts a device's own connection without DISCONNECT: the broker sends its will."""
        connection = self._by_device.get(device_id)
        if connection is None:
            raise KeyError(f"{device_id!r} has no connection of its own")
        await connection.abort()
