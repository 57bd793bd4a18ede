"""A city's year of citizens' reports and officers' updates: the plan.

`plan_year` is pure and seeded: the same year, scale and seed give the same reports, in time
order, with their updates. At scale 1.0 the total, the resolved count and the top five
categories are exactly the figures Jakarta's CRM published for 2020, so `siaga reports stats`
counts them back from storage. `simulators.reportposter.post_plan` puts a plan through Siaga's
real HTTP API.
"""

from __future__ import annotations

import bisect
import heapq
import io
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from PIL import Image, ImageDraw

from reports.categories import DEFAULT_CATEGORIES, OTHER
from reports.model import CLOSING, State
from simulators.areas import Places
from simulators.calendar import WIB

# --- what the year holds -------------------------------------------------------------------

CRM_2020_TOTAL: Final = 137_776  # Jakarta CRM, 2020: reports received
CRM_2020_RESOLVED: Final = 137_574  # of which resolved (99.85%)
# The published top five, exact; the other five are Siaga's ASSUMPTION. The real CRM had many
# more categories than our ten: the 76,762 reports outside the top five cannot all fit in our
# other five with each under pelanggaran-perda's 7,860 (at most 39,295). Those five keep
# plausible sizes below it, and the rest goes to `lainnya`, the catch-all category (the CRM's
# other categories), which statistics list after the named ones.
CRM_2020_COUNTS: Final[dict[str, int]] = {
    "gangguan-ketenteraman": 15_968,
    "sampah": 14_494,
    "parkir-liar": 14_493,
    "pohon": 8_199,
    "pelanggaran-perda": 7_860,
    "jalan-rusak": 7_527,  # assumption
    "banjir": 6_912,  # assumption: 2020 opened with the 1 January flood
    "macet": 5_314,  # assumption: PSBB emptied the roads from April
    "kriminalitas": 2_846,  # assumption
    "pelayanan-publik": 7_000,  # assumption
}
CATCH_ALL: Final = OTHER  # the remainder: 47,163 at scale 1.0 (assumption)
PHOTO_SHARE: Final = 0.1  # one report in ten carries a photo (assumption)
CONTACT_SHARE: Final = 0.3  # residents who leave an e-mail and a first name (assumption)
PHOTO_VARIANTS: Final = 4  # distinct generated JPEGs, reused: intake stores each once by hash

# Relative reports per hour of the day (WIB), 0..23. Few at night; `macet` on the rush hours.
_DAYTIME: Final = (0.15, 0.1, 0.08, 0.08, 0.12, 0.35, 0.7, 0.95, 1.0, 1.0, 1.0, 0.95,
                   0.9, 0.95, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.55, 0.4, 0.25)
_EVENING: Final = (0.5, 0.4, 0.3, 0.2, 0.15, 0.2, 0.4, 0.6, 0.7, 0.75, 0.75, 0.75,
                   0.75, 0.75, 0.75, 0.8, 0.8, 0.85, 0.9, 1.0, 1.0, 1.0, 0.9, 0.7)
_RUSH: Final = (0.05, 0.03, 0.03, 0.03, 0.1, 0.4, 1.0, 1.0, 0.9, 0.5, 0.35, 0.3,
                0.35, 0.3, 0.35, 0.5, 0.9, 1.0, 1.0, 0.7, 0.4, 0.2, 0.1, 0.07)
_HOURS: Final = {"macet": _RUSH, "gangguan-ketenteraman": _EVENING, "kriminalitas": _EVENING}
_WEEKEND: Final = {"macet": 0.35, "parkir-liar": 1.1}  # a weekend day against a weekday; else 0.85
# Relative reports per month, January first: the rainy season (November to March).
_MONTHS: Final = {
    "banjir": (3.0, 3.0, 1.6, 1.0, 0.5, 0.3, 0.2, 0.15, 0.2, 0.5, 1.0, 1.8),
    "pohon": (1.4, 1.4, 1.2, 1.0, 0.8, 0.7, 0.7, 0.7, 0.8, 1.0, 1.3, 1.4),
}
# Days of a year that were not like the others: (category, month, first day, last day, factor).
_EVENTS: Final = {2020: (
    ("banjir", 1, 1, 1, 30.0), ("banjir", 1, 2, 2, 12.0), ("banjir", 1, 3, 3, 5.0),  # 1 Jan flood
    ("banjir", 2, 23, 23, 6.0), ("banjir", 2, 25, 25, 10.0), ("banjir", 2, 26, 26, 4.0),
    ("macet", 4, 10, 30, 0.4), ("macet", 5, 1, 31, 0.4), ("macet", 6, 1, 4, 0.4),  # PSBB
)}


@dataclass(frozen=True, slots=True)
class PlannedUpdate:
    state: State
    note: str
    officer: str
    at_s: int  # epoch seconds; after the report's, and after the report's previous update


@dataclass(frozen=True, slots=True)
class PlannedReport:
    index: int  # its place in the plan, from 0
    service_code: str
    requested_s: int  # epoch seconds: `requested_datetime`
    lat: float
    lon: float
    kecamatan: str
    description: str
    photo: int | None  # which of the plan's `photos`, or None
    depth_cm: int | None  # banjir's `attribute[kedalaman_cm]`
    email: str | None
    first_name: str | None
    updates: tuple[PlannedUpdate, ...]

    @property
    def closed(self) -> bool:
        return bool(self.updates) and self.updates[-1].state in CLOSING


Event = tuple[int, PlannedReport, PlannedUpdate | None]  # (at_s, report, None or an update)


@dataclass(frozen=True, slots=True)
class YearPlan:
    year: int
    scale: float
    seed: int
    reports: tuple[PlannedReport, ...]  # in `requested_s` order
    photos: tuple[bytes, ...] = field(repr=False)

    def counts(self) -> dict[str, int]:
        return dict(Counter(report.service_code for report in self.reports))

    @property
    def resolved(self) -> int:
        return sum(report.closed for report in self.reports)

    @property
    def updates(self) -> int:
        return sum(len(report.updates) for report in self.reports)

    def events(self) -> Iterator[Event]:
        """Reports and updates in simulated-time order; a report always before its updates."""
        pending: list[tuple[int, int, int, PlannedReport, PlannedUpdate]] = []
        for report in self.reports:
            while pending and pending[0][0] <= report.requested_s:
                at, _, _, owner, update = heapq.heappop(pending)
                yield at, owner, update
            yield report.requested_s, report, None
            for number, update in enumerate(report.updates):
                heapq.heappush(pending, (update.at_s, report.index, number, report, update))
        while pending:
            at, _, _, owner, update = heapq.heappop(pending)
            yield at, owner, update


def planned_counts(scale: float) -> dict[str, int]:
    """Reports per category: the published ones times `scale`, rounded; the rest to CATCH_ALL."""
    counts = {code: round(count * scale) for code, count in CRM_2020_COUNTS.items()}
    counts[CATCH_ALL] = max(0, round(CRM_2020_TOTAL * scale) - sum(counts.values()))
    return counts


def planned_resolved(total: int) -> int:
    return round(total * CRM_2020_RESOLVED / CRM_2020_TOTAL)


def plan_year(year: int, scale: float = 1.0, seed: int = 2020) -> YearPlan:
    """A year of reports in Jakarta (WIB), `scale` times the CRM's 2020, seeded."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    rng = random.Random(f"siaga-reports-{year}-{seed}")
    start = int(datetime(year, 1, 1, tzinfo=WIB).timestamp())
    days = (datetime(year + 1, 1, 1, tzinfo=WIB) - datetime(year, 1, 1, tzinfo=WIB)).days
    timed = sorted((t, code) for code, n in planned_counts(scale).items()
                   for t in _times(rng, year, start, days, code, n))
    closing = set(rng.sample(range(len(timed)), planned_resolved(len(timed))))
    places = Places(rng)
    reports = tuple(_report(rng, places, index, t, code, index in closing)
                    for index, (t, code) in enumerate(timed))
    return YearPlan(year, scale, seed, reports, _photos(random.Random(seed)))


def _times(rng: random.Random, year: int, start: int, days: int, code: str,
           n: int) -> list[int]:
    """`n` instants of the year for `code`, drawn hour by hour from its weights."""
    hours = _HOURS.get(code, _DAYTIME)
    months = _MONTHS.get(code, (1.0,) * 12)
    weekend = _WEEKEND.get(code, 0.85)
    events = {}
    for category, month, first, last, factor in _EVENTS.get(year, ()):
        if category == code:
            events.update({(month, day): factor for day in range(first, last + 1)})
    weights: list[float] = []
    for day in range(days):
        date = datetime.fromtimestamp(start + day * 86_400, WIB)
        factor = (months[date.month - 1] * events.get((date.month, date.day), 1.0)
                  * (weekend if date.weekday() >= 5 else 1.0))
        weights.extend(factor * weight for weight in hours)
    chosen = rng.choices(range(len(weights)), cum_weights=list(itertools.accumulate(weights)),
                         k=n)
    return [start + hour * 3600 + rng.randrange(3600) for hour in chosen]


def _report(rng: random.Random, places: Places, index: int, t: int, code: str,
            closes: bool) -> PlannedReport:
    place, lat, lon = places.draw()
    depth = rng.choice(_DEPTHS) if code == "banjir" else None
    photo = rng.randrange(PHOTO_VARIANTS) if rng.random() < PHOTO_SHARE else None
    email = first_name = None
    if rng.random() < CONTACT_SHARE:
        first_name = rng.choice(_RESIDENTS)
        email = f"{first_name.lower()}{rng.randrange(1000)}@example.com"
    return PlannedReport(index, code, t, lat, lon, place.name,
                         _description(rng, code, place.name, depth), photo, depth, email,
                         first_name, _updates(rng, code, t, closes))


# --- what residents write, and officers answer (Bahasa Indonesia) --------------------------

_DEPTHS: Final = (10, 15, 20, 20, 30, 30, 40, 50, 50, 60, 70, 80, 100, 120, 150)
_RESIDENTS: Final = ("Andi", "Budi", "Citra", "Dian", "Eko", "Fajar", "Gita", "Hadi", "Indah",
                     "Joko", "Kartika", "Lestari", "Made", "Nur", "Putri", "Rizky", "Sari",
                     "Teguh", "Wahyu", "Yanti")
_OFFICERS: Final = ("Agus", "Bambang", "Dewi", "Fitri", "Hendra", "Rahmat", "Rina", "Siti",
                    "Slamet", "Wulan", "Yusuf", "Zainal")
_WHERE: Final = ("di jalan utama", "dekat pasar", "depan sekolah", "di gang sempit",
                 "dekat halte", "di perempatan", "depan masjid", "di pinggir kali",
                 "dekat stasiun", "di kompleks perumahan")
_CLOSERS: Final = ("", "", " Mohon segera ditindaklanjuti.", " Tolong dicek.",
                   " Terima kasih.", " Sudah lapor RT tapi belum ada tindakan.")
_SAYS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {  # (what, detail)
    "banjir": (("Banjir setinggi {d} cm", "Genangan air sekitar {d} cm",
                "Air masuk rumah warga kira-kira {d} cm", "Jalan tergenang {d} cm"),
               ("motor banyak yang mogok", "saluran air meluap", "air terus naik",
                "warga mulai mengungsi")),
    "macet": (("Macet total", "Kemacetan parah", "Lalu lintas tersendat",
               "Antrean kendaraan panjang"),
              ("lampu lalu lintas mati", "ada kendaraan mogok", "tidak ada petugas",
               "ada galian kabel")),
    "jalan-rusak": (("Jalan berlubang", "Aspal rusak dan bergelombang",
                     "Lubang besar di tengah jalan", "Trotoar amblas"),
                    ("berbahaya bagi pengendara motor", "sudah ada yang jatuh",
                     "tergenang air saat hujan")),
    "sampah": (("Sampah menumpuk", "Sampah tidak diangkut", "Tumpukan sampah liar",
                "Sampah menyumbat saluran"),
               ("sudah tiga hari", "baunya menyengat", "mengundang lalat dan tikus")),
    "pohon": (("Pohon tumbang", "Dahan pohon patah", "Pohon rawan tumbang",
               "Ranting pohon mengenai kabel listrik"),
              ("menghalangi jalan", "mohon dipangkas", "menimpa pagar warga")),
    "parkir-liar": (("Parkir liar", "Mobil parkir di trotoar", "Motor parkir di bahu jalan",
                     "Juru parkir liar"),
                    ("bikin macet", "menghalangi pejalan kaki", "setiap sore")),
    "gangguan-ketenteraman": (("Suara musik keras", "Warga berkumpul sampai larut malam",
                               "Balap liar", "Keributan antarwarga"),
                              ("sampai jam dua pagi", "mengganggu warga", "tiap malam minggu")),
    "pelanggaran-perda": (("Pedagang kaki lima di trotoar", "Bangunan tanpa izin",
                           "Reklame liar", "Usaha buka melanggar aturan PSBB"),
                          ("sudah berulang kali", "mohon ditertibkan")),
    "kriminalitas": (("Rawan begal", "Sering ada pencurian motor",
                      "Lampu jalan mati, rawan kejahatan"),
                     ("terutama malam hari", "warga resah")),
    "pelayanan-publik": (("Lampu penerangan jalan mati", "Pelayanan di kelurahan lambat",
                          "Air PAM tidak mengalir", "Fasilitas taman rusak",
                          "Bantuan sosial belum diterima"),
                         ("sudah seminggu", "mohon dibantu")),
    OTHER: (("Kabel menjuntai di jalan", "Saluran air tersumbat", "Hewan liar masuk permukiman",
             "Fasilitas umum rusak", "Pungutan liar di pasar"),
            ("mohon ditindaklanjuti", "sudah lama dibiarkan", "warga resah")),
}
_FIXED: Final = {
    "banjir": "Air sudah surut, saluran dibersihkan.", "macet": "Lalu lintas sudah lancar.",
    "jalan-rusak": "Lubang sudah ditambal.", "sampah": "Sampah sudah diangkut.",
    "pohon": "Pohon sudah dipotong dan dibersihkan.",
    "parkir-liar": "Kendaraan sudah ditertibkan.",
    "gangguan-ketenteraman": "Sudah ditertibkan petugas.",
    "pelanggaran-perda": "Pelanggar sudah ditertibkan dan diberi teguran.",
    "kriminalitas": "Patroli di lokasi ditambah.",
    "pelayanan-publik": "Sudah ditindaklanjuti unit terkait.",
    OTHER: "Sudah didisposisikan dan ditindaklanjuti unit terkait.",
}
_NOTES: Final = {
    State.ACKNOWLEDGED: "Laporan diterima, diteruskan ke {agency}.",
    State.IN_PROGRESS: "Petugas menuju lokasi.",
    State.DUPLICATE: "Laporan yang sama sudah ditangani.",
    State.NOT_RESPONSIBLE: "Bukan kewenangan {agency}, diteruskan ke instansi terkait.",
    State.NO_FURTHER_ACTION: "Tidak ditemukan masalah di lokasi.",
}


def _description(rng: random.Random, code: str, kecamatan: str, depth: int | None) -> str:
    what, details = _SAYS[code]
    return (f"{rng.choice(what).format(d=depth)} {rng.choice(_WHERE)}, Kec. {kecamatan}. "
            f"{rng.choice(details).capitalize()}.{rng.choice(_CLOSERS)}")


# --- officers' follow-up -------------------------------------------------------------------

_CATEGORIES: Final = {category.code: category for category in DEFAULT_CATEGORIES}
ACK_OF_RESPONSE_TIME: Final = 0.3  # the median first answer: well within the response time
# Median hours from the first answer to closing, by category (assumption): a jam clears
# within hours, a road waits for its repair crew for days.
_CLOSE_MEDIAN_H: Final = {"banjir": 10, "macet": 1.5, "jalan-rusak": 72, "sampah": 20,
                          "pohon": 18, "parkir-liar": 3, "gangguan-ketenteraman": 4,
                          "pelanggaran-perda": 48, "kriminalitas": 24, "pelayanan-publik": 48,
                          OTHER: 48}
SPREAD: Final = 0.9  # lognormal sigma of every delay: most within a factor of 2.5 of the median
_CLOSINGS: Final = (State.FIXED, State.DUPLICATE, State.NOT_RESPONSIBLE, State.NO_FURTHER_ACTION)
_CLOSING_CUMULATIVE: Final = (0.82, 0.87, 0.94, 1.0)  # fixed 82%, duplicate 5%, 7%, 6%
IN_PROGRESS_SHARE: Final = 0.7  # closed reports that were marked in progress on the way
DIRECT_CLOSE_SHARE: Final = 0.04  # closed at the first answer (an obvious duplicate...)
ACK_ONLY_SHARE: Final = 0.55  # of the reports never closed: acknowledged; the rest stay open


def _updates(rng: random.Random, code: str, t: int, closes: bool) -> tuple[PlannedUpdate, ...]:
    category = _CATEGORIES[code]
    agency = category.agency.split(";")[0]
    officer = f"{rng.choice(_OFFICERS)} ({agency})"
    ack_median = category.response_time.total_seconds() * ACK_OF_RESPONSE_TIME
    first = t + max(60, int(rng.lognormvariate(math.log(ack_median), SPREAD)))
    if not closes:
        if rng.random() >= ACK_ONLY_SHARE:
            return ()
        return (PlannedUpdate(State.ACKNOWLEDGED, _NOTES[State.ACKNOWLEDGED].format(
            agency=agency), officer, first),)
    state = _CLOSINGS[bisect.bisect(_CLOSING_CUMULATIVE, rng.random())]
    close_note = _FIXED[code] if state is State.FIXED else _NOTES[state].format(agency=agency)
    if rng.random() < DIRECT_CLOSE_SHARE:
        return (PlannedUpdate(state, close_note, officer, first),)
    closed = first + max(300, int(rng.lognormvariate(
        math.log(_CLOSE_MEDIAN_H[code] * 3600), SPREAD)))
    updates = [PlannedUpdate(State.ACKNOWLEDGED,
                             _NOTES[State.ACKNOWLEDGED].format(agency=agency), officer, first)]
    if rng.random() < IN_PROGRESS_SHARE:
        at = first + max(1, int((closed - first) * rng.uniform(0.1, 0.5)))
        updates.append(PlannedUpdate(State.IN_PROGRESS, _NOTES[State.IN_PROGRESS], officer, at))
    updates.append(PlannedUpdate(state, close_note, officer, closed))
    return tuple(updates)


def _photos(rng: random.Random) -> tuple[bytes, ...]:
    """Small JPEGs (a few KB): a sky, a street and a few blobs, made once per plan."""
    photos = []
    for _ in range(PHOTO_VARIANTS):
        image = Image.new("RGB", (320, 240), (rng.randrange(90, 160), rng.randrange(130, 200),
                                              rng.randrange(180, 240)))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 140, 320, 240), fill=(rng.randrange(60, 120),) * 3)
        for _ in range(6):
            x, y = rng.randrange(300), rng.randrange(60, 220)
            draw.ellipse((x, y, x + rng.randrange(10, 60), y + rng.randrange(10, 40)),
                         fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=70)
        photos.append(out.getvalue())
    return tuple(photos)


def iso(epoch_s: int) -> str:
    """An instant as Jakarta writes it: ISO 8601 with +07:00."""
    return datetime.fromtimestamp(epoch_s, WIB).isoformat()
