"""Silent devices on the wall clock: DeviceOffline, AreaOffline, status topics, the broker link."""

from pathlib import Path

from devices.kinds import Kind
from devices.registry import Device, Registry, bundled_catalog_path, load_catalog
from rules.alert import Signal, Transition
from rules.config import load_rules
from rules.engine import RuleEngine
from rules.offline import DeviceTracker, OfflineChecker, OfflineConfig

MINUTE = 60 * 1_000_000_000
T0 = 1_600_682_400 * 1_000_000_000  # 2020-09-21T10:00:00Z, the service's start
HOURLY = 3600.0


def gauge(device_id: str, river: str, kota: str, interval_s: float | None = HOURLY) -> Device:
    return Device(id=device_id, kind=Kind.WATER_LEVEL, name=device_id.title(), lat=-6.2,
                  lon=106.8, labels={"river": river, "kota": kota},
                  expected_interval_s=interval_s)


# Ten gauges on one river across three kotas, and three on another river.
CILIWUNG = [gauge(f"cw{i}", "Ciliwung", f"Kota {i % 3}") for i in range(10)]
OTHERS = [gauge(f"pg{i}", "Pesanggrahan", f"Kota {i % 3}") for i in range(3)]
REGISTRY = Registry([*CILIWUNG, *OTHERS])


def connected_tracker() -> DeviceTracker:
    tracker = DeviceTracker(started_ns=T0)
    tracker.broker_connection_changed(True, T0)
    return tracker


def active(signals: list[Signal]) -> list[tuple[str, str]]:
    return [(s.rule, s.subject) for s in signals if s.active]


def check(tracker: DeviceTracker, minute: float, config: OfflineConfig | None = None,
          registry: Registry = REGISTRY) -> list[Signal]:
    checker = OfflineChecker(config or OfflineConfig(), registry, tracker)
    return checker.check(T0 + int(minute * MINUTE))


def test_a_device_silent_longer_than_twice_its_interval_is_offline() -> None:
    tracker = connected_tracker()
    for device in REGISTRY:
        tracker.seen(device.id, T0)
    for device in REGISTRY:
        if device.id != "pg0":
            tracker.seen(device.id, T0 + 119 * MINUTE)
    assert active(check(tracker, 120)) == []
    assert active(check(tracker, 121)) == [("DeviceOffline", "pg0")]


def test_device_offline_names_the_device_and_when_it_was_last_seen() -> None:
    tracker = connected_tracker()
    for device in REGISTRY:
        tracker.seen(device.id, T0 if device.id == "pg0" else T0 + 120 * MINUTE)
    [signal] = [s for s in check(tracker, 121) if s.active]
    assert signal.labels == {"alertname": "DeviceOffline", "severity": "warning",
                             "device_id": "pg0", "kind": "water-level",
                             "river": "Pesanggrahan", "kota": "Kota 0"}
    assert signal.annotations["last_seen"] == "2020-09-21T10:00:00Z"


def test_a_silent_device_raises_device_offline_and_resolves_when_it_returns() -> None:
    # The bundled catalog without its cameras: they report every 10 s, and this test's
    # clock jumps minutes at a time.
    registry = Registry(device for device in load_catalog(bundled_catalog_path())
                        if device.kind is not Kind.CAMERA)
    rules = load_rules(Path(__file__).parents[2] / "rules" / "default.yaml", registry)
    engine, tracker = RuleEngine(rules, registry), connected_tracker()
    checker = OfflineChecker(rules.offline, registry, tracker)
    for device in registry:
        tracker.seen(device.id, T0)
    for device in registry:  # everyone reports but Manggarai
        if device.id != "manggarai":
            tracker.seen(device.id, T0 + 121 * MINUTE)

    def changes(minute: int) -> list[tuple[str, str]]:
        transitions = [engine.signal(s) for s in checker.check(T0 + minute * MINUTE)]
        return [(t.change, t.alert.subject) for t in transitions if isinstance(t, Transition)]

    assert changes(122) == [("firing", "manggarai")]
    assert changes(123) == []
    tracker.seen("manggarai", T0 + 124 * MINUTE)
    assert changes(125) == [("resolved", "manggarai")]


def test_a_device_never_seen_counts_its_silence_from_the_service_start() -> None:
    tracker, registry = connected_tracker(), Registry(OTHERS[:1])
    assert active(check(tracker, 119, registry=registry)) == []
    assert active(check(tracker, 121, registry=registry)) == [("DeviceOffline", "pg0")]


def test_a_device_whose_status_says_offline_is_offline_at_once() -> None:
    tracker = connected_tracker()
    tracker.seen("pg0", T0)
    tracker.status("pg0", online=False, wall_ns=T0 + MINUTE)
    assert active(check(tracker, 2)) == [("DeviceOffline", "pg0")]
    tracker.status("pg0", online=True, wall_ns=T0 + 3 * MINUTE)
    assert active(check(tracker, 4)) == []


def test_ten_silent_gauges_of_one_river_raise_one_area_offline_not_ten_alerts() -> None:
    tracker = connected_tracker()
    for device in OTHERS:
        tracker.seen(device.id, T0 + 150 * MINUTE)
    signals = check(tracker, 150)
    assert active(signals) == [("AreaOffline", "river=Ciliwung")]
    [area] = [s for s in signals if s.active]
    assert area.annotations["devices"] == ", ".join(d.id for d in CILIWUNG)
    assert area.labels["river"] == "Ciliwung" and area.labels["area"] == "river=Ciliwung"


def test_devices_of_a_dark_area_get_no_signal_of_their_own() -> None:
    tracker = connected_tracker()
    for device in OTHERS:
        tracker.seen(device.id, T0 + 150 * MINUTE)
    subjects = {s.subject for s in check(tracker, 150) if s.rule == "DeviceOffline"}
    assert subjects == {"pg0", "pg1", "pg2"}  # inactive ones; the Ciliwung gauges are left alone


def test_an_area_needs_its_fraction_of_devices_silent() -> None:
    tracker = connected_tracker()
    for device in [*OTHERS, *CILIWUNG[:5]]:
        tracker.seen(device.id, T0 + 150 * MINUTE)
    expected = [("DeviceOffline", f"cw{i}") for i in range(5, 10)]
    assert sorted(active(check(tracker, 150))) == expected


def test_a_kota_already_covered_by_a_dark_river_is_not_a_second_incident() -> None:
    tracker = connected_tracker()  # nothing reports: both rivers and every kota are dark
    assert active(check(tracker, 150)) == [("AreaOffline", "river=Ciliwung"),
                                           ("AreaOffline", "river=Pesanggrahan")]


def test_time_the_broker_connection_was_down_does_not_count_as_silence() -> None:
    tracker = connected_tracker()
    for device in REGISTRY:
        tracker.seen(device.id, T0)
    tracker.broker_connection_changed(False, T0 + 60 * MINUTE)
    assert active(check(tracker, 60.5)) == []  # within connection_grace
    tracker.broker_connection_changed(True, T0 + 180 * MINUTE)
    assert active(check(tracker, 181)) == []  # 61 observable minutes of silence
    assert len(active(check(tracker, 241))) == 2  # 121 observable minutes: both rivers dark


def test_a_broker_down_longer_than_its_grace_is_one_area_offline_for_everything() -> None:
    tracker = connected_tracker()
    tracker.broker_connection_changed(False, T0 + 10 * MINUTE)
    signals = check(tracker, 13)
    assert active(signals) == [("AreaOffline", "connection=mqtt")]
    assert signals[0].annotations["devices"].count(",") == len(REGISTRY) - 1


def test_the_service_is_blind_until_its_first_connection() -> None:
    tracker = DeviceTracker(started_ns=T0)
    assert active(check(tracker, 1)) == []
    assert [s.subject for s in check(tracker, 1)] == ["connection=mqtt"]


def test_a_devices_own_interval_wins_over_the_configured_one_for_its_kind() -> None:
    fast = gauge("fast", "Krukut", "Kota 9", interval_s=60)
    slow = gauge("slow", "Krukut", "Kota 9", interval_s=None)
    registry = Registry([fast, slow])
    config = OfflineConfig.model_validate({"expected_interval": {"water-level": "10m"}})
    tracker = connected_tracker()
    assert active(check(tracker, 3, config, registry)) == [("DeviceOffline", "fast")]
    assert active(check(tracker, 21, config, registry)) == [("DeviceOffline", "fast"),
                                                            ("DeviceOffline", "slow")]
