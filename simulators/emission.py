"""One message a simulated device sends: its simulated time, topic and exact payload."""

from __future__ import annotations

from dataclasses import dataclass

from devices.kinds import Kind


@dataclass(frozen=True, slots=True)
class Emission:
    """What goes on the wire, when, from which device, and which fault (if any) shaped it.

    `readings` counts the readings in the payload that Siaga will accept and store: 1 for a
    reading (a duplicate too: Siaga stores it again, over the same point), the batch size
    for a store-and-forward batch, 0 for a status, a malformed payload or an unknown device.
    `events` is 1 for a camera's detection (SPEC section 7), which carries no reading.
    `device_id` is always the simulated device that sends it, so a fleet publishes it over
    that device's connection; the topic may name another (an unknown-device fault).
    """

    sim_time_s: float  # simulated Unix time at which the device sends it
    topic: str  # full topic (faults may use a bogus device id or a malformed topic)
    payload: bytes  # exactly what goes on the wire (a malformed fault is malformed here)
    device_id: str
    kind: Kind
    readings: int  # valid readings inside (0 for malformed payloads and statuses)
    fault: str | None  # None, or the fault's name (simulators.faults.FAULT_NAMES)
    retain: bool = False  # status messages are retained
    events: int = 0  # a camera's detection on its events topic: 1 (its readings: 0)
