"""The SQLite engine's own: its tables (the counts table, savepoints that
leave every row as it was, how odd bytes are stored) and its file (opening,
refusing, migrating). What any engine must do is in test_store_contract.py,
which runs on SQLite too."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from queued.store import Refused
from queued.store.sqlite import SqliteStore, rows, schema
from tests.store_harness import BACKOFF_MAX, OK, T0, Direct, add, claim, claim_one, new

from .test_store_contract import (
    REFUSALS,
    _change_since_the_read,
    ahead,
    build_world,
    counts_history,
    not_utf8_job,
)

pytestmark = pytest.mark.engines("sqlite")

Store = Direct


def table_snapshot(store: Store) -> dict[str, list[tuple]]:
    return {
        name: store.conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
        for name in ("jobs", "attempts", "dependencies", "counts", "queues", "environments", "config")
    } | {"sequence": store.conn.execute("SELECT * FROM sqlite_sequence").fetchall()}


# ----------------------------------------------------------------------------
# Refusals and reads, row by row


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refusal_leaves_every_table_as_it_was(store: Store, case: str) -> None:
    """The contract's test sees what get_job and list_jobs show; this one every
    row, the environments and the id sequence included (a savepoint rolled
    back, or a record that refused before it wrote)."""
    _, refused_call = REFUSALS[case]
    world = build_world(store)
    before = table_snapshot(store)
    with store.transaction(), pytest.raises(Refused):
        refused_call(store, world)
    assert table_snapshot(store) == before


def test_a_refused_call_keeps_nothing_inside_its_batch(store: Store) -> None:
    before = table_snapshot(store)
    with store.transaction(), pytest.raises(Refused):
        store.add_jobs([new("ok"), new(queue="missing")], T0)
    assert table_snapshot(store) == before
    with store.transaction():
        [kept] = store.add_jobs([new("kept")], T0)
        with pytest.raises(Refused):
            store.add_jobs([new("ok"), new(queue="missing")], T0)
    assert [row[0] for row in store.conn.execute("SELECT id FROM jobs")] == [kept]


@pytest.mark.parametrize(
    "change", ["cancel", "claimed", "remove", "hold", "ran and failed", "dependency retried"]
)
def test_start_refused_writes_no_row(store: Store, change: str) -> None:
    dep = add(store)
    store.finish(claim_one(store, dep), OK, BACKOFF_MAX, T0)
    job_id = add(store, after=[dep], max_retries=3, backoff_base=1.0)
    [job] = ahead(store).jobs
    _change_since_the_read(store, change, job_id, dep)
    before = table_snapshot(store)
    with store.transaction(), pytest.raises(Refused):
        store.start(job, T0)
    assert table_snapshot(store) == before


def test_reads_write_nothing(store: Store) -> None:
    build_world(store)
    changes = store.conn.total_changes
    store.list_jobs()
    store.jobs_by_id([1, 2, 3])
    store.get_job(1)
    store.states([1, 2])
    store.unfinished_ids()
    store.counts()
    store.queues()
    store.config()
    store.next_due(T0, ["default", "busy"])
    ahead(store, now=T0 + 1000, horizon=T0 + 2000, queues=("default", "busy", "done"))
    assert store.conn.total_changes == changes


def test_a_start_and_its_unclaim_leave_the_tables_as_they_were(store: Store) -> None:
    job_id = add(store)
    before = table_snapshot(store)
    [job] = claim(store)
    assert store.conn.execute(
        "SELECT attempt, started_at FROM attempts WHERE job_id = ?", (job_id,)
    ).fetchall() == [(1, T0)]
    store.unclaim(job, T0 + 1)
    after = table_snapshot(store)
    assert after["attempts"] == before["attempts"] == []
    assert [row for row in after["counts"] if row[2]] == before["counts"]


def test_removing_a_job_deletes_its_attempts(store: Store) -> None:
    job_id = add(store)
    store.finish(claim_one(store, job_id), OK, BACKOFF_MAX, T0, pid=1, stdout="/l/out", stderr="/l/err")
    store.remove([job_id])
    assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
    assert store.conn.execute("SELECT count(*) FROM dependencies").fetchone()[0] == 0


# ----------------------------------------------------------------------------
# The counts table


def test_the_counts_table_follows_every_change(store: Store) -> None:
    """Kept by triggers and by the store's own updates: per queue and state,
    as many as the jobs table holds, at every step."""
    for step in counts_history(store, {}):
        per_queue = {(q, s): n for q, s, n in store.conn.execute("SELECT queue, state, n FROM counts") if n}
        manual = store.conn.execute(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"
        ).fetchall()
        assert per_queue == {(q, s): n for q, s, n in manual}, step
    assert sum(store.counts().values()) == store.conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


# ----------------------------------------------------------------------------
# Bytes that are not UTF-8


def test_a_cwd_and_environment_that_are_not_utf8_are_stored_as_bytes(store: Store) -> None:
    """Issue #17 item 9: a BLOB cwd and an environment of byte pairs, read back
    (past the engine's cache) into the very same str."""
    job_new, value = not_utf8_job()
    [job_id] = store.add_jobs([job_new], T0)
    assert store.conn.execute("SELECT cwd FROM jobs WHERE id = ?", (job_id,)).fetchone() == (b"/tmp/d\xe9",)
    store.forget_caches()
    [claimed] = claim(store)
    assert claimed.cwd == b"/tmp/d\xe9"  # os.chdir takes it as it is
    assert claimed.env == {"X": value, "PLAIN": "1"}
    stored, _, env = store.get_job(job_id)
    assert (stored.cwd, env["X"]) == ("/tmp/d\\xe9", "caf\\xe9")  # readable, for show


# ----------------------------------------------------------------------------
# Opening the database


def _make_database(path: Path, jobs: int = 0) -> None:
    conn = schema.connect(path)
    store = Direct(SqliteStore(conn))
    store.recover(BACKOFF_MAX, T0)
    if jobs:
        store.add_jobs([new("x" * 200) for _ in range(jobs)], T0)
    conn.close()


def _assert_refused(path: Path, *needles: str) -> None:
    before = path.read_bytes()
    with pytest.raises(schema.DatabaseUnusable) as info:
        schema.connect(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message
    assert path.read_bytes() == before


def test_new_database_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "q.db"
        conn = schema.connect(path)
        Direct(SqliteStore(conn)).recover(BACKOFF_MAX, T0)  # writes: the -wal file exists now
        for name in ("q.db", "q.db-wal", "q.db-shm"):
            file = tmp_path / name
            if file.exists():
                assert file.stat().st_mode & 0o777 == 0o600, name
        assert (tmp_path / "q.db-wal").exists()
        conn.close()
    finally:
        os.umask(old)


def test_new_database_has_schema_and_wal(tmp_path: Path) -> None:
    conn = schema.connect(tmp_path / "q.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn.close()


def test_reopen_keeps_jobs(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    _make_database(path, jobs=3)
    conn = schema.connect(path)
    assert SqliteStore(conn).counts()["pending"] == 3
    conn.close()


def test_garbage_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(os.urandom(8192))
    _assert_refused(path)


def test_text_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_text("this is not a database\n" * 100)
    _assert_refused(path)


@pytest.mark.parametrize("keep", ["first page", "half", "all but the last page", "header"])
def test_truncated_database_refused(tmp_path: Path, keep: str) -> None:
    path = tmp_path / "q.db"
    _make_database(path, jobs=300)
    data = path.read_bytes()
    page = 4096
    pages = len(data) // page
    assert pages >= 8
    size = {
        "first page": page,
        "half": pages // 2 * page,
        "all but the last page": (pages - 1) * page,
        "header": 100,
    }[keep]
    path.write_bytes(data[:size])
    _assert_refused(path)


def test_newer_schema_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    _assert_refused(path, f"version {schema.SCHEMA_VERSION + 1}")


def test_foreign_sqlite_database_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("INSERT INTO photos (data) VALUES (x'00')")
    conn.commit()
    conn.close()
    _assert_refused(path, "not one of queued's")


def test_a_version_1_database_gains_the_attempts_log_incomplete_column(tmp_path: Path) -> None:
    """A database written by the previous queued is migrated in place, its rows kept."""
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    _as_version_2(path)
    conn = sqlite3.connect(path)
    conn.executescript("ALTER TABLE attempts DROP COLUMN log_incomplete; PRAGMA user_version = 1;")
    conn.close()
    conn = schema.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    columns = [row[1] for row in conn.execute("PRAGMA table_info(attempts)")]
    assert columns[-3:] == ["log_incomplete", "node", "gpus"]
    assert SqliteStore(conn).counts()["pending"] == 2
    conn.close()


# What version 6 added: a job's slots and needs, an attempt's GPUs (and a
# schedule's slots and needs, in the schedules table).
WITHOUT_RESOURCES = "ALTER TABLE jobs DROP COLUMN slots; ALTER TABLE jobs DROP COLUMN needs; ALTER TABLE attempts DROP COLUMN gpus;"


def _as_version_2(path: Path) -> None:
    """Take a database back to what version 2 wrote: no unique keys, no nodes, no schedules."""
    conn = sqlite3.connect(path)
    conn.executescript(
        WITHOUT_RESOURCES + "ALTER TABLE attempts DROP COLUMN node; ALTER TABLE jobs DROP COLUMN node;"
        " DROP INDEX jobs_unique; DROP INDEX jobs_by_unique_key;"
        " DROP TABLE schedules; DROP TABLE firings;"
        " ALTER TABLE jobs DROP COLUMN unique_key; PRAGMA user_version = 2;"
    )
    conn.close()


def test_a_version_2_database_gains_unique_keys_and_their_index(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    _as_version_2(path)
    conn = schema.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert [row[1] for row in conn.execute("PRAGMA table_info(jobs)")][-4:] == [
        "unique_key",
        "node",
        "slots",
        "needs",
    ]
    store = Direct(SqliteStore(conn))
    assert [j.unique_key for j in store.list_jobs()] == [None, None]
    [first] = store.add_jobs([new(unique_key="k")], T0)
    assert store.add_jobs([new(unique_key="k")], T0) == [first]
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # the index, not only the add's look
        conn.execute("UPDATE jobs SET unique_key = 'k' WHERE id = 1")
    conn.close()


def test_the_unique_index_admits_one_unfinished_job_per_key(tmp_path: Path) -> None:
    """The invariant is the database's, whatever code writes the rows; the
    lookups of an add use the indexes."""
    conn = schema.connect(tmp_path / "q.db")
    store = Direct(SqliteStore(conn))
    store.recover(BACKOFF_MAX, T0)
    [a, b] = store.add_jobs([new(unique_key="k"), new()], T0)
    conn.execute("UPDATE jobs SET state = 'completed' WHERE id = ?", (a,))
    conn.execute("UPDATE jobs SET unique_key = 'k' WHERE id = ?", (b,))  # a finished one holds nothing
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute("UPDATE jobs SET state = 'pending' WHERE id = ?", (a,))
    holder = f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN ({rows.UNIQUE})"
    window = (
        f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN ({rows.UNIQUE_WINDOW})"
        " AND updated_at > ? ORDER BY updated_at DESC, id DESC LIMIT 1"
    )
    [[*_, plan]] = conn.execute(f"EXPLAIN QUERY PLAN {holder}", ("k",)).fetchall()
    assert plan == "SEARCH jobs USING INDEX jobs_unique (unique_key=?)"
    [[*_, plan]] = conn.execute(f"EXPLAIN QUERY PLAN {window}", ("k", T0)).fetchall()
    assert plan == "SEARCH jobs USING INDEX jobs_by_unique_key (unique_key=? AND updated_at>?)"


def test_a_version_3_database_gains_the_nodes_of_attempts_and_jobs(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    conn = sqlite3.connect(path)
    conn.executescript(
        WITHOUT_RESOURCES + "ALTER TABLE attempts DROP COLUMN node; ALTER TABLE jobs DROP COLUMN node;"
        " DROP TABLE schedules; DROP TABLE firings; PRAGMA user_version = 3;"
    )
    conn.close()
    conn = schema.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    store = SqliteStore(conn)
    assert [(job.node, job.pinned) for job in store.list_jobs()] == [(None, None), (None, None)]
    conn.close()


def test_a_version_4_database_gains_the_schedules(tmp_path: Path) -> None:
    """The previous version's database (no schedules) opens, its jobs kept,
    and schedules can be added to it."""
    from tests.unit.test_store_contract import a_schedule

    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    conn = sqlite3.connect(path)
    conn.executescript(
        WITHOUT_RESOURCES + "DROP TABLE schedules; DROP TABLE firings; PRAGMA user_version = 4;"
    )
    conn.close()
    store = SqliteStore(schema.connect(path))
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert store.counts()["pending"] == 2
    store.conn.execute("BEGIN")
    store.add_schedule(a_schedule(), 1.0)
    fired = store.fire_schedule("nightly", 11.0, 11.0).value
    store.conn.execute("COMMIT")
    assert fired.outcome == "added" and [s.name for s in store.schedules()] == ["nightly"]
    store.conn.close()


def test_a_version_5_database_gains_what_jobs_need_and_what_attempts_held(tmp_path: Path) -> None:
    """The previous version's database (no slots, needs or GPUs) opens, its
    jobs, attempts and schedules kept as needing nothing, and takes them."""
    from tests.unit.test_store_contract import a_schedule

    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    store = Direct(SqliteStore(schema.connect(path)))
    store.add_schedule(a_schedule(), T0)
    [claimed, _] = store.claim(now=T0, slots=2, queue_room={"default": 2})
    store.engine.conn.close()
    conn = sqlite3.connect(path)
    conn.executescript(
        WITHOUT_RESOURCES
        + "ALTER TABLE schedules DROP COLUMN slots; ALTER TABLE schedules DROP COLUMN needs;"
        " PRAGMA user_version = 5;"
    )
    conn.close()
    store = Direct(SqliteStore(schema.connect(path)))
    assert store.engine.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert [(j.slots, j.needs, j.gpus) for j in store.list_jobs()] == [(1, {}, []), (1, {}, [])]
    assert [run.gpus for run in store.get_job(claimed.id)[1]] == [[]]
    assert [(s.slots, s.needs) for s in store.schedules()] == [(1, {})]
    [job_id] = store.add_jobs([new(slots=2, needs={"gpu": 1})], T0)
    assert (store.get_job(job_id)[0].slots, store.get_job(job_id)[0].needs) == (2, {"gpu": 1})
    store.engine.conn.close()


def _history_plan(conn: sqlite3.Connection) -> str:
    """How the web page's history (reports.attempts_ended) reads the attempts."""
    query = (
        "SELECT a.ended_at, a.job_id, a.attempt, j.queue, a.exit_code, a.signal, a.error, a.started_at,"
        " j.run_at, j.attempts FROM attempts a JOIN jobs j ON j.id = a.job_id"
        " WHERE a.ended_at > ? AND a.ended_at <= ? ORDER BY a.ended_at LIMIT ?"
    )
    return " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", (0.0, 1.0, 10)))


def test_a_version_6_database_gains_the_index_of_ended_attempts(tmp_path: Path) -> None:
    """The web page's history reads the attempts that ended lately through an
    index (it scanned them all: 2 s at 1,000,000); a previous version's
    database gains it, its attempts kept."""
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    store = Direct(SqliteStore(schema.connect(path)))
    ran = run_to_end(store)
    store.engine.conn.close()
    conn = sqlite3.connect(path)
    assert "USING INDEX attempts_ended" in _history_plan(conn)
    conn.executescript("DROP INDEX attempts_ended; PRAGMA user_version = 6;")
    conn.close()
    conn = sqlite3.connect(path)  # a plan of its own (an EXPLAIN cached above is not planned again)
    assert "SCAN a" in _history_plan(conn)
    conn.close()
    store = Direct(SqliteStore(schema.connect(path)))
    try:
        assert store.engine.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION >= 7
        assert "USING INDEX attempts_ended" in _history_plan(store.engine.conn)
        assert [run.ended_at for run in store.get_job(ran)[1]] == [T0 + 1]
    finally:
        store.engine.conn.close()


def _clean_plan(conn: sqlite3.Connection) -> str:
    """How SQLite reads what `clean --state dead --older-than` removes (the
    statement of JobTable.clean)."""
    query = "SELECT id FROM jobs WHERE state IN ('completed','dead','canceled') AND state IN (?) AND updated_at < ?"
    return " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", ("dead", 1.0)))


def test_a_version_7_database_gains_the_index_of_finished_jobs_by_state_and_time(tmp_path: Path) -> None:
    """`clean --older-than` and `dlq purge` read only the jobs they remove
    (a clean that removed none read every finished job: 0.3 s at
    1,000,000); a previous version's database gains the index, its jobs kept."""
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    conn = sqlite3.connect(path)
    assert "jobs_finished (state=? AND updated_at<?)" in _clean_plan(conn)
    conn.executescript(
        "DROP INDEX jobs_finished; CREATE INDEX jobs_finished ON jobs(updated_at)"
        " WHERE state IN ('completed', 'dead', 'canceled'); PRAGMA user_version = 7;"
    )
    conn.close()
    conn = sqlite3.connect(path)
    assert "jobs_by_state" in _clean_plan(conn)
    conn.close()
    store = Direct(SqliteStore(schema.connect(path)))
    try:
        assert store.engine.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION >= 8
        assert "jobs_finished (state=? AND updated_at<?)" in _clean_plan(store.engine.conn)
        assert len(store.list_jobs()) == 2
    finally:
        store.engine.conn.close()


def run_to_end(store: Direct) -> int:
    """One job run and ended (at T0 + 1); its id."""
    claimed = claim(store)[0]
    store.finish(claimed, OK, BACKOFF_MAX, T0 + 1)
    return claimed.id
