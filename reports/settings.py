"""The report book's settings (`reports:` in siaga.yaml; siaga.settings composes them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from pydantic import Field, SecretStr, field_validator, model_validator

from reports.categories import CODES, DEFAULT_CATEGORIES, Category
from siaga_core.configfile import StrictModel, unknown_key
from siaga_core.durations import Duration
from siaga_core.geo import Box

MIB: Final = 1024 * 1024
DESCRIPTION_MAX_CHARS: Final = 4000  # SPEC/issue: a report's text, at most


class JurisdictionSettings(StrictModel):
    """Where reports may come from. The default box holds DKI Jakarta, Thousand Islands
    (Kepulauan Seribu, up to Pulau Sebira near 5.2 S) included."""

    id: str = "jakarta.go.id"  # GeoReport `jurisdiction_id`
    south: float = Field(default=-6.40, ge=-90, le=90)
    west: float = Field(default=106.35, ge=-180, le=180)
    north: float = Field(default=-5.10, ge=-90, le=90)
    east: float = Field(default=107.00, ge=-180, le=180)

    @model_validator(mode="after")
    def _ordered(self) -> JurisdictionSettings:
        if not (self.south < self.north and self.west < self.east):
            raise ValueError("south must be below north and west left of east")
        return self

    @property
    def box(self) -> Box:
        return Box(self.south, self.west, self.north, self.east)


class CategorySettings(StrictModel):
    """Overrides of one category's defaults (reports.categories)."""

    agency: str | None = Field(default=None, min_length=1)
    response_time: Duration | None = None


class ReportsSettings(StrictModel):
    # Empty: SQLite in the data directory. postgresql://user:pass@host:port/db: a shared
    # book for several Siaga instances (better given in SIAGA_REPORTS_DATABASE_URL).
    database_url: SecretStr | None = None
    photo_max_bytes: int = Field(default=10 * MIB, ge=1024)
    # Decoded size limit: a 40-megapixel photo is more than any phone sends; a larger
    # image is a decompression bomb (a tiny file that decodes to gigabytes).
    photo_max_pixels: int = Field(default=40_000_000, ge=10_000)
    # Per API key. An aggregator app forwarding a city's residents lives with 60 a minute
    # (Jakarta averaged about 16 an hour in 2020, a few hundred in an hour of flooding).
    rate_limit_per_minute: int = Field(default=60, ge=1)
    duplicate_radius_m: float = Field(default=100.0, gt=0)
    duplicate_window: Duration = timedelta(hours=24)
    jurisdiction: JurisdictionSettings = JurisdictionSettings()
    categories: dict[str, CategorySettings] = Field(default_factory=dict)

    @field_validator("categories")
    @classmethod
    def _known(cls, categories: dict[str, CategorySettings]) -> dict[str, CategorySettings]:
        for code in categories:
            if code not in CODES:
                raise ValueError(unknown_key(code, CODES))
        return categories

    def resolved_categories(self) -> tuple[Category, ...]:
        """The categories with this file's overrides applied, in SPEC order."""
        result = []
        for category in DEFAULT_CATEGORIES:
            override = self.categories.get(category.code)
            result.append(category if override is None else
                          category.with_overrides(override.agency, override.response_time))
        return tuple(result)
