"""Handing alerts to Prometheus Alertmanagers (SPEC section 9): settings and the v2 payload.

Siaga plays Prometheus' part: it POSTs its firing alerts to `/api/v2/alerts` and re-sends
them while they fire, each with an `endsAt` a few re-send intervals ahead, so an
Alertmanager that loses Siaga lets them expire rather than fire forever. Alertmanager tells
alerts apart by their whole label set, not by Siaga's fingerprint: when a level changes
(Siaga 3 to Siaga 2), the old label set is resolved at once, as Prometheus does.
The worker that sends is `rules.forwarding.Forwarder`.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from rules.alert import Alert
from rules.routing import MAX_TIMEOUT_S, http_url
from rules.webhook import format_rfc3339
from siaga_core.configfile import StrictModel

API_PATH: Final = "/api/v2/alerts"
# Prometheus' default `rules.alert.resend-delay` is one minute; Alertmanager's
# `resolve_timeout` (5 minutes) never applies, as every alert carries its own endsAt.
RESEND_INTERVAL_S: Final = 60.0
# endsAt is this many re-send intervals ahead (Prometheus: 4 x max(resend, evaluation)):
# three re-sends may be lost before Alertmanager resolves an alert by itself.
ENDS_AFTER_RESENDS: Final = 4
# Prometheus keeps re-sending a resolution for 15 minutes (`resolvedRetention`), so an
# Alertmanager that was down when an alert ended still hears of it.
RESOLVED_RETENTION_S: Final = 15 * 60.0

# YAML has no path type: a path is a string, so this one field type converts.
_FilePath = Annotated[Path, Field(strict=False)]
# Alertmanager 0.25 refuses the whole alert for a label or annotation name outside this.
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


class BasicAuth(StrictModel):
    username: str = Field(min_length=1)
    password: SecretStr


class TlsSettings(StrictModel):
    """How Siaga checks an https:// Alertmanager, and the client certificate it shows."""

    ca_file: _FilePath | None = None  # without one, the system's trusted CAs
    cert_file: _FilePath | None = None
    key_file: _FilePath | None = None
    insecure_skip_verify: bool = False  # for a test bench only: anyone can pose as it

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=None if self.ca_file is None else str(self.ca_file))
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class AlertmanagerSettings(StrictModel):
    """One Alertmanager (`alertmanagers:` in siaga.yaml; `SIAGA_ALERTMANAGER_URL` adds one)."""

    url: str  # its base, e.g. http://alertmanager:9093 (a path prefix is kept)
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    # How often every firing alert is sent again; tests shrink it.
    resend_interval_s: float = Field(default=RESEND_INTERVAL_S, gt=0, allow_inf_nan=False)
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(http_url(url, "http://alertmanager:9093"))
        if parts.username is not None or parts.password is not None:
            raise ValueError("put credentials in basic_auth, not in the URL")
        return url

    @model_validator(mode="after")
    def _one_auth(self) -> AlertmanagerSettings:
        if self.basic_auth is not None and self.bearer_token is not None:
            raise ValueError("basic_auth or bearer_token, not both")
        return self

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + API_PATH

    def headers(self) -> dict[str, str]:
        """Content type and the credentials of every POST."""
        headers = {"Content-Type": "application/json", "User-Agent": "Siaga"}
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        elif self.basic_auth is not None:
            pair = f"{self.basic_auth.username}:{self.basic_auth.password.get_secret_value()}"
            headers["Authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
        return headers

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.tls is None else self.tls.context()


def label_set(alert: Alert) -> dict[str, str]:
    """The alert's labels as Alertmanager takes them: valid names, no empty values
    (Prometheus drops those too), and always an alertname."""
    labels = _named(alert.labels)
    labels.setdefault("alertname", alert.rule)
    return labels


def postable(alert: Alert, labels: Mapping[str, str], ends_at_ns: int,
             external_url: str) -> dict[str, object]:
    """One alert of the POST /api/v2/alerts body (Alertmanager's `postableAlert`)."""
    return {
        "labels": dict(labels),
        "annotations": _named(alert.annotations),
        "startsAt": format_rfc3339(alert.starts_at_ns),
        "endsAt": format_rfc3339(max(ends_at_ns, alert.starts_at_ns)),
        "generatorURL": f"{external_url.rstrip('/')}/api/alerts/{alert.fingerprint}",
    }


def _named(values: Mapping[str, str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for name, value in values.items():
        if value == "":
            continue
        safe = _INVALID_NAME_CHARS.sub("_", name)
        if not safe or safe[0].isdigit():
            safe = f"_{safe}"
        named[safe] = value
    return named
