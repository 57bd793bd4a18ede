"""Where a results file comes from: the commit, the machine and every version measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

from bench import nodered

REPO = Path(__file__).resolve().parent.parent
COMMAND_TIMEOUT_S = 10.0
PYTHON_PACKAGES = ("siaga", "paho-mqtt", "pydantic", "orjson", "aiohttp", "matplotlib")
DIRTY_LISTED = 20  # changed paths named in the file; the count says how many in all


def _output(command: list[str], cwd: Path | None = None) -> str | None:
    """The command's stdout (its stderr if stdout is empty), or None if it could not run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 and not done.stdout:
        return None
    return (done.stdout or done.stderr).strip()


def git() -> dict[str, object]:
    """HEAD's full hash, and whether the work tree differs from it (and where)."""
    commit = _output(["git", "rev-parse", "HEAD"], REPO)
    status = _output(["git", "status", "--porcelain"], REPO)
    # `_output` strips the text, and with it the first line's leading blank (" M README.md").
    changed = [line.split(maxsplit=1)[1] for line in (status or "").splitlines()
               if line.strip()]
    return {"commit": commit or "unknown", "dirty": bool(changed) if status is not None else None,
            "changed": len(changed), "changed_paths": changed[:DIRTY_LISTED],
            "subject": _output(["git", "log", "-1", "--format=%s"], REPO)}


def machine() -> dict[str, object]:
    """Cores, CPU model, memory and kernel (the load averages are noted by the runner)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    """Every peer's and server's version, as the run found them."""
    def first_line(command: list[str]) -> str:
        text = _output(command)
        return text.splitlines()[0] if text else "not installed"

    found: dict[str, str] = {"python": platform.python_version()}
    for package in PYTHON_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    mosquitto = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin")
    found["mosquitto"] = first_line([mosquitto or "mosquitto", "-h"])
    found["influxdb"] = first_line(["influxd", "version"])
    found["node.js"] = first_line(["node", "--version"])
    found["node-red"] = nodered.version()
    found["node-red-contrib-influxdb"] = nodered.version("node-red-contrib-influxdb")
    return found


def short(git_info: dict[str, object], machine_info: dict[str, object]) -> str:
    """One line for the table's and the chart's header."""
    commit = str(git_info["commit"])[:12]
    dirty = {True: " (dirty tree)", False: "", None: " (tree state unknown)"}[
        git_info["dirty"]]  # type: ignore[index]
    return (f"commit {commit}{dirty}; {machine_info['cpu_model']}, {machine_info['cores']} "
            f"cores, {machine_info['memory_gib']} GiB")
