"""The categories residents report under (SPEC section 6) and the agency each goes to.

Agencies follow the city's practice as described by the seed (banjir to BPBD and Dinas SDA,
sampah to Dinas Lingkungan Hidup...). Response times (how soon an officer should first
acknowledge a report before `ReportOverdue` fires) are Siaga's defaults, not a published
service level: both are configurable under `reports.categories` in the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final


@dataclass(frozen=True, slots=True)
class Attribute:
    """A category's extra field (GeoReport service definition `attributes`)."""

    code: str
    datatype: str  # GeoReport datatypes: string, number, datetime, text, singlevaluelist...
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Category:
    code: str  # GeoReport `service_code`
    name: str  # Bahasa Indonesia, as residents see it
    name_en: str
    description: str
    agency: str  # GeoReport `agency_responsible`
    response_time: timedelta  # first acknowledgement due within this
    group: str  # GeoReport `group`
    attributes: tuple[Attribute, ...] = ()

    def with_overrides(self, agency: str | None, response_time: timedelta | None) -> Category:
        return Category(self.code, self.name, self.name_en, self.description,
                        agency if agency is not None else self.agency,
                        response_time if response_time is not None else self.response_time,
                        self.group, self.attributes)


_H = timedelta(hours=1)
OTHER: Final = "lainnya"  # the catch-all; statistics list it after the named categories
DEFAULT_CATEGORIES: Final[tuple[Category, ...]] = (
    Category("banjir", "Banjir", "Flood", "Genangan atau banjir di jalan, permukiman, underpass",
             "BPBD DKI Jakarta; Dinas Sumber Daya Air", 1 * _H, "bencana",
             (Attribute("kedalaman_cm", "number", "Perkiraan kedalaman air (cm)"),)),
    Category("macet", "Kemacetan", "Traffic jam", "Kemacetan lalu lintas",
             "Dinas Perhubungan", 1 * _H, "lalu-lintas"),
    Category("jalan-rusak", "Jalan rusak", "Damaged road", "Jalan berlubang atau rusak",
             "Dinas Bina Marga", 24 * _H, "prasarana"),
    Category("sampah", "Sampah", "Rubbish", "Sampah menumpuk atau tidak diangkut",
             "Dinas Lingkungan Hidup", 24 * _H, "lingkungan"),
    Category("pohon", "Pohon", "Trees", "Pohon tumbang, rawan tumbang, atau perlu dipangkas",
             "Dinas Pertamanan dan Hutan Kota", 3 * _H, "lingkungan"),
    Category("parkir-liar", "Parkir liar", "Illegal parking",
             "Kendaraan parkir di tempat terlarang",
             "Dinas Perhubungan", 6 * _H, "lalu-lintas"),
    Category("gangguan-ketenteraman", "Gangguan ketenteraman", "Public order",
             "Gangguan ketenteraman dan ketertiban umum", "Satpol PP", 6 * _H, "ketertiban"),
    Category("pelanggaran-perda", "Pelanggaran perda/pergub", "Bylaw violation",
             "Pelanggaran peraturan daerah atau peraturan gubernur", "Satpol PP", 24 * _H,
             "ketertiban"),
    Category("kriminalitas", "Rawan kriminalitas", "Crime-prone place",
             "Tempat rawan tindak kriminal", "Satpol PP; Kepolisian", 3 * _H, "ketertiban"),
    Category("pelayanan-publik", "Pelayanan publik", "Public service failure",
             "Pelayanan publik yang gagal atau buruk", "Inspektorat", 24 * _H, "pelayanan"),
    # Beyond SPEC's ten, as GeoReport lets a city list its own services: the CRM counted
    # dozens of categories, and a report that fits none of the ten must still be taken.
    # Officers send it on to the unit concerned (disposisi).
    Category(OTHER, "Lainnya", "Other", "Laporan lain yang tidak masuk kategori di atas",
             "Diskominfotik", 24 * _H, "lainnya"),
)
CODES: Final = tuple(category.code for category in DEFAULT_CATEGORIES)
FLOOD: Final = "banjir"
JAM: Final = "macet"
