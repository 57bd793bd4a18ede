"""Distances and boxes on the Earth's surface: shared by reports, rules and simulators."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

EARTH_RADIUS_M: Final = 6_371_008.8  # the mean radius (IUGG); metres matter, not millimetres


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance in metres (haversine: exact enough at a city's scale)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Box:
    """A latitude/longitude box, south-west to north-east (never across the antimeridian)."""

    south: float
    west: float
    north: float
    east: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lon <= self.east

    @classmethod
    def around(cls, lat: float, lon: float, radius_m: float) -> Box:
        """The box holding every point within `radius_m` of (lat, lon): a cheap pre-filter."""
        dlat = math.degrees(radius_m / EARTH_RADIUS_M)
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        return cls(lat - dlat, lon - dlon, lat + dlat, lon + dlon)

    def __str__(self) -> str:
        return f"{self.south:g},{self.west:g},{self.north:g},{self.east:g}"
