"""The vendored front-end libraries (siaga/console/static/vendor/): exactly the files the
manifest names, each with its SHA-256, each library with its licence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import siaga

VENDOR = Path(siaga.__file__).parent / "console" / "static" / "vendor"
LICENCES = {"MIT", "BSD-2-Clause"}  # what the console may ship; others need a look first
NOT_LIBRARIES = {"MANIFEST.json", "README.md"}


def manifest() -> list[dict[str, Any]]:
    libraries: list[dict[str, Any]] = json.loads(
        (VENDOR / "MANIFEST.json").read_text(encoding="utf-8"))["libraries"]
    return libraries


def test_the_files_on_disk_are_exactly_those_of_the_manifest() -> None:
    listed = {path for library in manifest() for path in library["files"]}
    on_disk = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    assert on_disk - NOT_LIBRARIES == listed


@pytest.mark.parametrize("library", manifest(), ids=lambda library: library["name"])
def test_every_file_has_its_checksum(library: dict[str, Any]) -> None:
    for path, expected in library["files"].items():
        assert path.startswith(library["dir"] + "/"), path
        actual = hashlib.sha256((VENDOR / path).read_bytes()).hexdigest()
        assert actual == expected, f"{path} changed: vendor a release, never edit it here"


@pytest.mark.parametrize("library", manifest(), ids=lambda library: library["name"])
def test_every_library_is_pinned_and_carries_its_licence(library: dict[str, Any]) -> None:
    assert library["dir"] == f"{library['name']}-{library['version']}"
    assert library["tarball_integrity"].startswith("sha512-")
    assert library["spdx"] in LICENCES
    licence = (VENDOR / library["dir"] / "LICENSE").read_text(encoding="utf-8")
    wording = {"MIT": "MIT License", "BSD-2-Clause": "BSD 2-Clause License"}
    assert wording[library["spdx"]] in licence
