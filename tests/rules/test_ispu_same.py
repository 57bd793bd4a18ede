"""The AirQuality (ISPU) condition gives the signals it gave before its loop was made shorter,
and leaves its pollutants' windows as it left them, whichever pollutants a reading carries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from devices.kinds import Kind
from devices.readings import Reading
from devices.registry import Device, Registry
from rules.alert import Signal
from rules.conditions import ISPU_SEVERITY, Ispu, Memory, _index
from rules.config import RulesFile
from rules.ispu import BREAKPOINTS
from rules.ruletypes import IspuRule
from rules.series import Series
from siaga_core.durations import format_duration

MINUTE = 60 * 1_000_000_000
T0 = 1_600_682_400 * 1_000_000_000
MONITOR = "dki1-bundaran-hi"
FIELDS = [*BREAKPOINTS, "temp_c", "rh_pct"]  # and two that are not pollutants


class Before(Ispu):
    """The reference: `evaluate` as it was, through a dict of the reading's pollutants."""

    def evaluate(self, reading: Reading, device: Device, memory: Memory) -> list[Signal]:
        pollutants = {k: v for k, v in reading.values.items() if k in BREAKPOINTS}
        if not pollutants:
            return []
        window = self._window_ns
        series = memory.pollutants
        for pollutant, value in pollutants.items():
            if pollutant not in series:
                series[pollutant] = Series()
            series[pollutant].add(reading.ts_ns, value, window)
        for pollutant, one in series.items():
            if pollutant not in pollutants:
                one.trim(reading.ts_ns - window)
        if not any(one.full for one in series.values()):
            return []
        result = _index(memory)
        if result.category.rank < self._min_rank:
            return [self._inactive(device.id, reading.ts_ns)]
        text = ("{name}: ISPU {index} ({category})",
                "Air at {name} is {category}: ISPU {index}, dominant pollutant {dominant} "
                "({window} means; the regulation's ISPU uses 24-hour means).")
        extra = {"index": result.index, "category": result.category.display_name,
                 "level": result.category.value, "dominant": result.dominant,
                 "window": format_duration(self.rule.window)}
        notes = {"index": str(result.index), "category": result.category.display_name,
                 "dominant": result.dominant}
        severity = ISPU_SEVERITY[result.category]
        return [self._active(device, reading.ts_ns, severity, result.index, text, extra,
                             {"level": result.category.value}, notes)]


def windows(memory: Memory) -> list[tuple[str, object, bytes, int, int]]:
    return [(name, one._ints, one._floats.tobytes(), one._added, one._cutoff_ns)
            for name, one in memory.pollutants.items()]


readings = st.lists(st.tuples(
    st.integers(min_value=0, max_value=20),  # minutes after the previous reading
    st.dictionaries(st.sampled_from(FIELDS), st.integers(min_value=0, max_value=600),
                    max_size=4),
), max_size=120)


@given(drawn=readings)
def test_each_reading_gives_the_signals_and_leaves_the_windows_the_reference_does(
    rules_file: RulesFile, registry: Registry, drawn: list[tuple[int, dict[str, int]]],
) -> None:
    [rule] = [rule for rule in rules_file.rules if isinstance(rule, IspuRule)]
    device = registry.get(MONITOR)
    assert device is not None
    offset = rules_file.alerting.utc_offset
    now, before = Ispu(rule, offset), Before(rule, offset)
    memory_now, memory_before = Memory(), Memory()
    ts = T0
    for minutes, fields in drawn:
        ts += minutes * MINUTE
        reading = Reading(Kind.AIR_QUALITY, MONITOR, ts,
                          {name: float(value) for name, value in fields.items()}, None)
        assert now.evaluate(reading, device, memory_now) == before.evaluate(
            reading, device, memory_before)
        assert windows(memory_now) == windows(memory_before)


def test_an_hour_of_bad_air_fires_through_the_shorter_loop(
    rules_file: RulesFile, registry: Registry,
) -> None:
    # What the property must reach: full windows, and a category that fires.
    [rule] = [rule for rule in rules_file.rules if isinstance(rule, IspuRule)]
    device = registry.get(MONITOR)
    assert device is not None
    ispu, memory = Ispu(rule, rules_file.alerting.utc_offset), Memory()
    signals = [ispu.evaluate(Reading(Kind.AIR_QUALITY, MONITOR, T0 + i * 5 * MINUTE,
                                     {"pm25": 200.0, "temp_c": 30.0}, None), device, memory)
               for i in range(14)]
    assert signals[0] == []
    assert signals[-1][0].active and signals[-1][0].labels["level"] == "sangat-tidak-sehat"
