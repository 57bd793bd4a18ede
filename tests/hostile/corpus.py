"""The hostile-input corpus (`corpus.yaml`): cases, their payloads and what Siaga must do."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

CORPUS_PATH = Path(__file__).with_name("corpus.yaml")
DEFAULT_TOPIC = "{prefix}/water-level/manggarai/telemetry"

Via = Literal["mqtt", "decoder", "not-subscribed", "broker-refuses-payload",
              "broker-refuses-topic"]
VIAS: frozenset[str] = frozenset(Via.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Letter:
    """An expected dead letter: its code and a part of its reason."""

    code: str
    reason: str


@dataclass(frozen=True)
class Stored:
    """An expected stored reading: its seq and its fields."""

    seq: int
    values: dict[str, float]


@dataclass(frozen=True)
class Case:
    name: str
    topic_template: bytes  # with `{prefix}` still in it; bytes: a topic may not be UTF-8
    payload: bytes
    via: Via
    dead: list[Letter] = field(default_factory=list)
    stored: list[Stored] = field(default_factory=list)

    def topic_bytes(self, prefix: str) -> bytes:
        return self.topic_template.replace(b"{prefix}", prefix.encode())

    def topic(self, prefix: str) -> str:
        """The topic as the subscriber hands it over; only for UTF-8 topics."""
        return self.topic_bytes(prefix).decode("utf-8")

    @property
    def topic_is_text(self) -> bool:
        try:
            self.topic_template.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True


@cache
def load_corpus(path: Path = CORPUS_PATH) -> tuple[Case, ...]:
    """The cases of `path`: the corpus, or another file in its format (`cameras.yaml`)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases = tuple(_case(entry) for entry in document["cases"])
    names = [case.name for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    assert not duplicates, f"corpus names used twice: {duplicates}"
    return cases


def cases_via(*vias: Via) -> list[Case]:
    return [case for case in load_corpus() if case.via in vias]


def _case(entry: dict[str, Any]) -> Case:
    unknown = entry.keys() - {"name", "topic", "topic_parts", "payload", "via", "dead", "stored"}
    assert not unknown, f"{entry.get('name')}: unknown keys {unknown}"
    via = entry.get("via", "mqtt")
    assert via in VIAS, f"{entry['name']}: via {via!r}"
    if "topic_parts" in entry:
        topic = b"".join(_parts(entry["topic_parts"]))
    else:
        topic = entry.get("topic", DEFAULT_TOPIC).encode("utf-8")
    return Case(
        name=entry["name"],
        topic_template=topic,
        payload=_payload(entry["payload"]),
        via=via,
        dead=list(_letters(entry.get("dead", []))),
        stored=list(_stored(entry.get("stored", []))),
    )


def _payload(spec: dict[str, Any]) -> bytes:
    [(form, value)] = spec.items()
    if form == "parts":
        return b"".join(_parts(value))
    if form == "json":
        return orjson.dumps(value)
    if form == "batch":
        return orjson.dumps(list(_batch(**value)))
    return _bytes(form, value)


def _parts(parts: list[dict[str, Any]]) -> Iterator[bytes]:
    for part in parts:
        times = part.get("times", 1)
        [(form, value)] = ((k, v) for k, v in part.items() if k != "times")
        yield _bytes(form, value) * times


def _bytes(form: str, value: str) -> bytes:
    if form == "text":
        return value.encode("utf-8")
    if form == "hex":
        return bytes.fromhex(value.replace(" ", ""))
    if form == "base64":
        return base64.b64decode(value)
    raise AssertionError(f"unknown payload form {form!r}")


def _batch(count: int, item: dict[str, Any], seq_from: int | None = None,
           ts_from: int | None = None) -> Iterator[dict[str, Any]]:
    for index in range(count):
        extra: dict[str, int] = {}
        if seq_from is not None:
            extra["seq"] = seq_from + index
        if ts_from is not None:
            extra["ts"] = ts_from + index
        yield {**item, **extra}


def _letters(entries: list[dict[str, Any]]) -> Iterator[Letter]:
    for entry in entries:
        repeat = entry.get("repeat")
        if repeat is None:
            yield Letter(entry["code"], entry["reason"])
        else:
            for index in range(repeat):
                yield Letter(entry["code"], entry["reason"].replace("{i}", str(index)))


def _stored(entries: list[dict[str, Any]]) -> Iterator[Stored]:
    for entry in entries:
        values = {k: float(v) for k, v in entry.items() if k not in ("seq", "seqs")}
        if "seqs" in entry:
            first, last = entry["seqs"]
            for seq in range(first, last + 1):
                yield Stored(seq, values)
        else:
            yield Stored(entry["seq"], values)
