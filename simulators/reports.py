"""A city's year of citizens' reports and officers' updates: the plan, and its poster.

`plan_year` is pure and seeded: the same year, scale and seed give the same reports, in time
order, with their updates. At scale 1.0 the total, the resolved count and the top five
categories are exactly the figures Jakarta's CRM published for 2020, so `siaga reports stats`
counts them back from storage. `post_plan` puts a plan through Siaga's real HTTP API: reports to
Open311 (`POST /open311/v2/requests.json`), updates to the officers' API.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import io
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiohttp
import orjson
from PIL import Image, ImageDraw

from reports.categories import DEFAULT_CATEGORIES, OTHER
from reports.model import CLOSING, State
from siaga_core.errors import DeliveryError
from simulators.areas import Places
from simulators.calendar import WIB
from simulators.pacing import Pacer, SystemClock, WallClock

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


# --- the poster: a plan through Siaga's HTTP API -------------------------------------------

OPEN311_REQUESTS: Final = "/open311/v2/requests.json"
OPEN311_SERVICES: Final = "/open311/v2/services.json"
UPDATES: Final = "/api/reports/{id}/updates"
DEFAULT_CONCURRENCY: Final = 16  # requests in flight: enough to keep a local service busy
QUEUE_PER_WORKER: Final = 4  # jobs waiting per worker: the plan is read ahead only this far
PROGRESS_EVERY_S: Final = 5.0
REQUEST_TIMEOUT_S: Final = 60.0  # a photo through a busy service; beyond that it is down
RETRIES: Final = 6  # attempts on a lost connection or a 5xx: 0.5 + 1 + ... + 16 s, ~30 s
BACKOFF_FIRST_S: Final = 0.5
RETRY_AFTER_DEFAULT_S: Final = 1.0  # a 429 without a usable Retry-After
REFUSAL_TEXT_MAX: Final = 200  # characters of a refusal's body kept for the summary


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a run, for the progress line."""

    sent: int  # reports the service took
    refused: int
    updates: int  # updates the service took
    elapsed_s: float
    sim_time_s: int | None  # the simulated instant reached

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run sent, by category, and what the service refused, with its reasons."""

    sent: Mapping[str, int]  # reports the service took, by category
    refused: Mapping[str, int]  # reports refused (4xx), by category
    reasons: Mapping[str, int]  # each refusal's message (reports and updates), how often
    updates: int  # updates the service took
    closed: int  # of which closing ones
    updates_refused: int
    updates_skipped: int  # their report was refused, so they had nowhere to go
    elapsed_s: float

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        lines = [f"{'category':<24}{'sent':>10}{'refused':>10}"]
        for code in sorted(set(self.sent) | set(self.refused),
                           key=lambda c: (-self.sent.get(c, 0), c)):
            lines.append(f"{code:<24}{self.sent.get(code, 0):>10,}"
                         f"{self.refused.get(code, 0):>10,}")
        lines.append(f"{'total':<24}{self.total:>10,}{sum(self.refused.values()):>10,}")
        lines.append(f"updates: {self.updates:,} sent ({self.closed:,} closing), "
                     f"{self.updates_refused:,} refused, {self.updates_skipped:,} skipped")
        lines.append(f"{self.elapsed_s:.1f} s, {self.rate:,.1f} reports/s")
        lines.extend(f"refused {count:,}x: {reason}" for reason, count in
                     sorted(self.reasons.items(), key=lambda item: -item[1]))
        return "\n".join(lines)


@dataclass(slots=True)
class _Tally:
    sent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    updates: int = 0
    closed: int = 0
    updates_refused: int = 0
    updates_skipped: int = 0
    sim_time_s: int | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    report: PlannedReport
    update: PlannedUpdate | None  # None: the report itself
    after: asyncio.Future[str | None] | None  # the report's previous step: its id, or None
    done: asyncio.Future[str | None]  # this step's: the report's id, or None if refused


def iso(epoch_s: int) -> str:
    """An instant as Jakarta writes it: ISO 8601 with +07:00."""
    return datetime.fromtimestamp(epoch_s, WIB).isoformat()


async def post_plan(plan: YearPlan, base_url: str, api_key: str, token: str, *,
                    speedup: float, concurrency: int = DEFAULT_CONCURRENCY,
                    progress: Callable[[Progress], None],
                    progress_every_s: float = PROGRESS_EVERY_S,
                    on_refused: Callable[[str], None] | None = None,
                    clock: WallClock | None = None, live: bool = False) -> Summary:
    """Posts `plan`'s reports and updates in simulated-time order, `speedup` simulated seconds
    per second (0: as fast as the service takes them), `concurrency` requests in flight.

    A replay sends each report's and update's own time (`requested_datetime`, `at`); `live`
    sends neither, so the service stamps them when they arrive (the demo's residents).

    A 429 waits its Retry-After and tries again; another 4xx is counted as refused (and given
    to `on_refused`), never retried; a lost connection or a 5xx is retried with backoff. Raises
    `DeliveryError` when the service cannot be reached or refuses the key or the token.
    """
    if not (math.isfinite(speedup) and speedup >= 0):
        raise ValueError(f"speedup must be >= 0, got {speedup}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    clock = clock or SystemClock()
    tally = _Tally()
    base = base_url.rstrip("/")
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await _check_service(session, base)
        client = _Client(session, base, api_key, token, plan.photos, tally, on_refused, live)
        queue: asyncio.Queue[_Job | None] = asyncio.Queue(concurrency * QUEUE_PER_WORKER)
        try:
            async with asyncio.TaskGroup() as group:
                ticker = group.create_task(_tick(tally, started, progress, progress_every_s))
                workers = [group.create_task(_work(queue, client)) for _ in range(concurrency)]
                await _produce(plan, queue, tally, Pacer(
                    speedup or None, _first_time(plan), clock, ahead_s=None), clock)
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
                ticker.cancel()
        except BaseExceptionGroup as group:
            raise _first_delivery_error(group) from None
    elapsed = time.monotonic() - started
    progress(_snapshot(tally, started))
    return Summary(dict(tally.sent), dict(tally.refused), dict(tally.reasons), tally.updates,
                   tally.closed, tally.updates_refused, tally.updates_skipped, elapsed)


def _first_time(plan: YearPlan) -> float:
    return float(plan.reports[0].requested_s) if plan.reports else 0.0


def _first_delivery_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The run's own error, out of the TaskGroup's group; a bug's group as it is."""
    match, _ = group.split(DeliveryError)
    if match is None:
        return group
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _produce(plan: YearPlan, queue: asyncio.Queue[_Job | None], tally: _Tally,
                   pacer: Pacer, clock: WallClock) -> None:
    """Queues each event when due; an update waits on its report's previous step, so a
    report's steps reach the service in order even with many requests in flight."""
    loop = asyncio.get_running_loop()
    last: dict[int, asyncio.Future[str | None]] = {}
    for at, report, update in plan.events():
        delay = pacer.delay(at)
        if delay > 0:
            await clock.sleep(delay)
        tally.sim_time_s = at
        done: asyncio.Future[str | None] = loop.create_future()
        after = None if update is None else last.pop(report.index)
        if report.updates and update is not report.updates[-1]:
            last[report.index] = done  # the next update waits on this step
        await queue.put(_Job(report, update, after, done))


async def _work(queue: asyncio.Queue[_Job | None], client: _Client) -> None:
    while (job := await queue.get()) is not None:
        if job.update is None:
            job.done.set_result(await client.report(job.report))
            continue
        assert job.after is not None  # an update always follows its report's previous step
        report_id = await job.after
        if report_id is not None:
            await client.update(report_id, job.update)
        else:
            client.tally.updates_skipped += 1
        job.done.set_result(report_id)


async def _tick(tally: _Tally, started: float, progress: Callable[[Progress], None],
                every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        progress(_snapshot(tally, started))


def _snapshot(tally: _Tally, started: float) -> Progress:
    return Progress(sum(tally.sent.values()), sum(tally.refused.values()), tally.updates,
                    time.monotonic() - started, tally.sim_time_s)


async def _check_service(session: aiohttp.ClientSession, base: str) -> None:
    """One GET first: a wrong address fails at once, in one sentence, not after retries."""
    url = base + OPEN311_SERVICES
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise DeliveryError(f"{url} answered HTTP {response.status}: is Siaga's "
                                    f"Open311 API at {base}?")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"cannot reach Siaga's Open311 API at {base}: {exc}") from exc


class _Client:
    """The two requests a plan needs, with the retry policy of `post_plan`."""

    def __init__(self, session: aiohttp.ClientSession, base: str, api_key: str, token: str,
                 photos: tuple[bytes, ...], tally: _Tally,
                 on_refused: Callable[[str], None] | None, live: bool = False) -> None:
        self._session = session
        self._base = base
        self._api_key = api_key
        self._auth = {"Authorization": f"Bearer {token}"}
        self._photos = photos
        self.tally = tally
        self._on_refused = on_refused
        self._live = live

    async def report(self, report: PlannedReport) -> str | None:
        """Posts a report; its `service_request_id`, or None when the service refused it."""
        status, body = await self._post(self._base + OPEN311_REQUESTS,
                                        lambda: self._report_data(report), {})
        if status == 403:
            raise DeliveryError(f"the service refused the API key (HTTP 403): {_reason(body)}")
        report_id = _request_id(body) if status in (200, 201) else None
        if report_id is None:
            reason = (_reason(body) if status not in (200, 201)
                      else f"an answer without service_request_id: {body[:80]!r}")
            self._refuse(f"{report.service_code}: HTTP {status}: {reason}")
            self.tally.refused[report.service_code] += 1
            return None
        self.tally.sent[report.service_code] += 1
        return report_id

    async def update(self, report_id: str, update: PlannedUpdate) -> None:
        body_json = {"state": update.state.value, "note": update.note,
                     "officer": update.officer}
        if not self._live:
            body_json["at"] = iso(update.at_s)
        status, body = await self._post(self._base + UPDATES.format(id=report_id),
                                        lambda: aiohttp.JsonPayload(body_json), self._auth)
        if status in (401, 403):
            raise DeliveryError(f"the officers' API refused the token (HTTP {status}): "
                                f"{_reason(body)}")
        if status in (200, 201):
            self.tally.updates += 1
            self.tally.closed += update.state in CLOSING
        else:
            self._refuse(f"update {update.state.value}: HTTP {status}: {_reason(body)}")
            self.tally.updates_refused += 1

    def _refuse(self, reason: str) -> None:
        self.tally.reasons[reason] += 1
        if self._on_refused is not None:
            self._on_refused(reason)

    def _report_data(self, report: PlannedReport) -> Any:
        """A fresh body each attempt (aiohttp's FormData is spent once sent): the GeoReport
        form, or multipart with one `media` part when the report has a photo."""
        fields = {"api_key": self._api_key, "service_code": report.service_code,
                  "lat": f"{report.lat:.6f}", "long": f"{report.lon:.6f}",
                  "description": report.description}
        if not self._live:
            fields["requested_datetime"] = iso(report.requested_s)  # Siaga's extension
        if report.depth_cm is not None:
            fields["attribute[kedalaman_cm]"] = str(report.depth_cm)
        if report.email is not None and report.first_name is not None:
            fields.update(email=report.email, first_name=report.first_name)
        if report.photo is None:
            return fields
        form = aiohttp.FormData(fields)
        form.add_field("media", self._photos[report.photo], filename="foto.jpg",
                       content_type="image/jpeg")
        return form

    async def _post(self, url: str, data: Callable[[], Any],
                    headers: dict[str, str]) -> tuple[int, bytes]:
        """The final answer's status and body: after 429s (as told) and failures (backoff)."""
        failures = 0
        while True:
            try:
                async with self._session.post(url, data=data(), headers=headers) as response:
                    body = await response.read()
                    if response.status == 429:
                        await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
                        continue
                    if response.status < 500:
                        return response.status, body
                    problem = f"HTTP {response.status}: {_reason(body)}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            failures += 1
            if failures >= RETRIES:
                raise DeliveryError(f"{url}: {problem} ({failures} attempts)")
            await asyncio.sleep(BACKOFF_FIRST_S * 2 ** (failures - 1))


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (the delta form Siaga sends); the default when absent or a date."""
    try:
        seconds = float(value) if value is not None else RETRY_AFTER_DEFAULT_S
    except ValueError:
        return RETRY_AFTER_DEFAULT_S
    return seconds if math.isfinite(seconds) and seconds >= 0 else RETRY_AFTER_DEFAULT_S


def _request_id(body: bytes) -> str | None:
    """GeoReport's answer to a POST: `[{"service_request_id": "..."}]`."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(answer, list) and answer and isinstance(answer[0], dict):
        value = answer[0].get("service_request_id")
        return str(value) if value not in (None, "") else None
    return None


def _reason(body: bytes) -> str:
    """A refusal's words: GeoReport's `[{"code": ..., "description": ...}]`, else the text."""
    try:
        answer = orjson.loads(body)
        if isinstance(answer, list) and answer and isinstance(answer[0], dict):
            return str(answer[0].get("description", answer[0]))[:REFUSAL_TEXT_MAX]
    except orjson.JSONDecodeError:
        pass
    return body.decode("utf-8", "replace").strip()[:REFUSAL_TEXT_MAX] or "(no body)"
