"""A small synchronous client of the operator HTTP API, and its tables, for the command line.

Errors:

    ApiClientError          a DeliveryError: the command line prints it and exits 1
     +-- ApiUnreachable     no answer: connection refused, timeout, bad address
     +-- ApiResponseError   an answer with an error status: `status` and the API's message
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import orjson
from pydantic import SecretStr

from siaga.settings import HttpSettings
from siaga_core.errors import DeliveryError

API_URL_ENV: Final = "SIAGA_API_URL"  # where the CLI finds the API when not on http.host:port
TIMEOUT_S: Final = 10.0  # the API answers from SQLite in milliseconds; 10 s means it is stuck
_ANY_ADDRESS: Final = frozenset({"", "0.0.0.0", "::"})  # listening everywhere: ask loopback


class ApiClientError(DeliveryError):
    """Root of the client's errors: the API refused or could not be reached."""


class ApiUnreachable(ApiClientError):
    """The API did not answer at all."""


class ApiResponseError(ApiClientError):
    """The API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, message: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {message}")
        self.status = status
        self.message = message


def base_url(http: HttpSettings, environ: Mapping[str, str] | None = None) -> str:
    """`SIAGA_API_URL` if set, else the address the service listens on (`http.host:port`)."""
    explicit = (os.environ if environ is None else environ).get(API_URL_ENV)
    if explicit:
        return explicit.rstrip("/")
    if http.port == 0:
        raise ApiClientError(f"http.port is 0 (any free port): set {API_URL_ENV} to the API's URL")
    host = "127.0.0.1" if http.host in _ANY_ADDRESS else http.host
    return f"http://[{host}]:{http.port}" if ":" in host else f"http://{host}:{http.port}"


class ApiClient:
    """Calls the API and returns its decoded JSON; raises `ApiClientError` on any failure."""

    def __init__(self, url: str, token: SecretStr | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ApiClientError(f"the API URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    @classmethod
    def from_settings(cls, http: HttpSettings, environ: Mapping[str, str] | None = None
                      ) -> ApiClient:
        return cls(base_url(http, environ), http.token)

    def alerts(self, status: str | None = None, matchers: Sequence[str] = (),
               limit: int | None = None) -> list[dict[str, Any]]:
        query = _query(status=status, limit=limit) + [("match", m) for m in matchers]
        return list(self.request("GET", "/api/alerts", query)["alerts"])

    def alert(self, fingerprint: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/alerts/{_segment(fingerprint)}"))

    def acknowledge(self, fingerprint: str, by: str, comment: str = "") -> dict[str, Any]:
        body = {"by": by, "comment": comment}
        return dict(self.request("POST", f"/api/alerts/{_segment(fingerprint)}/ack", body=body))

    def silences(self, expired: bool = False) -> list[dict[str, Any]]:
        query = _query(expired="true" if expired else None)
        return list(self.request("GET", "/api/silences", query)["silences"])

    def add_silence(self, matchers: Sequence[str], created_by: str, comment: str, *,
                    duration: str | None = None, ends_at: str | None = None,
                    starts_at: str | None = None) -> dict[str, Any]:
        body = {"matchers": list(matchers), "created_by": created_by, "comment": comment,
                "duration": duration, "ends_at": ends_at, "starts_at": starts_at}
        sent = {key: value for key, value in body.items() if value is not None}
        return dict(self.request("POST", "/api/silences", body=sent))

    def expire_silence(self, silence_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/silences/{_segment(silence_id)}"))

    def devices(self, kind: str | None = None) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/devices", _query(kind=kind))["devices"])

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/devices/{_segment(device_id)}"))

    def dead_letters(self, code: str | None = None, limit: int | None = None
                     ) -> list[dict[str, Any]]:
        query = _query(code=code, limit=limit)
        return list(self.request("GET", "/api/deadletters", query)["dead_letters"])

    def dead_deliveries(self, limit: int | None = None) -> list[dict[str, Any]]:
        query = _query(limit=limit)
        return list(self.request("GET", "/api/deliveries/dead", query)["deliveries"])

    def request(self, method: str, path: str, query: Iterable[tuple[str, str]] = (),
                body: object = None) -> Any:
        """One call: the decoded JSON answer, or an `ApiClientError` saying what went wrong."""
        url = self.url + path + (f"?{urlencode(list(query))}" if query else "")
        data = None if body is None else orjson.dumps(body)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiResponseError(method, url, exc.code, _message(exc.read(), exc.reason)
                                       ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"cannot reach the Siaga API at {self.url}: {reason}"
                                 f" (is `siaga run` running? set {API_URL_ENV})") from None
        except orjson.JSONDecodeError as exc:
            raise ApiClientError(f"{method} {url}: the answer is not JSON: {exc}") from None


def _query(**params: object) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in params.items() if value is not None]


def _segment(text: str) -> str:
    # An id typed by a person goes into the path: nothing in it may change the route.
    return quote(text, safe="")


def _message(body: bytes, fallback: str) -> str:
    """The API's `{"error": ...}`, or the start of whatever else answered (a proxy's page)."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    text = body.decode("utf-8", errors="replace").strip()
    return text[:200] if text else str(fallback)


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Aligned columns; the last one unpadded (it is the widest and least regular)."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
             for row in table]
    return "\n".join(line.rstrip() for line in lines)


def format_alerts(alerts: Iterable[Mapping[str, Any]]) -> str:
    """One line per alert: what an operator scans for."""
    rows = [
        (alert["fingerprint"], alert["status"], alert["severity"],
         alert["labels"].get("alertname", alert["rule"]), alert["subject"], alert["starts_at"],
         _flags(alert), alert["annotations"].get("summary", ""))
        for alert in alerts
    ]
    header = ("FINGERPRINT", "STATUS", "SEVERITY", "ALERT", "SUBJECT", "SINCE", "FLAGS", "SUMMARY")
    return format_table(header, rows)


def format_alert(alert: Mapping[str, Any]) -> str:
    """One alert in full, then its history."""
    fields = ("fingerprint", "rule", "subject", "status", "severity", "starts_at", "ends_at")
    lines = [f"{key}: {_or_dash(alert[key])}" for key in fields]
    lines += [f"label {k}={v}" for k, v in sorted(alert["labels"].items())]
    lines += [f"annotation {k}: {v}" for k, v in sorted(alert["annotations"].items())]
    ack = alert.get("acknowledged")
    if ack:
        lines.append(f"acknowledged: {ack['at']} by {ack['by']}: {ack['comment']}")
    if alert.get("silenced_by"):
        lines.append(f"silenced by: {alert['silenced_by']}")
    history = [(h["recorded_at"], h["at"], h["change"], h["status"], h["severity"],
                "paged" if h["paged"] else "-", f"{h['reason']} {h['note']}".strip())
               for h in alert.get("history", [])]
    if history:
        header = ("RECORDED", "EVENT TIME", "CHANGE", "STATUS", "SEVERITY", "PAGED", "REASON")
        lines += ["", format_table(header, history)]
    return "\n".join(lines)


def format_silences(silences: Iterable[Mapping[str, Any]]) -> str:
    rows = [(s["id"], s["state"], s["starts_at"], s["ends_at"], s["created_by"],
             " ".join(s["matchers"]) + f"  # {s['comment']}") for s in silences]
    return format_table(("ID", "STATE", "STARTS", "ENDS", "BY", "MATCHERS"), rows)


def _flags(alert: Mapping[str, Any]) -> str:
    flags = [name for name, on in (("acked", alert.get("acknowledged")),
                                   ("silenced", alert.get("silenced_by"))) if on]
    return ",".join(flags) or "-"


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)
