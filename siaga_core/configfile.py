"""Strict YAML configuration files: every problem reported with file, line, field and fix.

Loading is two passes, as in Alertmanager's `config.Load`: the YAML is composed into a node
tree (which knows line numbers) and constructed with the safe loader, then validated by a
strict pydantic model; optional semantic checks run on the valid model. Everything that
can go wrong becomes one `ConfigError` listing all problems found:

    ConfigError(path, problems)
      problems: [Problem(place, message, line)]
      str():    FILE:LINE: PLACE: MESSAGE   (one line per problem; no LINE when unknown)

Callers that merge other sources over the file (environment variables) pass `sources`,
which maps a field path to where its value came from, e.g. `environment SIAGA_HTTP_PORT`.
"""

import difflib
import functools
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from siaga_core.redaction import redact_userinfo

_CParser: Any
try:  # libyaml, as PyYAML's wheels ship it; without it every file takes the careful path
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _CParser = None

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
# A semantic check: yields (field path, message) for each problem in a valid model.
Check = Callable[[M], Iterable[tuple[Loc, str]]]

_KEY_MARK: Final = "[key]"  # pydantic's last location part for an error in a mapping key


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: where (`devices[3].kind`), what is expected, and the 1-based line."""

    place: str
    message: str
    line: int | None = None


class ConfigError(Exception):
    """A configuration file that cannot be used; `problems` lists every reason."""

    def __init__(self, path: Path | None, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem: `FILE:LINE: PLACE: MESSAGE`."""
        return "\n".join(render_problem(self.path, problem) for problem in self.problems)


def render_problem(path: Path | None, problem: Problem) -> str:
    """`FILE:LINE: PLACE: MESSAGE` (no LINE when unknown): errors and warnings alike."""
    where = "" if path is None else str(path)
    if problem.line is not None:
        where = f"{where}:{problem.line}"
    prefix = f"{where}: " if where else ""
    return f"{prefix}{problem.place}: {problem.message}"


class YamlDocument:
    """A parsed YAML file: its data, and the node tree that maps field paths to lines.

    The node tree is composed again from the text only when asked for (an error to place):
    for a 10,000-device catalog it weighs some 60 MB, the data a tenth of that.
    """

    def __init__(self, path: Path, data: dict[str, Any], text: str) -> None:
        self.path = path
        self.data = data
        self._text = text

    @functools.cached_property
    def node(self) -> yaml.Node | None:  # None for an empty file
        return _compose(self.path, self._text)[1]


def load_yaml(path: Path, model: type[M], check: Check[M] | None = None) -> M:
    """Read `path`, validate it as `model` and run `check`; raise `ConfigError` on any problem."""
    document = read_yaml(path)
    return validate_data(document.data, model, path, lambda: document.node, check=check)


def read_yaml(path: Path) -> YamlDocument:
    """Parse `path` into a mapping; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [Problem("file", "not found")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [Problem("file", f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError(path, [Problem("file", f"cannot be read: {exc.strerror}")]) from None
    data = _load_fast(text)
    if data is None:  # not the common shape, or something to report: the careful way
        data = _compose(path, text)[0]
    return YamlDocument(path, data, text)


def _compose(path: Path, text: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """The data and the whole node tree, with PyYAML's own loader; every problem raised."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # reads ahead: a forbidden character fails here
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise ConfigError(path, duplicates)
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(path, [_syntax_problem(exc)]) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(path, [_reader_problem(text, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [Problem("YAML", str(exc))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        expected = "must be a mapping (key: value lines)"
        raise ConfigError(path, [Problem("top level", f"{expected}, not {_yaml_type(data)}", 1)])
    return data, node


if _CParser is not None:
    class _StreamLoader(_CParser, Composer, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's parser under PyYAML's composer and constructor, one node at a time."""

        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


def _load_fast(text: str) -> dict[str, Any] | None:
    """A top-level mapping's data, composed one value (or list item) at a time; else None.

    libyaml parses, and no more than one catalog entry's nodes exist at once: a large
    catalog loads in a tenth of the time and memory. Anything unusual (no libyaml, not a
    mapping, a tab, a syntax error, a duplicate key) returns None, and `_compose` reports it.
    """
    # libyaml takes a tab after `key:` that PyYAML's own scanner refuses; the careful path
    # judges any file with a tab, as it did before the fast path (tests/hostile has the case).
    if _CParser is None or "\t" in text:
        return None
    loader = _StreamLoader(text)
    try:
        return _stream_mapping(loader)
    except (yaml.YAMLError, _Unusual):
        return None
    finally:
        loader.dispose()


class _Unusual(Exception):
    """The fast path declines: `_compose` deals with this file."""


def _stream_mapping(loader: Any) -> dict[str, Any]:
    _expect(loader, yaml.StreamStartEvent, yaml.DocumentStartEvent)
    top = loader.peek_event()
    if top.tag is not None or top.anchor is not None:  # a tagged top level: the careful path
        raise _Unusual
    _expect(loader, yaml.MappingStartEvent)
    data: dict[str, Any] = {}
    while not loader.check_event(yaml.MappingEndEvent):
        key = loader.compose_node(None, None)
        if not isinstance(key, yaml.ScalarNode) or key.value in data or key.tag.endswith(":merge"):
            raise _Unusual
        if loader.check_event(yaml.SequenceStartEvent) and not loader.peek_event().anchor:
            loader.get_event()
            items: list[Any] = []
            while not loader.check_event(yaml.SequenceEndEvent):
                items.append(_construct(loader, loader.compose_node(None, len(items))))
            loader.get_event()
            value: Any = items
        else:
            value = _construct(loader, loader.compose_node(None, None))
        data[loader.construct_object(key)] = value
    _expect(loader, yaml.MappingEndEvent, yaml.DocumentEndEvent, yaml.StreamEndEvent)
    return data


def _expect(loader: Any, *kinds: type[yaml.Event]) -> None:
    for kind in kinds:
        if not loader.check_event(kind):
            raise _Unusual
        loader.get_event()


def _construct(loader: Any, node: yaml.Node) -> Any:
    if _duplicate_keys(node):
        raise _Unusual
    return loader.construct_document(node)


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
    `ConfigError` with every problem found.
    """
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, path, _tree(node), sources, model) from None
    if check is not None:
        found = list(check(result))
        if found:
            tree = _tree(node)
            raise ConfigError(path, [locate(loc, message, tree, sources) for loc, message in found])
    return result


def _tree(node: yaml.Node | Callable[[], yaml.Node | None] | None) -> yaml.Node | None:
    return node() if callable(node) else node


def format_validation_error(
    exc: ValidationError,
    path: Path | None,
    node: yaml.Node | None = None,
    sources: Mapping[Loc, str] | None = None,
    model: type[BaseModel] | None = None,
) -> ConfigError:
    """Translate pydantic's errors into a `ConfigError`; `model` lets it list allowed keys."""
    problems = [
        locate(error["loc"], _expectation(error, model), node, sources,
               at_key=error["type"] == "extra_forbidden")
        for error in exc.errors(include_url=False)
    ]
    # Read top to bottom, as the file is; problems without a line (environment) go last.
    problems.sort(key=lambda problem: float("inf") if problem.line is None else problem.line)
    return ConfigError(path, problems)


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


def place(loc: Loc) -> str:
    """`('devices', 3, 'labels', 'Kota', '[key]')` -> `devices[3].labels.Kota`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == _KEY_MARK:
            continue
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "top level"


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
        wants_key = loc[index + 1 : index + 2] == (_KEY_MARK,)
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


def _duplicate_keys(root: yaml.Node | None) -> list[Problem]:
    # PyYAML keeps the last of duplicate keys silently; an operator editing a catalog
    # almost always meant one of them, so each duplicate is an error.
    problems: list[Problem] = []
    seen: set[int] = set()  # aliases can make the tree a graph, even a cycle
    pending: list[tuple[yaml.Node, Loc]] = [] if root is None else [(root, ())]
    while pending:
        node, loc = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend((child, (*loc, i)) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                pending.append((value_node, (*loc, str(key_node.value))))
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    message = f"duplicate key (first at line {first[key_node.value]})"
                    problems.append(Problem(place((*loc, key_node.value)), message, line))
                else:
                    first[key_node.value] = line
    return sorted(problems, key=lambda problem: problem.line or 0)


def _reader_problem(text: str, exc: yaml.reader.ReaderError) -> Problem:
    # A character YAML forbids anywhere (a NUL, a terminal escape pasted with colours).
    line = text.count("\n", 0, exc.position) + 1
    character = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return Problem("YAML", f"character {character!r} is not allowed in YAML: remove it", line)


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    text = exc.problem or exc.context or "syntax error"
    if mark is not None:
        text += f" (column {mark.column + 1})"
    if exc.problem and exc.context and exc.problem.startswith("but "):
        text = f"{exc.context}, {text}"  # "expected a single document, but found another"
    elif exc.problem and exc.context:
        # "while parsing a flow sequence": where the unfinished construct began.
        text += f", {exc.context}"
        if exc.context_mark is not None:
            text += f" that starts at line {exc.context_mark.line + 1}"
    return Problem("YAML syntax", text, None if mark is None else mark.line + 1)


def _expectation(error: ErrorDetails, model: type[BaseModel] | None) -> str:
    """What the value at the error's place must be, in an operator's words."""
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    loc = error["loc"]
    subject = "key " if loc[-1:] == (_KEY_MARK,) else ""
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return _unknown_key(str(loc[-1]), _allowed_keys(model, loc[:-1]))
    if kind in ("enum", "literal_error"):
        options = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {options} (got {_shown(value)})"
    if kind == "finite_number":
        return f"must be a finite number (got {_shown(value)})"
    if kind in _TYPE_NAMES:
        message = f"{subject}must be {_TYPE_NAMES[kind]}, not {_yaml_type(value)}"
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


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
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


def _yaml_type(value: object) -> str:
    if value is None:
        return "empty (null)"
    for kind, name in _YAML_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


# In this order: bool before int (a subclass), date covers datetime.
_YAML_TYPES: Final = (
    (bool, "true/false"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (date, "a date"),
    (list, "a list"),
    (dict, "a mapping"),
)


def _number(bound: object) -> str:
    # pydantic reports float bounds as 90.0; the file most likely says 90.
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def _shown(value: object) -> str:
    text = redact_userinfo(repr(value))  # a URL with a password must not reach a log
    return text if len(text) <= 60 else text[:57] + "..."
