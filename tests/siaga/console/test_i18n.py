"""The page's two languages: the same keys, no blanks, and every key the page uses exists,
including those built from the service's own words (statuses, kinds, severities, states)."""

from __future__ import annotations

import json
import re

import pytest

from devices.kinds import Kind
from reports.categories import CODES
from reports.model import State
from rules.alert import AlertStatus, Severity
from siaga.console.page import STATIC

LANGUAGES = ("id", "en")
# SPEC section 8's data-status values.
STATUSES = ("ok", "siaga-3", "siaga-2", "siaga-1", "baik", "sedang", "tidak-sehat",
            "sangat-tidak-sehat", "berbahaya", "congested", "offline", "no-data")


def messages(language: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(
        (STATIC / "i18n" / f"{language}.json").read_text(encoding="utf-8"))
    return loaded


def test_both_languages_have_the_same_keys() -> None:
    assert set(messages("id")) == set(messages("en"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_message_is_empty(language: str) -> None:
    blank = [key for key, text in messages(language).items()
             if not isinstance(text, str) or not text.strip()]
    assert blank == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_placeholders_match_between_languages(language: str) -> None:
    other = messages("en" if language == "id" else "id")
    for key, text in messages(language).items():
        assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", other[key])), key


def test_every_key_the_page_names_exists() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n(?:-placeholder|-title|-label)?="([^"]+)"', html))
    assert keys
    missing = keys - set(messages("id"))
    assert missing == set()


def test_every_literal_key_in_the_scripts_exists() -> None:
    keys: set[str] = set()
    for path in (STATIC / "js").glob("*.js"):
        source = path.read_text(encoding="utf-8")
        keys |= set(re.findall(r"""\bt\(\s*['"]([^'"]+)['"]""", source))
        keys |= set(re.findall(r"""\bitem\([^,]+,[^,]+,\s*['"]([^'"]+)['"]""", source))
    assert len(keys) > 10
    assert keys - set(messages("id")) == set()


def test_the_words_built_from_the_service_exist_in_both_languages() -> None:
    families = {
        "status": STATUSES,
        "kind": tuple(kind.value for kind in Kind),
        "severity": tuple(severity.value for severity in Severity),
        "alert.status": tuple(status.value for status in AlertStatus),
        "report.state": tuple(state.value for state in State),
        "category": CODES,
    }
    for language in LANGUAGES:
        known = set(messages(language))
        missing = {f"{family}.{name}" for family, names in families.items() for name in names}
        assert missing - known == set(), language


def test_the_levels_read_as_the_room_says_them() -> None:
    assert messages("id")["status.siaga-1"] == "Siaga 1 (Awas)"
    assert messages("id")["status.tidak-sehat"] == "Tidak Sehat"
    assert messages("en")["status.tidak-sehat"] == "Unhealthy"
    assert messages("id")["alerts.title"] == "Peringatan"
    assert messages("en")["alerts.title"] == "Alerts"
