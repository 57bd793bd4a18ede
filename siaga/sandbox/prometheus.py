"""A local Prometheus server (Debian's prometheus), for the tests: it scrapes what it is given."""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from siaga.sandbox.server import PrometheusFamilyServer, http_request
from siaga_core.errors import SandboxError

# A scrape every second, so a test sees a target's new samples within a second or two,
# not after Prometheus' production 15 s or 1 m.
SCRAPE_INTERVAL = "1s"
QUERY_TIMEOUT_S = 10.0  # a query on a few minutes of a few targets answers in milliseconds


class PrometheusQueryError(SandboxError, RuntimeError):
    """Prometheus refused a query (bad PromQL, or an HTTP error); the message is its own."""


class Prometheus(PrometheusFamilyServer):
    """Prometheus on 127.0.0.1 with its TSDB under `data_dir`, scraping `targets`
    ("host:port", path /metrics) and whatever `scrape` adds while it runs.

    Targets come from file-based service discovery: Prometheus watches the folder
    `targets/` and picks up a file written there within a second, without a reload, so one
    session server can scrape each test's own service.
    """

    name = "Prometheus"
    binary = "prometheus"
    package = "prometheus"

    def __init__(self, data_dir: Path, targets: Sequence[str] = (), port: int | None = None,
                 *, scrape_interval: str = SCRAPE_INTERVAL, rule_files: Sequence[Path] = (),
                 move_if_taken: bool | None = None) -> None:
        super().__init__(data_dir, port, move_if_taken=move_if_taken)
        self.initial_targets = tuple(targets)
        self.scrape_interval = scrape_interval
        self.rule_files = tuple(Path(path).resolve() for path in rule_files)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prometheus.yml"

    @property
    def targets_dir(self) -> Path:
        return self.data_dir / "targets"

    def scrape(self, name: str, targets: Sequence[str],
               labels: Mapping[str, str] | None = None) -> None:
        """Scrape `targets` ("host:port") from now on, their series carrying `labels`;
        `name` names the group (calling again replaces it)."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        group = [{"targets": list(targets), "labels": dict(labels or {})}]
        # Written whole and renamed into place: the watcher never reads half a file.
        partial = self.targets_dir / f".{name}.json.tmp"
        partial.write_text(json.dumps(group), encoding="utf-8")
        os.replace(partial, self.targets_dir / f"{name}.json")

    def forget(self, name: str) -> None:
        """Stop scraping the group `name` (no-op if there is none)."""
        (self.targets_dir / f"{name}.json").unlink(missing_ok=True)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query (GET /api/v1/query): the result's series or samples, decoded."""
        data: dict[str, Any] = self._api("query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[
            dict[str, Any]]:
        """A range query (GET /api/v1/query_range), as a dashboard's graph asks."""
        data: dict[str, Any] = self._api("query_range", {"query": expr, "start": f"{start:.3f}",
                                          "end": f"{end:.3f}", "step": f"{step:g}"})
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """GET /api/v1/label/<label>/values of the series `match` selects, as Grafana asks
        for a variable's `label_values(match, label)`."""
        values: list[str] = self._api(f"label/{urllib.parse.quote(label)}/values",
                                      {"match[]": match})
        return values

    def rule_groups(self) -> list[dict[str, Any]]:
        """GET /api/v1/rules: the loaded rule groups, each rule with its health and last error."""
        data: dict[str, Any] = self._api("rules", {})
        groups: list[dict[str, Any]] = data["groups"]
        return groups

    def _api(self, endpoint: str, params: Mapping[str, str]) -> Any:
        """The `data` of Prometheus' answer (its shape depends on the endpoint)."""
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        status, body = http_request(url, timeout=QUERY_TIMEOUT_S)
        try:
            answer: dict[str, Any] = json.loads(body)
        except ValueError:
            raise PrometheusQueryError(f"Prometheus answered {status}: {body!r:.300}") from None
        if status != 200 or answer.get("status") != "success":
            raise PrometheusQueryError(
                f"Prometheus refused {dict(params)!r} ({status}): "
                f"{answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def _prepare(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        if self.initial_targets:
            self.scrape("initial", self.initial_targets)
        # JSON is YAML: no quoting rules to get wrong.
        self.config_path.write_text(json.dumps({
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [{
                "job_name": "siaga",
                "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")],
                                     "refresh_interval": "1s"}],
            }],
        }), encoding="utf-8")

    def _command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
