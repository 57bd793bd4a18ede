"""`siaga simulate`: scenario playback or load mode (its options: `simulateargs`)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from devices.registry import Device, load_catalog
from siaga.cli.simulateargs import (
    DEFAULT_LOAD_RATE,
    DEFAULT_SCENARIO,
    REPORTS_KEY_ENV,
    REPORTS_TOKEN_ENV,
    conflict,
)
from siaga.settings import Settings
from siaga_core.errors import ConfigFileError, ConfigurationError, SiagaError
from simulators.cameraload import synthetic_cameras
from simulators.fleet import FleetConfig
from simulators.load import JAKARTA, LoadConfig, LoadRun, synthetic_devices, write_catalog
from simulators.reportposter import Progress, post_plan
from simulators.reports import plan_year
from simulators.runner import ProgressPrinter, playback
from simulators.scenario import list_scenarios, load_scenario
from simulators.summary import Summary, format_sim_time


def run(args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    """`siaga simulate`; `settings` loads the configuration only when a mode needs it."""
    problem = conflict(args)
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
        if args.devices is not None or args.rate is not None or args.cameras is not None:
            summary = _play(_load_run(args, loaded, progress), progress)
        else:
            summary = _play(_fleet(args, loaded, progress), progress)
    except ConfigFileError:
        raise  # a file's mistakes: `main` prints them as `siaga check` does, file:line first
    except SiagaError as exc:
        print(f"siaga simulate: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def run_reports(args: argparse.Namespace) -> int:
    """`siaga simulate reports`: plan the year, post it, print what was sent.

    A service that cannot be reached or refuses the key raises `DeliveryError`: `main` prints
    it in one line and exits 1.
    """
    if not args.api_key:
        raise ConfigurationError(f"siaga simulate reports needs an Open311 API key: --api-key "
                                 f"KEY or {REPORTS_KEY_ENV} (`siaga reports keys add NAME`)")
    if not args.token:
        raise ConfigurationError(f"siaga simulate reports needs the operator API's token for "
                                 f"the officers' updates: --token or {REPORTS_TOKEN_ENV}")
    plan = plan_year(args.year, args.scale, args.seed)
    print(f"siaga simulate reports: {len(plan.reports):,} reports and {plan.updates:,} updates "
          f"of {args.year} (scale {args.scale:g}, seed {args.seed}) to {args.url}",
          file=sys.stderr)
    summary = asyncio.run(post_plan(
        plan, args.url, args.api_key, args.token, speedup=args.speedup,
        concurrency=args.concurrency, progress=_print_progress,
        on_refused=lambda reason: print(f"refused: {reason}", file=sys.stderr),
        live=args.live))
    print(summary)
    return 0


def _print_progress(progress: Progress) -> None:
    when = ("" if progress.sim_time_s is None
            else f"  sim {format_sim_time(progress.sim_time_s)}")
    print(f"[{progress.elapsed_s:7.1f} s] sent {progress.sent:,} reports "
          f"({progress.refused:,} refused), {progress.updates:,} updates, "
          f"{progress.rate:,.0f} reports/s{when}", file=sys.stderr, flush=True)


def _write_catalog(args: argparse.Namespace, settings: Settings) -> None:
    """The configured catalog's devices and the synthetic ones: the rules still find theirs."""
    known = list(load_catalog(settings.catalog_path))
    made = [*_synthetic(args), *_cameras(args)]
    write_catalog([*known, *made], args.write_catalog)
    print(f"{args.write_catalog}: {len(known)} devices of {settings.catalog_path.name} and "
          f"{len(made)} synthetic ones; point the service's `catalog:` at it")


def _synthetic(args: argparse.Namespace) -> list[Device]:
    """--devices N: load-000001... reporting their share of --rate."""
    if args.devices is None:
        return []
    interval = None if args.rate in (None, math.inf) else args.devices / args.rate
    return synthetic_devices(args.devices, expected_interval_s=interval)


def _cameras(args: argparse.Namespace) -> list[Device]:
    """--cameras N: load-cam-000001... beside the synthetic devices (their own 10 s clock)."""
    return [] if args.cameras is None else synthetic_cameras(args.cameras, centre=JAKARTA)


def _fleet(args: argparse.Namespace, settings: Settings,
           progress: ProgressPrinter) -> Callable[[asyncio.Event], Awaitable[Summary]]:
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
    start = args.start
    if args.scenario is None and start is None:
        start = datetime.now(UTC)  # the default: live devices, now
    config = FleetConfig(settings.mqtt.address(), settings.mqtt.topic_prefix, speed=args.speed,
                         shared=args.shared, qos=settings.mqtt.qos, duration_s=args.duration,
                         progress_every_s=progress.every_s, on_progress=progress)
    fleet = playback(load_catalog(settings.catalog_path), scenario, config, seed=args.seed,
                     start=start, until=args.until)
    return fleet.run


def _load_run(args: argparse.Namespace, settings: Settings,
              progress: ProgressPrinter) -> Callable[[asyncio.Event], Awaitable[Summary]]:
    devices: list[Device] = (list(load_catalog(settings.catalog_path)) if args.devices is None
                             else synthetic_devices(args.devices)) + _cameras(args)
    rate = DEFAULT_LOAD_RATE if args.rate is None else args.rate
    config = LoadConfig(settings.mqtt.address(), settings.mqtt.topic_prefix,
                        rate=None if rate == math.inf else rate, batch=args.batch,
                        duration_s=args.duration, seed=args.seed, qos=settings.mqtt.qos,
                        progress_every_s=progress.every_s, on_progress=progress)
    return LoadRun(devices, config).run


def _play(run: Callable[[asyncio.Event], Awaitable[Summary]],
          progress: ProgressPrinter) -> Summary:
    from siaga.app import stop_on_signals

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


