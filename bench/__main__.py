"""`python -m bench`: run the benchmarks, print the table, write JSON and a PNG chart.

Everything it starts (Mosquitto, InfluxDB, siaga run, the load mode, the peers, Node-RED)
listens on or talks to 127.0.0.1 only, and is stopped before it exits, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench import cores_chart, nodered, provenance, report
from bench.plan import NOT_IN_QUICK, SCENARIOS, SYSTEMS, make_plan
from bench.runner import Runner, say

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.setup_node_red:
        nodered.setup()
        print(f"Node-RED {nodered.version()} installed in {nodered.NODE_DIR}")
        return 0
    plan = make_plan(quick=args.quick, runs=args.runs, outage_s=args.outage)
    scenarios = _choose(args.only, SCENARIOS, "--only")
    if args.quick and not args.only:
        scenarios = [name for name in scenarios if name not in NOT_IN_QUICK]
    systems = _choose(args.systems, SYSTEMS, "--systems")
    signal.signal(signal.SIGTERM, _interrupt)  # unwind the context managers: stop every child
    root = Path(tempfile.mkdtemp(prefix="siaga-bench-"))
    started = time.time()
    # Before anything is measured or written: the tree as it was when the run started.
    source, box, versions = provenance.git(), provenance.machine(), provenance.versions()
    say(f"siaga bench: {'quick' if args.quick else 'full'}, {plan.runs} run(s) of "
        f"{', '.join(scenarios)}; systems {', '.join(systems)}; work in {root}")
    runner = Runner(plan, scenarios, systems, root)
    try:
        runner.run()
    except KeyboardInterrupt:
        say("interrupted: writing what was measured")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    finished = time.time()
    summary = report.summarise(runner.results)
    goals = report.targets(summary)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    load = runner.load
    header = (f"Siaga benchmarks {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}"
              f" ({'quick' if args.quick else 'full'}, {plan.runs} run(s)); "
              f"{provenance.short(source, box)}; load average (1 min) at start "
              f"{load[0]['load1'] if load else '?'}, at end {load[-1]['load1'] if load else '?'}")
    print(report.table(summary, goals, header))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(finished - started),
        "mode": "quick" if args.quick else "full",
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "git": source,
        "machine": box,
        "versions": versions,
        "load_average": load,
        "measures": report.MEASURES,
        "plan": plan.as_dict(),
        "scenarios": scenarios,
        "systems": runner.systems,
        "summary": summary,
        "targets": goals,
        "skipped": runner.skipped,
        "errors": runner.errors,
        "results": runner.results,
    }
    json_path, png_path = out / f"{stamp}.json", out / f"{stamp}.png"
    report.write_json(json_path, document)
    charts = [png_path]
    try:
        report.write_chart(png_path, summary, header)
        if summary.get("cores"):  # issue 18: throughput against cores, memory at a live rate
            charts.append(out / f"{stamp}-cores.png")
            cores_chart.write_chart(charts[-1], summary["cores"], header)
    except ImportError:
        say("matplotlib is not installed: no chart (pip install matplotlib)")
    say(f"wrote {json_path} and {' and '.join(str(chart) for chart in charts)}")
    for skipped in runner.skipped:
        say(f"skipped {skipped['what']}: {skipped['why']}")
    for error in runner.errors:
        say(f"failed [run {error['run']}] {error['what']}: {error['error']}")
    return 1 if runner.errors else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one short run of each scenario: a smoke check, not figures")
    parser.add_argument("--runs", type=int, metavar="N",
                        help="runs to take medians over (default: 3; --quick: 1)")
    parser.add_argument("--only", metavar="NAMES",
                        help=f"comma-separated scenarios among {', '.join(SCENARIOS)} "
                             f"(--quick leaves out {', '.join(NOT_IN_QUICK)} unless named)")
    parser.add_argument("--systems", metavar="NAMES",
                        help=f"comma-separated systems for the backlog drains (throughput) and "
                             f"the live rate (live) among {', '.join(SYSTEMS)}")
    parser.add_argument("--outage", type=float, metavar="S",
                        help="seconds InfluxDB is down in the recovery scenario "
                             "(default: 60; --quick: 10)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"where the JSON and PNG go (default: {RESULTS})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (server data and logs) for inspection")
    parser.add_argument("--setup-node-red", action="store_true",
                        help="npm install Node-RED 4.1 and node-red-contrib-influxdb into "
                             "bench/.node/, then exit")
    return parser


def _choose(given: str | None, known: tuple[str, ...], option: str) -> list[str]:
    if not given:
        return list(known)
    chosen = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return [name for name in known if name in chosen]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
