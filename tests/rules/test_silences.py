"""Tests of label matchers and silences (Alertmanager semantics)."""

from __future__ import annotations

import pytest

from rules.silences import (
    Matcher,
    MatcherError,
    Silence,
    SilenceError,
    matches_all,
    parse_matcher,
    silencing,
)

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
HOUR = 3600 * 1_000_000_000
FLOOD = {"alertname": "FloodLevel", "level": "siaga-2", "device_id": "manggarai"}


def silence(*matchers: Matcher, starts: int = T0, ends: int = T0 + HOUR) -> Silence:
    return Silence("s1", matchers or (Matcher("alertname", "FloodLevel"),), starts, ends,
                   "budi", "pump maintenance")


def test_equal_matches_the_exact_value_only() -> None:
    assert Matcher("level", "siaga-2").matches(FLOOD)
    assert not Matcher("level", "siaga-1").matches(FLOOD)


def test_not_equal_matches_every_other_value() -> None:
    assert Matcher("level", "siaga-1", "!=").matches(FLOOD)
    assert not Matcher("level", "siaga-2", "!=").matches(FLOOD)


def test_a_missing_label_matches_as_the_empty_string() -> None:
    assert Matcher("river", "").matches(FLOOD)
    assert Matcher("river", "Ciliwung", "!=").matches(FLOOD)
    assert not Matcher("river", "Ciliwung").matches(FLOOD)


def test_regex_match_is_anchored_at_both_ends() -> None:
    assert Matcher("alertname", "Flood.*", "=~").matches(FLOOD)
    assert not Matcher("alertname", "Flood", "=~").matches(FLOOD)
    assert not Matcher("alertname", "Level", "=~").matches(FLOOD)


def test_regex_alternatives_are_each_anchored() -> None:
    matcher = Matcher("level", "siaga-1|siaga-2", "=~")
    assert matcher.matches(FLOOD)
    assert not matcher.matches({"level": "siaga-22"})


def test_negative_regex_is_anchored_too() -> None:
    assert Matcher("alertname", "Flood", "!~").matches(FLOOD)
    assert not Matcher("alertname", "Flood.*", "!~").matches(FLOOD)


def test_an_invalid_regex_is_refused_at_construction() -> None:
    with pytest.raises(MatcherError, match="bad regex"):
        Matcher("alertname", "Flood(", "=~")


def test_an_invalid_label_name_is_refused() -> None:
    with pytest.raises(MatcherError, match="label name"):
        Matcher("device-id", "x")


def test_an_unknown_operator_is_refused() -> None:
    with pytest.raises(MatcherError, match="operator"):
        Matcher("level", "x", "==")  # type: ignore[arg-type]  # what a caller might pass


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alertname=FloodLevel", Matcher("alertname", "FloodLevel", "=")),
        ("level!=siaga-3", Matcher("level", "siaga-3", "!=")),
        ("alertname=~Flood.*", Matcher("alertname", "Flood.*", "=~")),
        ("alertname!~Flood.*", Matcher("alertname", "Flood.*", "!~")),
        (' level = "siaga-1" ', Matcher("level", "siaga-1", "=")),
        ("river=", Matcher("river", "", "=")),
    ],
)
def test_parse_matcher_reads_each_operator(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


def test_a_quoted_value_unescapes_quotes_and_backslashes_only() -> None:
    assert parse_matcher(r'summary="say \"hi\""').value == 'say "hi"'
    assert parse_matcher(r'device_id=~"pa-\d+"').value == r"pa-\d+"
    assert parse_matcher(r'path="a\\b"').value == "a\\b"


@pytest.mark.parametrize("text", ["alertname", "=x", "9x=y", 'level="open', 'level="a"b"'])
def test_parse_matcher_refuses_what_is_not_a_matcher(text: str) -> None:
    with pytest.raises(MatcherError):
        parse_matcher(text)


@pytest.mark.parametrize(
    "matcher",
    [Matcher("a", 'x"y'), Matcher("a", r"\d+", "=~"), Matcher("a", "back\\", "!="),
     Matcher("a", "", "!~")],
)
def test_str_of_a_matcher_parses_back_to_it(matcher: Matcher) -> None:
    assert parse_matcher(str(matcher)) == matcher


def test_matches_all_needs_every_matcher() -> None:
    assert matches_all([Matcher("level", "siaga-2"), Matcher("alertname", "Flood.*", "=~")], FLOOD)
    assert not matches_all([Matcher("level", "siaga-2"), Matcher("device_id", "depok")], FLOOD)


def test_a_silence_is_active_from_its_start_until_its_end() -> None:
    window = silence()
    assert [window.state(t) for t in (T0 - 1, T0, T0 + HOUR - 1, T0 + HOUR)] == [
        "pending", "active", "active", "expired",
    ]
    assert window.active(T0) and not window.active(T0 + HOUR)
    assert window.expired(T0 + HOUR)


def test_a_silence_matches_alerts_its_matchers_all_select() -> None:
    window = silence(Matcher("alertname", "FloodLevel"), Matcher("device_id", "manggarai"))
    assert window.matches(FLOOD)
    assert not window.matches({**FLOOD, "device_id": "depok"})


def test_a_silence_needs_a_matcher_that_does_not_match_everything() -> None:
    with pytest.raises(SilenceError, match="empty string"):
        silence(Matcher("river", ""), Matcher("alertname", ".*", "=~"))


def test_a_silence_needs_matchers_a_creator_and_a_sane_window() -> None:
    with pytest.raises(SilenceError, match="matcher"):
        Silence("s1", (), T0, T0 + HOUR, "budi")
    with pytest.raises(SilenceError, match="created_by"):
        Silence("s1", (Matcher("a", "b"),), T0, T0 + HOUR, " ")
    with pytest.raises(SilenceError, match="end before"):
        silence(starts=T0, ends=T0 - 1)


def test_silencing_finds_the_active_matching_silence() -> None:
    expired = Silence("old", (Matcher("alertname", "FloodLevel"),), T0 - HOUR, T0, "budi")
    other = Silence("other", (Matcher("alertname", "Congestion"),), T0, T0 + HOUR, "budi")
    current = silence()
    assert silencing([expired, other, current], FLOOD, T0 + 1) is current
    assert silencing([expired, other], FLOOD, T0 + 1) is None
