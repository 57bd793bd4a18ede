"""The Indonesian air quality index (ISPU, Permen LHK P.14/MENLHK/SETJEN/KUM.1/7/2020)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Category(StrEnum):
    """An ISPU category; the value is the slug alerts carry as label `level` (SPEC section 3)."""

    BAIK = "baik"  # 0-50, hijau
    SEDANG = "sedang"  # 51-100, biru
    TIDAK_SEHAT = "tidak-sehat"  # 101-200, kuning
    SANGAT_TIDAK_SEHAT = "sangat-tidak-sehat"  # 201-300, merah
    BERBAHAYA = "berbahaya"  # >= 301, hitam

    @property
    def display_name(self) -> str:
        """The name operators read: `Sangat Tidak Sehat`."""
        return self.value.replace("-", " ").title()

    @property
    def rank(self) -> int:
        return _CATEGORY_ORDER.index(self)

    @classmethod
    def of(cls, index: int) -> Category:
        """The category of a (whole) index value."""
        for upper, category in _CATEGORY_UPPER:
            if index <= upper:
                return category
        return cls.BERBAHAYA


_CATEGORY_ORDER: Final = tuple(Category)
# Upper index of each category but the last (jakarta.md section 3).
_CATEGORY_UPPER: Final = (
    (50, Category.BAIK),
    (100, Category.SEDANG),
    (200, Category.TIDAK_SEHAT),
    (300, Category.SANGAT_TIDAK_SEHAT),
)

# ISPU breakpoints, from the shared domain facts (jakarta.md section 3):
#   Permen LHK P.14/MENLHK/SETJEN/KUM.1/7/2020, Lampiran I; table as published at
#   https://123dok.com/id/docs/pengertian-dan-paraeter-ispu.12268587 and quoted identically
#   in several public codebases. Upper concentration per band, ug/m3, 24-hour averages:
#
#   | ISPU           | PM10 | PM2.5 | SO2   | CO     | O3    | NO2   | HC  |
#   | 50             | 50   | 15.5  | 52    | 4,000  | 120   | 80    | 45  |
#   | 100            | 150  | 55.4  | 180   | 8,000  | 235   | 200   | 100 |
#   | 200            | 350  | 150.4 | 400   | 15,000 | 400   | 1,130 | 215 |
#   | 300            | 420  | 250.4 | 800   | 30,000 | 800   | 2,260 | 432 |
#   | >300 (top row) | 500  | 500   | 1,200 | 45,000 | 1,000 | 3,000 | 648 |
#
# The top row is labelled ">300"; like most implementations we put index 500 at its
# concentration (some use 400: unconfirmed). Each band starts where the previous one ends,
# the first at 0 ug/m3 = index 0, so the index is continuous in the concentration.
INDEX_BREAKPOINTS: Final = (0, 50, 100, 200, 300, 500)
BREAKPOINTS: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {
        # Keys are the reading fields of SPEC section 1, in the table's column order.
        "pm10": (0, 50, 150, 350, 420, 500),
        "pm25": (0, 15.5, 55.4, 150.4, 250.4, 500),
        "so2": (0, 52, 180, 400, 800, 1200),
        "co": (0, 4000, 8000, 15000, 30000, 45000),
        "o3": (0, 120, 235, 400, 800, 1000),
        "no2": (0, 80, 200, 1130, 2260, 3000),
        "hc": (0, 45, 100, 215, 432, 648),
    }
)
MAX_INDEX: Final = INDEX_BREAKPOINTS[-1]  # above the top concentration the index stays here
# Float noise from the interpolation must not push an exact breakpoint into the next band.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class IspuResult:
    """The reported index (the highest sub-index), its category and the pollutant behind it."""

    index: int
    category: Category
    dominant: str


def sub_index(pollutant: str, concentration: float) -> float:
    """The sub-index of one pollutant (ug/m3), by linear interpolation within its band.

    I = (Ia - Ib) / (Xa - Xb) * (Xx - Xb) + Ib, the regulation's formula; clamped at 500.
    """
    points = BREAKPOINTS.get(pollutant)
    if points is None:
        known = ", ".join(BREAKPOINTS)
        raise ValueError(f"unknown pollutant {pollutant!r} (expected one of {known})")
    if not math.isfinite(concentration) or concentration < 0:
        raise ValueError(f"{pollutant}: concentration must be a number >= 0 (got {concentration})")
    for band in range(1, len(points)):
        low, high = points[band - 1], points[band]
        if concentration <= high:
            index_low, index_high = INDEX_BREAKPOINTS[band - 1], INDEX_BREAKPOINTS[band]
            return index_low + (index_high - index_low) * (concentration - low) / (high - low)
    return float(MAX_INDEX)


def ispu(values: Mapping[str, float]) -> IspuResult:
    """The ISPU of a set of concentrations; keys that are not ISPU pollutants are ignored.

    The index is the highest sub-index rounded up, so a concentration just above a
    breakpoint is never reported in the lower category (15.6 ug/m3 PM2.5 is 51, Sedang).
    Ties go to the pollutant first in the table. Raises ValueError without any pollutant.
    """
    best: tuple[float, str] | None = None
    for pollutant in BREAKPOINTS:
        if pollutant in values:
            value = sub_index(pollutant, values[pollutant])
            if best is None or value > best[0]:
                best = (value, pollutant)
    if best is None:
        raise ValueError(f"no ISPU pollutant among {', '.join(values) or 'no values'}")
    index = max(0, math.ceil(best[0] - _EPSILON))
    return IspuResult(index=index, category=Category.of(index), dominant=best[1])
