"""The writer: what queued calls tell the supervisor, and errors told to their owner."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from queued.lifecycle import classify_exit
from queued.store import Changes, Claimed, Engine, Refused, StorageError, Store, writer
from queued.store.writer import Kind, Writer
from tests.store_harness import T0, new

# Every test runs on each engine of tests/engines.py (the `engine` fixture),
# but those marked `sqlite`: they break SQLite on purpose (a full disk in
# pages, raw SQL, its file deleted or replaced under it).
sqlite_only = pytest.mark.engines("sqlite")


@pytest.fixture
def committed() -> list[Changes]:
    """What each commit changed, as the writer's one subscriber is told."""
    return []


@pytest.fixture
async def db(engine: Engine, committed: list[Changes]) -> AsyncIterator[Writer]:
    database = Writer(engine, on_commit=committed.append)
    database.run_now(Kind.RECORD, Store.recover, 3600.0, T0)
    async with trio.open_nursery() as nursery:
        await nursery.start(database.serve)
        yield database
        nursery.cancel_scope.cancel()


async def test_reads_and_the_supervisors_records_change_no_mark(db: Writer) -> None:
    [job_id] = await db.add(Store.add_jobs, [new()], T0)
    marks = (db.epoch, db.additions)
    await db.read(Store.list_jobs, limit=5)
    await db.read(Store.counts)
    ahead = await db.read(Store.lookahead, now=T0, horizon=T0, queues=["default"], busy=[], limit=5)
    await db.record_now(Store.start, ahead.jobs[0], T0)
    assert (db.epoch, db.additions) == marks
    assert (await db.read(Store.states, [job_id]))[job_id] == "running"


async def test_additions_and_removals_are_counted_when_queued(db: Writer) -> None:
    epoch, additions = db.epoch, db.additions
    call = db.queue(Kind.ADD, Store.add_jobs, [new()], T0)
    assert db.additions == additions + 1  # before it ran
    [job_id] = await call.outcome()
    db.queue(Kind.WRITE, Store.cancel, [job_id], T0)
    assert db.epoch == epoch + 1
    await db.write(Store.set_paused, "default", True)
    assert db.epoch == epoch + 2


async def test_a_finish_that_releases_a_dependent_counts_as_an_addition(
    db: Writer, committed: list[Changes]
) -> None:
    [dep] = await db.add(Store.add_jobs, [new()], T0)
    [dependent] = await db.add(Store.add_jobs, [new(after=[dep])], T0)
    [job] = await db.record_now(Store.claim, now=T0, slots=1, queue_room={"default": 1})
    additions = db.additions
    committed.clear()
    await db.record_now(Store.finish, job, classify_exit(0), 60, T0)
    assert db.additions == additions + 1
    [changes] = committed  # told once, after the commit
    assert (changes.finished, changes.released, changes.reordered) == ([dep], [dependent], True)


async def test_the_subscriber_hears_of_a_batch_once_and_of_nothing_refused(
    db: Writer, committed: list[Changes]
) -> None:
    a, b = await db.add(Store.add_jobs, [new(), new()], T0)
    committed.clear()
    first = db.queue(Kind.WRITE, Store.cancel, [a], T0)
    refused = db.queue(Kind.WRITE, Store.cancel, [b, 99], T0)  # no job 99: nothing of it is kept
    second = db.queue(Kind.WRITE, Store.cancel, [b], T0)
    await first.outcome(), await second.outcome()
    with pytest.raises(Refused):
        await refused.outcome()
    [changes] = committed
    assert changes.finished == [a, b]
    await db.read(Store.counts)
    assert len(committed) == 1  # a batch that changed nothing others must learn of is not told


@sqlite_only
async def test_an_error_reaches_the_calls_owner_without_waiting(db: Writer) -> None:
    def broken(store: Store) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    seen: list[BaseException | None] = []
    call = db.queue(Kind.WRITE, broken)
    call.on_done = lambda done: seen.append(done.error)
    with pytest.raises(StorageError, match="disk is full"):
        await call.outcome()
    assert len(seen) == 1 and isinstance(seen[0], StorageError)


async def test_a_storage_error_reaches_the_calls_owner_and_the_batch_goes_on(db: Writer) -> None:
    """On any engine: a call whose storage failed is told so; the calls beside it are not."""

    def failing(store: Store) -> None:
        raise StorageError("the database disk is full; free some space and try again")

    kept = db.queue(Kind.ADD, Store.add_jobs, [new()], T0)
    failed = db.queue(Kind.WRITE, failing)
    seen: list[BaseException | None] = []
    failed.on_done = lambda done: seen.append(done.error)
    with pytest.raises(StorageError, match="disk is full"):
        await failed.outcome()
    [job_id] = await kept.outcome()
    assert len(seen) == 1 and isinstance(seen[0], StorageError)
    assert await db.read(Store.states, [job_id]) == {job_id: "pending"}


@sqlite_only
async def test_an_error_in_a_call_without_savepoint_fails_its_whole_batch(db: Writer) -> None:
    def record_then_fail(store: Store) -> None:
        store.conn.execute("UPDATE queues SET paused = 1")
        raise sqlite3.OperationalError("disk I/O error")

    added = db.queue(Kind.ADD, Store.add_jobs, [new()], T0)
    failing = db.queue(Kind.RECORD, record_then_fail)
    for call in (added, failing):
        with pytest.raises(StorageError, match="disk I/O error"):
            await call.outcome()
    assert await db.read(Store.counts) == dict.fromkeys(await db.read(Store.counts), 0)
    assert [q.paused for q in await db.read(Store.queues)] == [False]


async def test_a_refusal_in_a_guarded_call_undoes_only_that_call(db: Writer) -> None:
    [kept] = await db.add(Store.add_jobs, [new()], T0)
    refused = db.queue(Kind.ADD, Store.add_jobs, [new(), new(queue="nowhere")], T0)
    after = db.queue(Kind.ADD, Store.add_jobs, [new()], T0)
    with pytest.raises(Refused, match="unknown queue"):
        await refused.outcome()
    [later] = await after.outcome()
    assert sorted(await db.read(Store.states, range(1, 10))) == [kept, later]


@sqlite_only
async def test_a_disk_full_that_rolls_back_the_whole_batch_fails_it_and_the_writer_goes_on(
    db: Writer,
) -> None:
    """SQLITE_FULL in the middle of a bulk add rolls the whole transaction back,
    savepoints and all: every call of the batch is refused, and the next works."""
    db.engine.conn.execute("PRAGMA max_page_count = 60")  # a full disk, in pages
    small = db.queue(Kind.ADD, Store.add_jobs, [new()], T0)
    bulk = db.queue(Kind.ADD, Store.add_jobs, [new("x" * 50) for _ in range(20_000)], T0)
    for call in (small, bulk):
        with pytest.raises(StorageError, match="disk is full"):
            await call.outcome()
    assert await db.read(Store.counts) == dict.fromkeys(await db.read(Store.counts), 0)
    [job_id] = await db.add(Store.add_jobs, [new()], T0)  # the writer still serves
    assert await db.read(Store.states, [job_id]) == {job_id: "pending"}


@sqlite_only
async def test_a_database_file_deleted_under_the_writer_refuses_every_change_but_reads(
    db: Writer, tmp_path: Path
) -> None:
    [kept] = await db.add(Store.add_jobs, [new()], T0)
    for path in tmp_path.glob("q.db*"):
        path.unlink()
    with pytest.raises(StorageError, match=r"q\.db was deleted .* restart queued"):
        await db.add(Store.add_jobs, [new()], T0)
    assert db.lost is not None and "q.db was deleted" in db.lost
    with pytest.raises(StorageError, match="restart queued"):
        await db.write(Store.cancel, [kept], T0)
    assert await db.read(Store.states, [kept]) == {kept: "pending"}  # reads still answer


@sqlite_only
async def test_a_database_file_replaced_under_the_writer_refuses_changes(db: Writer, tmp_path: Path) -> None:
    await db.add(Store.add_jobs, [new()], T0)
    (tmp_path / "other").write_bytes((tmp_path / "q.db").read_bytes())
    (tmp_path / "other").rename(tmp_path / "q.db")
    with pytest.raises(StorageError, match="was replaced by another file"):
        await db.add(Store.add_jobs, [new()], T0)


@sqlite_only
async def test_reads_alone_never_look_at_the_files(db: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[bool] = []
    monkeypatch.setattr(db.engine._files, "lost", lambda: checks.append(True))
    await db.read(Store.counts)
    assert checks == []
    await db.add(Store.add_jobs, [new()], T0)
    assert checks == [True]


@pytest.fixture
def batches(db: Writer, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names of the calls in each transaction the writer commits."""
    seen: list[list[str]] = []
    commit = db._commit

    def spy(batch: list) -> list[int]:
        seen.append([call.fn.__name__ for call in batch])
        return commit(batch)

    monkeypatch.setattr(db, "_commit", spy)
    return seen


@pytest.fixture
async def two_due(db: Writer, batches: list[list[str]]) -> list[Claimed]:
    """Two due jobs read ahead; the transactions that made them are forgotten."""
    await db.add(Store.add_jobs, [new(), new()], T0)
    ahead = await db.read(Store.lookahead, now=T0, horizon=T0, queues=["default"], busy=[], limit=5)
    batches.clear()
    return ahead.jobs


async def test_records_alone_wait_for_company_and_commit_together(
    db: Writer, batches: list[list[str]], two_due: list[Claimed], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "LINGER_SECONDS", 0.3)
    first, second = two_due
    started = trio.current_time()
    one = db.record(Store.start, first, T0)
    await trio.sleep(0.1)
    assert not one.done.is_set()  # still waiting for company
    two = db.record(Store.start, second, T0)
    await one.outcome(), await two.outcome()
    assert batches == [["start", "start"]]
    assert trio.current_time() - started >= 0.3


async def test_any_other_call_ends_the_wait_at_once(
    db: Writer, batches: list[list[str]], two_due: list[Claimed], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "LINGER_SECONDS", 60)
    record = db.record(Store.start, two_due[0], T0)
    await trio.sleep(0.05)
    with trio.fail_after(10):  # not the minute the record alone would wait
        counts = await db.read(Store.counts)
    assert record.done.is_set() and counts["running"] == 1  # the read saw the record before it
    assert batches == [["start", "counts"]]


async def test_on_done_is_told_after_the_commit_in_queue_order(db: Writer, two_due: list[Claimed]) -> None:
    told: list[str] = []
    first, second = two_due
    await db.write(Store.cancel, [first.id], T0)
    refused = db.record(Store.start, first, T0)  # canceled since the read
    refused.on_done = lambda call: told.append(f"error {type(call.error).__name__}")
    kept = db.record(Store.start, second, T0)
    kept.on_done = lambda call: told.append(f"done {call.error} {call.done.is_set()}")
    await kept.outcome()
    assert told == ["error Refused", "done None True"]


@pytest.mark.engines("postgresql")
async def test_an_unreachable_store_fails_every_call_at_once_until_the_writer_reconnects(
    db: Writer, postgres_server: object, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server goes away: the batch that finds out fails with the one line,
    so does every call after it without touching the engine (reads too), and
    the writer reconnects by itself with backoff; then calls run again."""
    import psycopg

    from queued.store import StoreUnreachable

    caplog.set_level("INFO", logger="queued.store.writer")
    [job_id] = await db.add(Store.add_jobs, [new()], T0)
    reconnects: list[float] = []
    real_reconnect = db.engine.reconnect
    refusals = 3

    details: list[str] = []  # why the store is unreachable, as `status` says it at each try

    def reconnect(**how: object) -> None:  # the server refuses the first tries, then answers
        if not how:  # the writer's (the engine's own, at a batch's begin, gives a timeout)
            reconnects.append(time.monotonic())
            details.append(db.unreachable.detail if db.unreachable is not None else "")
        if len(reconnects) <= refusals:
            why = f"refused {len(reconnects)}" if len(reconnects) > 1 else "refused"
            raise StoreUnreachable("the job store at X is unreachable; retrying", why)
        real_reconnect()

    monkeypatch.setattr(db.engine, "reconnect", reconnect)
    with psycopg.connect(db.engine.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (db.engine.conn.info.backend_pid,))
    with pytest.raises(StoreUnreachable):
        await db.read(Store.states, [job_id])
    reconnected = db.reconnected()
    assert db.unreachable_since is not None
    for call in (
        db.queue(Kind.ADD, Store.add_jobs, [new()], T0),
        db.queue(Kind.READ, Store.counts),
    ):
        with pytest.raises(StoreUnreachable, match=r"^the job store at .* is unreachable; retrying$"):
            await call.outcome()
    with trio.fail_after(10):
        await reconnected.wait()
    assert db.unreachable is None and db.unreachable_since is None
    gaps = [b - a for a, b in itertools.pairwise(reconnects)]
    assert len(reconnects) == refusals + 1 and gaps == sorted(gaps)  # backoff: each wait longer
    assert await db.read(Store.states, [job_id]) == {job_id: "pending"}
    assert "the job store is unreachable (refused); reconnecting" in caplog.text
    assert details[2:] == [f"refused {n}" for n in range(2, refusals + 1)]  # the latest reason, not the first


def test_status_gives_the_gist_of_why_the_store_is_unreachable() -> None:
    from queued.server.context import _driver_reason

    libpq = 'connection failed: connection to server on socket "/run/x/.s.PGSQL.5432" failed: FATAL:  {}'
    assert _driver_reason(libpq.format('password authentication failed for user "q"')) == (
        'FATAL: password authentication failed for user "q"'
    )
    assert _driver_reason("terminating connection due to administrator command") == (
        "terminating connection due to administrator command"
    )
    assert _driver_reason("") == "" and len(_driver_reason("x" * 500)) == 160


@sqlite_only
async def test_a_commit_lost_on_its_way_tells_each_change_what_it_did_and_reads_only_unreachable(
    db: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from queued.store import CommitUnknown, StoreUnreachable
    from queued.store.contract import BatchLost

    real_commit = db.engine.commit
    lost = CommitUnknown("the job store went away during the commit", "gone", "the job store")

    def commit_once() -> None:
        monkeypatch.setattr(db.engine, "commit", real_commit)
        raise BatchLost(lost)

    monkeypatch.setattr(db.engine, "commit", commit_once)
    read = db.queue(Kind.READ, Store.counts)
    add = db.queue(Kind.ADD, Store.add_jobs, [new(), new()], T0)
    with pytest.raises(StoreUnreachable) as caught_read:
        await read.outcome()
    assert not isinstance(caught_read.value, CommitUnknown)
    assert str(caught_read.value) == "the job store is unreachable; retrying"
    with pytest.raises(CommitUnknown) as caught_add:
        await add.outcome()
    assert list(caught_add.value.result) == [1, 2]  # what it did inside the transaction
    with trio.fail_after(10):
        while db.unreachable is not None:  # the writer reconnects (SQLite: at once)
            await db.reconnected().wait()
    assert await db.read(Store.states, [1, 2]) == {}  # SQLite rolled it back


@sqlite_only
async def test_calls_during_an_outage_begun_by_a_lost_commit_are_told_it_is_unreachable(
    db: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the batch whose COMMIT was on its way may or may not have been
    kept; the calls after it (a `queuectl ls` during the outage) are told the
    one line of an unreachable store (found by the outage e2e test)."""
    from queued.store import CommitUnknown, StoreUnreachable
    from queued.store.contract import BatchLost

    real_commit, real_reconnect = db.engine.commit, db.engine.reconnect
    answers = trio.Event()

    def commit_once() -> None:
        monkeypatch.setattr(db.engine, "commit", real_commit)
        raise BatchLost(CommitUnknown("the job store went away during the commit", "gone", "the job store"))

    def reconnect(**how: object) -> None:
        if not answers.is_set():
            raise StoreUnreachable("the job store is unreachable; retrying", "refused", "the job store")
        real_reconnect()

    monkeypatch.setattr(db.engine, "commit", commit_once)
    monkeypatch.setattr(db.engine, "reconnect", reconnect)
    with pytest.raises(CommitUnknown):
        await db.add(Store.add_jobs, [new()], T0)
    for call in (db.queue(Kind.READ, Store.counts), db.queue(Kind.ADD, Store.add_jobs, [new()], T0)):
        with pytest.raises(StoreUnreachable) as caught:
            await call.outcome()
        assert not isinstance(caught.value, CommitUnknown)
        assert str(caught.value) == "the job store is unreachable; retrying"
    answers.set()
    with trio.fail_after(10):
        while db.unreachable is not None:
            await db.reconnected().wait()


@sqlite_only
async def test_a_batch_the_database_undid_for_another_node_runs_again(
    db: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadlock with another node's transaction (BatchConflict) is not an
    outage: the whole batch runs again; if the conflicts go on, its callers
    get the engine's one line, and the store stays reachable."""
    from queued.store.contract import BatchConflict

    real_commit = db.engine.commit
    conflicts = [2]

    def commit() -> None:
        if conflicts[0]:
            conflicts[0] -= 1
            raise BatchConflict(StorageError("kept undoing it; try again"))
        real_commit()

    monkeypatch.setattr(db.engine, "commit", commit)
    assert list(await db.add(Store.add_jobs, [new()], T0)) == [1]  # third time lucky
    assert await db.read(Store.states, [1, 2]) == {1: "pending"}  # added once
    conflicts[0] = writer.CONFLICT_TRIES
    with pytest.raises(StorageError, match=r"^kept undoing it; try again$"):
        await db.add(Store.add_jobs, [new()], T0)
    assert db.unreachable is None
    assert await db.read(Store.states, [1, 2]) == {1: "pending"}
