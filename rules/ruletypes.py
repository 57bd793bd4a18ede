"""The rule types of the rules file: one strict pydantic model per `type:`, and the names,
labels and template placeholders each may use. `rules.config` loads and checks a file of them;
`rules.conditions` turns each into the condition that judges readings.
"""


from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from devices.kinds import Kind
from devices.registry import LABEL_KEY_PATTERN, Device, LabelKey, LabelValue
from devices.topics import DEVICE_ID_PATTERN
from rules.alert import Severity
from rules.offline import PositiveDuration
from siaga_core.configfile import StrictModel
from siaga_core.durations import Duration
from siaga_core.yamlfile import Loc

# Alert names follow Prometheus: they become the `alertname` label.
ALERTNAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Labels every signal sets itself; a rule's own `labels` may not replace them.
RESERVED_RULE_LABELS: Final = frozenset({"alertname", "severity", "device_id", "kind"})
# Placeholders any template may use, besides the device's label keys (`{river}`).
COMMON_PLACEHOLDERS: Final = frozenset(
    {"alertname", "device_id", "name", "kind", "severity", "value", "field"}
)
# Placeholders that are numbers, so `{value:.0f}` works; the rest are strings.
NUMERIC_PLACEHOLDERS: Final = frozenset({"value", "threshold", "limit", "change", "index"})
# Placeholders that change from reading to reading: in a label, every change would be
# notified as a change of the alert, so they are for annotations only.
VOLATILE_PLACEHOLDERS: Final = frozenset({"value", "change", "index", "dominant"})
# Flood-wave `at_level` -> the registry threshold it means.
SIAGA_LEVELS: Mapping[str, str] = MappingProxyType(
    {"siaga-3": "siaga3_cm", "siaga-2": "siaga2_cm", "siaga-1": "siaga1_cm"}
)

UTC_OFFSET_PATTERN: Final = r"^[+-](0\d|1[0-4]):[0-5]\d$"  # +07:00 is WIB (Jakarta)

SeverityField = Annotated[Severity, Field(strict=False)]  # YAML gives a string, not the enum
KindField = Annotated[Kind, Field(strict=False)]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
FieldName = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
Number = Annotated[float, Field(allow_inf_nan=False)]
_ZERO: Final = timedelta(0)
Note = tuple[Loc, str]  # (field path, message)
Problems = Iterator[Note]  # what a semantic check yields


class RulesModel(StrictModel):
    """A model of the rules file (see StrictModel)."""

    # `for` is a Python keyword, so the field is `for_` with an alias; populate_by_name lets
    # code use either.
    model_config = ConfigDict(populate_by_name=True)


class RuleBase(RulesModel):
    """What every rule has: its alert name, timing and templates."""

    placeholders: ClassVar[frozenset[str]] = COMMON_PLACEHOLDERS

    name: str = Field(pattern=ALERTNAME_PATTERN)
    for_: Duration = Field(default=_ZERO, alias="for")  # hold this long before firing
    keep_firing_for: Duration = _ZERO  # keep firing this long after the condition stops
    # Text with `{placeholder}`s (str.format syntax), checked by `check_rules`.
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)
    # Where the catalog lacks what the rule names (devices, thresholds, any device of its
    # kind), skip the rule there with a warning instead of refusing the file. For rules
    # written for one catalog (the bundled Jakarta rules): a newcomer's catalog of their own
    # gauges still starts. Off by default: see `check_rules` for why.
    optional: bool = False


class SelectingRule(RuleBase):
    """A rule on the devices a selector picks: a kind, a list of ids, or both (none: all)."""

    kind: KindField | None = None
    devices: list[DeviceId] | None = Field(default=None, min_length=1)

    def selects(self, device: Device) -> bool:
        if self.kind is not None and device.kind is not self.kind:
            return False
        return self.devices is None or device.id in self.devices


class BoundedRule(SelectingRule):
    """A value compared with a limit, with an optional recovery limit (hysteresis).

    `above: 900, clear_below: 880`: holds once the value is above 900 and keeps holding
    until it falls below 880. Without a clear limit it holds exactly while above 900.
    """

    placeholders: ClassVar[frozenset[str]] = COMMON_PLACEHOLDERS | {"limit"}

    field: FieldName
    severity: SeverityField = Severity.WARNING
    above: Number | None = None
    below: Number | None = None
    clear_below: Number | None = None
    clear_above: Number | None = None

    @model_validator(mode="after")
    def _one_direction(self) -> BoundedRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("needs exactly one of above or below")
        if self.above is not None and self.clear_above is not None:
            raise ValueError("clear_above goes with below; with above use clear_below")
        if self.below is not None and self.clear_below is not None:
            raise ValueError("clear_below goes with above; with below use clear_above")
        low, high = self.clear_below, self.clear_above
        if (low is not None and low > self.limit) or (high is not None and high < self.limit):
            raise ValueError("the clear limit must be on the near side: clear_below <= above, "
                             "clear_above >= below")
        return self

    @property
    def limit(self) -> float:
        """The limit that starts the condition: `above` or `below`."""
        limit = self.above if self.above is not None else self.below
        if limit is None:
            raise AssertionError("unreachable: validated to have above or below")
        return limit


class LadderStep(RulesModel):
    """One rung: at or above the device's `threshold`, the alert has this level and severity."""

    threshold: FieldName  # a key of the device's `thresholds`, e.g. siaga3_cm
    level: LabelValue  # label `level`, e.g. siaga-3
    severity: SeverityField


class LadderRule(SelectingRule):
    """One alert per device whose `level` and severity follow the value up and down."""

    placeholders: ClassVar[frozenset[str]] = COMMON_PLACEHOLDERS | {"level", "threshold"}

    type: Literal["ladder"]
    field: FieldName = "level_cm"
    steps: list[LadderStep] = Field(min_length=1)
    # Hysteresis: stepping down from a band needs the value below its threshold - margin.
    clear_margin: Number = Field(default=0.0, ge=0)


class ThresholdRule(BoundedRule):
    """A reading's field above (or below) a fixed limit."""

    type: Literal["threshold"]


class RateOfChangeRule(SelectingRule):
    """A rise (or fall) of at least so much within a time span, e.g. 50 cm within 30 minutes."""

    placeholders: ClassVar[frozenset[str]] = COMMON_PLACEHOLDERS | {"change", "limit", "within"}

    type: Literal["rate_of_change"]
    field: FieldName
    severity: SeverityField = Severity.WARNING
    rise: Number | None = Field(default=None, gt=0)
    fall: Number | None = Field(default=None, gt=0)
    within: PositiveDuration

    @model_validator(mode="after")
    def _one_direction(self) -> RateOfChangeRule:
        if (self.rise is None) == (self.fall is None):
            raise ValueError("needs exactly one of rise or fall")
        return self


class WindowRule(BoundedRule):
    """An aggregate of a field over a time window, e.g. mean speed over 10 minutes < 15."""

    placeholders: ClassVar[frozenset[str]] = BoundedRule.placeholders | {"aggregate", "window"}

    type: Literal["window"]
    aggregate: Literal["mean", "max", "min"]
    window: PositiveDuration


class IspuRule(SelectingRule):
    """The ISPU of an air-quality monitor's pollutant means over `window`.

    The regulation averages over 24 h; an hour keeps the alert timely without paging on a
    single puff of smoke. `level` follows the category; severity is fixed per category.
    """

    placeholders: ClassVar[frozenset[str]] = COMMON_PLACEHOLDERS | {
        "index", "category", "level", "dominant", "window",
    }

    type: Literal["ispu"]
    kind: KindField | None = Kind.AIR_QUALITY
    window: PositiveDuration = timedelta(hours=1)
    # Not baik: that would always fire.
    min_category: Literal["sedang", "tidak-sehat", "sangat-tidak-sehat", "berbahaya"] = (
        "tidak-sehat"
    )


class Downstream(RulesModel):
    """A gauge a flood wave reaches, and how long it takes (jakarta.md section 1)."""

    device: DeviceId
    travel: PositiveDuration


class FloodWaveRule(RuleBase):
    """When the upstream gauge reaches `at_level`, each downstream gauge gets a warning."""

    placeholders: ClassVar[frozenset[str]] = COMMON_PLACEHOLDERS | {
        "level", "threshold", "upstream", "upstream_name", "expected_arrival", "travel_time",
    }

    type: Literal["flood_wave"]
    upstream: DeviceId
    at_level: Literal["siaga-3", "siaga-2", "siaga-1"] = "siaga-2"
    field: FieldName = "level_cm"
    clear_margin: Number = Field(default=0.0, ge=0)
    downstream: list[Downstream] = Field(min_length=1)
    severity: SeverityField = Severity.WARNING
    # Offset of `expected_arrival` in the annotations: WIB, the operators' clock.
    utc_offset: str = Field(default="+07:00", pattern=UTC_OFFSET_PATTERN)

    @property
    def threshold(self) -> str:
        return SIAGA_LEVELS[self.at_level]


Rule = Annotated[
    LadderRule | ThresholdRule | RateOfChangeRule | WindowRule | IspuRule | FloodWaveRule,
    Field(discriminator="type"),
]
# The `type` of each rule, for error messages.
RULE_TYPES: Mapping[str, type[RuleBase]] = MappingProxyType({
    "ladder": LadderRule, "threshold": ThresholdRule, "rate_of_change": RateOfChangeRule,
    "window": WindowRule, "ispu": IspuRule, "flood_wave": FloodWaveRule,
})
