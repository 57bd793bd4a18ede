"""The console's own front-end code keeps the XSS and CSP discipline of plan section 6: no
HTML strings, no code from strings, no inline styles, nothing from another origin, and every
module parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from siaga.console.page import STATIC

OURS_JS = sorted((STATIC / "js").glob("*.js"))
INDEX = STATIC / "index.html"
# What must never appear in our JavaScript (the vendored libraries are checked by checksum).
FORBIDDEN_JS = {
    "innerHTML": re.compile(r"innerHTML"),
    "outerHTML": re.compile(r"outerHTML"),
    "insertAdjacentHTML": re.compile(r"insertAdjacentHTML"),
    "document.write": re.compile(r"document\s*\.\s*write"),
    "eval(": re.compile(r"\beval\s*\("),
    "new Function": re.compile(r"new\s+Function\b"),
    "cssText": re.compile(r"cssText"),
    "setAttribute('style'": re.compile(r"""setAttribute\(\s*['"`]style['"`]"""),
    "an http(s) URL": re.compile(r"https?://", re.IGNORECASE),
    "a string timer": re.compile(r"set(?:Timeout|Interval)\(\s*['\"`]"),
    # Leaflet's sinks that take an HTML string (popups, tooltips, a divIcon's html given as
    # text): the page builds DOM nodes, and has no popups at all.
    "Leaflet's HTML sinks": re.compile(r"\b(?:bindPopup|bindTooltip|setContent|openPopup)\b"
                                        r"|html\s*:\s*['\"`]"),
}
FORBIDDEN_HTML = {
    "an inline script": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE),
    "a style attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "a style element": re.compile(r"<style\b", re.IGNORECASE),
    "an event handler attribute": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "a javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "an http(s) URL": re.compile(r"https?://", re.IGNORECASE),
}


def test_the_modules_the_plan_lists_are_there() -> None:
    names = {path.stem for path in OURS_JS}
    assert names == {"main", "stream", "map", "shapes", "reports", "devicelist", "alerts",
                     "device", "history", "auth", "i18n", "time", "dom"}


@pytest.mark.parametrize("path", OURS_JS, ids=lambda path: path.name)
def test_our_javascript_builds_no_html_and_runs_no_strings(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    found = [name for name, pattern in FORBIDDEN_JS.items() if pattern.search(source)]
    assert found == [], f"{path.name}: {found}"


def test_the_lint_itself_catches_what_it_names() -> None:
    samples = {
        "innerHTML": "node.innerHTML = x", "outerHTML": "a.outerHTML",
        "insertAdjacentHTML": "n.insertAdjacentHTML('beforeend', s)",
        "document.write": "document.write(s)", "eval(": "eval (s)",
        "new Function": "new Function('a', s)", "cssText": "n.style.cssText = s",
        "setAttribute('style'": 'n.setAttribute("style", s)',
        "an http(s) URL": "fetch('https://cdn.example/x.js')",
        "a string timer": "setTimeout('go()', 1)",
        "Leaflet's HTML sinks": "L.divIcon({ html: `<b>${name}</b>` })",
    }
    for sink in ("marker.bindPopup(name)", "m.bindTooltip(s)", "popup.setContent(s)"):
        assert FORBIDDEN_JS["Leaflet's HTML sinks"].search(sink), sink
    assert samples.keys() == FORBIDDEN_JS.keys()
    for name, sample in samples.items():
        assert FORBIDDEN_JS[name].search(sample), name
    assert FORBIDDEN_HTML["an inline script"].search("<script>alert(1)</script>")
    assert not FORBIDDEN_HTML["an inline script"].search('<script src="/a.js"></script>')
    assert FORBIDDEN_HTML["an event handler attribute"].search('<img onerror="x">')


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    html = INDEX.read_text(encoding="utf-8")
    found = [name for name, pattern in FORBIDDEN_HTML.items() if pattern.search(html)]
    assert found == []


def test_the_page_loads_only_local_files() -> None:
    html = INDEX.read_text(encoding="utf-8")
    references = re.findall(r"""\b(?:src|href)="([^"]+)\"""", html)
    assert references
    for reference in references:
        assert reference.startswith("/console/static/"), reference
        assert (STATIC / reference.removeprefix("/console/static/")).is_file(), reference


def test_module_imports_name_files_that_exist() -> None:
    for path in OURS_JS:
        source = path.read_text(encoding="utf-8")
        for target in re.findall(r"""(?:from|import)\s*\(?\s*['"](\.{1,2}/[^'"]+)['"]""", source):
            assert (path.parent / target).resolve().is_file(), f"{path.name} imports {target}"
        for name in re.findall(r"""\bimport\(\s*([A-Z_]+)\s*\)""", source):
            constant = re.search(rf"""const {name} = ['"]([^'"]+)['"]""", source)
            assert constant, f"{path.name}: import({name}) of an unknown constant"
            assert (path.parent / constant.group(1)).resolve().is_file(), constant.group(1)


def test_every_module_parses(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to parse the console's modules: apt-get install nodejs")
    for path in OURS_JS:
        # As .mjs: node --check reads a .js file as CommonJS and then accepts what it cannot
        # parse as module code (checked with node 20).
        copy = tmp_path / f"{path.stem}.mjs"
        copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True,
                                check=False, timeout=60)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_the_parse_check_would_catch_a_syntax_error(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed: apt-get install nodejs")
    broken = tmp_path / "broken.mjs"
    broken.write_text("import { a } from './a.js';\nexport const b = ;\n", encoding="utf-8")
    result = subprocess.run([node, "--check", str(broken)], capture_output=True, check=False,
                            timeout=60)
    assert result.returncode != 0
