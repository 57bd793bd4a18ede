"""What Alertmanager is given: label sets it accepts, and times it reads as meant."""

from __future__ import annotations

from rules.alert import Alert, AlertStatus, Severity
from rules.alertmanager import label_set, postable

SECOND_NS = 1_000_000_000


def alert(labels: dict[str, str], annotations: dict[str, str] | None = None) -> Alert:
    return Alert("f1", "FloodLevel", "manggarai", AlertStatus.FIRING, Severity.WARNING, labels,
                 annotations or {}, 100 * SECOND_NS, None, 100 * SECOND_NS, 100 * SECOND_NS)


def test_label_names_alertmanager_would_refuse_are_made_valid_and_empty_values_dropped() -> None:
    labels = label_set(alert({"alertname": "FloodLevel", "river-basin": "Ciliwung",
                              "1st": "x", "zone": ""}))
    assert labels == {"alertname": "FloodLevel", "river_basin": "Ciliwung", "_1st": "x"}


def test_an_alert_without_an_alertname_label_is_named_by_its_rule() -> None:
    assert label_set(alert({"device_id": "manggarai"}))["alertname"] == "FloodLevel"


def test_an_end_before_the_start_is_sent_as_the_start() -> None:
    body = postable(alert({"alertname": "A"}), {"alertname": "A"}, 50 * SECOND_NS, "http://s/")
    assert body["startsAt"] == body["endsAt"] == "1970-01-01T00:01:40Z"
    assert body["generatorURL"] == "http://s/api/alerts/f1"
