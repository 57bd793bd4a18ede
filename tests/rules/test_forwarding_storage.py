"""The Alertmanager forwarder when the alert book cannot be read (a database restarting).

A StorageError from a read ended `Forwarder.run`, which ended `Alerting.run`'s task group
and the service with it (a review's reproduction); the forwarder's own promise is that
nothing waits for it. Here the real SQLite book's table is renamed away for a moment, and
the Alertmanager API is a real HTTP server on loopback (tests.receiver)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from rules.alertmanager import AlertmanagerSettings
from rules.forwarding import Forwarder
from tests.polling import eventually
from tests.receiver import RecordingReceiver
from tests.rules.books import T0, Clock, fire, open_book


@contextlib.asynccontextmanager
async def alertmanager_api() -> AsyncIterator[RecordingReceiver]:
    receiver = RecordingReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def flood_sent(receiver: RecordingReceiver) -> bool:
    return any(alert["labels"].get("alertname") == "FloodLevel"
               for request in receiver.requests for alert in orjson.loads(request.body))


async def test_a_book_that_cannot_be_read_for_a_while_holds_up_forwarding_not_the_service(
        tmp_path: Path) -> None:
    clock = Clock(T0)
    with open_book(tmp_path, clock) as book:
        async with alertmanager_api() as receiver:
            forwarder = Forwarder(AlertmanagerSettings(url=receiver.url, resend_interval_s=0.2),
                                  book, "http://siaga.test", clock_ns=clock)
            stop = asyncio.Event()
            running = asyncio.create_task(forwarder.run(stop))
            try:
                with contextlib.closing(sqlite3.connect(tmp_path / "alerts.db")) as db:
                    db.execute("ALTER TABLE alerts RENAME TO alerts_away")
                    db.commit()
                    await eventually(lambda: forwarder._book_failing or running.done(),
                                     what="a re-send that could not read the book")
                    assert not running.done()  # it goes on
                    db.execute("ALTER TABLE alerts_away RENAME TO alerts")
                    db.commit()
                book.apply(fire(), clock())  # heard by the forwarder: sent at once
                await eventually(lambda: flood_sent(receiver), what="the alert forwarded")
                assert not forwarder._book_failing
            finally:
                stop.set()
                await running
