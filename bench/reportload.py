"""The residents' load client: N reports POSTed to an Open311 endpoint, C connections at once.

Run as its own process (`python -m bench.reportload ...`), so the client never shares an
event loop or a core's time slice with the service it measures. Every body is built before
the clock starts (form-urlencoded, or multipart with one `media` JPEG of about the asked
size); then `concurrency` workers post them over kept-alive connections. It prints one JSON
object: answers by status, the seconds from the first request sent to the last 201
received, reports/s, and latency percentiles (nearest rank) of the 201s.

    python -m bench.reportload --url http://127.0.0.1:P/open311/v2/requests.json \
        --api-key K --reports 5000 --concurrency 16 [--photo-bytes 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import resource
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from PIL import Image, ImageDraw

from bench.latency import percentile
from simulators.reports import CRM_2020_TOTAL, PlannedReport, plan_year

PHOTO_SIZE = (1280, 960)  # a phone photo as apps send it (downscaled from the camera's)
PHOTO_VARIANTS = 16  # distinct photos, reused in turn: each report's photo is decoded anew
WARM_UP = 20  # reports sent (and not counted) before the clock starts: imports, first connects
REQUEST_TIMEOUT_S = 120.0  # a request still unanswered then is a failure, not a slow answer
YEAR = 2020
SEED = 14  # the plan's seed: the same reports in every run and for every system


def photo_jpeg(seed: int, target_bytes: int, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A street-like JPEG of `size`, its quality chosen so the file is closest to
    `target_bytes` (a sky, a road, blobs, and sensor-like noise that JPEG cannot squeeze)."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, (rng.randrange(90, 160), rng.randrange(130, 200),
                                    rng.randrange(180, 240)))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 6 // 10, width, height), fill=(rng.randrange(60, 120),) * 3)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.ellipse((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 150)),
                     fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    noise = Image.merge("RGB", [Image.effect_noise(size, 40) for _ in range(3)])
    image = Image.blend(image, noise, 0.25)
    best = b""
    low, high = 5, 95
    while low <= high:  # the file grows with the quality: bisect it
        quality = (low + high) // 2
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        data = out.getvalue()
        if not best or abs(len(data) - target_bytes) < abs(len(best) - target_bytes):
            best = data
        if len(data) < target_bytes:
            low = quality + 1
        else:
            high = quality - 1
    return best


def report_fields(report: PlannedReport, api_key: str) -> list[tuple[str, str]]:
    """The GeoReport form a resident's app sends for `report` (as `siaga simulate reports`
    does, without `requested_datetime`: these reports happen now)."""
    fields = [("api_key", api_key), ("service_code", report.service_code),
              ("lat", f"{report.lat:.6f}"), ("long", f"{report.lon:.6f}"),
              ("description", report.description)]
    if report.depth_cm is not None:
        fields.append(("attribute[kedalaman_cm]", str(report.depth_cm)))
    if report.email is not None and report.first_name is not None:
        fields += [("email", report.email), ("first_name", report.first_name)]
    return fields


def planned_reports(count: int) -> list[PlannedReport]:
    """`count` reports of a seeded year (its categories, places and words), in time order."""
    plan = plan_year(YEAR, scale=min(1.0, count / CRM_2020_TOTAL * 1.01), seed=SEED)
    reports = list(plan.reports)
    return [reports[i % len(reports)] for i in range(count)]


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    content_type: str


def form_body(fields: list[tuple[str, str]]) -> Body:
    return Body(urlencode(fields).encode("ascii"), "application/x-www-form-urlencoded")


def multipart_body(fields: list[tuple[str, str]], photo: bytes) -> Body:
    """multipart/form-data as a browser writes it: the fields, then the `media` file."""
    boundary = f"----siagabench{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="media"; '
                 f'filename="foto.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
                 + photo + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return Body(b"".join(parts), f"multipart/form-data; boundary={boundary}")


def bodies(count: int, api_key: str, photo_bytes: int | None) -> list[Body]:
    reports = planned_reports(count)
    if photo_bytes is None:
        return [form_body(report_fields(r, api_key)) for r in reports]
    photos = [photo_jpeg(seed, photo_bytes) for seed in range(PHOTO_VARIANTS)]
    return [multipart_body(report_fields(r, api_key), photos[i % len(photos)])
            for i, r in enumerate(reports)]


@dataclass(slots=True)
class _Answers:
    statuses: Counter[int]
    latencies_s: list[float]
    first_sent: float | None = None
    last_created: float | None = None
    example_refusal: str | None = None


async def post_all(url: str, payloads: list[Body], concurrency: int) -> _Answers:
    answers = _Answers(Counter(), [])
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await _run(session, url, payloads[:WARM_UP], concurrency, _Answers(Counter(), []))
        await _run(session, url, payloads[WARM_UP:], concurrency, answers)
    return answers


async def _run(session: aiohttp.ClientSession, url: str, payloads: list[Body],
               concurrency: int, answers: _Answers) -> None:
    queue = iter(payloads)

    async def worker() -> None:
        for body in queue:  # one shared iterator: each body is taken once
            sent = time.perf_counter()
            if answers.first_sent is None:
                answers.first_sent = sent
            try:
                async with session.post(url, data=body.data,
                                        headers={"Content-Type": body.content_type}) as answer:
                    text = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                answers.statuses[0] += 1
                answers.example_refusal = answers.example_refusal or repr(exc)
                continue
            done = time.perf_counter()
            answers.statuses[status] += 1
            if status == 201:
                answers.latencies_s.append(done - sent)
                answers.last_created = done
            elif answers.example_refusal is None:
                answers.example_refusal = f"HTTP {status}: {text[:300].decode(errors='replace')}"

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


def summarise(answers: _Answers, planned: int, concurrency: int,
              mean_body_bytes: float) -> dict[str, Any]:
    created = answers.statuses.get(201, 0)
    seconds = ((answers.last_created - answers.first_sent)
               if answers.first_sent is not None and answers.last_created is not None else None)
    values = sorted(s * 1000 for s in answers.latencies_s)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "planned": planned, "created": created, "concurrency": concurrency,
        "statuses": {str(code): count for code, count in sorted(answers.statuses.items())},
        "seconds": seconds,
        "rate": created / seconds if seconds else None,
        "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else None,
        "mean_body_bytes": round(mean_body_bytes),
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "example_refusal": answers.example_refusal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reportload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the POST endpoint (127.0.0.1 only)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--reports", type=int, required=True, help="counted reports")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--photo-bytes", type=int, help="a JPEG of about this size per report")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("the load client only targets this machine (http://127.0.0.1:PORT/...)")
    payloads = bodies(WARM_UP + args.reports, args.api_key, args.photo_bytes)
    answers = asyncio.run(post_all(args.url, payloads, args.concurrency))
    mean = sum(len(b.data) for b in payloads) / len(payloads)
    print(json.dumps(summarise(answers, args.reports, args.concurrency, mean)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
