"""Residents' reports beside the sensors: CitizenFloodReports, links to sensor alerts, and
ReportOverdue.

The rules never import `reports` (layering): a report arrives as a `CitizenReport`, plain
values the application copies from its report book. `Correlator` turns reports into signals
and links; `rules.alerting.Alerting` feeds them to the engine and the alert book, so routes,
silences, acks, repeats and webhooks treat these alerts like every other.

- Clusters: `flood_reports.count` banjir reports pairwise within `radius_m` of each other
  and within `window` of each other (event time: when the resident reported) found a
  cluster, which is one CitizenFloodReports alert. Its subject is `cluster=<id>`, the id of
  its earliest founding report: stable while the cluster grows, and the same when the
  reports are read again after a restart (a grid cell would split a cluster on a cell's
  edge). A later banjir report within `radius_m` of the cluster's centre joins it: the
  count grows, no second alert. Measuring from the centre, not from any member, keeps a
  cluster one neighbourhood instead of letting it creep along a river. It resolves on the
  wall clock once `window` passed without a report joining (`Correlator.expired`).
- Links: a banjir report within `gauge_link.radius_m` of a gauge whose ladder alert fires
  at `gauge_link.at_level` or worse, or a macet report within `traffic_link.radius_m` of a
  traffic sensor with a firing alert of `traffic_link.alerts`, is linked to that alert:
  `citizen_reports` and `citizen_report_ids` in its annotations count the reports.
- Overdue: a report no officer answered within its response time is one ReportOverdue,
  subject its id, labelled with its category and agency so routes reach the agency.

Clusters live in memory. After a restart the application reads the recent reports again;
a report id already counted (in a cluster, or in an alert's `citizen_report_ids`) is not
counted twice, and a cluster's alert restored from the alert book is resolved on time even
if none of its reports comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Final, Literal

from pydantic import Field

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device, Registry
from rules.alert import Alert, AlertStatus, Severity, Signal, ended, local_time
from rules.offline import PositiveDuration
from rules.ruletypes import ALERTNAME_PATTERN, SIAGA_LEVELS, LadderRule, Rule, SeverityField
from siaga_core.configfile import StrictModel
from siaga_core.durations import format_duration, to_ns
from siaga_core.geo import distance_m

CITIZEN_FLOOD_REPORTS: Final = "CitizenFloodReports"
REPORT_OVERDUE: Final = "ReportOverdue"
FLOOD: Final = "banjir"  # the report categories correlated (reports.categories codes)
JAM: Final = "macet"
REPORTS_NOTE: Final = "citizen_reports"  # annotations of an alert reports are linked to
REPORT_IDS_NOTE: Final = "citizen_report_ids"
OVERDUE_SEVERITY: Final = Severity.WARNING  # an officer's job is late, nothing is broken
TEXT_MAX: Final = 280  # of a resident's description in an alert: enough to recognise it
# "siaga-3" -> 3: Siaga 4 is normal, Siaga 1 the worst.
SIAGA_NUMBER: Mapping[str, int] = {level: int(level[-1]) for level in SIAGA_LEVELS}
_THRESHOLD_NUMBER: Mapping[str, int] = {name: SIAGA_NUMBER[level]
                                        for level, name in SIAGA_LEVELS.items()}

Metres = Annotated[float, Field(gt=0, allow_inf_nan=False)]
AlertName = Annotated[str, Field(pattern=ALERTNAME_PATTERN)]
Lookup = Callable[[str, str], Alert | None]  # (rule, subject) -> the open alert


NAMED_BY_GAUGE_M: Final = 2000.0  # a cluster this near a gauge is named after it

@dataclass(frozen=True, slots=True)
class CitizenReport:
    """What the rules see of a resident's report: no contact, no photo."""

    id: str
    category: str  # "banjir", "macet", ...: plain strings, the rules do not import reports
    lat: float
    lon: float
    at_ns: int  # when the resident reported it (requested time): the event time
    agency: str  # the agency responsible
    description: str = ""


class FloodReportsConfig(StrictModel):
    """When banjir reports are one cluster: CitizenFloodReports."""

    count: int = Field(default=3, ge=2)  # one report is a report, not a cluster
    radius_m: Metres = 500.0  # each founding report within this of the others
    window: PositiveDuration = timedelta(minutes=30)
    severity: SeverityField = Severity.WARNING


class GaugeLinkConfig(StrictModel):
    """A banjir report near a gauge at this Siaga level or worse is linked to its alert."""

    radius_m: Metres = 1000.0
    at_level: Literal["siaga-3", "siaga-2", "siaga-1"] = "siaga-3"


class TrafficLinkConfig(StrictModel):
    """A macet report near a traffic sensor with one of these alerts firing is linked to it."""

    radius_m: Metres = 1000.0
    alerts: list[AlertName] = Field(default_factory=lambda: ["Congestion"])


class CitizensConfig(StrictModel):
    """The `citizens:` section of the rules file."""

    flood_reports: FloodReportsConfig = Field(default_factory=FloodReportsConfig)
    gauge_link: GaugeLinkConfig = Field(default_factory=GaugeLinkConfig)
    traffic_link: TrafficLinkConfig = Field(default_factory=TrafficLinkConfig)


@dataclass(slots=True)
class _Cluster:
    """Banjir reports of one place and time: one CitizenFloodReports alert."""

    first_id: str
    agency: str
    ids: list[str]
    points: dict[str, tuple[float, float]]  # by id; restored members until read again
    first_at_ns: int
    last_at_ns: int
    restored_centre: tuple[float, float] | None = None  # from the alert book, after a restart

    @property
    def subject(self) -> str:
        return f"cluster={self.first_id}"

    def centre(self) -> tuple[float, float] | None:
        # Members not read again since a restart count at the centre the alert recorded.
        places = list(self.points.values())
        if self.restored_centre is not None:
            places += [self.restored_centre] * (len(self.ids) - len(places))
        if not places:
            return None
        return (sum(p[0] for p in places) / len(places), sum(p[1] for p in places) / len(places))


class Correlator:
    """Reports -> signals and links. Event-loop only; alerts are looked up, never kept."""

    def __init__(self, config: CitizensConfig, registry: Registry, rules: Sequence[Rule],
                 utc_offset: str = "+07:00") -> None:
        self._config = config
        self._offset = utc_offset
        self._window_ns = to_ns(config.flood_reports.window)
        self._devices = tuple(registry)
        self._gauges = registry.by_kind(Kind.WATER_LEVEL)
        self._sensors = registry.by_kind(Kind.TRAFFIC)
        # Ladder rules on the Siaga thresholds: rule -> {its level label -> Siaga number}.
        self._ladders = {
            rule.name: {step.level: _THRESHOLD_NUMBER[step.threshold] for step in rule.steps
                        if step.threshold in _THRESHOLD_NUMBER}
            for rule in rules if isinstance(rule, LadderRule)
        }
        self._clusters: dict[str, _Cluster] = {}  # by subject
        self._loose: dict[str, CitizenReport] = {}  # recent banjir reports in no cluster

    # --- clusters ----------------------------------------------------------------------

    def cluster(self, report: CitizenReport, now_ns: int, lookup: Lookup,
                latest: Mapping[str, Reading]) -> Signal | None:
        """The CitizenFloodReports signal of the cluster the report is in, if it is in one."""
        if report.category != FLOOD:
            return None
        for known in self._clusters.values():
            if report.id in known.ids:  # read again: counted once
                known.points.setdefault(report.id, (report.lat, report.lon))
                return self._signal(known, lookup, latest)
        if report.id in self._loose or report.at_ns < now_ns - self._window_ns:
            return None  # known, or too old to start or join anything now
        cluster = self._join(report) or self._found(report)
        if cluster is None:
            self._loose[report.id] = report
            return None
        return self._signal(cluster, lookup, latest)

    def signals(self, lookup: Lookup, latest: Mapping[str, Reading]) -> list[Signal]:
        """The signal of every open cluster: for an instance that starts raising them (a
        cluster's new leader), so a cluster that formed while nobody raised it has its alert."""
        return [self._signal(cluster, lookup, latest) for cluster in self._clusters.values()]

    def expired(self, now_ns: int) -> list[Signal]:
        """Resolve the clusters no report joined for `window` (wall clock); forget old reports."""
        config = self._config.flood_reports
        signals = []
        for subject, cluster in list(self._clusters.items()):
            ends_ns = cluster.last_at_ns + self._window_ns
            if ends_ns <= now_ns:
                del self._clusters[subject]
                # At the event time the window ran out: later than every report of it.
                signals.append(Signal(CITIZEN_FLOOD_REPORTS, subject, False, ends_ns,
                                      config.severity, {}, {}))
        for report_id, report in list(self._loose.items()):
            if report.at_ns < now_ns - self._window_ns:
                del self._loose[report_id]
        return signals

    def _join(self, report: CitizenReport) -> _Cluster | None:
        """The open cluster nearest the report whose centre is close enough, joined."""
        radius, window = self._config.flood_reports.radius_m, self._window_ns
        best: tuple[float, _Cluster] | None = None
        for cluster in self._clusters.values():
            centre = cluster.centre()
            if centre is None or not (cluster.first_at_ns - window <= report.at_ns
                                      <= cluster.last_at_ns + window):
                continue
            away = distance_m(report.lat, report.lon, *centre)
            if away <= radius and (best is None or away < best[0]):
                best = (away, cluster)
        if best is None:
            return None
        cluster = best[1]
        cluster.ids.append(report.id)
        cluster.points[report.id] = (report.lat, report.lon)
        cluster.first_at_ns = min(cluster.first_at_ns, report.at_ns)
        cluster.last_at_ns = max(cluster.last_at_ns, report.at_ns)
        return cluster

    def _found(self, report: CitizenReport) -> _Cluster | None:
        """A new cluster of the report and loose ones near it, if there are enough."""
        config = self._config.flood_reports
        near = sorted(
            ((distance_m(report.lat, report.lon, other.lat, other.lon), other)
             for other in self._loose.values()
             if abs(other.at_ns - report.at_ns) <= self._window_ns),
            key=lambda pair: (pair[0], pair[1].id))
        chosen = [report]
        for away, other in near:  # greedy, nearest first: each must be near all chosen
            if away > config.radius_m:
                break
            times = [member.at_ns for member in chosen] + [other.at_ns]
            if max(times) - min(times) <= self._window_ns and all(
                    distance_m(m.lat, m.lon, other.lat, other.lon) <= config.radius_m
                    for m in chosen):
                chosen.append(other)
        if len(chosen) < config.count:
            return None
        chosen.sort(key=lambda member: (member.at_ns, member.id))
        for member in chosen:
            self._loose.pop(member.id, None)
        first = chosen[0]
        cluster = _Cluster(first.id, first.agency, [m.id for m in chosen],
                           {m.id: (m.lat, m.lon) for m in chosen}, first.at_ns, chosen[-1].at_ns)
        self._clusters[cluster.subject] = cluster
        return cluster

    def _signal(self, cluster: _Cluster, lookup: Lookup,
                latest: Mapping[str, Reading]) -> Signal:
        config = self._config.flood_reports
        lat, lon = cluster.centre() or (0.0, 0.0)  # a placed cluster always has a centre
        gauge = _nearest(self._gauges, lat, lon)
        # A flood is told by the river gauge people know, when one is near; else by whatever
        # catalog device is nearest (a sensor at a crossing, say).
        place = (gauge if gauge is not None and gauge[0] <= NAMED_BY_GAUGE_M
                 else _nearest(self._devices, lat, lon))
        labels = {"alertname": CITIZEN_FLOOD_REPORTS, "severity": config.severity.value,
                  "category": FLOOD, "agency": cluster.agency, "cluster": cluster.first_id}
        count, near = len(cluster.ids), "" if place is None else f" near {place[1].name}"
        first = local_time(cluster.first_at_ns, self._offset)
        last = local_time(cluster.last_at_ns, self._offset)
        annotations = {
            "summary": f"{count} flood reports from residents within {config.radius_m:g} m"
                       f"{near}",
            "area": f"{lat:.5f}, {lon:.5f}{near}", "area_lat": f"{lat:.5f}",
            "area_lon": f"{lon:.5f}", "count": str(count), "report_ids": ",".join(cluster.ids),
            "first_report_at": first, "last_report_at": last,
        }
        if place is not None:
            annotations["nearest_device"] = place[1].id
            annotations["nearest_device_name"] = place[1].name
        gauge_text = "no gauge in the catalog"
        if gauge is not None:
            away, device = gauge
            level, level_text = self.gauge_level(device, lookup, latest)
            annotations |= {"gauge": device.id, "gauge_name": device.name,
                            "gauge_distance_m": f"{away:.0f}", "gauge_level": level_text}
            if level is not None:
                annotations["gauge_siaga"] = str(level)
            gauge_text = f"the nearest gauge, {device.name} ({away:.0f} m away), is at {level_text}"
        annotations["description"] = (
            f"Residents sent {count} banjir reports within {config.radius_m:g} m of each other"
            f"{near} between {first} and {last} (reports {', '.join(cluster.ids)}); "
            f"{gauge_text}.")
        return Signal(CITIZEN_FLOOD_REPORTS, cluster.subject, True, cluster.last_at_ns,
                      config.severity, labels, annotations)

    # --- links to sensor alerts --------------------------------------------------------

    def linkable(self, report: CitizenReport, lookup: Lookup) -> list[Alert]:
        """The firing sensor alerts the report is to be linked to, nearest first."""
        if report.category == FLOOD:
            limit = SIAGA_NUMBER[self._config.gauge_link.at_level]
            found = []
            for _, gauge in _within(self._gauges, report, self._config.gauge_link.radius_m):
                worst = self._gauge_alert(gauge.id, lookup)
                if worst is not None and worst[1] <= limit:
                    found.append(worst[0])
            return found
        if report.category == JAM:
            link = self._config.traffic_link
            near = _within(self._sensors, report, link.radius_m)
            alerts = (lookup(name, sensor.id) for _, sensor in near for name in link.alerts)
            return [a for a in alerts if a is not None and a.status is AlertStatus.FIRING]
        return []

    def _gauge_alert(self, device_id: str, lookup: Lookup) -> tuple[Alert, int] | None:
        """The gauge's firing ladder alert at the worst Siaga level, and that level."""
        worst: tuple[Alert, int] | None = None
        for rule, levels in self._ladders.items():
            alert = lookup(rule, device_id)
            if alert is None or alert.status is not AlertStatus.FIRING:
                continue
            level = levels.get(alert.labels.get("level", ""))
            if level is not None and (worst is None or level < worst[1]):
                worst = (alert, level)
        return worst

    def gauge_level(self, gauge: Device, lookup: Lookup,
                     latest: Mapping[str, Reading]) -> tuple[int | None, str]:
        """The gauge's Siaga level: its firing alert's, else its latest reading's."""
        firing = self._gauge_alert(gauge.id, lookup)
        if firing is not None:
            return firing[1], f"Siaga {firing[1]} ({firing[0].rule} firing)"
        reading = latest.get(gauge.id)
        value = None if reading is None else reading.values.get("level_cm")
        if reading is None or value is None:
            return None, "unknown (no reading yet)"
        if not all(name in gauge.thresholds for name in _THRESHOLD_NUMBER):
            return None, f"unknown ({value:g} cm; the catalog has no Siaga thresholds for it)"
        reached = [n for name, n in _THRESHOLD_NUMBER.items() if value >= gauge.thresholds[name]]
        level = min(reached, default=4)
        return level, f"Siaga {level} ({value:g} cm at {local_time(reading.ts_ns, self._offset)})"

    def flood_reports_near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """The ids of the banjir reports kept (in an open cluster, or recent and in none)
        within `radius_m` of a place: what a camera that sees water there may count on.
        A cluster's member not read again since a restart counts at the cluster's centre."""
        found: list[tuple[float, str]] = []
        for cluster in self._clusters.values():
            centre = cluster.centre()
            for report_id in cluster.ids:
                place = cluster.points.get(report_id, centre)
                if place is not None:
                    found.append((distance_m(lat, lon, *place), report_id))
        found += [(distance_m(lat, lon, r.lat, r.lon), r.id) for r in self._loose.values()]
        return [report_id for away, report_id in sorted(found) if away <= radius_m]

    # --- overdue reports ---------------------------------------------------------------

    def overdue(self, report: CitizenReport, due_ns: int, now_ns: int) -> Signal:
        """ReportOverdue for a report no officer answered by `due_ns`; judged at `now_ns`."""
        due = local_time(due_ns, self._offset)
        labels = {"alertname": REPORT_OVERDUE, "severity": OVERDUE_SEVERITY.value,
                  "category": report.category, "agency": report.agency,
                  "report_id": report.id}
        action = (f"acknowledge it in CROP, or POST /api/reports/{report.id}/updates with "
                  '{"state": "acknowledged", "note": ..., "officer": ...}')
        annotations = {
            "summary": f"Report {report.id} ({report.category}) is overdue: no officer has "
                       f"answered it since {due}",
            "description": f"Residents' report {report.id} ({report.category}, for "
                           f"{report.agency}) at {report.lat:.5f}, {report.lon:.5f}, sent "
                           f"{local_time(report.at_ns, self._offset)}, was due a first "
                           f"response by {due} and has none. To answer it: {action}.",
            "report_id": report.id, "due_at": due, "location": f"{report.lat:.5f}, "
            f"{report.lon:.5f}", "action": action, "report_text": report.description[:TEXT_MAX],
        }
        # On the wall clock, as DeviceOffline is: an overdue report is news now, however
        # long ago it fell due (a due time in the past would be withheld as stale).
        return Signal(REPORT_OVERDUE, report.id, True, now_ns, OVERDUE_SEVERITY, labels,
                      annotations)

    def answered(self, report_id: str, now_ns: int) -> Signal:
        """The end of a report's ReportOverdue: an officer answered it."""
        return Signal(REPORT_OVERDUE, report_id, False, now_ns, OVERDUE_SEVERITY, {}, {})

    # --- resolutions and restarts ------------------------------------------------------

    def resolution(self, alert: Alert) -> Mapping[str, str]:
        """What ended a CitizenFloodReports or a ReportOverdue (`RuleEngine.signal` asks)."""
        at_ns = alert.ends_at_ns if alert.ends_at_ns is not None else alert.evaluated_at_ns
        at = local_time(at_ns, self._offset)
        if alert.rule == REPORT_OVERDUE:
            summary = f"Report {alert.subject} was answered (at {at})"
            return ended(summary, f"{summary}: an officer has taken it up.", at_ns, self._offset)
        where = alert.annotations.get("nearest_device_name", alert.subject)
        count = alert.annotations.get("count", "?")
        summary = f"No new flood report near {where} since " \
                  f"{local_time(alert.active_at_ns, self._offset)}"
        window = format_duration(self._config.flood_reports.window)
        return ended(summary, f"{summary}: none joined the {count} reports within {window}, "
                              "so the cluster is closed.", at_ns, self._offset)

    def resume(self, alert: Alert) -> dict[str, str]:
        """Take up an open alert restored from the alert book: the links' annotations to keep
        over its rule's signals (`RuleEngine.annotate`), and a cluster to resolve in time."""
        if alert.rule == CITIZEN_FLOOD_REPORTS:
            self._restore_cluster(alert)
        return {key: alert.annotations[key] for key in (REPORTS_NOTE, REPORT_IDS_NOTE)
                if key in alert.annotations}

    def _restore_cluster(self, alert: Alert) -> None:
        if alert.subject in self._clusters:
            # Built from its reports themselves (a cluster's instance following the shared
            # book since before it became the leader): they say more than the alert's notes.
            return
        notes = alert.annotations
        ids = [i for i in notes.get("report_ids", "").split(",") if i]
        try:
            centre: tuple[float, float] | None = (float(notes["area_lat"]),
                                                  float(notes["area_lon"]))
        except (KeyError, ValueError):
            centre = None  # nothing will join it; it still resolves on time
        first_id = alert.subject.removeprefix("cluster=")
        cluster = _Cluster(first_id, alert.labels.get("agency", ""), ids or [first_id], {},
                           alert.starts_at_ns, alert.active_at_ns, centre)
        self._clusters[alert.subject] = cluster


def counted(alert: Alert, report_id: str) -> dict[str, str] | None:
    """The link annotations of `alert` with the report counted; None if it already is."""
    ids = [i for i in alert.annotations.get(REPORT_IDS_NOTE, "").split(",") if i]
    if report_id in ids:
        return None
    ids.append(report_id)
    return {REPORTS_NOTE: str(len(ids)), REPORT_IDS_NOTE: ",".join(ids)}


def _within(devices: Iterable[Device], report: CitizenReport,
            radius_m: float) -> list[tuple[float, Device]]:
    near = ((distance_m(report.lat, report.lon, d.lat, d.lon), d) for d in devices)
    return sorted((pair for pair in near if pair[0] <= radius_m), key=lambda p: (p[0], p[1].id))


def _nearest(devices: Iterable[Device], lat: float, lon: float) -> tuple[float, Device] | None:
    near = ((distance_m(lat, lon, d.lat, d.lon), d) for d in devices)
    return min(near, key=lambda pair: (pair[0], pair[1].id), default=None)
