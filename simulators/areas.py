"""Jakarta's places for simulated reports: the 44 kecamatan, weighted by population.

The kecamatan and their kota are those of `shared/domain/jakarta.md` section 6. We have no
kelurahan or kecamatan populations, so each kota's 2020 census population is split evenly over
its kecamatan: a report lands in a kota as often as its people, and evenly inside it.

The centroids are APPROXIMATE and UNCONFIRMED: read off general knowledge of the map to about
a kilometre, not from a gazetteer. A point is the centroid jittered within `JITTER_KM` and
clamped to DKI Jakarta's bounds, so it always lies inside the jurisdiction the API checks.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from typing import Final

# DKI Jakarta's bounds, Thousand Islands included: the default jurisdiction of intake.
LAT_MIN, LAT_MAX = -6.40, -5.10
LON_MIN, LON_MAX = 106.35, 107.00
JITTER_KM: Final = 1.0  # about a kecamatan's half-width in the city; a centroid is no closer
ISLAND_JITTER_KM: Final = 0.3  # the islands are small: a kilometre would put reports at sea
KM_PER_DEG_LAT: Final = 111.32

# 2020 census (Sensus Penduduk 2020), by kota administrasi.
KOTA_POPULATION: Final[dict[str, int]] = {
    "Jakarta Timur": 3_037_139,
    "Jakarta Barat": 2_434_511,
    "Jakarta Selatan": 2_226_812,
    "Jakarta Utara": 1_778_981,
    "Jakarta Pusat": 1_056_896,
    "Kepulauan Seribu": 27_749,
}

# (kecamatan, approximate centroid lat, lon): unconfirmed, to about a kilometre.
_KECAMATAN: Final[dict[str, tuple[tuple[str, float, float], ...]]] = {
    "Kepulauan Seribu": (
        ("Kepulauan Seribu Utara", -5.655, 106.565),  # Pulau Kelapa
        ("Kepulauan Seribu Selatan", -5.800, 106.505),  # Pulau Tidung
    ),
    "Jakarta Pusat": (
        ("Gambir", -6.176, 106.820), ("Sawah Besar", -6.153, 106.833),
        ("Kemayoran", -6.162, 106.855), ("Senen", -6.183, 106.845),
        ("Cempaka Putih", -6.178, 106.868), ("Menteng", -6.197, 106.834),
        ("Tanah Abang", -6.205, 106.810), ("Johar Baru", -6.184, 106.857),
    ),
    "Jakarta Utara": (
        ("Penjaringan", -6.118, 106.770), ("Pademangan", -6.130, 106.840),
        ("Tanjung Priok", -6.125, 106.875), ("Koja", -6.117, 106.907),
        ("Kelapa Gading", -6.160, 106.905), ("Cilincing", -6.120, 106.945),
    ),
    "Jakarta Barat": (
        ("Cengkareng", -6.150, 106.735), ("Grogol Petamburan", -6.165, 106.790),
        ("Taman Sari", -6.145, 106.815), ("Tambora", -6.148, 106.802),
        ("Kebon Jeruk", -6.195, 106.770), ("Kalideres", -6.135, 106.705),
        ("Palmerah", -6.195, 106.795), ("Kembangan", -6.185, 106.740),
    ),
    "Jakarta Selatan": (
        ("Kebayoran Baru", -6.240, 106.800), ("Kebayoran Lama", -6.245, 106.775),
        ("Pesanggrahan", -6.255, 106.755), ("Cilandak", -6.290, 106.795),
        ("Pasar Minggu", -6.290, 106.840), ("Jagakarsa", -6.335, 106.820),
        ("Mampang Prapatan", -6.250, 106.825), ("Pancoran", -6.255, 106.845),
        ("Tebet", -6.230, 106.855), ("Setiabudi", -6.215, 106.830),
    ),
    "Jakarta Timur": (
        ("Matraman", -6.202, 106.860), ("Pulo Gadung", -6.190, 106.895),
        ("Jatinegara", -6.225, 106.870), ("Kramat Jati", -6.270, 106.865),
        ("Pasar Rebo", -6.320, 106.855), ("Cakung", -6.185, 106.940),
        ("Duren Sawit", -6.230, 106.915), ("Makasar", -6.265, 106.885),
        ("Ciracas", -6.325, 106.875), ("Cipayung", -6.320, 106.900),
    ),
}


@dataclass(frozen=True, slots=True)
class Kecamatan:
    name: str
    kota: str
    lat: float  # approximate centroid (unconfirmed)
    lon: float
    population: float  # the kota's census population over its kecamatan

    def __post_init__(self) -> None:
        if not (LAT_MIN <= self.lat <= LAT_MAX and LON_MIN <= self.lon <= LON_MAX):
            raise ValueError(f"{self.name}: ({self.lat}, {self.lon}) is outside DKI Jakarta")

    @property
    def island(self) -> bool:
        return self.kota == "Kepulauan Seribu"


def _kecamatan() -> tuple[Kecamatan, ...]:
    return tuple(Kecamatan(name, kota, lat, lon, KOTA_POPULATION[kota] / len(places))
                 for kota, places in _KECAMATAN.items() for name, lat, lon in places)


KECAMATAN: Final = _kecamatan()


class Places:
    """Draws kecamatan by population and points near their centroids, from one `rng`."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._cumulative = list(itertools.accumulate(place.population for place in KECAMATAN))

    def draw(self) -> tuple[Kecamatan, float, float]:
        """A kecamatan and a point (lat, lon) within its jitter, inside DKI Jakarta."""
        # bisect rather than `choices`: a year draws 137,776 places, and `choices` costs 5x
        place = KECAMATAN[bisect.bisect(self._cumulative,
                                        self._rng.random() * self._cumulative[-1])]
        radius = (ISLAND_JITTER_KM if place.island else JITTER_KM) * math.sqrt(self._rng.random())
        angle = self._rng.uniform(0.0, 2 * math.pi)  # sqrt above: uniform over the disc
        lat = place.lat + radius * math.cos(angle) / KM_PER_DEG_LAT
        lon = place.lon + radius * math.sin(angle) / (KM_PER_DEG_LAT * math.cos(math.radians(lat)))
        return (place, round(min(LAT_MAX, max(LAT_MIN, lat)), 6),
                round(min(LON_MAX, max(LON_MIN, lon)), 6))


def inside_jakarta(lat: float, lon: float) -> bool:
    return LAT_MIN <= lat <= LAT_MAX and LON_MIN <= lon <= LON_MAX
