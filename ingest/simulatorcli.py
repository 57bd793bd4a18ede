"""`siaga simulate`: scenario playback or load mode, from the command line."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.registry import Device, load_catalog
from devices.timestamps import NS_PER_S, parse_ts
from ingest.settings import MqttSettings, Settings
from rules.durations import parse_duration
from simulators.connection import BrokerAddress
from simulators.errors import SimulatorError
from simulators.fleet import FleetConfig
from simulators.load import LoadConfig, LoadRun, synthetic_devices, write_catalog
from simulators.runner import ProgressPrinter, playback
from simulators.scenario import list_scenarios, load_scenario
from simulators.summary import Summary

DEFAULT_SCENARIO = "normal-day"
DEFAULT_LOAD_RATE = 1000.0  # readings per second: a city of 60,000 devices reporting each minute

DESCRIPTION = """\
Publish simulated device readings over MQTT, in one of two modes.

Scenario playback (the default): a scenario's devices report as the scenario says,
each over its own MQTT connection (client id siaga-sim-DEVICE, last will `offline`
retained on its status topic). Readings carry simulated timestamps, so rules on event
time behave as in real time. Without --scenario: normal-day, live (--start now,
--speed 1), until Ctrl-C or the day ends.

Load mode (--devices N and/or --rate R): devices take turns at a fixed aggregate rate
over one shared connection, for benchmarks. The service must know the devices: write
their catalog with --write-catalog FILE and point `catalog:` at it, or set
`ingest.unknown_devices: accept`. The summary gives the rate the broker acknowledged.
"""

EPILOG = """\
examples:
  siaga simulate --list
  siaga simulate --scenario flood-2020-01-01 --speed 3600
  siaga simulate --scenario flood-2020-01-01 --start now-26h --until 26h --speed max
  siaga simulate --scenario chaos --speed max --shared
  siaga simulate --devices 5000 --write-catalog load.yaml
  siaga simulate --devices 5000 --rate 20000 --duration 60 [--batch 100]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `siaga simulate` (the caller adds -c)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    play = parser.add_argument_group("scenario playback")
    play.add_argument("--scenario", metavar="NAME|FILE",
                      help=f"a bundled scenario (see --list) or a scenario file "
                           f"(default: {DEFAULT_SCENARIO}, live)")
    play.add_argument("--list", action="store_true", help="list the bundled scenarios and exit")
    play.add_argument("--speed", type=_speed, default=1.0, metavar="X",
                      help="simulated seconds per second: 60 plays an hour a minute; max (or "
                           "0) as fast as possible (default: 1, real time)")
    play.add_argument("--start", type=_start, metavar="T",
                      help="move the scenario to begin at T: RFC 3339 (2024-01-31T08:00:00+07:00)"
                           ", now, or now-DURATION (now-26h) (default: the scenario's own start;"
                           " now without --scenario)")
    play.add_argument("--until", type=_until, metavar="T",
                      help="stop at simulated time T: RFC 3339, or a duration from the start "
                           "(6h) (default: the scenario's end)")
    play.add_argument("--shared", action="store_true",
                      help="all devices over one MQTT connection (default: one each)")
    load = parser.add_argument_group("load mode")
    load.add_argument("--devices", type=_positive_int, metavar="N",
                      help="N synthetic devices load-000001...: kinds in turn (default with "
                           "--rate alone: the catalog's devices)")
    load.add_argument("--rate", type=_rate, metavar="R",
                      help=f"readings per second, all devices together, or max "
                           f"(default: {DEFAULT_LOAD_RATE:g})")
    load.add_argument("--batch", type=_positive_int, default=1, metavar="B",
                      help="readings per message, a store-and-forward JSON array (default: 1)")
    load.add_argument("--write-catalog", type=Path, metavar="FILE",
                      help="write a catalog of the configured devices and the --devices N "
                           "synthetic ones, for the service's `catalog:`, and exit")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="stop after S wall-clock seconds (default: playback ends with the "
                             "scenario or --until; load runs until Ctrl-C)")


def run(args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    """`siaga simulate`; `settings` loads the configuration only when a mode needs it."""
    problem = _conflict(args)
    if problem:
        print(f"siaga simulate: {problem}", file=sys.stderr)
        return 2
    if args.list:
        print(_scenario_list())
        return 0
    loaded = settings()
    if args.write_catalog is not None:
        _write_catalog(args, loaded)
        return 0
    progress = ProgressPrinter(sys.stderr)
    try:
        if args.devices is not None or args.rate is not None:
            summary = _play(_load_run(args, loaded, progress), progress)
        else:
            summary = _play(_fleet(args, loaded, progress), progress)
    except SimulatorError as exc:
        print(f"siaga simulate: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _conflict(args: argparse.Namespace) -> str | None:
    load = args.devices is not None or args.rate is not None
    if load and (args.scenario or args.start or args.until or args.shared):
        return "--devices/--rate (load mode) exclude --scenario, --start, --until and --shared"
    if args.write_catalog is not None and args.devices is None:
        return "--write-catalog needs --devices N"
    if args.batch != 1 and not load:
        return "--batch is for load mode (--devices N and/or --rate R)"
    if args.duration is not None and args.duration < 0:
        return "--duration must be >= 0"
    return None


def _write_catalog(args: argparse.Namespace, settings: Settings) -> None:
    """The configured catalog's devices and the synthetic ones: the rules still find theirs."""
    interval = None if args.rate in (None, math.inf) else args.devices / args.rate
    known = list(load_catalog(settings.catalog_path))
    write_catalog([*known, *synthetic_devices(args.devices, expected_interval_s=interval)],
                  args.write_catalog)
    print(f"{args.write_catalog}: {len(known)} devices of {settings.catalog_path.name} and "
          f"{args.devices} synthetic ones; point the service's `catalog:` at it")


def _address(mqtt: MqttSettings) -> BrokerAddress:
    password = mqtt.password.get_secret_value() if mqtt.password else None
    ca_file = str(mqtt.ca_file) if mqtt.ca_file else None
    return BrokerAddress(mqtt.host, mqtt.port, mqtt.username, password, mqtt.tls, ca_file)


def _fleet(args: argparse.Namespace, settings: Settings,
           progress: ProgressPrinter) -> Callable[[asyncio.Event], Awaitable[Summary]]:
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
    start = args.start
    if args.scenario is None and start is None:
        start = datetime.now(UTC)  # the default: live devices, now
    config = FleetConfig(_address(settings.mqtt), settings.mqtt.topic_prefix, speed=args.speed,
                         shared=args.shared, qos=settings.mqtt.qos, duration_s=args.duration,
                         progress_every_s=progress.every_s, on_progress=progress)
    fleet = playback(load_catalog(settings.catalog_path), scenario, config, seed=args.seed,
                     start=start, until=args.until)
    return fleet.run


def _load_run(args: argparse.Namespace, settings: Settings,
              progress: ProgressPrinter) -> Callable[[asyncio.Event], Awaitable[Summary]]:
    devices: list[Device] = (list(load_catalog(settings.catalog_path)) if args.devices is None
                             else synthetic_devices(args.devices))
    rate = DEFAULT_LOAD_RATE if args.rate is None else args.rate
    config = LoadConfig(_address(settings.mqtt), settings.mqtt.topic_prefix,
                        rate=None if rate == math.inf else rate, batch=args.batch,
                        duration_s=args.duration, seed=args.seed, qos=settings.mqtt.qos,
                        progress_every_s=progress.every_s, on_progress=progress)
    return LoadRun(devices, config).run


def _play(run: Callable[[asyncio.Event], Awaitable[Summary]],
          progress: ProgressPrinter) -> Summary:
    from ingest.app import stop_on_signals

    async def until_signalled() -> Summary:
        async with stop_on_signals() as stop:
            return await run(stop)

    try:
        return asyncio.run(until_signalled())
    finally:
        progress.finish()


def _scenario_list() -> str:
    lines = []
    for scenario in list_scenarios():
        hours = scenario.duration.total_seconds() / 3600
        lines.append(f"{scenario.name}  (from {scenario.start.isoformat()}, {hours:g} h)")
        lines.extend(textwrap.wrap(scenario.description, 88, initial_indent="    ",
                                   subsequent_indent="    "))
    return "\n".join(lines)


# --- argument types: each raises ArgumentTypeError, which argparse shows with the option ---


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    value = _number(text, "a speed-up factor such as 60, or max")
    if value == 0:
        return None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0, or max (or 0) for as fast as possible")
    return value


def _rate(text: str) -> float:
    """Readings per second; infinity for max."""
    if text.strip().lower() == "max":
        return math.inf
    value = _number(text, "readings per second such as 5000, or max")
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0, or max")
    return value


def _number(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _instant(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(parse_ts(text) / NS_PER_S, UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("ts: ")) from None


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _start(text: str) -> datetime:
    cleaned = text.strip().lower()
    if cleaned == "now":
        return datetime.now(UTC)
    if cleaned.startswith("now-"):
        return datetime.now(UTC) - _duration(cleaned.removeprefix("now-"))
    return _instant(text)


def _until(text: str) -> datetime | timedelta:
    if text.strip()[:1].isdigit() and "-" not in text:
        return _duration(text)
    return _instant(text)
