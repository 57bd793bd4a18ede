"""Configuration files with every kind of mistake: each error names the file, line and place.

One table over the three files an operator writes (the settings, the device catalog, the
rules). The generic loader has its own tests (tests/devices/test_configfile.py); this
table holds each real loader to the same promise, mistake by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devices.registry import bundled_catalog_path, load_catalog
from rules.config import load_rules
from siaga.settings import load_settings
from siaga_core.errors import ConfigFileError

REGISTRY = load_catalog(bundled_catalog_path())
LOADERS: dict[str, Callable[[Path], object]] = {
    "settings": lambda path: load_settings(path, environ={}),
    "catalog": load_catalog,
    "rules": lambda path: load_rules(path, REGISTRY),
}
DEVICE = "devices:\n  - id: a\n    kind: traffic\n    name: A\n    lat: -6.2\n    lon: 106.8\n"


@dataclass(frozen=True)
class Mistake:
    file: str  # which loader: settings, catalog or rules
    name: str
    content: bytes | None  # None: the path is a directory
    # Each problem: (line or None, place, a part of the message).
    problems: tuple[tuple[int | None, str, str], ...]

    @property
    def id(self) -> str:
        return f"{self.file}-{self.name}"


def _m(file: str, name: str, text: str | bytes | None,
       *problems: tuple[int | None, str, str]) -> Mistake:
    content = text.encode() if isinstance(text, str) else text
    return Mistake(file, name, content, problems)


TAB = "found character '\\t' that cannot start any token"
MISTAKES = [
    # Tabs: YAML indents with spaces only.
    _m("settings", "tab-indentation", "mqtt:\n\turl: mqtt://x:1883\n",
       (2, "YAML syntax", f"{TAB} (column 1)")),
    _m("settings", "tab-after-a-colon", "http:\n  port:\t8080\n",
       (2, "YAML syntax", f"{TAB} (column 8)")),
    _m("catalog", "tab-indentation", "devices:\n  - id: a\n\tkind: traffic\n",
       (3, "YAML syntax", f"{TAB} (column 1)")),
    _m("rules", "tab-indentation", "rules:\n\t- name: X\n",
       (2, "YAML syntax", f"{TAB} (column 1)")),
    # Wrong indentation.
    _m("settings", "a-key-indented-too-deep", "mqtt:\n  url: mqtt://x:1883\n    client_id: a\n",
       (3, "YAML syntax", "mapping values are not allowed here (column 14)")),
    _m("settings", "a-key-indented-too-shallow", "mqtt:\n  url: mqtt://x:1883\n client_id: a\n",
       (3, "YAML syntax", "expected <block end>, but found '<block mapping start>' (column 2)")),
    _m("catalog", "a-key-indented-too-deep",
       "devices:\n  - id: a\n    kind: traffic\n     name: A\n",
       (4, "YAML syntax", "mapping values are not allowed here (column 10)")),
    _m("rules", "a-key-indented-too-shallow",
       "rules:\n  - name: X\n    type: ladder\n   kind: water-level\n",
       (4, "YAML syntax", "while parsing a block collection that starts at line 2")),
    _m("rules", "a-key-dedented-to-the-top-level",
       "rules: []\noffline:\n  grace_factor: 2\ncheck_every: 30s\n",
       (4, "check_every", "expected one of rules, offline, alerting, receivers, routes")),
    # A list where a mapping belongs, and the other way round.
    _m("settings", "a-list-where-a-mapping-belongs", "mqtt:\n  - url: mqtt://x:1883\n",
       (2, "mqtt", "must be a mapping (key: value), not a list")),
    _m("settings", "a-scalar-where-a-mapping-belongs", "influx: v2\n",
       (1, "influx", "must be a mapping (key: value), not a string")),
    _m("catalog", "a-list-where-a-device-belongs", "devices:\n  - - id: a\n",
       (2, "devices[0]", "must be a mapping (key: value), not a list")),
    _m("catalog", "a-list-where-labels-belong", DEVICE + "    labels:\n      - kota\n",
       (8, "devices[0].labels", "must be a mapping (key: value), not a list")),
    _m("catalog", "a-mapping-where-the-device-list-belongs", "devices:\n  id: a\n",
       (2, "devices", "must be a list (- item lines), not a mapping")),
    _m("rules", "a-list-where-a-mapping-belongs", "rules: []\noffline:\n  - grace_factor: 2\n",
       (3, "offline", "must be a mapping (key: value), not a list")),
    _m("rules", "a-mapping-where-the-rule-list-belongs", "rules:\n  name: X\n",
       (2, "rules", "must be a list (- item lines), not a mapping")),
    # Unknown top-level keys, with the allowed ones.
    _m("settings", "an-unknown-top-level-key", "mqt: {url: 'mqtt://x'}\n",
       (1, "mqt", "unknown key (did you mean mqtt? expected one of mqtt, influx, ingest")),
    _m("catalog", "an-unknown-top-level-key", "devices: []\ngateways: []\n",
       (2, "gateways", "unknown key (expected one of devices)")),
    _m("rules", "an-unknown-top-level-key", "rules: []\nreceiver: []\n",
       (2, "receiver", "unknown key (did you mean receivers?")),
    # Duplicate keys: YAML parsers keep the last silently; Siaga refuses.
    _m("settings", "a-duplicate-key", "http:\n  port: 80\n  host: x\n  port: 81\n",
       (4, "http.port", "duplicate key (first at line 2)")),
    _m("catalog", "a-duplicate-key", DEVICE + "    name: B\n",
       (7, "devices[0].name", "duplicate key (first at line 4)")),
    _m("rules", "a-duplicate-key", "rules: []\noffline: {}\nrules: []\n",
       (3, "rules", "duplicate key (first at line 1)")),
    # Values YAML reads differently from what was meant.
    _m("settings", "a-word-where-a-number-belongs", "http:\n  port: eighty\n",
       (2, "http.port", "must be an integer, not a string")),
    _m("rules", "yes-read-as-true", "rules: []\nreceivers:\n  - name: yes\n    url: http://x\n",
       (3, "receivers[0].name", "must be a string, not true/false (put it in quotes)")),
    # Broken syntax.
    _m("settings", "an-unclosed-quote", 'data_dir: "state\nhttp: {port: 1}\n',
       (3, "YAML syntax", "while scanning a quoted scalar that starts at line 1")),
    _m("catalog", "an-unclosed-bracket", "devices: [\n",
       (2, "YAML syntax", "expected the node content, but found '<stream end>'")),
    # Not a mapping at all.
    _m("settings", "a-list-at-the-top", "- mqtt\n",
       (1, "top level", "must be a mapping (key: value lines), not a list")),
    _m("catalog", "a-string-at-the-top", "devices\n",
       (1, "top level", "must be a mapping (key: value lines), not a string")),
    _m("rules", "a-list-at-the-top", "- name: X\n",
       (1, "top level", "must be a mapping (key: value lines), not a list")),
    # The file itself. No line to name: the place is the file, or the byte.
    _m("settings", "a-file-that-is-not-utf8", b"data_dir: caf\xe9\n",
       (None, "file", "not UTF-8 text (byte 13)")),
    _m("catalog", "a-file-in-utf16", "devices: []\n".encode("utf-16"),
       (None, "file", "not UTF-8 text (byte 0)")),
    _m("rules", "a-file-that-is-not-utf8", b"rules: []\n# \xff\n",
       (None, "file", "not UTF-8 text (byte 12)")),
    _m("settings", "a-directory", None, (None, "file", "cannot be read: Is a directory")),
    _m("catalog", "a-directory", None, (None, "file", "cannot be read: Is a directory")),
    _m("rules", "a-directory", None, (None, "file", "cannot be read: Is a directory")),
    _m("catalog", "an-empty-file", "", (None, "devices", "required, but missing")),
]


def write(tmp_path: Path, mistake: Mistake) -> Path:
    path = tmp_path / f"{mistake.file}.yaml"
    if mistake.content is None:
        path.mkdir()
    else:
        path.write_bytes(mistake.content)
    return path


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda mistake: mistake.id)
def test_a_mistake_is_reported_with_the_file_the_line_and_the_place(
    tmp_path: Path, mistake: Mistake
) -> None:
    path = write(tmp_path, mistake)
    with pytest.raises(ConfigFileError) as caught:
        LOADERS[mistake.file](path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(mistake.problems), lines
    for rendered, (line, place, message) in zip(lines, mistake.problems, strict=True):
        where = f"{path}:{line}" if line is not None else str(path)
        assert rendered.startswith(f"{where}: {place}: "), rendered
        assert message in rendered, rendered


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("settings", ""),
        ("settings", "# only a comment\n"),
        ("rules", ""),
        ("settings", "http:\r\n  port: 8081\r\n"),  # Windows line ends
        ("settings", "\ufeffhttp:\n  port: 8081\n"),  # a byte order mark, as Notepad writes
        ("catalog", "\ufeff" + DEVICE.replace("\n", "\r\n")),
    ],
)
def test_harmless_oddities_load(tmp_path: Path, file: str, text: str) -> None:
    path = tmp_path / f"{file}.yaml"
    path.write_text(text, encoding="utf-8")
    LOADERS[file](path)  # an empty settings or rules file means every default


@pytest.mark.parametrize("file", sorted(LOADERS))
@pytest.mark.parametrize("character", ["\x00", "\x1b", "\ufffe"])
def test_a_character_yaml_forbids_is_named_with_its_line(
    tmp_path: Path, file: str, character: str
) -> None:
    path = tmp_path / f"{file}.yaml"
    # An escape sequence pasted from a coloured terminal, a stray NUL, a noncharacter.
    path.write_text(f"# {file}\n# pasted: {character}[31mred\n", encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        LOADERS[file](path)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_an_unknown_key_with_a_block_value_is_placed_at_the_key(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("mqt:\n  url: mqtt://x\n", encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"{path}:1: mqt: unknown key")
