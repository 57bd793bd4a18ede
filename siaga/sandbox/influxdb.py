"""Local time-series databases: InfluxDB 1.x (v1 API) and VictoriaMetrics (v2 write API)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from siaga.sandbox.ports import free_port
from siaga.sandbox.server import LocalServer, http_request


class InfluxDB1(LocalServer):
    """influxd 1.x with everything under `data_dir`, quiet logs and no telemetry."""

    name = "InfluxDB"
    binary = "influxd"
    package = "influxdb"

    def __init__(
        self, data_dir: Path, port: int | None = None, rpc_port: int | None = None, *,
        move_if_taken: bool | None = None,
    ) -> None:
        super().__init__(data_dir, port, move_if_taken=move_if_taken)
        self.rpc_port = rpc_port or free_port()  # backup/restore service; default 8088 clashes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "influxdb.conf"

    def ports(self) -> list[int]:
        return [self.port, self.rpc_port]

    def _take_fresh_ports(self) -> None:
        super()._take_fresh_ports()
        self.rpc_port = free_port()

    def query(self, q: str, db: str | None = None, epoch: str | None = None) -> dict[str, Any]:
        """Run InfluxQL and return the decoded JSON; raise RuntimeError unless HTTP 200."""
        form = {"q": q} | ({"db": db} if db else {}) | ({"epoch": epoch} if epoch else {})
        status, body = http_request(f"{self.url}/query", form, timeout=30.0)
        if status != 200:
            text = body.decode(errors="replace")
            raise RuntimeError(f"InfluxDB answered {status} to {q!r}: {text}")
        result: dict[str, Any] = json.loads(body)
        return result

    def _prepare(self) -> None:
        self.config_path.write_text(
            # `reporting-enabled` is Debian's patched key, `reporting-disabled` upstream's;
            # influxd ignores the one it does not know.
            "reporting-enabled = false\n"
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            "[meta]\n"
            f"  dir = {_toml_string(self.data_dir / 'meta')}\n"
            "  logging-enabled = false\n"
            "[data]\n"
            f"  dir = {_toml_string(self.data_dir / 'data')}\n"
            f"  wal-dir = {_toml_string(self.data_dir / 'wal')}\n"
            "  query-log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"  # no _internal database filling up the data dir
            "[http]\n"
            f'  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[continuous_queries]\n"
            "  log-enabled = false\n"
            "[logging]\n"
            '  level = "warn"\n'
            "  suppress-logo = true\n"
        )

    def _command(self) -> list[str]:
        return [self.executable, "run", "-config", str(self.config_path)]

    def _answers(self) -> bool:
        try:
            return http_request(f"{self.url}/ping")[0] == 204
        except OSError:
            return False


def _toml_string(path: Path) -> str:
    # JSON's string escapes are all valid in a TOML basic string.
    return json.dumps(str(path))


class VictoriaMetrics(LocalServer):
    """Single-node VictoriaMetrics: `/api/v2/write` for the v2 writer, export for reading back."""

    name = "VictoriaMetrics"
    binary = "victoria-metrics"
    package = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flush(self) -> None:
        """Make every accepted sample searchable now, not after the ~1 s in-memory buffering."""
        status, body = http_request(f"{self.url}/internal/force_flush", timeout=30.0)
        if status != 200:
            raise RuntimeError(f"VictoriaMetrics force_flush answered {status}: {body!r}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """The series matching the selector `match`, as `/api/v1/export` JSON lines."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match})
        status, body = http_request(f"{self.url}/api/v1/export?{query}", timeout=30.0)
        if status != 200:
            raise RuntimeError(f"VictoriaMetrics export answered {status}: {body!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def _command(self) -> list[str]:
        return [
            self.executable,
            f"-storageDataPath={self.data_dir / 'storage'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",  # tests and replays write timestamps years in the past
            "-search.latencyOffset=0",  # show the newest samples at once, not 30 s later
            "-search.disableCache",  # a test's second query must not see the first's answer
        ]

    def _answers(self) -> bool:
        try:
            return http_request(f"{self.url}/health")[0] == 200
        except OSError:
            return False
