"""One leader among instances, by a PostgreSQL advisory lock (siaga_core.leader), on a real
PostgreSQL: one leads at a time, a standby takes over when the leader stops or loses its
session, and a graceful stop hands over at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import pytest

from siaga.sandbox.postgres import PostgreSQL
from siaga_core.leader import Leadership
from tests.integration.support import unique_name
from tests.polling import eventually

WITHIN_S = 30


class Member:
    def __init__(self, url: str, key: str) -> None:
        self.changes: list[bool] = []
        self.fit = True  # what `eager` answers: a Siaga instance's broker connection
        self.leadership = Leadership(url, key, self.changes.append, check_every_s=0.1,
                                     eager=lambda: self.fit, reluctant_every_s=1.0)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.leadership.leading


@asynccontextmanager
async def members(url: str, count: int) -> AsyncIterator[list[Member]]:
    key = unique_name("lead")
    group = [Member(url, key) for _ in range(count)]
    for member in group:
        member.task = asyncio.create_task(member.leadership.run(member.stop))
    try:
        yield group
    finally:
        for member in group:
            member.stop.set()
        await asyncio.gather(*(m.task for m in group if m.task is not None))


async def test_one_of_three_leads_and_a_standby_takes_over_a_graceful_stop(
        postgres: PostgreSQL) -> None:
    async with members(postgres.url, 3) as group:
        await eventually(lambda: sum(m.leading for m in group) == 1, WITHIN_S, "one leader")
        leader = next(m for m in group if m.leading)
        leader.stop.set()
        assert leader.task is not None
        await leader.task
        assert leader.changes == [True, False]
        rest = [m for m in group if m is not leader]
        await eventually(lambda: sum(m.leading for m in rest) == 1, WITHIN_S, "a new leader")
        assert not leader.leading


async def test_a_leader_whose_session_dies_steps_down_and_another_leads(
        postgres: PostgreSQL) -> None:
    async with members(postgres.url, 2) as group:
        await eventually(lambda: sum(m.leading for m in group) == 1, WITHIN_S, "one leader")
        leader = next(m for m in group if m.leading)
        other = next(m for m in group if m is not leader)
        # The server ends the leader's session, as when its machine drops off the network.
        key = leader.leadership._key
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype ="
                " 'advisory' AND l.granted AND l.objid = (hashtextextended(%s, 0) & 4294967295)"
                "::oid", (key,)).fetchall()
        assert ended == [(True,)]
        await eventually(lambda: other.leading, WITHIN_S, "the standby leading")
        assert leader.changes[:2] == [True, False]
        assert sum(m.leading for m in group) == 1  # never two at once


async def test_no_server_means_no_leader_and_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    member = Member("postgresql://nobody@127.0.0.1:1/none", "k")
    task = asyncio.create_task(member.leadership.run(member.stop))
    await eventually(lambda: any("leader election:" in r.getMessage() for r in caplog.records),
                     WITHIN_S, "the failed attempt logged")
    assert not task.done()  # it keeps trying
    assert not member.leading
    member.stop.set()
    await asyncio.wait_for(task, WITHIN_S)
    assert member.changes == []


async def test_a_leader_unfit_to_lead_hands_over_to_a_fit_standby(postgres: PostgreSQL) -> None:
    # A Siaga cut off from RabbitMQ while PostgreSQL is fine must not judge the city alone.
    async with members(postgres.url, 2) as group:
        await eventually(lambda: sum(m.leading for m in group) == 1, WITHIN_S, "one leader")
        leader = next(m for m in group if m.leading)
        other = next(m for m in group if m is not leader)
        leader.fit = False
        await eventually(lambda: other.leading, WITHIN_S, "the fit standby leading")
        assert leader.changes == [True, False] and not leader.leading  # never two at once


async def test_when_none_is_fit_one_still_leads(postgres: PostgreSQL) -> None:
    # Every instance cut off from the broker: one must still lead, to page that Siaga cannot
    # reach its broker.
    async with members(postgres.url, 2) as group:
        await eventually(lambda: sum(m.leading for m in group) == 1, WITHIN_S, "one leader")
        first = next(m for m in group if m.leading)
        for member in group:
            member.fit = False
        await eventually(lambda: first.changes[:2] == [True, False], WITHIN_S, "it gave up")
        await eventually(lambda: sum(m.leading for m in group) == 1, WITHIN_S,
                         "an unfit one leading again")
