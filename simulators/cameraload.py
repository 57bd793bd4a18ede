"""Load mode's cameras: thousands of them, counts every 10 s and detections at a city's rate.

Beside the round-robin of `simulators.load` (readings at a fixed aggregate rate), cameras
keep their own clock: each sends its counts every `interval_s` and the fleet its detections
(a `new` then an `end`, Frigate-style) at `detections_per_camera_h`. Quiet values, so a load
run raises no flood or jam; plates are made up, a few from the watch list of the demo.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import orjson

from devices.kinds import Kind
from devices.registry import Device
from devices.topics import TopicScheme
from simulators.cameras import LISTED_SHARE, WATCHED_PLATES, random_plate
from simulators.connection import Tag
from simulators.summary import EVENT_KEY, Key, Tally

CAMERA_INTERVAL_S = 10.0  # SPEC section 7 / devices.kinds: a camera's counts every 10 s
# Detections a camera publishes an hour, on average over a day (illustrative, as the
# scenarios' intersections: ~18 plates read, ~4 wrong-way riders, ~2 illegally parked).
DETECTIONS_PER_CAMERA_H = 24.0
LABELS: Final = (("plate", 0.75), ("wrong-way", 0.15), ("illegal-parking", 0.1))
ZONES: Final = ("north", "south", "east", "west")
ANALYTICS: Final = ("flood", "congestion", "illegal-parking", "wrong-way", "plate", "vehicle")
LASTING_S = (2.0, 30.0)  # from new to end
GRID_STEP_DEG = 0.002  # as the synthetic devices' grid (~220 m)
CAMERA_GRID_OFFSET_DEG = (0.02, 0.0)  # north of the devices' grid, so they do not overlap


class Publisher(Protocol):
    """What the cameras need of a connection (simulators.connection.Connection)."""

    def publish(self, topic: str, payload: bytes, tag: Tag, readings: int,
                retain: bool = False) -> None: ...


def synthetic_cameras(count: int, *, centre: tuple[float, float]) -> list[Device]:
    """`count` cameras `load-cam-000001`... on a grid beside the synthetic devices' one."""
    side = math.ceil(math.sqrt(max(count, 1)))
    lat0, lon0 = centre[0] + CAMERA_GRID_OFFSET_DEG[0], centre[1] + CAMERA_GRID_OFFSET_DEG[1]
    return [Device(
        id=f"load-cam-{number:06d}", kind=Kind.CAMERA, name=f"Load camera {number}",
        lat=round(lat0 + ((number - 1) // side) * GRID_STEP_DEG, 6),
        lon=round(lon0 + ((number - 1) % side - side / 2) * GRID_STEP_DEG, 6),
        labels={"kota": "load-test"}, spot=f"Load road {number}",
        zones=ZONES, analytics=ANALYTICS,
    ) for number in range(1, count + 1)]


@dataclass(slots=True)
class _Camera:
    device_id: str
    telemetry: str
    events: str
    seq: int = 0


class CameraLoad:
    """Publishes what is due of the cameras' counts and detections at `elapsed_s`."""

    def __init__(self, cameras: Sequence[Device], topics: TopicScheme, rng: random.Random,
                 interval_s: float = CAMERA_INTERVAL_S,
                 detections_per_camera_h: float = DETECTIONS_PER_CAMERA_H) -> None:
        self._cameras = [_Camera(c.id, topics.telemetry(Kind.CAMERA, c.id), topics.events(c.id))
                         for c in cameras]
        self._rng = rng
        self._readings_per_s = len(self._cameras) / interval_s
        self._detections_per_s = len(self._cameras) * detections_per_camera_h / 3600
        self._readings = self._detections = 0  # published so far
        self._next = 0
        self._labels = [label for label, _ in LABELS]
        self._weights = [weight for _, weight in LABELS]

    def __len__(self) -> int:
        return len(self._cameras)

    def due(self, elapsed_s: float) -> int:
        """Messages due and not yet published (a detection is two: new and end)."""
        readings = int(elapsed_s * self._readings_per_s) - self._readings
        detections = int(elapsed_s * self._detections_per_s) - self._detections
        return readings + 2 * detections

    def publish(self, outlet: Publisher, elapsed_s: float, now: float, room: int,
                tally: Tally) -> int:
        """Publishes up to `room` messages of what is due; returns how many."""
        sent = 0
        key: Key = (Kind.CAMERA.value, None)
        while sent < room and self._readings < int(elapsed_s * self._readings_per_s):
            camera = self._cameras[self._next]
            self._next = (self._next + 1) % len(self._cameras)
            outlet.publish(camera.telemetry, orjson.dumps(self._counts(camera, now)), key, 1)
            tally.add(key, 1)
            sent += 1
        while sent + 2 <= room and self._detections < int(elapsed_s * self._detections_per_s):
            for body in self._detection(now):
                outlet.publish(body[0], body[1], EVENT_KEY, 0)
                tally.add(EVENT_KEY, 0)
            self._detections += 1
            sent += 2
        return sent

    def _counts(self, camera: _Camera, now: float) -> dict[str, object]:
        rng = self._rng
        reading: dict[str, object] = {
            "ts": round(now, 6), "seq": camera.seq,
            "vehicles_per_min": round(rng.uniform(40.0, 160.0), 1),
            "mean_speed_kmh": round(rng.uniform(30.0, 50.0), 1),
            "water_score": round(rng.uniform(0.0, 0.1), 3),
            "people": rng.randint(0, 30),
        }  # fmt: skip
        camera.seq += 1
        self._readings += 1
        return reading

    def _detection(self, now: float) -> list[tuple[str, bytes]]:
        rng = self._rng
        camera = rng.choice(self._cameras)
        label = rng.choices(self._labels, self._weights)[0]
        start = now - rng.uniform(*LASTING_S)
        event: dict[str, object] = {
            "event_id": f"{start:.6f}-{rng.getrandbits(24):06x}", "label": label,
            "score": round(rng.uniform(0.6, 0.97), 3), "zone": rng.choice(ZONES),
        }  # fmt: skip
        if label == "plate":
            listed = rng.random() < LISTED_SHARE
            event["plate"] = rng.choice(WATCHED_PLATES) if listed else random_plate(rng)
        new = orjson.dumps({**event, "ts": round(start, 6), "type": "new"})
        end = orjson.dumps({**event, "ts": round(now, 6), "type": "end"})
        return [(camera.events, new), (camera.events, end)]
