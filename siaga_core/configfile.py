"""Strict YAML configuration files: every problem reported with file, line, field and fix.

Loading is two passes, as in Alertmanager's `config.Load`: the YAML is composed into a node
tree (which knows line numbers) and constructed with the safe loader, then validated by a
strict pydantic model; optional semantic checks run on the valid model. Everything that
can go wrong becomes one `ConfigFileError` listing all problems found:

    ConfigFileError(path, problems)
      problems: [Problem(place, message, line)]
      str():    FILE:LINE: PLACE: MESSAGE   (one line per problem; no LINE when unknown)

Callers that merge other sources over the file (environment variables) pass `sources`,
which maps a field path to where its value came from, e.g. `environment SIAGA_HTTP_PORT`.
"""

import difflib
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Final, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from siaga_core.errors import ConfigFileError, Problem
from siaga_core.redaction import redact_userinfo
from siaga_core.yamlfile import KEY_MARK, Loc, place, read_yaml, yaml_type


class StrictModel(BaseModel):
    """A configuration section: strict types, frozen, and an unknown key is an error, so a typo
    is reported (with the closest key) instead of silently ignored."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


M = TypeVar("M", bound=BaseModel)
# A semantic check: yields (field path, message) for each problem in a valid model.
Check = Callable[[M], Iterable[tuple[Loc, str]]]


def load_yaml(path: Path, model: type[M], check: Check[M] | None = None) -> M:
    """Read `path`, validate it as `model` and run `check`; raise `ConfigFileError` if any."""
    document = read_yaml(path)
    return validate_data(document.data, model, path, lambda: document.node, check=check)


def validate_data(
    data: object,
    model: type[M],
    path: Path | None,
    node: yaml.Node | Callable[[], yaml.Node | None] | None = None,
    sources: Mapping[Loc, str] | None = None,
    check: Check[M] | None = None,
) -> M:
    """Validate `data` (from `read_yaml`, perhaps with overrides merged in) as `model`.

    `node` gives line numbers (or a function giving it, called only to place an error);
    `sources` names where overriding values came from, by field path. Raises
    `ConfigFileError` with every problem found.
    """
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, path, _tree(node), sources, model) from None
    if check is not None:
        found = list(check(result))
        if found:
            tree = _tree(node)
            problems = [locate(loc, message, tree, sources) for loc, message in found]
            raise ConfigFileError(path, problems)
    return result


def _tree(node: yaml.Node | Callable[[], yaml.Node | None] | None) -> yaml.Node | None:
    return node() if callable(node) else node


def format_validation_error(
    exc: ValidationError,
    path: Path | None,
    node: yaml.Node | None = None,
    sources: Mapping[Loc, str] | None = None,
    model: type[BaseModel] | None = None,
) -> ConfigFileError:
    """Translate pydantic's errors into a `ConfigFileError`; `model` lets it list allowed keys."""
    problems = [
        locate(error["loc"], _expectation(error, model), node, sources,
               at_key=error["type"] == "extra_forbidden")
        for error in exc.errors(include_url=False)
    ]
    # Read top to bottom, as the file is; problems without a line (environment) go last.
    problems.sort(key=lambda problem: float("inf") if problem.line is None else problem.line)
    return ConfigFileError(path, problems)


def locate(
    loc: Loc,
    message: str,
    node: yaml.Node | None = None,
    sources: Mapping[Loc, str] | None = None,
    *,
    at_key: bool = False,
) -> Problem:
    """A `Problem` for field path `loc`, placed at its line or at the source it came from."""
    if sources:
        for length in range(len(loc), 0, -1):
            source = sources.get(loc[:length])
            if source is not None:
                return Problem(source, message)
    line = None if node is None else line_of(node, loc, at_key=at_key)
    return Problem(place(loc), message, line)


def line_of(node: yaml.Node, loc: Loc, *, at_key: bool = False) -> int:
    """The 1-based line of the deepest node on `loc` (a missing field: its parent's line).

    `at_key`: the key's own line, for problems with the key itself (an unknown key whose
    value is a block starts on the line below it)."""
    current, key_of_current = node, None
    for index, part in enumerate(loc):
        entry = _entry(current, part)
        if entry is None:
            break
        key_node, value_node = entry
        # An error in a mapping key (`labels.Kota.[key]`) belongs on the key's line.
        wants_key = loc[index + 1 : index + 2] == (KEY_MARK,)
        current = key_node if wants_key and key_node is not None else value_node
        key_of_current = key_node
    if at_key and key_of_current is not None:
        return key_of_current.start_mark.line + 1
    return current.start_mark.line + 1


def _entry(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        found = None
        for key_node, value_node in node.value:
            # The last one wins, as in the constructed dict.
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                found = (key_node, value_node)
        return found
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]  # pydantic indices are never negative
    return None


def _expectation(error: ErrorDetails, model: type[BaseModel] | None) -> str:
    """What the value at the error's place must be, in an operator's words."""
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    loc = error["loc"]
    subject = "key " if loc[-1:] == (KEY_MARK,) else ""
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), _allowed_keys(model, loc[:-1]))
    if kind in ("enum", "literal_error"):
        options = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {options} (got {_shown(value)})"
    if kind == "finite_number":
        return f"must be a finite number (got {_shown(value)})"
    if kind in _TYPE_NAMES:
        message = f"{subject}must be {_TYPE_NAMES[kind]}, not {yaml_type(value)}"
        if kind == "string_type" and isinstance(value, bool | int | float | date):
            message += " (put it in quotes)"  # YAML read `yes`, `007` or `2024-01-31`
        return message
    if kind in _BOUND_WORDS:
        word, key = _BOUND_WORDS[kind]
        return f"{subject}must be {word} {_number(ctx[key])} (got {_shown(value)})"
    if kind == "string_pattern_mismatch":
        return f"{subject}must match {ctx['pattern']} (got {_shown(value)})"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return f"{subject}must not be empty"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} items"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    message = error["msg"]
    return f"{subject}{message[:1].lower()}{message[1:]}"


# Error type -> what the value must be.
_TYPE_NAMES: Final = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "list_type": "a list (- item lines)",
}
# Error type -> (comparison, ctx key of the bound).
_BOUND_WORDS: Final = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def unknown_key(key: str, allowed: Sequence[str]) -> str:
    """The message for a key no model field takes, with the closest allowed one."""
    if not allowed:
        return "unknown key: remove it"
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown key ({hint}expected one of {', '.join(allowed)})"


def _allowed_keys(model: type[BaseModel] | None, loc: Loc) -> list[str]:
    """The keys the model accepts at `loc`, found by walking its field annotations."""
    target: Any = model
    for part in loc:
        target = _unwrap(target)
        if isinstance(target, type) and issubclass(target, BaseModel):
            fields = {field.alias or name: field for name, field in target.model_fields.items()}
            if part not in fields:
                return []
            target = fields[str(part)].annotation
        elif get_origin(target) in (list, tuple, Sequence) and isinstance(part, int):
            target = get_args(target)[0]
        elif get_origin(target) in (dict, Mapping) and isinstance(part, str):
            target = get_args(target)[1]
        else:
            return []
    target = _unwrap(target)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return [field.alias or name for name, field in target.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    # `X | None` -> X, so the walk goes through optional sections.
    if get_origin(annotation) in (Union, types.UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            return options[0]
    return annotation


def _number(bound: object) -> str:
    # pydantic reports float bounds as 90.0; the file most likely says 90.
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def _shown(value: object) -> str:
    text = redact_userinfo(repr(value))  # a URL with a password must not reach a log
    return text if len(text) <= 60 else text[:57] + "..."
