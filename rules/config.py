"""The rules file: rules, offline detection, alerting, receivers and routes (strict YAML).

Loading is Alertmanager's two steps: a strict parse into these models (every unknown key,
wrong type or bad value is an error naming file:line and field), then semantic checks
against the device registry (duplicate rule names, unknown devices, kinds or fields,
thresholds a device lacks, unknown template placeholders, routes naming undefined
receivers). `rules/default.yaml` is the commented sample.
"""

from __future__ import annotations

import difflib
import itertools
import string
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from devices.kinds import Kind
from devices.readings import NUMERIC_FIELDS
from devices.registry import Device, Registry
from rules.cameras import CAMERA_ALERTS, CamerasConfig
from rules.citizens import CITIZEN_FLOOD_REPORTS, REPORT_OVERDUE, CitizensConfig
from rules.offline import AREA_OFFLINE, DEVICE_OFFLINE, OfflineConfig, PositiveDuration
from rules.routing import Receiver, Route, route_problems
from rules.ruletypes import (
    NUMERIC_PLACEHOLDERS,
    RESERVED_RULE_LABELS,
    RULE_TYPES,
    UTC_OFFSET_PATTERN,
    VOLATILE_PLACEHOLDERS,
    Downstream,
    FloodWaveRule,
    IspuRule,
    LadderRule,
    LadderStep,
    Note,
    Problems,
    Rule,
    RuleBase,
    RulesModel,
    SelectingRule,
)
from siaga_core.configfile import format_validation_error, locate, unknown_key
from siaga_core.errors import ConfigFileError, render_problem
from siaga_core.yamlfile import Loc, read_yaml

# Raised by the ingest service (not by a rule) while readings can be made durable
# neither in InfluxDB nor in its disk spool.
STORAGE_UNAVAILABLE: Final = "StorageUnavailable"
# The alerts Siaga raises itself, and what raises them: a rule of that name would share
# their identity.
BUILTIN_ALERTS: Mapping[str, str] = MappingProxyType({
    DEVICE_OFFLINE: "the offline checker", AREA_OFFLINE: "the offline checker",
    STORAGE_UNAVAILABLE: "the service when readings cannot be made durable",
    CITIZEN_FLOOD_REPORTS: "residents' flood reports (the citizens section)",
    REPORT_OVERDUE: "the report book when no officer answers a report in time",
    **dict.fromkeys(CAMERA_ALERTS, "the camera rules (the cameras section)"),
})

class AlertingConfig(RulesModel):
    """How the alert book treats transitions (rules/alertbook.py)."""

    # A transition whose event time is older than this on the wall clock is history.
    page_max_age: PositiveDuration = timedelta(minutes=15)
    repeat_interval: PositiveDuration = timedelta(hours=4)
    history_days: int = Field(default=30, ge=1)
    # The operators' clock in alert texts ("back below siaga-3 ... at 14:05 WIB").
    utc_offset: str = Field(default="+07:00", pattern=UTC_OFFSET_PATTERN)


class RulesFile(RulesModel):
    """A whole rules file."""

    rules: list[Rule] = Field(default_factory=list)
    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    receivers: list[Receiver] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    citizens: CitizensConfig = Field(default_factory=CitizensConfig)
    # The camera rules; idle when the catalog has no camera.
    cameras: CamerasConfig = Field(default_factory=CamerasConfig)
    # `FILE:LINE: PLACE: MESSAGE` for each optional rule cut or left out (`load_rules`).
    _skipped: tuple[str, ...] = PrivateAttr(default=())

    @property
    def skipped(self) -> tuple[str, ...]:
        """Optional rules the catalog made the loader cut or leave out, one line each."""
        return self._skipped


def load_rules(path: Path, registry: Registry) -> RulesFile:
    """Load and check a rules file; raises `ConfigFileError` naming each problem's line and field.

    The result holds the rules as they apply to `registry`: an optional rule is cut to
    what the catalog has, or left out, and `RulesFile.skipped` says which and why.
    """
    document = read_yaml(path)
    try:
        rules_file = RulesFile.model_validate(document.data)
    except ValidationError as exc:
        error = format_validation_error(_untagged(exc), path, document.node, None, RulesFile)
        raise error from None
    found = check_rules(rules_file, registry)
    problems = [locate(loc, message, document.node) for loc, message in found]
    if problems:
        problems.sort(key=lambda problem: problem.line or 0)
        raise ConfigFileError(path, problems)
    fitted, notes = fit_to_catalog(rules_file, registry)
    if notes:
        fitted = fitted.model_copy()
        fitted._skipped = tuple(  # set once, here, by the loader
            render_problem(path, locate(loc, message, document.node)) for loc, message in notes)
    return fitted


def check_rules(rules_file: RulesFile, registry: Registry) -> Problems:
    """The semantic checks of a valid rules file against the registry.

    A rule naming a device (or threshold) the catalog lacks is an error unless the rule is
    `optional`: in a rules file of one's own such a name is most likely a typo, and a flood
    gauge silently left unwatched is the worst outcome a typo can have. Rules written for
    another catalog say `optional: true` and are cut to this one (`fit_to_catalog`), with
    a warning at start-up and from `siaga check`.
    """
    yield from _name_problems(rules_file.rules)
    label_keys = frozenset(key for device in registry for key in device.labels)
    for index, rule in enumerate(rules_file.rules):
        loc: Loc = ("rules", index)
        if not rule.optional:
            yield from _absences(loc, rule, registry)
        if isinstance(rule, SelectingRule):
            yield from _selector_problems(loc, rule, registry)
        if isinstance(rule, LadderRule):
            yield from _ladder_problems(loc, rule, registry)
        if isinstance(rule, IspuRule) and rule.kind not in (None, Kind.AIR_QUALITY):
            yield (*loc, "kind"), "an ispu rule reads air-quality monitors"
        if isinstance(rule, FloodWaveRule):
            yield from _flood_wave_problems(loc, rule, registry)
        for key in sorted(RESERVED_RULE_LABELS & set(rule.labels)):
            yield (*loc, "labels", key), "set by Siaga itself, not by a rule"
        yield from _template_problems(loc, rule, rule.placeholders | label_keys)
    yield from route_problems(rules_file.receivers, rules_file.routes)
    yield from _citizens_problems(rules_file)


def fit_to_catalog(rules_file: RulesFile, registry: Registry) -> tuple[RulesFile, list[Note]]:
    """The rules as they apply to `registry`, and a note for each optional rule it changed.

    An optional rule loses the devices the catalog lacks; one left with nothing to watch
    is left out. Rules that are not optional are returned as they are (`check_rules`
    refused the file if they name what the catalog lacks).
    """
    kept: list[Rule] = []
    notes: list[Note] = []
    for index, rule in enumerate(rules_file.rules):
        fitted, missing = _fit(rule, registry) if rule.optional else (rule, [])
        if fitted is None:
            notes.append((("rules", index), f"{rule.name} skipped: {'; '.join(missing)}"))
            continue
        if missing:
            notes.append((("rules", index),
                           f"{rule.name} applies without what the catalog lacks: "
                           f"{'; '.join(missing)}"))
        kept.append(fitted)
    if not notes:
        return rules_file, notes
    return rules_file.model_copy(update={"rules": kept}), notes


def _fit(rule: Rule, registry: Registry) -> tuple[Rule | None, list[str]]:
    """An optional rule cut to the catalog (None: nothing left), and what the catalog lacks."""
    if isinstance(rule, FloodWaveRule):
        upstream = registry.get(rule.upstream)
        if upstream is None:
            return None, [f"the catalog has no device {rule.upstream!r} (the upstream gauge)"]
        if rule.threshold not in upstream.thresholds:
            return None, [f"{upstream.id} has no threshold {rule.threshold}"]
        present = [entry for entry in rule.downstream if entry.device in registry]
        missing = [f"the catalog has no device {entry.device!r}"
                   for entry in rule.downstream if entry.device not in registry]
        if not present:
            return None, missing
        return rule.model_copy(update={"downstream": present}), missing
    missing = []
    if rule.devices is not None:
        usable = [device_id for device_id in rule.devices
                  if (device := registry.get(device_id)) is not None and _watches(rule, device)]
        for device_id in rule.devices:
            if device_id not in registry:
                missing.append(f"the catalog has no device {device_id!r}")
            elif device_id not in usable and isinstance(rule, LadderRule):
                missing.append(f"{device_id} lacks a threshold of {_thresholds(rule)}")
        if not usable:
            return None, missing
        rule = rule.model_copy(update={"devices": usable})
    if not any(rule.selects(device) and _watches(rule, device) for device in registry):
        return None, [*missing, _nothing_selected(rule)]
    return rule, missing


def _watches(rule: SelectingRule, device: Device) -> bool:
    """Whether a device the rule selects can be judged: a ladder needs all its thresholds."""
    if isinstance(rule, LadderRule):
        return all(step.threshold in device.thresholds for step in rule.steps)
    return True


def _thresholds(rule: LadderRule) -> str:
    return ", ".join(step.threshold for step in rule.steps)


def _nothing_selected(rule: SelectingRule) -> str:
    what = f"{rule.kind} device" if rule.kind is not None else "device"
    if isinstance(rule, LadderRule):
        return f"no {what} in the catalog has the thresholds {_thresholds(rule)}"
    return f"the catalog has no {what}" + (" of those named" if rule.devices else "")


def _absences(loc: Loc, rule: RuleBase, registry: Registry) -> Problems:
    """What the rule names that the catalog lacks (errors for a rule that is not optional)."""
    if isinstance(rule, SelectingRule):
        for position, device_id in enumerate(rule.devices or ()):
            if device_id not in registry:
                yield (*loc, "devices", position), f"unknown device {device_id!r}"
    if isinstance(rule, LadderRule):
        names = [step.threshold for step in rule.steps]
        for position, device_id in enumerate(rule.devices or ()):
            device = registry.get(device_id)
            thresholds = {} if device is None else device.thresholds
            missing = [name for name in names if device is not None and name not in thresholds]
            if missing:
                yield ((*loc, "devices", position),
                       f"{device_id} has no threshold {', '.join(missing)}")
        selected = [device for device in registry if rule.selects(device)]
        for position, name in enumerate(names):
            if rule.devices is None and not any(name in device.thresholds for device in selected):
                yield (*loc, "steps", position, "threshold"), (
                    f"no selected device has a threshold {name!r}: the rule could never fire")
    if isinstance(rule, FloodWaveRule):
        upstream = registry.get(rule.upstream)
        if upstream is None:
            yield (*loc, "upstream"), f"unknown device {rule.upstream!r}"
        elif rule.threshold not in upstream.thresholds:
            yield (*loc, "at_level"), f"{upstream.id} has no threshold {rule.threshold}"
        for position, entry in enumerate(rule.downstream):
            if entry.device not in registry:
                where = (*loc, "downstream", position, "device")
                yield where, f"unknown device {entry.device!r}"


def _name_problems(rules: Sequence[RuleBase]) -> Problems:
    first: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.name in BUILTIN_ALERTS:
            yield (("rules", index, "name"),
                   f"{rule.name} is raised by {BUILTIN_ALERTS[rule.name]}")
        elif rule.name in first:
            yield (("rules", index, "name"),
                   f"duplicate rule name {rule.name!r}: rules[{first[rule.name]}] has it too")
        else:
            first[rule.name] = index


def _citizens_problems(rules_file: RulesFile) -> Problems:
    """Alerts a macet report may be linked to must be rules of the file.

    Only when written: the default (Congestion) may be absent from a rules file of one's
    own, and then macet reports are simply linked to nothing.
    """
    link = rules_file.citizens.traffic_link
    if "alerts" not in link.model_fields_set:
        return
    names = {rule.name for rule in rules_file.rules}
    for position, name in enumerate(link.alerts):
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield (("citizens", "traffic_link", "alerts", position),
                   f"no rule named {name!r} in this file{hint}")


def _selector_problems(loc: Loc, rule: SelectingRule, registry: Registry) -> Problems:
    for position, device_id in enumerate(rule.devices or ()):
        device = registry.get(device_id)
        if device is not None and rule.kind is not None and device.kind is not rule.kind:
            yield (*loc, "devices", position), f"{device_id} is {device.kind}, not {rule.kind}"
    field = getattr(rule, "field", None)
    kinds = {rule.kind} if rule.kind is not None else {d.kind for d in registry if rule.selects(d)}
    for kind in sorted(kinds):
        if field is not None and field not in NUMERIC_FIELDS[kind]:
            known = ", ".join(sorted(NUMERIC_FIELDS[kind]))
            yield (*loc, "field"), f"{kind} readings have no field {field!r} (fields: {known})"


def _ladder_problems(loc: Loc, rule: LadderRule, registry: Registry) -> Problems:
    names = [step.threshold for step in rule.steps]
    for device in registry:
        if rule.selects(device) and all(name in device.thresholds for name in names):
            values = [device.thresholds[name] for name in names]
            if any(low >= high for low, high in itertools.pairwise(values)):
                pairs = zip(names, values, strict=True)
                shown = ", ".join(f"{name}={value:g}" for name, value in pairs)
                yield (*loc, "steps"), f"must rise step by step; {device.id} has {shown}"


def _flood_wave_problems(loc: Loc, rule: FloodWaveRule, registry: Registry) -> Problems:
    upstream = registry.get(rule.upstream)
    if upstream is not None and rule.field not in NUMERIC_FIELDS[upstream.kind]:
        yield (*loc, "field"), f"{upstream.kind} readings have no field {rule.field!r}"
    seen: set[str] = set()
    for position, entry in enumerate(rule.downstream):
        where = (*loc, "downstream", position, "device")
        if entry.device == rule.upstream:
            yield where, "the upstream gauge cannot be its own downstream"
        elif entry.device in seen:
            yield where, f"{entry.device} is listed twice"
        seen.add(entry.device)


def _template_problems(loc: Loc, rule: RuleBase, allowed: frozenset[str]) -> Problems:
    sample = {name: 0.0 if name in NUMERIC_PLACEHOLDERS else "x" for name in allowed}
    for section, templates in (("labels", rule.labels), ("annotations", rule.annotations)):
        for key, template in templates.items():
            try:
                names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
                unknown = [name for name in names if name not in allowed]
                if not unknown:
                    template.format_map(sample)  # a format spec that cannot take the value
            except (ValueError, TypeError, IndexError) as exc:
                hint = "a literal brace is written {{ or }}"
                yield (*loc, section, key), f"not a valid template: {exc} ({hint})"
                continue
            volatile = [n for n in names if n in VOLATILE_PLACEHOLDERS and section == "labels"]
            if unknown:
                yield (*loc, section, key), _unknown_placeholder(unknown[0], allowed)
            elif volatile:
                yield ((*loc, section, key), f"{{{volatile[0]}}} changes with the readings, and "
                       "a label change is notified: use it in annotations")


def _unknown_placeholder(name: str, allowed: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(allowed), n=1)
    hint = f"did you mean {{{close[0]}}}? " if close else ""
    return f"unknown placeholder {{{name}}} ({hint}known: {', '.join(sorted(allowed))})"


def _untagged(exc: ValidationError) -> ValidationError:
    """The same errors without pydantic's union tag in the path (`rules[0].ladder.steps`).

    A rule's errors then name the place the operator wrote (`rules[0].steps`), find its
    line, and an unknown key lists the keys that rule type accepts.
    """
    details = [_untag(error) for error in exc.errors(include_url=False)]
    return ValidationError.from_exception_data(exc.title, details)


def _untag(error: Any) -> InitErrorDetails:
    loc: Loc = tuple(error["loc"])
    kind, value = str(error["type"]), error["input"]
    if loc[:1] == ("rules",) and len(loc) >= 2 and isinstance(loc[1], int):
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            tag = value.get("type") if isinstance(value, dict) else None
            got = "required, but missing" if tag is None else f"unknown rule type {tag!r}"
            return _custom((*loc, "type"), value, f"{got} (one of {', '.join(RULE_TYPES)})")
        if len(loc) >= 3:
            model = RULE_TYPES.get(str(loc[2]))
            loc = (*loc[:2], *loc[3:])
            if kind == "extra_forbidden" and model is not None:
                allowed = _keys_at(model, loc[2:-1])
                return _custom(loc, value, unknown_key(str(loc[-1]), allowed))
    detail: InitErrorDetails = {"type": kind, "loc": loc, "input": value}
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    return detail


def _custom(loc: Loc, value: object, message: str) -> InitErrorDetails:
    # The message goes in the context: a template would read its braces as placeholders.
    error = PydanticCustomError("rules", "{message}", {"message": message})
    return {"type": error, "loc": loc, "input": value}


def _keys_at(model: type[BaseModel], path: Loc) -> list[str]:
    """The keys accepted at `path` in a rule: its own, or a step's or downstream's."""
    if not path:
        return [field.alias or name for name, field in model.model_fields.items()]
    nested: dict[str, type[BaseModel]] = {"steps": LadderStep, "downstream": Downstream}
    inner = nested.get(str(path[0]))
    return [] if inner is None or len(path) != 2 else _keys_at(inner, ())
