"""Throwaway: current imports that break the target layering once modules sit at their new homes."""
import subprocess, sys
rows = subprocess.run([sys.executable, "docs/plans/issue-13/import_graph.py", sys.argv[1], "all"], capture_output=True, text=True).stdout.splitlines()
MOVES = {  # current module -> target package (before any split)
    **{f"ingest.{m}": "siaga" for m in "__main__ cli apiclient simulatorcli simulateargs demo app api apialerts apicontext metrics brokerconfig brokerauth provision localservers ports settings".split()},
    "ingest.alerting": "rules",
    "devices.configfile": "siaga_core", "devices.redaction": "siaga_core",
}
RANK = {"siaga": 3, "ingest": 2, "rules": 2, "simulators": 2, "devices": 1, "siaga_core": 0}
def home(mod):
    for m, t in MOVES.items():
        if mod == m or mod.startswith(m + "."): return t
    top = mod.split(".")[0]
    return top if top in RANK else None
for row in rows:
    src, dst, where, kind, names = (row.split("\t") + [""])[:5]
    a, b = home(src), home(dst)
    if a is None or b is None or a == b: continue
    if RANK[a] < RANK[b] or (RANK[a] == RANK[b]):
        print(f"{where:32} {src} ({a}) -> {dst} ({b}) [{names}] {kind}")
