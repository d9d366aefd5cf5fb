"""What the dependents cascade costs, on every engine: a bounded number of
statements whatever the number or depth of the dependents (before: on
PostgreSQL each canceled dependent upserted the one finished-counts row of
its writer, and 100,000 of them took 80 s, quadratic). Insides of the
engines, read through `TransitionSql.conn`, the one connection a
cascade's statements go through; what the cascade does is in
test_store_contract.py."""

from __future__ import annotations

from typing import Any

import pytest

from queued.store.contract import AttemptEnd
from tests.store_harness import (
    BACKOFF_MAX,
    FAIL,
    OK,
    T0,
    Direct,
    add,
    claim,
    counted_apart,
    finished_counts_written,
    new,
)


class _Counting:
    """A connection that counts the statements sent through it (each row of
    an executemany one statement: it is one execution per row)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements = 0

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.conn.execute(query, *args, **kwargs)

    def executemany(self, query: Any, rows: Any, *args: Any, **kwargs: Any) -> Any:
        rows = list(rows)
        self.statements += len(rows)
        return self.conn.executemany(query, rows, *args, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> _Counting:
        counting = _Counting(self.conn.cursor(*args, **kwargs))
        counting.statements = 0
        self._cursors.append(counting)
        return counting

    @property
    def _cursors(self) -> list[_Counting]:
        return self.__dict__.setdefault("cursors", [])

    def total(self) -> int:
        return self.statements + sum(cursor.total() for cursor in self._cursors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def statements_to_cancel(store: Direct, shape: str, size: int) -> int:
    """Statements a cancel of a root with `size` dependents in `shape` sends."""
    root = add(store, delay=100.0)
    after = (lambda n: [root + n]) if shape == "chain" else (lambda n: [root])
    ids = store.add_jobs([new(after=after(n)) for n in range(size)], T0)
    sql = store.engine._changes.transitions.sql
    counting = _Counting(sql.conn)
    sql.conn = counting
    try:
        store.cancel([root], T0)
    finally:
        sql.conn = counting.conn
    assert [store.states([i])[i] for i in (root, ids[0], ids[-1])] == ["canceled"] * 3
    return counting.total()


@pytest.mark.parametrize("shape", ["chain", "fan-out"])
def test_a_cascade_sends_as_many_statements_for_1000_dependents_as_for_2(store: Direct, shape: str) -> None:
    few = statements_to_cancel(store, shape, 2)
    # PostgreSQL's 16 go in 4 round trips (pipelined): its planner settings
    # set and put back around each step (postgres/transitions.py), the
    # counts' switch around each move (the root's, then its dependents').
    assert statements_to_cancel(store, shape, 1000) == few <= 16


@pytest.mark.engines("postgresql")
def test_a_cascade_writes_the_finished_counts_row_once(store: Direct) -> None:
    """The moves are counted in one upsert: one new version of the writer's
    counts row for 1,000 cancels, not 1,000 (each walked those before it).
    And a single change after it, in the same transaction, is counted again
    by the row trigger (the cascade's switch is off once it is done), and
    the session's planner settings are its own again."""
    root = add(store, delay=100.0)
    store.add_jobs([new(after=[root + n]) for n in range(1000)], T0)
    conn = store.engine.conn
    settings = "SELECT current_setting('jit'), current_setting('enable_seqscan'), current_setting('queued.counted_apart', true)"
    before = conn.execute(settings).fetchone()
    with store.transaction():
        store.cancel([root], T0)
        [jit, seqscan, counted_apart] = conn.execute(settings).fetchone()
        assert (jit, seqscan) == before[:2] and counted_apart in ("", None)  # None: never set
        [(written,)] = conn.execute(
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'finished_counts'"
        ).fetchall()
        assert written <= 2  # the root's own change (its row trigger) and the cascade's
        assert store.counts()["canceled"] == 1001
        other = add(store, delay=100.0)
        store.cancel([other], T0)
        assert store.counts()["canceled"] == 1002


@pytest.mark.engines("postgresql")
def test_the_ends_of_a_batch_write_the_finished_counts_row_once(store: Direct) -> None:
    """Ends recorded together (finish_many) are counted in one upsert, as a
    cascade's moves are, and the row trigger counts what follows them."""
    ids = store.add_jobs([new("false" if n % 3 else "true", max_retries=n % 2) for n in range(60)], T0)
    ends = [AttemptEnd(c, FAIL if c.command == "false" else OK, T0 + 1) for c in claim(store, T0)]
    assert len(ends) == len(ids)
    conn = store.engine.conn
    with store.transaction():
        store.finish_many(ends, BACKOFF_MAX)
        assert finished_counts_written(conn) == 1
        assert not counted_apart(conn)
        states = store.states(ids)
        counts = store.counts()
        for name in ("completed", "dead", "failed"):
            assert counts[name] == sum(1 for s in states.values() if s == name), name
        other = add(store, delay=100.0)
        store.cancel([other], T0)
        assert store.counts()["canceled"] == 1
