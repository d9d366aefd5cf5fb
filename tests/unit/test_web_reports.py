"""The web page's reads (queued/store/reports.py, spelled by each engine's
dialect) give the same answers on every engine: the page of a PostgreSQL node
shows what a SQLite daemon's does."""

from __future__ import annotations

from typing import Any

from queued.store import reports
from tests.store_harness import FAIL, OK, T0, add, run_to


def read(store: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    store.engine.begin()
    try:
        return fn(store.engine, *args, **kwargs)
    finally:
        store.engine.abort()


def test_counts_dependents_filters_and_ended_attempts(store: Any) -> None:
    first = add(store, "echo one", label="x")
    second = add(store, "echo two", label="x", after=[first], max_retries=0)
    add(store, "sleep 1", queue="default", hold=True)
    run_to(store, first, OK, T0 + 1)
    run_to(store, second, FAIL, T0 + 2)
    counts = read(store, reports.counts_by_queue)
    assert {key: n for key, n in counts.items() if n} == {  # SQLite's kept counts may hold zeros
        ("default", "completed"): 1,
        ("default", "dead"): 1,
        ("default", "held"): 1,
    }
    assert read(store, reports.dependents, first) == [second]
    assert read(store, reports.count_jobs, label="x") == 2
    assert read(store, reports.count_jobs, states=["dead", "held"]) == 2
    assert read(store, reports.count_jobs, command="echo", cap=1) == 1
    assert read(store, reports.matching_ids, command="echo t") == [second]
    assert read(store, reports.matching_ids, created_after=T0 + 1) == []
    ended = read(store, reports.attempts_ended, T0, T0 + 10)
    assert [(a.job_id, a.outcome) for a in ended] == [(first, "completed"), (second, "failed")]
    assert read(store, reports.attempts_ended, T0 + 1, T0 + 10)[0].job_id == second
