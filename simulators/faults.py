"""Device faults, each switchable with a rate, and the delivery that numbers and sends readings.

A rate is the chance, per reading, that the fault happens (spike, duplicate, out-of-order,
malformed, unknown-device) or that an episode of it begins (stuck, dropout, battery, skew,
store-and-forward; the episode then lasts its `duration_s`). Faults that leave a reading
valid keep it valid: a spike stays within the physical bounds, a skewed clock within the
five minutes ahead the service tolerates. Malformed payloads and unknown devices are extra
messages, never a replacement for a reading, so the seqs of valid readings stay contiguous.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Final

import orjson

from devices.kinds import Kind
from devices.registry import Device
from devices.topics import TopicScheme
from simulators.calendar import HOUR_S
from simulators.emission import Emission
from simulators.malformed import PRIMARY, bogus_topic, malformed_payload

FAULT_NAMES: Final = (
    "stuck", "spike", "dropout", "battery", "skew",
    "duplicate", "out-of-order", "store-and-forward", "malformed", "unknown-device",
)  # fmt: skip
# Faults that go quiet for a while: at most one of them at a time.
SILENCES: Final = ("dropout", "battery", "store-and-forward")
ONLINE, OFFLINE = b"online", b"offline"

LWT_DELAY_S = 45.0  # the broker publishes a lost device's last will after 1.5 x a 30 s keepalive
EXTRA_STEP_S = 1.0  # extra messages (duplicates, garbage) follow their reading within seconds
SKEW_S = (30.0, 240.0)  # a drifted clock; under the 300 s ahead at which Siaga refuses a ts
# A 1-cell Li-ion pack draining below the 3.3 V soft flag of jakarta.md section 5, then
# browning out (silence) for the rest of the episode until someone swaps the battery.
DRAIN_V = (3.75, 3.05)
BROWNOUT_AT = 0.85  # share of the episode after which the node browns out
FRESH_V = 4.15
MAX_BATCH = 1000  # SPEC section 1: a batch holds at most 1000 readings
MAX_BATCH_BYTES = 64_000  # SPEC section 1: 64 KiB per payload, with room to spare
# Physical bounds a spike stays within (devices.readings), with a margin.
SPIKE_LEVEL_CM = (150.0, 400.0, -390.0, 1190.0)  # jump low, jump high, floor, ceiling
SPIKE_PM_FACTOR = (4.0, 12.0, 990.0)  # multiplier range and ceiling
SPIKE_SPEED_KMH = (130.0, 190.0)  # a detector counting a motorbike twice: absurd, yet legal
SPIKE_WATER = (0.85, 1.0)  # one frame of a wet lens or a passing truck's spray read as water
DIAGNOSTICS: Final = frozenset({"battery_v", "rssi_dbm"})  # housekeeping, not measurements

Reading = dict[str, object]


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault's switch: its rate per reading and, for episodes, how long one lasts."""

    rate: float = 0.0
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"a fault rate is a chance per reading, 0..1 (got {self.rate})")
        if not self.duration_s >= 0.0:
            raise ValueError(f"a fault duration must be >= 0 (got {self.duration_s})")


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Every fault's switch; all off by default. Names as in `FAULT_NAMES` via `get`."""

    stuck: Fault = Fault(0.0, 2 * HOUR_S)
    spike: Fault = Fault()
    dropout: Fault = Fault(0.0, HOUR_S)
    battery: Fault = Fault(0.0, 12 * HOUR_S)
    skew: Fault = Fault(0.0, 6 * HOUR_S)
    duplicate: Fault = Fault()
    out_of_order: Fault = Fault()
    store_and_forward: Fault = Fault(0.0, 2 * HOUR_S)
    malformed: Fault = Fault()
    unknown_device: Fault = Fault()

    def get(self, name: str) -> Fault:
        """The switch of fault `name` (`out-of-order` or `out_of_order`)."""
        fault: Fault = getattr(self, name.replace("-", "_"))
        return fault

    def with_fault(self, name: str, rate: float, duration_s: float | None = None) -> FaultRates:
        """A copy with fault `name` set; its duration is kept unless given."""
        current = self.get(name)
        duration = current.duration_s if duration_s is None else duration_s
        return replace(self, **{name.replace("-", "_"): Fault(rate, duration)})

    def enabled(self) -> tuple[str, ...]:
        """The names of the faults whose rate is above zero."""
        return tuple(name for name in FAULT_NAMES if self.get(name).rate > 0)

    @classmethod
    def every(cls, rate: float) -> FaultRates:
        """Every fault at `rate`, with the default durations."""
        base = cls()
        return cls(**{f.name: Fault(rate, getattr(base, f.name).duration_s) for f in fields(cls)})


class Delivery:
    """One device's outbox: numbers its readings, applies its faults, encodes the payloads.

    `send` takes what the device measured at `t` and returns the emissions it causes, all
    timed at or after `t` and before the device's next reading, so a device's emissions
    come out in time order. Draws only from its own `rng`, so faults never change what the
    behaviours measure.
    """

    def __init__(
        self, device: Device, topics: TopicScheme, faults: FaultRates, rng: random.Random
    ) -> None:
        self._device_id, self._kind = device.id, device.kind
        self._topics = topics
        self._topic = topics.telemetry(device.kind, device.id)
        self._status_topic = topics.status(device.kind, device.id)
        self._events_topic = topics.events(device.id) if device.kind is Kind.CAMERA else ""
        self._faults, self._rng = faults, rng
        self._rates = {name: faults.get(name).rate for name in FAULT_NAMES}
        self.plain = not faults.enabled()  # no faults: `send_plain` is all it takes
        self._seq = 0
        self._until: dict[str, float] = {}  # active episodes -> when they end
        self._frozen: Reading | None = None  # a stuck sensor's values
        self._skew_s = 0.0
        self._battery = (0.0, 0.0)  # drain start, brownout time
        self._browned_out = False
        self._buffer: list[Reading] = []  # store-and-forward readings awaiting the reconnect
        self._held: tuple[bytes, float] | None = None  # out-of-order: (payload, measured at)
        self._last_s = float("-inf")

    def send_plain(self, t: float, measured: Reading) -> Emission:
        """The one emission of a reading when no fault is switched on."""
        reading: Reading = {"ts": round(t, 3), "seq": self._seq}
        reading.update(measured)
        self._seq += 1
        payload = orjson.dumps(reading)
        return Emission(t, self._topic, payload, self._device_id, self._kind, 1, None)

    def send(self, t: float, measured: Reading, next_t: float) -> list[Emission]:
        """The emissions caused by a reading measured at `t` (`next_t`: the one after)."""
        if self.plain:
            return [self.send_plain(t, measured)]
        out: list[Emission] = []
        step = min(EXTRA_STEP_S, max(next_t - t, 0.0) / 8)
        self._end_episodes(t, out)
        if not self._silent(t):
            self._start_episodes(t, step, out)
        if self._silent(t):
            self._flush_held(max(t, self._last_s), out)  # it was on its way already
            return out
        reading, fault = self._reading(t, measured)
        if "store-and-forward" in self._until:
            self._buffer.append(reading)
        else:
            self._deliver(t, step, reading, fault, out)
        return out

    def event(self, t: float, event: Reading) -> Emission | None:
        """A camera's detection sent at `t` on its events topic; None while it is offline or
        keeping its readings for later (detections are live: nobody forwards them late)."""
        if self._silent(t) or "store-and-forward" in self._until:
            return None
        if "skew" in self._until:
            event = {**event, "ts": round(t + self._skew_s, 3)}
        return Emission(t, self._events_topic, orjson.dumps(event), self._device_id, self._kind,
                        0, None, events=1)  # fmt: skip

    def finish(self, until_s: float) -> list[Emission]:
        """What is still due when the run ends: a reading held back for out-of-order."""
        out: list[Emission] = []
        if self._held is not None:
            self._flush_held(max(self._last_s, self._held[1]) + EXTRA_STEP_S / 100, out)
        return [emission for emission in out if emission.sim_time_s < until_s]

    # --- episodes ---------------------------------------------------------------------

    def _chance(self, name: str) -> bool:
        rate = self._rates[name]
        return rate > 0.0 and self._rng.random() < rate

    def _silent(self, t: float) -> bool:
        if "dropout" in self._until:
            return True
        return "battery" in self._until and t >= self._battery[1]

    def _start_episodes(self, t: float, step: float, out: list[Emission]) -> None:
        for name in ("stuck", "skew", "battery", "dropout", "store-and-forward"):
            if name in self._until or not self._chance(name):
                continue
            if name in SILENCES and any(silence in self._until for silence in SILENCES):
                continue
            end = t + self._faults.get(name).duration_s
            self._until[name] = end
            if name == "stuck":
                self._frozen = None
            elif name == "skew":
                self._skew_s = self._rng.choice((-1.0, 1.0)) * self._rng.uniform(*SKEW_S)
            elif name == "battery":
                self._battery = (t, t + BROWNOUT_AT * (end - t))
            else:  # dropout, store-and-forward: the connection is lost; the broker says so
                self._status(t + min(LWT_DELAY_S, step), OFFLINE, name, out)

    def _end_episodes(self, t: float, out: list[Emission]) -> None:
        if "battery" in self._until and not self._browned_out and t >= self._battery[1]:
            self._browned_out = True
            self._status(t, OFFLINE, "battery", out)
        for name, end in list(self._until.items()):
            if end > t:
                continue
            del self._until[name]
            if name == "dropout":
                self._status(t, ONLINE, name, out)
            elif name == "battery" and self._browned_out:
                self._browned_out = False
                self._status(t, ONLINE, name, out)
            elif name == "store-and-forward":
                self._status(t, ONLINE, name, out)
                self._forward(t, out)

    def _status(self, at: float, status: bytes, fault: str, out: list[Emission]) -> None:
        out.append(Emission(at, self._status_topic, status, self._device_id, self._kind, 0,
                            fault, retain=True))  # fmt: skip
        self._last_s = at

    def _forward(self, t: float, out: list[Emission]) -> None:
        """The readings kept while offline, as JSON arrays within SPEC's count and size."""
        parts = [orjson.dumps(reading) for reading in self._buffer]
        self._buffer = []
        start = 0
        while start < len(parts):
            end, size = start, 2
            while end < len(parts) and end - start < MAX_BATCH:
                if size + len(parts[end]) + 1 > MAX_BATCH_BYTES and end > start:
                    break
                size += len(parts[end]) + 1
                end += 1
            payload = b"[" + b",".join(parts[start:end]) + b"]"
            out.append(Emission(t, self._topic, payload, self._device_id, self._kind,
                                end - start, "store-and-forward"))  # fmt: skip
            start = end
        self._last_s = t

    # --- one reading ------------------------------------------------------------------

    def _reading(self, t: float, measured: Reading) -> tuple[Reading, str | None]:
        fault: str | None = None
        if "battery" in self._until:
            start, brownout = self._battery
            share = (t - start) / (brownout - start) if brownout > start else 1.0
            measured["battery_v"] = round(DRAIN_V[0] + (DRAIN_V[1] - DRAIN_V[0]) * share, 2)
            fault = "battery"
        if "stuck" in self._until:
            if self._frozen is None:
                self._frozen = {k: v for k, v in measured.items() if k not in DIAGNOSTICS}
            measured.update(self._frozen)
            fault = "stuck"
        if self._chance("spike"):
            self._spike(measured)
            fault = "spike"
        ts = t
        if "skew" in self._until:
            ts, fault = t + self._skew_s, "skew"
        reading: Reading = {"ts": round(ts, 3), "seq": self._seq}
        reading.update(measured)
        self._seq += 1
        return reading, fault

    def _spike(self, measured: Reading) -> None:
        """One absurd but physically possible value, as a glitching sensor reports."""
        name, rng = PRIMARY[self._kind], self._rng
        value = measured.get(name)
        if not isinstance(value, float | int):
            return
        if self._kind is Kind.WATER_LEVEL:
            low, high, floor, ceiling = SPIKE_LEVEL_CM
            jump = rng.uniform(low, high) * rng.choice((-1.0, 1.0))
            measured[name] = round(min(max(value + jump, floor), ceiling), 1)
        elif self._kind is Kind.AIR_QUALITY:
            low, high, ceiling = SPIKE_PM_FACTOR
            measured[name] = round(min(max(value, 5.0) * rng.uniform(low, high), ceiling), 1)
        elif self._kind is Kind.CAMERA:
            measured[name] = round(rng.uniform(*SPIKE_WATER), 3)
        else:
            measured[name] = 0.0 if rng.random() < 0.5 else round(rng.uniform(*SPIKE_SPEED_KMH), 1)

    def _deliver(
        self, t: float, step: float, reading: Reading, fault: str | None, out: list[Emission]
    ) -> None:
        payload = orjson.dumps(reading)
        device_id, kind, topic = self._device_id, self._kind, self._topic
        if self._held is None and self._chance("out-of-order"):
            self._held = (payload, t)  # overtaken by the next reading
        else:
            out.append(Emission(t, topic, payload, device_id, kind, 1, fault))
            self._last_s = t
            self._flush_held(t + step, out)
            if self._chance("duplicate"):  # a QoS 1 resend after a lost PUBACK
                out.append(Emission(t + 2 * step, topic, payload, device_id, kind, 1,
                                    "duplicate"))  # fmt: skip
        if self._chance("malformed"):
            garbage = malformed_payload(kind, reading, self._rng)
            out.append(Emission(t + 3 * step, topic, garbage, device_id, kind, 0, "malformed"))
        if self._chance("unknown-device"):
            bogus = bogus_topic(self._topics, kind, device_id, self._rng)
            out.append(Emission(t + 4 * step, bogus, payload, device_id, kind, 0,
                                "unknown-device"))  # fmt: skip
        self._last_s = max(self._last_s, out[-1].sim_time_s) if out else self._last_s

    def _flush_held(self, at: float, out: list[Emission]) -> None:
        if self._held is None:
            return
        payload = self._held[0]
        self._held = None
        out.append(Emission(at, self._topic, payload, self._device_id, self._kind, 1,
                            "out-of-order"))  # fmt: skip
        self._last_s = at
