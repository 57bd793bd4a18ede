"""Writers of line-protocol batches to InfluxDB: v1 `/write` here, v2 in `ingest.influx2`.

Errors (translated from aiohttp's here and influxdb-client's in `ingest.influx2`, with
`raise ... from exc`):

    WriteError                (a siaga_core StorageError)
    ├── RetryableWriteError   keep the batch and try again later: the server is down,
    │                         slow (timeout), overloaded (5xx, 429 with `retry_after`),
    │                         or misconfigured (401, 403, database or bucket not found),
    │                         none of which the points themselves can fix
    └── RejectedWriteError    the batch itself is bad (400, 413, 422): the caller splits
                              it to find the lines at fault
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from types import TracebackType
from typing import Protocol, Self

import aiohttp
from pydantic import SecretStr
from yarl import URL

from siaga_core.errors import StorageError

log = logging.getLogger(__name__)

# The batch is at fault: malformed line or field type conflict (400), too big for the
# server's max-body-size (413), or unprocessable (422, InfluxDB 2.x and 3.x).
REJECTED_STATUSES = frozenset({400, 413, 422})

# Bodies of error answers are quoted in messages; a page of HTML from a proxy is not useful.
MESSAGE_MAX_CHARS = 500


class WriteError(StorageError):
    """A batch could not be written."""


class RetryableWriteError(WriteError):
    """Writing failed for a reason outside the batch; `retry_after` is in seconds if known."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class RejectedWriteError(WriteError):
    """The server refused the batch itself (`status` 400, 413 or 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"InfluxDB refused the batch ({status}): {message}")
        self.status = status
        self.message = message


class Writer(Protocol):
    """Writes newline-joined line protocol with nanosecond timestamps."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def write(self, body: bytes) -> None:
        """Write the batch, or raise a `WriteError`."""
        ...

    async def ping(self) -> bool:
        """Whether the server answers at all."""
        ...

    def describe(self) -> str:
        """Where the points go, without credentials, for logs."""
        ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_for_status(
    status: int, message: str, where: str, retry_after: str | None = None
) -> WriteError:
    """The error for a failed HTTP answer from `where` (a server description)."""
    message = message.strip()[:MESSAGE_MAX_CHARS]
    if status in REJECTED_STATUSES:
        return RejectedWriteError(status, message)
    if status in (401, 403):
        return RetryableWriteError(
            f"{where} refused our credentials ({status}: {message}); check the influx "
            "username/password or token",
            status=status,
        )
    return RetryableWriteError(
        f"{where} answered {status}: {message}",
        status=status,
        retry_after=parse_retry_after(retry_after),
    )


def public_url(url: str) -> str:
    """`url` without user and password, safe to log."""
    return str(URL(url).with_user(None))


def _quote_identifier(name: str) -> str:
    # InfluxQL double-quoted identifier: backslash escapes, no raw newline allowed.
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class V1Writer:
    """InfluxDB 1.x `/write?db=` over aiohttp; creates the database when allowed to."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 10.0,
        create_database: bool = True,
    ) -> None:
        if username is not None and URL(url).user:
            # aiohttp refuses to combine both at the first request; say so at start-up.
            raise ValueError("give InfluxDB credentials either in the URL or as username")
        self._url = url.rstrip("/")
        self._database = database
        self._auth = (
            aiohttp.BasicAuth(username, password.get_secret_value() if password else "")
            if username is not None
            else None
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._create_database = create_database
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        if self._create_database:
            try:
                await self.create_database()
            except WriteError as exc:
                # Not fatal: the service spools until InfluxDB is back, and a write that
                # finds no database creates it then.
                log.warning("could not create database %r yet: %s", self._database, exc)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def describe(self) -> str:
        return f"{public_url(self._url)} (v1, database {self._database!r})"

    async def write(self, body: bytes) -> None:
        try:
            await self._post_write(body)
        except _DatabaseNotFound as exc:
            if not self._create_database:
                raise RetryableWriteError(
                    f"database {self._database!r} does not exist on {self.describe()}: "
                    f"create it (CREATE DATABASE {_quote_identifier(self._database)}) "
                    "or set influx.create_database: true",
                    status=404,
                ) from exc
            await self.create_database()
            try:
                await self._post_write(body)
            except _DatabaseNotFound as again:
                raise RetryableWriteError(
                    f"database {self._database!r} still missing on {self.describe()} "
                    "right after creating it",
                    status=404,
                ) from again

    async def create_database(self) -> None:
        """`CREATE DATABASE` (a no-op when it exists); raises RetryableWriteError on failure.

        Never RejectedWriteError: whatever stops the creation, the batch is not at fault.
        """
        query = f"CREATE DATABASE {_quote_identifier(self._database)}"
        status, text, retry_after = await self._post("/query", {"q": query}, None)
        failed = f"could not create database {self._database!r} on {self.describe()}"
        if status != 200:
            raise RetryableWriteError(
                f"{failed}: {status} {_error_text(text).strip()[:MESSAGE_MAX_CHARS]}",
                status=status,
                retry_after=parse_retry_after(retry_after),
            )
        # InfluxQL reports statement errors with 200 and an "error" per result.
        try:
            results = _json_results(text)
        except ValueError as exc:
            raise RetryableWriteError(f"{failed}: unreadable answer {text!r}") from exc
        errors = [str(result["error"]) for result in results if "error" in result]
        if errors:
            raise RetryableWriteError(f"{failed}: {'; '.join(errors)}")
        log.info("database %r exists on %s", self._database, public_url(self._url))

    async def ping(self) -> bool:
        session = self._require_session()
        try:
            async with session.get(f"{self._url}/ping") as response:
                return response.status == 204
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _post_write(self, body: bytes) -> None:
        params = {"db": self._database, "precision": "ns"}
        status, text, retry_after = await self._post("/write", params, body)
        if status == 204:
            return
        if status == 404 and "database not found" in text:
            raise _DatabaseNotFound(text)
        raise error_for_status(status, _error_text(text), self.describe(), retry_after)

    async def _post(
        self, path: str, params: dict[str, str], body: bytes | None
    ) -> tuple[int, str, str | None]:
        """POST and return the status, the body and the Retry-After header."""
        session = self._require_session()
        headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
        try:
            async with session.post(
                f"{self._url}{path}", params=params, data=body, headers=headers
            ) as response:
                text = await response.text(errors="replace")
                return response.status, text, response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise RetryableWriteError(f"{self.describe()}: no answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableWriteError(f"{self.describe()}: {exc or type(exc).__name__}") from exc

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("V1Writer used outside `async with`")
        return self._session


class _DatabaseNotFound(Exception):
    """A 404 "database not found" from `/write`; internal to V1Writer."""


def _json_results(text: str) -> list[dict[str, object]]:
    document = json.loads(text)
    results = document.get("results", []) if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise ValueError("no results")
    return [result for result in results if isinstance(result, dict)]


def _error_text(text: str) -> str:
    """The "error" of InfluxDB 1.x's JSON error body, or the body as it is."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return text
