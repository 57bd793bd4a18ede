"""The alert lifecycle `step`: pending, for, firing, changes, keep-firing-for, resolution."""

from collections.abc import Mapping

from rules.alert import Alert, AlertStatus, Severity, Signal, Timing, fingerprint, step

MINUTE = 60 * 1_000_000_000
T0 = 1_600_682_400 * 1_000_000_000  # 2020-09-21T10:00:00Z


def signal(
    at_min: float,
    active: bool = True,
    severity: Severity = Severity.WARNING,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Signal:
    shown = {"alertname": "FloodLevel", "device_id": "manggarai", "level": "siaga-3"}
    return Signal("FloodLevel", "manggarai", active, T0 + int(at_min * MINUTE), severity,
                  shown if labels is None else labels, annotations or {"summary": "s"})


def run(signals: list[Signal], timing: Timing) -> tuple[Alert | None, list[str]]:
    alert: Alert | None = None
    changes: list[str] = []
    for each in signals:
        alert, transition = step(alert, each, timing)
        if transition is not None:
            changes.append(transition.change)
    return alert, changes


def test_without_for_an_active_signal_fires_at_once() -> None:
    alert, transition = step(None, signal(0), Timing())
    assert transition is not None and transition.change == "firing"
    assert transition.previous is None
    assert alert is not None and alert.status is AlertStatus.FIRING
    assert alert.starts_at_ns == T0


def test_with_for_the_alert_is_pending_until_the_condition_held_that_long() -> None:
    timing = Timing(for_ns=10 * MINUTE)
    alert, changes = run([signal(0), signal(5), signal(9)], timing)
    assert changes == ["pending"]
    alert, transition = step(alert, signal(10), timing)
    assert transition is not None and transition.change == "firing"
    assert alert is not None and alert.starts_at_ns == T0


def test_a_pending_alert_whose_condition_stops_is_abandoned() -> None:
    alert, changes = run([signal(0), signal(5, active=False)], Timing(for_ns=10 * MINUTE))
    assert changes == ["pending", "abandoned"]
    assert alert is not None and alert.status is AlertStatus.RESOLVED


def test_a_change_of_severity_or_labels_while_firing_is_a_change() -> None:
    raised = {"alertname": "FloodLevel", "device_id": "manggarai", "level": "siaga-2"}
    _, changes = run([signal(0), signal(5, severity=Severity.MAJOR, labels=raised)], Timing())
    assert changes == ["firing", "changed"]


def test_new_annotations_alone_are_not_a_change() -> None:
    _, changes = run([signal(0), signal(5, annotations={"summary": "other"})], Timing())
    assert changes == ["firing"]


def test_an_inactive_signal_resolves_a_firing_alert_at_its_event_time() -> None:
    alert, changes = run([signal(0), signal(5, active=False)], Timing())
    assert changes == ["firing", "resolved"]
    assert alert is not None and alert.ends_at_ns == T0 + 5 * MINUTE


def test_keep_firing_for_holds_the_alert_after_the_condition_stops() -> None:
    timing = Timing(keep_firing_for_ns=10 * MINUTE)
    alert, changes = run([signal(0), signal(5, active=False), signal(9, active=False)], timing)
    assert changes == ["firing"]
    _, transition = step(alert, signal(10, active=False), timing)
    assert transition is not None and transition.change == "resolved"


def test_keep_firing_for_counts_from_the_last_time_the_condition_held() -> None:
    timing = Timing(keep_firing_for_ns=10 * MINUTE)
    signals = [signal(0), signal(5, active=False), signal(8), signal(15, active=False)]
    _, changes = run(signals, timing)
    assert changes == ["firing"]


def test_an_alert_that_fires_again_after_resolving_starts_anew() -> None:
    alert, _ = run([signal(0), signal(5, active=False)], Timing())
    alert, transition = step(alert, signal(20), Timing())
    assert transition is not None and transition.change == "firing"
    assert transition.previous is AlertStatus.RESOLVED
    assert alert is not None and alert.starts_at_ns == T0 + 20 * MINUTE


def test_an_inactive_signal_without_an_alert_changes_nothing() -> None:
    assert step(None, signal(0, active=False), Timing()) == (None, None)


def test_the_fingerprint_depends_only_on_rule_and_subject() -> None:
    assert signal(0).fingerprint == fingerprint("FloodLevel", "manggarai")
    assert signal(0).fingerprint != fingerprint("FloodLevel", "depok")
    assert len(signal(0).fingerprint) == 16
