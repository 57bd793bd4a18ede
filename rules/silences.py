"""Label matchers and silences, with Prometheus Alertmanager's semantics."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from siaga_core.errors import InputError

MatchOp = Literal["=", "!=", "=~", "!~"]
SilenceState = Literal["pending", "active", "expired"]

_OPS: tuple[MatchOp, ...] = get_args(MatchOp)
_OP_BY_TEXT: dict[str, MatchOp] = {op: op for op in _OPS}
# Prometheus label names: what receivers that understand Alertmanager accept.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Longer operators first in the alternation, so "=~" is never read as "=" plus "~...".
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r'\\([\\"])')


class SilenceError(InputError, ValueError):
    """A matcher or silence that cannot be: bad label name, operator, regex or times."""


class MatcherError(SilenceError):
    """A label matcher that cannot be built or parsed."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One condition on one label: `name op value`.

    As in Alertmanager, a missing label matches as the empty string, and a regex must match
    the whole value (`=~Flood` does not match `FloodWave`).
    """

    name: str
    value: str
    op: MatchOp = "="
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _LABEL_NAME.fullmatch(self.name):
            raise MatcherError(f"{self.name!r} is not a label name: use [a-zA-Z_][a-zA-Z0-9_]*")
        if self.op not in _OPS:
            raise MatcherError(f"{self.op!r} is not a matcher operator: use one of {_OPS}")
        if self.op in ("=~", "!~"):
            try:
                pattern = re.compile(self.value)
            except re.error as exc:
                raise MatcherError(f"{self.name}{self.op}{self.value!r}: bad regex: {exc}") from exc
            # A frozen dataclass: the compiled pattern is derived state, set once here.
            object.__setattr__(self, "_pattern", pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self._pattern is None:
            return (value == self.value) == (self.op == "=")
        return (self._pattern.fullmatch(value) is not None) == (self.op == "=~")

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """`alertname=~Flood.*`, `level!="siaga-3"`: a value may be quoted, with `\\"` inside."""
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise MatcherError(
            f"{text!r} is not a matcher: use name=value, name!=value, name=~regex or name!~regex"
        )
    name, op, value = found.groups()
    return Matcher(name, _unquote(value, text), _OP_BY_TEXT[op])


def _unquote(value: str, text: str) -> str:
    if not value.startswith('"'):
        return value
    quoted = _QUOTED.fullmatch(value)
    if quoted is None:
        raise MatcherError(f"{text!r}: a quoted value must end with an unescaped quote")
    # Only \" and \\ are escapes: regexes keep their own backslashes (`"\d+"` means \d+).
    return _ESCAPE.sub(r"\1", quoted.group(1))


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)


@dataclass(frozen=True, slots=True)
class Silence:
    """Suppresses notifications of the alerts its matchers select, from `starts_at` to `ends_at`.

    An expired silence is kept (operators see who silenced what, and why) but suppresses
    nothing.
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ns: int
    ends_at_ns: int
    created_by: str
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            raise SilenceError("a silence needs an id")
        if not self.matchers:
            raise SilenceError("a silence needs at least one matcher")
        # As in Alertmanager: matchers that all match the empty string would silence every
        # alert lacking those labels, which is almost always a mistake.
        if all(matcher.matches({}) for matcher in self.matchers):
            raise SilenceError("at least one matcher must not match the empty string")
        if self.ends_at_ns < self.starts_at_ns:
            raise SilenceError("a silence must not end before it starts")
        if not self.created_by.strip():
            raise SilenceError("a silence needs created_by: who silenced it")

    def state(self, now_ns: int) -> SilenceState:
        if now_ns < self.starts_at_ns:
            return "pending"
        return "active" if now_ns < self.ends_at_ns else "expired"

    def active(self, now_ns: int) -> bool:
        return self.state(now_ns) == "active"

    def expired(self, now_ns: int) -> bool:
        return self.state(now_ns) == "expired"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)


def silencing(
    silences: Iterable[Silence], labels: Mapping[str, str], now_ns: int
) -> Silence | None:
    """The first silence that is active at `now_ns` and matches `labels`, if any."""
    for silence in silences:
        if silence.active(now_ns) and silence.matches(labels):
            return silence
    return None
