"""The options of `siaga simulate`, apart from the run itself.

`siaga run` builds the whole command line at start; the simulators (scenarios, roads,
rivers, the MQTT pool) are imported only when `siaga simulate` runs (`simulatorcli`).
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.timestamps import NS_PER_S, parse_ts
from rules.durations import parse_duration

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


def conflict(args: argparse.Namespace) -> str | None:
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
