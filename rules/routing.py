"""Receivers and routes: which operators hear about an alert, chosen by its labels."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from siaga_core.configfile import StrictModel
from siaga_core.durations import Duration
from siaga_core.yamlfile import Loc

DEFAULT_RECEIVER = "default"  # the name SIAGA_WEBHOOK_URL's receiver goes by (SPEC section 4)
DEFAULT_MAX_AGE = timedelta(hours=24)  # a day of retries outlasts any outage worth waiting for
MAX_TIMEOUT_S = 300.0  # one attempt longer than 5 minutes would stall an alert's later news

# Headers Siaga writes itself: a receiver's extra headers may not replace them.
RESERVED_HEADER_PREFIX = "x-siaga-"
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "user-agent"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # Prometheus label names



def http_url(url: str, example: str) -> str:
    """`url` when it is http(s) with a host (a receiver's or an Alertmanager's), else a
    ValueError whose message shows `example`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, e.g. {example}")
    return url

class Receiver(StrictModel):
    """One webhook endpoint (SPEC section 3) and how to talk to it."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")
    url: str
    secret: SecretStr | None = None  # signs each attempt (X-Siaga-Signature) when set
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    headers: dict[str, str] = Field(default_factory=dict)
    # Retried until a notification is this old; then it is dead, for operators to see.
    max_age: Duration = Field(default=DEFAULT_MAX_AGE)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return http_url(url, "https://bpbd.example/siaga")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            lowered = name.lower()
            if lowered.startswith(RESERVED_HEADER_PREFIX) or lowered in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Siaga and cannot be overridden")
            if any(ch in value for ch in "\r\n\x00"):
                raise ValueError(f"header {name!r}: a value must be one line")
        return headers

    @field_validator("max_age")
    @classmethod
    def _check_max_age(cls, max_age: timedelta) -> timedelta:
        if max_age <= timedelta(0):
            raise ValueError("must be longer than 0s, e.g. 24h")
        return max_age


class Route(StrictModel):
    """Receivers for the alerts whose labels match every matcher (none: every alert).

    `match` wants a label equal to a value; `match_re` wants it to match a regular
    expression as a whole (anchored, as in Alertmanager). A missing label counts as "".
    """

    receivers: list[str] = Field(min_length=1)
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)

    @field_validator("match", "match_re")
    @classmethod
    def _check_label_names(cls, matchers: dict[str, str]) -> dict[str, str]:
        for name in matchers:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a label name (letters, digits, _)")
        return matchers

    @field_validator("match_re")
    @classmethod
    def _check_regexes(cls, matchers: dict[str, str]) -> dict[str, str]:
        for name, pattern in matchers.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"{name}: {pattern!r} is not a regular expression: {exc}"
                raise ValueError(message) from None
        return matchers


def route_problems(
    receivers: Sequence[Receiver], routes: Sequence[Route]
) -> Iterator[tuple[Loc, str]]:
    """The semantic checks of a rules file's `receivers` and `routes` (field path, message)."""
    seen: dict[str, int] = {}
    for index, receiver in enumerate(receivers):
        if receiver.name in seen:
            first = seen[receiver.name]
            yield (("receivers", index, "name"),
                   f"duplicate receiver {receiver.name!r}: receivers[{first}] has it too")
        else:
            seen[receiver.name] = index
    for index, route in enumerate(routes):
        for position, name in enumerate(route.receivers):
            if name not in seen:
                known = ", ".join(sorted(seen)) or "none defined"
                yield (("routes", index, "receivers", position),
                       f"unknown receiver {name!r} (receivers: {known})")


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    receivers: tuple[str, ...]
    equal: tuple[tuple[str, str], ...]
    regex: tuple[tuple[str, re.Pattern[str]], ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name, "") == value for name, value in self.equal) and all(
            pattern.fullmatch(labels.get(name, "")) for name, pattern in self.regex
        )


def _compile(route: Route) -> _CompiledRoute:
    return _CompiledRoute(
        receivers=tuple(route.receivers),
        equal=tuple(route.match.items()),
        regex=tuple((name, re.compile(pattern)) for name, pattern in route.match_re.items()),
    )


class Router:
    """Picks the receivers of a notification from its labels.

    Unlike Alertmanager's routing tree, where the first matching route wins (unless it says
    `continue`), every matching route applies here: "floods to the disaster agency" and
    "everything critical to the monitoring room" both happen for a critical flood. A
    receiver named by several matching routes gets the notification once. The receiver of
    `extra_receiver_url` (SIAGA_WEBHOOK_URL), named `default`, gets every notification.
    """

    def __init__(
        self,
        receivers: Iterable[Receiver],
        routes: Iterable[Route],
        extra_receiver_url: str | None = None,
    ) -> None:
        self._receivers: dict[str, Receiver] = {}
        for receiver in receivers:
            if receiver.name in self._receivers:
                raise ValueError(f"duplicate receiver {receiver.name!r}")
            self._receivers[receiver.name] = receiver
        self._routes = [_compile(route) for route in routes]
        for route in self._routes:
            unknown = [name for name in route.receivers if name not in self._receivers]
            if unknown:
                raise ValueError(f"a route names unknown receivers: {', '.join(unknown)}")
        self._extra: Receiver | None = None
        if extra_receiver_url is not None:
            if DEFAULT_RECEIVER in self._receivers:
                raise ValueError(f"SIAGA_WEBHOOK_URL adds a receiver named {DEFAULT_RECEIVER!r}, "
                                 "and the rules file already has one: rename it")
            self._extra = Receiver(name=DEFAULT_RECEIVER, url=extra_receiver_url)
            self._receivers[DEFAULT_RECEIVER] = self._extra

    @property
    def receivers(self) -> Mapping[str, Receiver]:
        """Every receiver by name, the `default` one included."""
        return dict(self._receivers)

    def receiver(self, name: str) -> Receiver | None:
        return self._receivers.get(name)

    def receivers_for(self, labels: Mapping[str, str], also: Collection[str] = ()
                      ) -> list[Receiver]:
        """The receivers of every matching route, each once, in the order routes name them;
        then those named in `also` (told of the alert before) that are still configured (a
        reload may have removed one)."""
        chosen: dict[str, Receiver] = {}
        for route in self._routes:
            if route.matches(labels):
                for name in route.receivers:
                    chosen.setdefault(name, self._receivers[name])
        for name in sorted(also):
            receiver = self._receivers.get(name)
            if receiver is not None and receiver is not self._extra:  # which comes last
                chosen.setdefault(name, receiver)
        if self._extra is not None:
            chosen.setdefault(self._extra.name, self._extra)
        return list(chosen.values())
