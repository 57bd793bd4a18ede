"""The rule engine: readings in event-time order per device -> conditions -> alert changes."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from devices.readings import Reading
from devices.registry import Registry
from rules.alert import (
    Alert,
    AlertStatus,
    Change,
    Signal,
    Timing,
    Transition,
    resolved_with,
    step,
)
from rules.conditions import Condition, Memory, build
from rules.config import BUILTIN_ALERTS, RulesFile


class RuleEngine:
    """Applies every rule to each reading and keeps the current alert records in memory.

    Per device, readings are evaluated in event-time order: one no newer than the latest
    evaluated for its device is late (stored by ingest, but it must not re-fire or flap an
    alert) and is only counted. The alert book persists what `evaluate` and `signal`
    return; after a restart `restore` gives the engine its alerts back, so a pending
    alert's `for` keeps counting from when it began and a firing one is not new again.
    Not thread-safe: the service calls it from its event loop.
    """

    def __init__(self, rules_file: RulesFile, registry: Registry,
                 on_unchanged: Callable[[Alert], None] | None = None) -> None:
        """`on_unchanged` sees an open alert a signal updated without changing it."""
        self._registry = registry
        self._on_unchanged = on_unchanged
        offset = rules_file.alerting.utc_offset
        self._conditions = [build(rule, registry, offset) for rule in rules_file.rules]
        self._timings = {condition.name: condition.timing for condition in self._conditions}
        self._by_device: dict[str, tuple[Condition, ...]] = {
            device.id: tuple(c for c in self._conditions if c.selects(device))
            for device in registry
        }
        # Open (pending or firing) alerts by (rule, subject): a fingerprint is a SHA-256,
        # too dear to compute for every reading's signal just to look one up.
        self._alerts: dict[tuple[str, str], Alert] = {}
        self._memories: dict[tuple[str, str], Memory] = {}  # by (rule, device id)
        # Annotations added from outside the rules (residents' reports linked to an alert),
        # by (rule, subject): kept over every later signal's own until the alert ends.
        self._notes: dict[tuple[str, str], dict[str, str]] = {}
        self._latest_ns: dict[str, int] = {}  # event time of the latest reading evaluated
        self._late = 0

    @property
    def late_readings(self) -> int:
        """Readings skipped because their device had a newer (or equally old) one already."""
        return self._late

    @property
    def alerts(self) -> Mapping[str, Alert]:
        """The open alerts by fingerprint (a copy)."""
        return {alert.fingerprint: alert for alert in self._alerts.values()}

    def restore(self, alerts: Iterable[Alert]) -> list[Transition]:
        """Seed the engine with persisted alerts; call it before the first reading.

        Returns a `resolved` change for each open alert whose rule is gone from the rules
        file: nothing would ever resolve it otherwise.
        """
        known = set(self._timings) | set(BUILTIN_ALERTS)
        orphans: list[Transition] = []
        for alert in alerts:
            if alert.status is AlertStatus.RESOLVED:
                continue
            if alert.rule in known:
                self._alerts[(alert.rule, alert.subject)] = alert
                continue
            ended = replace(alert, status=AlertStatus.RESOLVED, ends_at_ns=alert.evaluated_at_ns)
            change: Change = "resolved" if alert.status is AlertStatus.FIRING else "abandoned"
            gone = f"{alert.rule} ended: the rule is no longer in the rules file"
            orphans.append(resolved_with(Transition(change, ended, alert.status), {
                "summary": gone, "description": f"{gone}, so nothing would resolve it."}))
        self._memories.clear()  # memories seeded before would not know these alerts
        return orphans

    def subjects_of(self, device_ids: Iterable[str]) -> set[str]:
        """The subjects the rules judging these devices raise alerts on: the devices, and
        others a rule names (the gauge downstream of one, for a flood wave)."""
        subjects: set[str] = set()
        for device_id in device_ids:
            subjects.add(device_id)
            for condition in self._by_device.get(device_id, ()):
                subjects.update(condition.subjects(device_id))
        return subjects

    def latest_judged(self, device_id: str) -> int | None:
        """The event time of the newest reading of the device this engine judged, if any."""
        return self._latest_ns.get(device_id)

    def judging_rules(self, device_ids: Iterable[str]) -> set[str]:
        """The rules that judge these devices' readings and raise alerts on the devices
        themselves (not a flood wave's, whose alerts are on the gauges downstream)."""
        return {condition.name for device_id in device_ids
                for condition in self._by_device.get(device_id, ())
                if device_id in condition.subjects(device_id)}

    def reload(self, device_ids: Collection[str], alerts: Iterable[Alert],
               judged: Mapping[str, int]) -> None:
        """Take these devices' state from the alert book again: another instance may have
        judged them since this one last did (a partition moved, issue 18).

        `alerts` are the book's open alerts on `subjects_of(device_ids)`; `judged` is, per
        device, the event time of the latest of its readings that changed an alert (the
        book's newest `evaluated_at` on it). What the engine held on those subjects is
        dropped, and so are the devices' memories: their windows start again from the
        readings that follow, as after a restart. A reading no newer than `judged` is late:
        the broker hands the new owner the readings the old one took but did not
        acknowledge, and those up to its last change were judged already; judging them
        again against the newer state would page their changes a second time. The ones
        after it changed nothing, so judging them again changes nothing either.
        """
        subjects = self.subjects_of(device_ids)
        for key in [key for key in self._alerts if key[1] in subjects]:
            del self._alerts[key]
            self._notes.pop(key, None)
        for device_id in device_ids:
            at_ns = judged.get(device_id)
            if at_ns is None:
                self._latest_ns.pop(device_id, None)
            else:
                self._latest_ns[device_id] = at_ns
            for condition in self._by_device.get(device_id, ()):
                self._memories.pop((condition.name, device_id), None)
        self._seed(alerts, subjects)

    def reload_under(self, rules: Collection[str], prefixes: Collection[str],
                     alerts: Iterable[Alert]) -> None:
        """Take the open alerts of `rules` whose subjects start with one of `prefixes` from
        the book again (`alerts`), dropping what the engine held on such subjects: a
        camera's hotspots and plates, which have subjects of their own (`camera-id/...`),
        when another instance judged the camera since this one did (issue 18)."""
        starts = tuple(prefixes)
        for key in [key for key in self._alerts if key[0] in rules and key[1].startswith(starts)]:
            del self._alerts[key]
            self._notes.pop(key, None)
        self._seed((alert for alert in alerts
                    if alert.rule in rules and alert.subject.startswith(starts)), None)

    def reload_rules(self, rules: Collection[str], alerts: Iterable[Alert]) -> None:
        """Take the open alerts of `rules` from the book again (this instance now runs the
        rules city-wide checks raise, e.g. DeviceOffline, as the cluster's leader)."""
        for key in [key for key in self._alerts if key[0] in rules]:
            del self._alerts[key]
            self._notes.pop(key, None)
        self._seed((alert for alert in alerts if alert.rule in rules), None)

    def _seed(self, alerts: Iterable[Alert], subjects: Collection[str] | None) -> None:
        known = set(self._timings) | set(BUILTIN_ALERTS)
        for alert in alerts:
            if alert.status is AlertStatus.RESOLVED or alert.rule not in known:
                continue
            if subjects is None or alert.subject in subjects:
                self._alerts[(alert.rule, alert.subject)] = alert

    def current(self, rule: str, subject: str) -> Alert | None:
        """The open (pending or firing) alert of `rule` on `subject`, if there is one."""
        return self._alerts.get((rule, subject))

    def annotate(self, rule: str, subject: str, notes: Mapping[str, str]) -> Alert | None:
        """Add `notes` to an open alert's annotations, and keep them there until it ends.

        The rule's next signal rebuilds the annotations from the reading; the notes are put
        back over them each time. Returns the updated record (for the alert book), or None
        when the alert is not open. Annotations are not labels: no change is notified.
        """
        key = (rule, subject)
        alert = self._alerts.get(key)
        if alert is None:
            return None
        kept = self._notes.setdefault(key, {})
        kept.update(notes)
        alert = self._alerts[key] = replace(alert, annotations={**alert.annotations, **kept})
        return alert

    def evaluate(self, reading: Reading) -> list[Transition]:
        """The alert changes a reading causes, in rule order."""
        device = self._registry.get(reading.device_id)
        if device is None:
            return []  # ingest dead-letters unknown devices; nothing to judge
        latest = self._latest_ns.get(device.id)
        if latest is not None and reading.ts_ns <= latest:
            self._late += 1
            return []
        self._latest_ns[device.id] = reading.ts_ns
        transitions: list[Transition] = []
        for condition in self._by_device.get(device.id, ()):
            memory = self._memory(condition, device.id)
            for signal in condition.evaluate(reading, device, memory):
                transition = self._apply(signal, condition.timing)
                if transition is None:
                    continue
                if transition.change == "resolved":  # say what ended it, not what fired
                    transition = resolved_with(transition, condition.resolution(
                        transition.alert, reading, device, memory))
                transitions.append(transition)
        return transitions

    def evaluate_run(self, readings: Sequence[Reading],
                     apply: Callable[[Transition], None]) -> None:
        """`evaluate` each of one device's readings in turn, handing `apply` each change.

        What a batched message brings (one device, up to 1000 readings): the device, its
        rules and their memories are looked up once, not per reading. A reading's changes
        go to `apply` once all its rules are judged, in the order `evaluate` returns them,
        and before the next reading is judged: `on_unchanged` and what `apply` does to the
        engine (annotate) happen in the order they would around `evaluate`. Every reading
        must be of the device of the first. tests/rules/test_engine_run.py holds this to
        `evaluate`, reading by reading.
        """
        if not readings:
            return
        device_id = readings[0].device_id
        device = self._registry.get(device_id)
        if device is None:
            return  # ingest dead-letters unknown devices; nothing to judge
        latest_ns, to_apply = self._latest_ns, self._apply
        latest = latest_ns.get(device_id)
        # Made at the first reading that is not late, as `evaluate` would make them there:
        # a memory is seeded from the alerts open at that moment.
        judged: list[tuple[Condition, Memory, Timing]] | None = None
        for reading in readings:
            ts_ns = reading.ts_ns
            if latest is not None and ts_ns <= latest:
                self._late += 1
                continue
            latest = latest_ns[device_id] = ts_ns
            if judged is None:
                judged = [(condition, self._memory(condition, device_id), condition.timing)
                          for condition in self._by_device.get(device_id, ())]
            changes: list[Transition] | None = None  # few readings change anything
            for condition, memory, timing in judged:
                for signal in condition.evaluate(reading, device, memory):
                    transition = to_apply(signal, timing)
                    if transition is None:
                        continue
                    if transition.change == "resolved":  # say what ended it, not what fired
                        transition = resolved_with(transition, condition.resolution(
                            transition.alert, reading, device, memory))
                    if changes is None:
                        changes = [transition]
                    else:
                        changes.append(transition)
            if changes is not None:
                for transition in changes:
                    apply(transition)

    def signal(self, signal: Signal,
               resolution: Callable[[Alert], Mapping[str, str]] | None = None,
               ) -> Transition | None:
        """Apply a signal from outside the rules (the offline checker), with its rule's timing.

        `resolution` gives the annotations of a resolution from the alert it ends; it is
        asked only then (the offline checker sends an inactive signal for every device).
        """
        transition = self._apply(signal, self._timings.get(signal.rule, Timing()))
        if transition is not None and transition.change == "resolved" and resolution:
            return resolved_with(transition, resolution(transition.alert))
        return transition

    def _apply(self, signal: Signal, timing: Timing) -> Transition | None:
        key = (signal.rule, signal.subject)
        current = self._alerts.get(key)
        if current is None:
            if not signal.active:
                # Most readings: the rule does not hold and nothing is open. `step` would
                # return nothing; only a stray note could be left to drop, as below.
                if self._notes:
                    self._notes.pop(key, None)
                return None
        elif signal.at_ns < current.evaluated_at_ns:
            return None  # older than what the alert already saw: late, not news
        new, transition = step(current, signal, timing)
        if self._notes and new is not None and key in self._notes:
            new, transition = self._noted(key, new, transition)
        if new is None or new.status is AlertStatus.RESOLVED:
            self._alerts.pop(key, None)
            self._notes.pop(key, None)  # the next episode starts with none
        else:
            self._alerts[key] = new
            if transition is None and self._on_unchanged is not None:
                self._on_unchanged(new)
        return transition

    def _noted(self, key: tuple[str, str], new: Alert,
               transition: Transition | None) -> tuple[Alert, Transition | None]:
        """The record and its change with the notes put back over the signal's annotations."""
        new = replace(new, annotations={**new.annotations, **self._notes[key]})
        if transition is not None:
            transition = Transition(transition.change, new, transition.previous)
        return new, transition

    def _memory(self, condition: Condition, device_id: str) -> Memory:
        key = (condition.name, device_id)
        memory = self._memories.get(key)
        if memory is None:
            subjects = condition.subjects(device_id)
            alerts = [a for a in self._alerts.values() if a.rule == condition.name
                      and a.subject in subjects]
            memory = self._memories[key] = condition.memory(alerts)
        return memory
