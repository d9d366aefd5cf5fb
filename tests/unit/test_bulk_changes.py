"""Changes of many jobs at once (cancel, retry, hold, release), on every
engine: the same states, errors, counts and news as moving them one by one
(as the stores did until session 23: on PostgreSQL each move upserted the
writer's finished-counts row, and 100,000 cancels grew with the square of
their number), in a number of statements that does not grow with theirs.

The one-by-one reference is the former loop, kept here over the engine's
own `Transitions.move`; graphs of jobs in every state are built twice in one
store, one copy changed at once, the other one by one, and compared."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import pytest

from queued import lifecycle
from queued.lifecycle import Event
from queued.store import Changes, Refused
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
    job,
    new,
    state,
)
from tests.unit.test_cascade_cost import _Counting

Store = Direct
COLUMNS = "id, state, error, updated_at, unmet, attempts, exit_code, run_at"


def build(store: Store, rng: random.Random, size: int) -> list[int]:
    """A graph of `size` jobs in every state, drawn from `rng`: finished,
    running and failed roots; pending, held and delayed dependents of them
    and of one another (some canceled by a cascade). Its ids, in order."""
    roots = store.add_jobs([new(max_retries=rng.choice([0, 2])) for _ in range(size // 3)], T0)
    claimed = claim(store, T0, slots=len(roots))
    for attempt in claimed:
        fate = rng.choice(["ok", "fail", "run"])
        if fate != "run":
            store.finish(attempt, OK if fate == "ok" else FAIL, BACKOFF_MAX, T0 + 1)
    ids = list(roots)
    states = store.states(ids)
    for _ in range(size - len(roots)):
        allowed = [i for i in ids if states[i] not in lifecycle.ENDED_BADLY_STATES]
        after = sorted(rng.sample(allowed, k=min(len(allowed), rng.choice([0, 1, 1, 2, 3]))))
        [job_id] = store.add_jobs([new(after=after, delay=100.0, hold=rng.random() < 0.2)], T0 + 2)
        ids.append(job_id)
        states[job_id] = state(store, job_id)
        if rng.random() < 0.1:
            store.cancel([job_id], T0 + 3)  # its dependents after it cannot be added: see `allowed`
            states = store.states(ids)
    return ids


def rows(store: Store, ids: list[int]) -> list[tuple[Any, ...]]:
    first, last = ids[0], ids[-1]
    found = store.engine.conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE id >= {first} AND id <= {last} ORDER BY id"
    ).fetchall()
    return [tuple(row) for row in found]


def shifted(value: Any, by: int) -> Any:
    """Ids named in a row or message, as the copy `by` ids on names them."""
    if isinstance(value, str):
        return re.sub(r"(dependency|job) (\d+)", lambda m: f"{m[1]} {int(m[2]) + by}", value)
    if isinstance(value, tuple):  # a row: its id first
        return (value[0] + by, *(shifted(item, by) for item in value[1:]))
    return value


def one_by_one(store: Store, event: Event, ids: list[int], now: float, **columns: Any) -> Changes:
    """The former way of every bulk change: each job moved alone, in
    ascending order, from the state read before the first (a retry reading
    each one's dependencies as it comes)."""
    engine = store.engine
    changes = Changes()
    with store.transaction():
        states = engine._jobs.require(ids, event)
        for job_id in sorted(states):
            extra = dict(columns)
            if event is Event.RETRY:
                deps = engine._jobs.dependencies(job_id)
                verdict = lifecycle.dependency_verdict(deps)
                if verdict.blocker is not None:
                    raise Refused("invalid", f"job {job_id} depends on job {verdict.blocker}")
                extra["unmet"] = lifecycle.unmet_count(deps)
            engine._changes.transitions.move(job_id, states[job_id], event, now, changes, **extra)
    changes.reordered = changes.reordered or event is Event.RELEASE  # as JobChanges.release
    return changes


def at_once(store: Store, event: Event, ids: list[int], now: float) -> Changes:
    call = {
        Event.CANCEL: lambda: store.cancel(ids, now),
        Event.RETRY: lambda: store.retry(ids, False, now),
        Event.HOLD: lambda: store.hold(ids, now),
        Event.RELEASE: lambda: store.release(ids, now),
    }[event]
    store.changes = Changes()
    call()
    changes, store.changes = store.changes, Changes()
    return changes


COLUMNS_OF = {
    Event.CANCEL: {"error": lifecycle.CANCELED_BY_USER},
    Event.RETRY: {"attempts": 0, "exit_code": None, "error": None, "run_at": T0 + 10},
    Event.HOLD: {},
    Event.RELEASE: {},
}


def once_each(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


@pytest.mark.parametrize("seed", range(6))
def test_a_change_of_many_jobs_at_once_is_the_same_as_one_by_one(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    graph = build(store, random.Random(seed), 45)
    copy = build(store, random.Random(seed), 45)
    by = copy[0] - graph[0]
    assert rows(store, copy) == [shifted(row, by) for row in rows(store, graph)]
    for step, event in enumerate([Event.CANCEL, Event.HOLD, Event.RELEASE, Event.RETRY, Event.CANCEL]):
        states = store.states(graph)
        allowed = [i for i in graph if lifecycle.can(states[i], event)]
        chosen = sorted(rng.sample(allowed, k=len(allowed) // 2 + 1)) if allowed else []
        if not chosen:
            continue
        now = T0 + 10 + step
        try:
            changes = one_by_one(store, event, [i + by for i in chosen], now, **COLUMNS_OF[event])
        except Refused as refused:  # a retry of a job whose dependency stays canceled
            with pytest.raises(Refused) as info:
                at_once(store, event, chosen, now)
            assert shifted(info.value.message, by).startswith(refused.message)
            continue
        changed = at_once(store, event, chosen, now)
        assert rows(store, copy) == [shifted(row, by) for row in rows(store, graph)], event
        assert [i + by for i in changed.finished] == once_each(changes.finished)
        assert [i + by for i in changed.released] == changes.released
        assert changed.reordered == changes.reordered
    everything = [j.state for j in store.list_jobs()]
    counts = store.counts()
    assert {s: n for s, n in counts.items() if n} == dict(Counter(everything))


def test_a_dependent_of_two_canceled_at_once_names_the_dependency_the_first_doomed(store: Store) -> None:
    """One by one, the first named job's cascade reaches `last` through
    `middle`, before the second named one is canceled: `middle` dooms it,
    though the second is a lower id."""
    first = add(store, delay=100.0)
    second = add(store, delay=100.0)
    middle = add(store, after=[first])
    last = add(store, after=[middle, second])
    assert store.cancel([first, second], T0 + 1) == []
    assert job(store, last).error == f"canceled: dependency {middle} is canceled"
    assert job(store, middle).error == f"canceled: dependency {first} is canceled"
    assert [job(store, i).error for i in (first, second)] == [lifecycle.CANCELED_BY_USER] * 2


def test_a_named_job_doomed_by_one_named_before_it_is_canceled_by_the_user_and_told_once(
    store: Store,
) -> None:
    a = add(store, delay=100.0)
    b = add(store, after=[a])
    c = add(store, after=[b])
    store.changes = Changes()
    store.cancel([a, b], T0 + 1)
    assert store.finished == [a, b, c]
    assert [job(store, i).error for i in (a, b)] == [lifecycle.CANCELED_BY_USER] * 2
    assert job(store, c).error == f"canceled: dependency {b} is canceled"
    assert store.counts()["canceled"] == 3


def test_a_retry_of_many_keeps_each_ones_dependencies_and_key(store: Store) -> None:
    a = add(store, max_retries=0)
    b = add(store, after=[a])
    done = add(store)
    for job_id in (a, done):
        [attempt] = claim(store, T0, slots=1)
        assert attempt.id == job_id
        store.finish(attempt, FAIL if job_id == a else OK, BACKOFF_MAX, T0)
    keyed = []
    for _ in range(2):  # one key, held by one at a time
        keyed.append(add(store, unique_key="k", delay=100.0))
        store.cancel(keyed[-1:], T0)
    with pytest.raises(Refused) as info:
        store.retry([a, b, done, *keyed], False, T0 + 1)
    assert info.value.message == lifecycle.unique_refusal(keyed[1], "retry", "k", keyed[0], "pending")
    assert store.retry([a, b, done, keyed[0]], False, T0 + 1) == [a, b, done, keyed[0]]
    assert store.states([a, b, done, keyed[0]]) == dict.fromkeys([a, b, done, keyed[0]], "pending")
    [attempt] = claim(store, T0 + 1, slots=1)
    assert attempt.id == a  # b waits for a again
    [attempt] = claim(store, T0 + 1, slots=1)
    assert attempt.id == done


def statements(store: Store, change: str, size: int) -> int:
    """Statements a change of `size` jobs at once sends (its reads of their
    states in pieces of 900 ids on SQLite: sizes under that)."""
    ids = store.add_jobs([new(delay=100.0) for _ in range(size)], T0)
    engine = store.engine
    sql, table = engine._changes.transitions.sql, engine._jobs
    counting = _Counting(sql.conn)
    sql.conn = table.conn = counting
    try:
        if change == "retry":
            store.cancel(ids, T0)
            counting.statements = 0
            store.retry(ids, False, T0 + 1)
        else:
            getattr(store, change)(ids, T0)
    finally:
        sql.conn = table.conn = counting.conn
    return counting.total()


@pytest.mark.parametrize("change", ["cancel", "retry", "hold"])
def test_a_change_of_800_jobs_sends_as_many_statements_as_of_2(store: Store, change: str) -> None:
    few = statements(store, change, 2)
    assert statements(store, change, 800) == few <= 20


@pytest.mark.engines("postgresql")
def test_a_cancel_of_many_writes_the_finished_counts_row_once(store: Store) -> None:
    ids = store.add_jobs([new(delay=100.0) for _ in range(1000)], T0)
    conn = store.engine.conn
    with store.transaction():
        store.cancel(ids, T0)
        assert finished_counts_written(conn) == 1
        assert not counted_apart(conn)
    assert store.counts()["canceled"] == 1000
    store.retry(ids, False, T0 + 1)
    assert store.counts()["canceled"] == 0
