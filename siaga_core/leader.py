"""Which of several Siaga instances leads: the one holding a PostgreSQL advisory lock.

The checks that must see the whole city, and run once for it (silent devices and dark
areas, repeats, silence expiry, pruning), run on one instance at a time (issue 18). Each
instance keeps one connection to the shared PostgreSQL and tries `pg_try_advisory_lock` on
it; the holder leads for as long as its session lives. A leader killed outright loses its
session, and so its lock, when the server sees the connection close (at once on one
machine; within about 30 s across a network, see KEEPALIVES), and the next instance to
try takes it.

A leader that can no longer reach the server steps down by itself: each tick it checks its
session with a query bounded in time, so two instances can lead at once only for the span
of one such check. Whatever a leader does is written to the shared alert book, whose
writes serialize per alert, so that overlap can repeat a check but not page twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0  # how soon a standby notices the leader gone
# How often an instance that should not lead now (`eager` false) still tries for the lock:
# long enough for an eager standby to take it first, short beside the alerts' graces.
RELUCTANT_EVERY_S = 10.0
YIELD_AGAIN = 6  # an unfit leader gives the lock up again after this many of those
QUERY_TIMEOUT_S = 5.0  # a session that does not answer a trivial query in 5 s is lost
RETRY_MAX_S = 30.0
# The client's TCP keepalives notice a dead server; the server must notice a dead leader
# (its host powered off sends no FIN, and the kernel's default keepalive is 2 hours): its
# own keepalives, and an idle-session limit the leader's query every second never reaches
# (PostgreSQL 14+), end such a session, and so release the lock, within about 30 s.
KEEPALIVES: dict[str, str | int] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4,
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5"
               " -c tcp_keepalives_count=4 -c idle_session_timeout=30s"}


class Leadership:
    """Tries to lead for `key`; `leading` says whether this instance does now.

    `on_change(leading)` is called in the event loop each time that flips, and with False
    when `run` ends while leading. It must be quick; it may raise only to report a bug.

    `eager()` says whether this instance is fit to lead now (default: always). One that is
    not (a Siaga cut off from its broker judges the city by a connection it lost) gives the
    lock up and then tries for it only every `reluctant_every_s`, so a fit standby takes it
    first; when none is fit (every instance cut off), one of them leads again, and gives
    the lock up again every `YIELD_AGAIN` tries while it stays unfit.
    """

    def __init__(self, url: str, key: str, on_change: Callable[[bool], None] | None = None,
                 *, check_every_s: float = CHECK_EVERY_S,
                 eager: Callable[[], bool] | None = None,
                 reluctant_every_s: float = RELUCTANT_EVERY_S) -> None:
        self._url = url
        self._key = f"siaga.leader:{key}"
        self._on_change = on_change
        self._check_every_s = check_every_s
        self._eager = eager or (lambda: True)
        self._reluctant_every_s = reluctant_every_s
        self._yielded_at: float | None = None  # loop time it last gave the lock up unfit
        self._tried_at: float | None = None  # loop time of the last try for the lock
        self.leading = False

    async def run(self, stop: asyncio.Event) -> None:
        """Hold or try for the lock until `stop` is set; reconnect with back-off."""
        backoff = self._check_every_s
        while not stop.is_set():
            try:
                conninfo = make_conninfo(self._url, connect_timeout=10, **KEEPALIVES)
                async with await psycopg.AsyncConnection.connect(
                        conninfo, autocommit=True) as conn:
                    backoff = self._check_every_s
                    await self._hold(conn, stop)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("leader election: %s; trying again in %.0f s",
                            str(exc).strip() or type(exc).__name__, backoff)
            finally:
                self._set(False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    async def _hold(self, conn: psycopg.AsyncConnection[tuple[object, ...]],
                    stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            eager, now = self._eager(), loop.time()
            if eager:
                self._yielded_at = None
            if self.leading and not eager and (self._yielded_at is None or (
                    now - self._yielded_at >= YIELD_AGAIN * self._reluctant_every_s)):
                # Again now and then: a standby may have become fit since.
                self._yielded_at = self._tried_at = now
                await self._unlock(conn)
            elif self.leading:
                # Still our session, so still our lock; a lost session raises or times out.
                await asyncio.wait_for(conn.execute("SELECT 1"), QUERY_TIMEOUT_S)
            elif eager or self._tried_at is None or (
                    now - self._tried_at >= self._reluctant_every_s):
                self._tried_at = now
                cursor = await asyncio.wait_for(conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._key,)),
                    QUERY_TIMEOUT_S)
                row = await cursor.fetchone()
                self._set(bool(row and row[0]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._check_every_s)
        if self.leading:  # leave at once on a graceful stop: a standby need not wait
            await self._unlock(conn)

    async def _unlock(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        await asyncio.wait_for(conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self._key,)),
            QUERY_TIMEOUT_S)
        self._set(False)

    def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        log.info("this instance %s", "now leads the cluster's city-wide checks" if leading
                 else "no longer leads the cluster's city-wide checks")
        if self._on_change is not None:
            self._on_change(leading)
