"""Peer for residents' reports: the ~50-line handler a city would write instead of Siaga.

An aiohttp server whose one route takes the same Open311 POST (form-urlencoded, or
multipart with a `media` photo) and INSERTs it into SQLite, one transaction per report,
WAL with synchronous=FULL (durable once answered, as Siaga is), in the event loop's thread.
It does NOT check the API key, validate a field, bound a body, look at, decode or re-encode
the photo (its bytes go into the row as they came), search for duplicates, rate-limit, or
tell any rules: it is a floor for "store a form durably over HTTP", not a rival.

    python bench/peers/reports_sqlite.py --port P --db PATH
"""

from __future__ import annotations

import argparse
import sqlite3
import time

from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT, service_code TEXT, lat REAL, lon REAL,
    description TEXT, email TEXT, first_name TEXT, attributes TEXT, photo BLOB,
    received_ns INTEGER
)"""
MAX_BODY = 20 * 1024 * 1024  # aiohttp refuses bodies over 1 MiB by default; photos are larger


def make_app(path: str) -> web.Application:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(SCHEMA)

    async def post_request(request: web.Request) -> web.Response:
        form = await request.post()
        photo = form.get("media")
        data = photo.file.read() if isinstance(photo, web.FileField) else None
        attributes = {k: str(v) for k, v in form.items() if k.startswith("attribute[")}
        db.execute("BEGIN")
        cursor = db.execute(
            "INSERT INTO reports (service_code, lat, lon, description, email, first_name,"
            " attributes, photo, received_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (form.get("service_code"), form.get("lat"), form.get("long"),
             form.get("description"), form.get("email"), form.get("first_name"),
             repr(attributes), data, time.time_ns()))
        db.execute("COMMIT")
        return web.json_response([{"service_request_id": str(cursor.lastrowid)}], status=201)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"reports": db.execute("SELECT COUNT(*) FROM reports")
                                  .fetchone()[0]})

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/open311/v2/requests.json", post_request)
    app.router.add_get("/count", count)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.db), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
