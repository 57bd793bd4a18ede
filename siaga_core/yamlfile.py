"""Reading YAML files with their line numbers: the data, and a node tree to place errors.

Two ways to read, one result. The fast path streams a top-level mapping through libyaml (PyYAML's
public `CSafeLoader`) one value at a time; anything unusual (no libyaml, a tab, a duplicate key,
a syntax error) goes the careful way, PyYAML's own loader, which reports every problem as a
`ConfigFileError` naming the line.
"""

import functools
from datetime import date
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.composer import Composer

from siaga_core.errors import ConfigFileError, Problem

# libyaml, as PyYAML's wheels ship it; without it every file takes the careful path.
LIBYAML: Final = bool(yaml.__with_libyaml__)

# A field path, as pydantic gives it: ('devices', 3, 'kind').
Loc = tuple[str | int, ...]
KEY_MARK: Final = "[key]"  # pydantic's last location part for an error in a mapping key


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


def read_yaml(path: Path) -> YamlDocument:
    """Parse `path` into a mapping; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(path, [Problem("file", "not found")]) from None
    except UnicodeDecodeError as exc:
        problem = Problem("file", f"not UTF-8 text (byte {exc.start})")
        raise ConfigFileError(path, [problem]) from None
    except OSError as exc:
        raise ConfigFileError(path, [Problem("file", f"cannot be read: {exc.strerror}")]) from None
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
            raise ConfigFileError(path, duplicates)
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigFileError(path, [_syntax_problem(exc)]) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigFileError(path, [_reader_problem(text, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(path, [Problem("YAML", str(exc))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        expected = "must be a mapping (key: value lines)"
        raise ConfigFileError(path, [Problem("top level", f"{expected}, not {yaml_type(data)}", 1)])
    return data, node


if LIBYAML:
    class _StreamLoader(yaml.CSafeLoader, Composer):
        """libyaml's parser (PyYAML's public CSafeLoader) under PyYAML's composer, so that
        `compose_node` takes one value at a time; the C parser's node methods still come first."""

        def __init__(self, text: str) -> None:
            yaml.CSafeLoader.__init__(self, text)
            Composer.__init__(self)


def _load_fast(text: str) -> dict[str, Any] | None:
    """A top-level mapping's data, composed one value (or list item) at a time; else None.

    libyaml parses, and no more than one catalog entry's nodes exist at once: a large
    catalog loads in a tenth of the time and memory. Anything unusual (no libyaml, not a
    mapping, a tab, a syntax error, a duplicate key) returns None, and `_compose` reports it.
    """
    # libyaml takes a tab after `key:` that PyYAML's own scanner refuses; the careful path
    # judges any file with a tab, as it did before the fast path (tests/hostile has the case).
    if not LIBYAML or "\t" in text:
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


def yaml_type(value: object) -> str:
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

def place(loc: Loc) -> str:
    """`('devices', 3, 'labels', 'Kota', '[key]')` -> `devices[3].labels.Kota`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == KEY_MARK:
            continue
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "top level"
