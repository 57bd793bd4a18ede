"""The options of `siaga simulate`, apart from the run itself.

`siaga run` builds the whole command line at start; the simulators (scenarios, roads,
rivers, the MQTT pool) are imported only when `siaga simulate` runs (`simulatorcli`).
"""

from __future__ import annotations

import argparse
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.timestamps import NS_PER_S, parse_ts
from siaga_core.durations import parse_duration

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
  siaga simulate --cameras 5000 --rate 200 --write-catalog cameras.yaml
  siaga simulate reports --year 2020 --speedup 86400   (a city's year of citizens' reports)
"""

REPORTS_URL_ENV = "SIAGA_API_URL"  # as the other commands that talk to a running service
REPORTS_KEY_ENV = "SIAGA_REPORTS_API_KEY"
REPORTS_TOKEN_ENV = "SIAGA_API_TOKEN"
DEFAULT_REPORTS_URL = "http://127.0.0.1:8080"  # the service's default http.host and http.port
DEFAULT_REPORTS_CONCURRENCY = 16  # requests in flight: keeps a local service busy

REPORTS_DESCRIPTION = """\
Post a city's year of citizens' reports through Siaga's real Open311 API, with the
officers' updates through the operator API, in simulated-time order. At --scale 1 the
year holds Jakarta CRM's 2020: 137,776 reports, 137,574 of them resolved, the published
top five categories exactly; `siaga reports stats --year 2020` counts them back.

The API key needs a rate limit that lets a year through:
`siaga reports keys add replay --rate-limit 100000`.
Progress goes to stderr; what was sent, by category, to stdout.
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
    load.add_argument("--cameras", type=_positive_int, metavar="N",
                      help="and N synthetic cameras load-cam-000001...: counts every 10 s, "
                           "detections at about 24 an hour each, beside the devices")
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
    modes = parser.add_subparsers(title="other simulations", metavar="{reports}",
                                  required=False)
    add_reports_arguments(modes.add_parser(
        "reports", help="a year of citizens' reports through the Open311 API",
        description=REPORTS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter))


def add_reports_arguments(parser: argparse.ArgumentParser) -> None:
    """`siaga simulate reports`: its own command, so its options never mix with playback's."""
    parser.set_defaults(command=_simulate_reports)
    parser.add_argument("--year", type=_year, required=True, help="the year to simulate")
    parser.add_argument("--speedup", type=_speedup, default=0.0, metavar="N",
                        help="simulated seconds per second: 86400 plays a day a second "
                             "(default: 0, as fast as the service takes them)")
    parser.add_argument("--live", action="store_true",
                        help="send no report or update times: the service stamps them on "
                             "arrival (a live city, as in the demo) rather than a replay")
    parser.add_argument("--scale", type=_scale, default=1.0, metavar="F",
                        help="reports as a share of the year's published count (default: 1)")
    parser.add_argument("--seed", type=int, default=2020, help="random seed (default: 2020)")
    parser.add_argument("--url", default=os.environ.get(REPORTS_URL_ENV, DEFAULT_REPORTS_URL),
                        help=f"the service's base URL (default: ${REPORTS_URL_ENV}, else "
                             f"{DEFAULT_REPORTS_URL})")
    parser.add_argument("--api-key", default=os.environ.get(REPORTS_KEY_ENV),
                        help=f"the Open311 API key (default: ${REPORTS_KEY_ENV})")
    parser.add_argument("--token", default=os.environ.get(REPORTS_TOKEN_ENV),
                        help=f"the operator API's bearer token, for the officers' updates "
                             f"(default: ${REPORTS_TOKEN_ENV})")
    parser.add_argument("--concurrency", type=_positive_int, default=DEFAULT_REPORTS_CONCURRENCY,
                        metavar="N",
                        help=f"requests in flight (default: {DEFAULT_REPORTS_CONCURRENCY})")


def _simulate_reports(args: argparse.Namespace) -> int:
    from siaga.cli.simulate import run_reports  # the simulators load only when one runs

    return run_reports(args)


def conflict(args: argparse.Namespace) -> str | None:
    load = args.devices is not None or args.rate is not None or args.cameras is not None
    if load and (args.scenario or args.start or args.until or args.shared):
        return ("--devices/--cameras/--rate (load mode) exclude --scenario, --start, --until "
                "and --shared")
    if args.write_catalog is not None and args.devices is None and args.cameras is None:
        return "--write-catalog needs --devices N or --cameras N"
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


def _speedup(text: str) -> float:
    value = _number(text, "simulated seconds per second such as 86400, or 0")
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0: as fast as possible)")
    return value


def _scale(text: str) -> float:
    value = _number(text, "a share such as 1 or 0.01")
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _year(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a year such as 2020, got {text!r}") from None
    if not 1970 <= value <= 9998:
        raise argparse.ArgumentTypeError("must be within 1970..9998")
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
