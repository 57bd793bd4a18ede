"""`--log-format json`: one JSON object a line, with the text log's fields.

The formatter is tested on records made here; the option through the real command in a
child process (`python -m siaga`), on errors that need no server. The running service's
JSON log is tests/integration/test_json_log.py."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import orjson

from siaga.cli.logformat import TEXT_FORMAT, JsonFormatter, make_handler
from tests.siaga.test_cli_errors import siaga

JAKARTA = timezone(timedelta(hours=7))
CREATED = datetime(2024, 1, 31, 11, 0, 0, 123456, tzinfo=UTC).timestamp()
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def record(message: str = "stored %d readings", *args: object, level: int = logging.INFO,
           extra: dict[str, Any] | None = None, exc: bool = False) -> logging.LogRecord:
    """A record as `logging.getLogger("ingest.pipeline").log(...)` makes it."""
    exc_info = None
    if exc:
        try:
            raise ValueError("broken reading")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.getLogger("ingest.pipeline").makeRecord(
        "ingest.pipeline", level, "pipeline.py", 1, message, args, exc_info, extra=extra)
    made.created = CREATED
    return made


def formatted(made: logging.LogRecord, tz: tzinfo = JAKARTA) -> dict[str, Any]:
    line = JsonFormatter(tz).format(made)
    assert "\n" not in line
    entry: dict[str, Any] = orjson.loads(line)
    return entry


def test_a_record_is_one_object_with_the_text_logs_fields() -> None:
    assert formatted(record("stored %d readings", 5000)) == {
        "time": "2024-01-31T18:00:00.123+07:00", "level": "INFO",
        "logger": "ingest.pipeline", "message": "stored 5000 readings"}


def test_the_time_is_the_same_moment_in_any_zone() -> None:
    assert formatted(record(), UTC)["time"] == "2024-01-31T11:00:00.123+00:00"


def test_the_time_is_rfc3339_with_milliseconds_and_the_local_offset_by_default() -> None:
    line = orjson.loads(JsonFormatter().format(record()))
    assert RFC3339_MS.match(line["time"]), line["time"]
    assert abs(datetime.fromisoformat(line["time"]).timestamp() - CREATED) < 0.001


def test_an_exception_comes_as_its_traceback_text() -> None:
    entry = formatted(record("write failed", level=logging.ERROR, exc=True))
    assert entry["level"] == "ERROR"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: broken reading")


def test_a_multi_line_message_stays_on_one_line() -> None:
    assert formatted(record("configuration error:\nsiaga.yaml:3: mqtt.url"))["message"] == \
        "configuration error:\nsiaga.yaml:3: mqtt.url"


def test_extra_fields_come_as_fields_of_their_own() -> None:
    entry = formatted(record(extra={"device_id": "pa-manggarai", "readings": 3,
                                    "labels": {"zone": "north"}}))
    assert entry["device_id"] == "pa-manggarai"
    assert entry["readings"] == 3
    assert entry["labels"] == {"zone": "north"}


def test_an_extra_named_like_a_field_does_not_replace_it() -> None:
    entry = formatted(record(extra={"time": "yesterday", "level": 3}))
    assert entry["time"] == "2024-01-31T18:00:00.123+07:00"
    assert (entry["level"], entry["extra_time"], entry["extra_level"]) == ("INFO", "yesterday", 3)


def test_a_value_json_cannot_hold_comes_as_text() -> None:
    entry = formatted(record(extra={"path": Path("/var/lib/siaga"), "huge": 2**70,
                                    "keyed": {(1, 2): "pair"}}))
    assert entry["path"] == "/var/lib/siaga"
    assert entry["huge"] == str(2**70)
    assert entry["keyed"] == "{(1, 2): 'pair'}"


def test_a_message_whose_arguments_do_not_fit_still_makes_one_json_line() -> None:
    entry = formatted(record("stored %d readings from %s", "many"))
    assert entry["message"] == ("stored %d readings from %s (arguments that do not fit: "
                                "('many',))")


def test_an_extra_that_cannot_be_shown_still_makes_one_json_line() -> None:
    class Unshowable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    entry = formatted(record(extra={"thing": Unshowable()}))
    assert entry["thing"] == "<Unshowable that cannot be shown>"
    assert entry["message"] == "stored %d readings"


def test_the_text_handler_keeps_the_text_format() -> None:
    handler = make_handler("text")
    assert handler.formatter is not None and handler.formatter._fmt == TEXT_FORMAT
    assert isinstance(make_handler("json").formatter, JsonFormatter)


def lines(stderr: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stderr.splitlines()]


def test_a_configuration_error_is_a_json_line(tmp_path: Path) -> None:
    result = siaga(tmp_path, "run", "--log-format", "json", "-c", "missing.yaml")
    assert result.code == 1
    (entry,) = lines(result.stderr)
    assert (entry["level"], entry["logger"]) == ("ERROR", "siaga")
    assert entry["message"].startswith("configuration error:\n")
    assert "missing.yaml" in entry["message"]


def test_the_option_also_goes_before_the_command(tmp_path: Path) -> None:
    result = siaga(tmp_path, "--log-format", "json", "run", "-c", "missing.yaml")
    assert result.code == 1
    assert lines(result.stderr)[0]["message"].startswith("configuration error:")


def test_without_the_option_the_error_stays_text(tmp_path: Path) -> None:
    result = siaga(tmp_path, "run", "-c", "missing.yaml")
    assert result.code == 1
    assert result.stderr.startswith("siaga: configuration error:\n")


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    result = siaga(tmp_path, "run", "--log-format", "xml")
    assert result.code == 2
    assert "invalid choice: 'xml'" in result.stderr
