"""Rewrite our imports after modules and names moved (issue 13). Run from the repository root.

    python rewrite_imports.py STEP [FILES...]     (default: every tracked or new *.py file)

STEP names a table below. For each `from M import a, b as c` (at any depth, so lazy imports
too) the names are regrouped by where they live now; `from P import mod` and `import P.mod`
follow moved modules (an alias keeps the old local name, so no other line changes). Then
`ruff check --select I --fix` sorts the import blocks. Strings are not touched: step1.sh seds
the few that name modules (`python -m ingest`, logger names).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

# step -> (module moves {old: new}, name moves {(old module, name): new module})
STEPS: dict[str, tuple[dict[str, str], dict[tuple[str, str], str]]] = {
    # Step 1: the application leaves ingest/; alerting joins rules/; StatusUpdate joins devices/.
    "app": (
        {
            "ingest.__main__": "siaga.__main__",
            "ingest.cli": "siaga.cli.main",
            "ingest.apiclient": "siaga.cli.apiclient",
            "ingest.simulatorcli": "siaga.cli.simulate",
            "ingest.simulateargs": "siaga.cli.simulateargs",
            "ingest.demo": "siaga.cli.demo",
            "ingest.app": "siaga.app",
            "ingest.api": "siaga.api.server",
            "ingest.apialerts": "siaga.api.alerts",
            "ingest.apicontext": "siaga.api.context",
            "ingest.metrics": "siaga.api.metrics",
            "ingest.brokerconfig": "siaga.broker.config",
            "ingest.brokerauth": "siaga.broker.auth",
            "ingest.provision": "siaga.broker.provision",
            "ingest.localservers": "siaga.sandbox.servers",
            "ingest.ports": "siaga.sandbox.ports",
            "ingest.alerting": "rules.alerting",
            **{f"tests.ingest.test_{name}": f"tests.siaga.test_{name}" for name in (
                "cli_errors", "custom_catalog", "http", "metrics", "provision", "settings",
                "simulatorcli")},
            "tests.ingest.test_alerting": "tests.rules.test_alerting",
        },
        {
            **{("ingest.settings", name): "siaga.settings" for name in (
                "BUNDLED_CONFIG", "BUNDLED_RULES", "BrokerSettings", "HttpSettings", "Settings",
                "ENVIRONMENT", "load_settings")},
            ("ingest.decode", "StatusUpdate"): "devices.readings",
        },
    ),
    # Step 3a: the shared ground leaves devices/ (whole modules).
    "ground": (
        {
            "devices.redaction": "siaga_core.redaction",
            "devices.configfile": "siaga_core.configfile",
            "tests.devices.test_configfile": "tests.siaga_core.test_configfile",
        },
        {},
    ),
    # Step 3b: configfile split; run after errors.py and yamlfile.py hold these names.
    "ground-split": (
        {},
        {
            **{("siaga_core.configfile", name): "siaga_core.errors"
               for name in ("ConfigError", "Problem", "render_problem")},
            **{("siaga_core.configfile", name): "siaga_core.yamlfile"
               for name in ("YamlDocument", "read_yaml", "Loc", "place")},
        },
    ),
    # Step 5: the address of a broker joins the paho-on-asyncio adapter.
    "mqtt": (
        {},
        {("simulators.connection", "BrokerAddress"): "siaga_core.mqttloop"},
    ),
    # Step 6: names that say what they are (classes move; renames are done by hand).
    "names": (
        {},
        {
            ("rules.outbox", "Deliverer"): "rules.delivery",
            ("rules.outbox", "DeliveryPolicy"): "rules.delivery",
        },
    ),
    # Step 9: the sandbox splits by job once mirakuru runs its processes.
    "sandbox": (
        {},
        {
            **{("siaga.sandbox.servers", name): "siaga.sandbox.server" for name in (
                "LocalServer", "ServerNotInstalled", "ServerStartError", "find_binary",
                "http_request", "log_tail", "INSTALL_HINT", "START_TIMEOUT_S")},
            **{("siaga.sandbox.servers", name): "siaga.sandbox.mosquitto"
               for name in ("Mosquitto", "ADMIN_USER")},
            **{("siaga.sandbox.servers", name): "siaga.sandbox.influxdb"
               for name in ("InfluxDB1", "VictoriaMetrics")},
        },
    ),
}

def rewrite(source: str, modules: dict[str, str], names: dict[tuple[str, str], str]) -> str:
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        new = None
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            new = _from(node, modules, names)
        elif isinstance(node, ast.Import):
            new = _import(node, modules)
        if new is not None:
            indent = lines[node.lineno - 1][: node.col_offset]
            text = "".join(f"{indent}{statement}\n" for statement in new)
            edits.append((node.lineno - 1, node.end_lineno or node.lineno, text))
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


def _from(node: ast.ImportFrom, modules: dict[str, str],
          names: dict[tuple[str, str], str]) -> list[str] | None:
    module = node.module or ""
    groups: dict[str, list[str]] = {}
    changed = False
    for alias in node.names:
        shown = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
        moved_module = modules.get(f"{module}.{alias.name}")
        if moved_module is not None:  # `from ingest import brokerauth`
            parent, leaf = moved_module.rsplit(".", 1)
            local = alias.asname or alias.name
            groups.setdefault(parent, []).append(leaf if leaf == local else f"{leaf} as {local}")
            changed = True
            continue
        target = names.get((module, alias.name)) or modules.get(module, module)
        changed |= target != module
        groups.setdefault(target, []).append(shown)
    if not changed:
        return None
    return [f"from {target} import {', '.join(shown)}" for target, shown in groups.items()]


def _import(node: ast.Import, modules: dict[str, str]) -> list[str] | None:
    out, changed = [], False
    for alias in node.names:
        new = modules.get(alias.name)
        if new is None:
            out.append(f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
        else:
            changed = True
            out.append(f"import {new} as {alias.asname or alias.name.rsplit('.', 1)[1]}")
    return out if changed else None


def main() -> None:
    step, *files = sys.argv[1:]
    modules, names = STEPS[step]
    if not files:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"],
                                capture_output=True, text=True, check=True).stdout.split()
        files = [f for f in listed if "/.node/" not in f and Path(f).exists()]
    touched = []
    for name in files:
        path = Path(name)
        before = path.read_text(encoding="utf-8")
        after = rewrite(before, modules, names)
        if after != before:
            path.write_text(after, encoding="utf-8")
            touched.append(name)
    print(f"{len(touched)} files rewritten")
    if touched:
        subprocess.run([".venv/bin/ruff", "check", "--select", "I", "--fix", "--quiet", *touched],
                       check=False)


if __name__ == "__main__":
    main()
