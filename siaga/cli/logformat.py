"""The command's log lines: text for a terminal, or one JSON object a line for log shippers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal

import orjson

LogFormat = Literal["text", "json"]
FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# What every LogRecord carries, so that the rest is what a call passed in `extra=`. Read off
# a record rather than listed, as Python versions add attributes (3.12: taskName).
# `message` and `asctime` are set on the record by Formatter.format (another handler's).
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `time` (RFC 3339, milliseconds, with its offset),
    `level`, `logger`, `message`, then `exc_info` and `stack_info` as text when there
    are some, then the record's `extra=` fields (an extra named like one of those
    comes as `extra_<name>`; a value JSON cannot hold comes as its str()).

    `tz`: the offset written (default: the machine's, as the text log's time)."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        super().__init__()
        self._tz = tz

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:  # a record formatted elsewhere keeps only the text
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                entry["extra_" + key if key in entry else key] = value
        return _dumps(entry)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).astimezone(self._tz)
        return moment.isoformat(timespec="milliseconds")


def _message(record: logging.LogRecord) -> str:
    # A call whose arguments do not fit its format (a bug elsewhere) still gives a line.
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        return f"{record.msg!s} (arguments that do not fit: {record.args!r})"


def _dumps(entry: dict[str, Any]) -> str:
    # A formatter that raises makes logging print its own multi-line complaint to stderr,
    # which a shipper expecting JSON lines would choke on: anything else becomes text.
    try:
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits, a dict keyed by tuples
        return orjson.dumps({key: value if isinstance(value, str) else _text(value)
                             for key, value in entry.items()}).decode()


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:  # an extra's own __str__ failing must not lose the line
        return f"<{type(value).__name__} that cannot be shown>"


def make_handler(log_format: LogFormat) -> logging.Handler:
    """A handler writing to stderr in `log_format`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter(TEXT_FORMAT))
    return handler
