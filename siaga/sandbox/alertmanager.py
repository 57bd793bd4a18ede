"""A local Prometheus Alertmanager (Debian's prometheus-alertmanager), for the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from siaga.sandbox.server import PrometheusFamilyServer, http_request

# Short waits so a test sees a notification within a second or two, not Alertmanager's
# production 30 s group_wait and 5 m group_interval.
GROUP_WAIT = "100ms"
GROUP_INTERVAL = "1s"


class Alertmanager(PrometheusFamilyServer):
    """Alertmanager on 127.0.0.1 with its state under `data_dir`, no cluster, and one route:
    every alert to a webhook receiver at `webhook_url`."""

    name = "Alertmanager"
    binary = "prometheus-alertmanager"
    package = "prometheus-alertmanager"

    def __init__(self, data_dir: Path, webhook_url: str, port: int | None = None, *,
                 move_if_taken: bool | None = None) -> None:
        super().__init__(data_dir, port, move_if_taken=move_if_taken)
        self.webhook_url = webhook_url

    @property
    def config_path(self) -> Path:
        return self.data_dir / "alertmanager.yml"

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active, silenced and inhibited alike), as decoded JSON."""
        query = "&".join(f"filter={key}%3D%22{value}%22" for key, value in filters.items())
        status, body = http_request(f"{self.url}/api/v2/alerts?{query}", timeout=10.0)
        if status != 200:
            raise RuntimeError(f"Alertmanager answered {status}: {body!r}")
        alerts: list[dict[str, Any]] = json.loads(body)
        return alerts

    def _prepare(self) -> None:
        # JSON is YAML: no quoting rules to get wrong for the URL.
        self.config_path.write_text(json.dumps({
            "route": {"receiver": "siaga-test", "group_by": ["..."],
                      "group_wait": GROUP_WAIT, "group_interval": GROUP_INTERVAL,
                      "repeat_interval": "1h"},
            "receivers": [{"name": "siaga-test", "webhook_configs": [
                {"url": self.webhook_url, "send_resolved": True}]}],
        }))

    def _command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir / 'storage'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # empty: no gossip port, no peers
            "--log.level=warn",
        ]
