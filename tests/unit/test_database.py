"""The writer: what queued calls tell the supervisor, and errors told to their owner."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from queued import schema
from queued.database import Database, StorageError
from queued.lifecycle import classify_exit
from queued.store import Store

from .test_store import T0, new


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    conn = schema.connect(tmp_path / "q.db")
    store = Store(conn)
    store.ensure_queue("default", T0)
    database = Database(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(database.serve)
        yield database
        nursery.cancel_scope.cancel()
    conn.close()


async def test_reads_and_the_supervisors_records_change_no_mark(db: Database) -> None:
    [job_id] = await db.run(Store.add_jobs, [new()], T0)
    marks = (db.epoch, db.additions)
    await db.run(Store.list_jobs, limit=5)
    await db.run(Store.counts)
    ahead = await db.run(Store.lookahead, now=T0, queues=["default"], busy=[], limit=5)
    await db.run(Store.start, ahead.jobs[0], T0)
    assert (db.epoch, db.additions) == marks
    assert (await db.run(Store.states, [job_id]))[job_id] == "running"


async def test_additions_and_removals_are_counted_when_queued(db: Database) -> None:
    epoch, additions = db.epoch, db.additions
    call = db.submit(Store.add_jobs, [new()], T0)
    assert db.additions == additions + 1  # before it ran
    [job_id] = await call.outcome()
    db.submit(Store.cancel, [job_id], T0)
    assert db.epoch == epoch + 1
    await db.run(Store.set_paused, "default", True)
    assert db.epoch == epoch + 2


async def test_a_finish_that_releases_a_dependent_counts_as_an_addition(db: Database) -> None:
    woken = []
    db.on_reordered = lambda: woken.append(True)
    [dep] = await db.run(Store.add_jobs, [new()], T0)
    await db.run(Store.add_jobs, [new(after=[dep])], T0)
    [job] = await db.run(Store.claim, now=T0, slots=1, queue_room={"default": 1})
    additions = db.additions
    await db.run(Store.finish, job, classify_exit(0), 60, T0)
    assert db.additions == additions + 1 and woken == [True]


async def test_an_error_reaches_the_calls_owner_without_waiting(db: Database) -> None:
    def broken(store: Store) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    seen: list[BaseException] = []
    call = db.submit(broken)
    call.on_error = seen.append
    with pytest.raises(StorageError, match="disk is full"):
        await call.outcome()
    assert len(seen) == 1 and isinstance(seen[0], StorageError)
