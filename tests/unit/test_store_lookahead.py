"""Reading due jobs ahead (`Store.lookahead`) and recording their starts (`Store.start`)."""

from __future__ import annotations

import pytest

from queued.store import Refused, Store

from .test_store import BACKOFF_MAX, FAIL, OK, T0, add, claim, state, table_snapshot


def ahead(
    store: Store,
    now: float = T0,
    queues: tuple[str, ...] = ("default",),
    limit: int = 100,
    busy=(),
    horizon: float | None = None,
):
    return store.lookahead(
        now=now,
        horizon=now if horizon is None else horizon,
        queues=list(queues),
        busy=list(busy),
        limit=limit,
    )


def test_lookahead_reads_in_claim_order_and_takes_nothing(store: Store) -> None:
    low = add(store, priority=5)
    first = add(store, priority=-1)
    later = add(store, delay=10)
    plain = add(store)
    before = table_snapshot(store)
    read = ahead(store)
    assert [j.id for j in read.jobs] == [first, plain, low]
    assert read.complete and read.upcoming == [] and read.until == T0 + 10
    assert table_snapshot(store) == before
    assert [c.id for c in claim(store)] == [first, plain, low]  # the same order a claim takes
    assert state(store, later) == "pending"


def test_lookahead_limit_busy_and_queues(store: Store) -> None:
    store.add_queue("other", None, T0)
    ids = [add(store) for _ in range(4)]
    elsewhere = add(store, queue="other")
    read = ahead(store, limit=2, busy=[ids[0]])
    assert [j.id for j in read.jobs] == ids[1:3] and not read.complete
    assert [j.id for j in ahead(store, queues=("other",)).jobs] == [elsewhere]
    assert ahead(store, queues=()).jobs == []


def test_lookahead_reads_the_jobs_due_by_the_horizon_in_time_order(store: Store) -> None:
    soon_low = add(store, delay=2, priority=5)
    sooner = add(store, delay=1)
    beyond = add(store, delay=30)
    add(store, delay=3, after=[beyond])  # waits for a dependency: never upcoming
    read = ahead(store, horizon=T0 + 10)
    assert read.jobs == [] and read.complete
    assert [(j.id, j.run_at, j.priority) for j in read.upcoming] == [
        (sooner, T0 + 1, 0),
        (soon_low, T0 + 2, 5),
    ]
    assert read.until == T0 + 30
    assert ahead(store, horizon=T0 + 60).until is None


def test_lookahead_cuts_the_upcoming_at_the_first_job_left_out(store: Store) -> None:
    first = add(store, delay=1)
    add(store, delay=2)
    add(store, delay=2)  # the limit falls between these two: both wait for the next read
    read = ahead(store, horizon=T0 + 10, limit=2)
    assert [j.id for j in read.upcoming] == [first] and read.until == T0 + 2


def test_start_records_the_attempt_the_read_promised(store: Store) -> None:
    job_id = add(store, "echo $X", env={"X": "1"})
    [job] = ahead(store).jobs
    assert (job.run, job.attempts, job.env["X"]) == (1, 1, "1")
    store.start(job, T0 + 1)
    assert state(store, job_id) == "running"
    assert store.conn.execute(
        "SELECT attempt, started_at FROM attempts WHERE job_id = ?", (job_id,)
    ).fetchall() == [(1, T0 + 1)]
    assert store.finish(job, OK, BACKOFF_MAX, T0 + 2) == "completed"


def test_a_retry_is_read_with_its_next_run_number(store: Store) -> None:
    job_id = add(store, max_retries=1, backoff_base=1)
    [first] = claim(store)
    assert store.finish(first, FAIL, BACKOFF_MAX, T0) == "failed"
    [again] = ahead(store, now=T0 + 100).jobs
    assert (again.id, again.run, again.attempts) == (job_id, 2, 2)
    store.start(again, T0 + 100)
    assert state(store, job_id) == "running"


@pytest.mark.parametrize("change", ["cancel", "claimed", "remove"])
def test_start_refuses_a_job_that_changed_since_the_read(store: Store, change: str) -> None:
    job_id = add(store)
    [job] = ahead(store).jobs
    if change == "cancel":
        store.cancel([job_id], T0)
    elif change == "claimed":
        claim(store)
    else:
        store.cancel([job_id], T0)
        store.remove([job_id])
    before = table_snapshot(store)
    with pytest.raises(Refused, match=f"job {job_id} changed"):
        store.start(job, T0)
    assert table_snapshot(store) == before


def test_finishes_that_make_jobs_claimable_say_so(store: Store) -> None:
    dep = add(store)
    dependent = add(store, after=[dep])
    [job] = claim(store)
    store.reordered = False
    assert store.finish(job, OK, BACKOFF_MAX, T0) == "completed"
    assert store.reordered and state(store, dependent) == "pending"
    retried = add(store, max_retries=1)
    [job] = [c for c in claim(store) if c.id == retried]
    store.reordered = False
    assert store.finish(job, FAIL, BACKOFF_MAX, T0) == "failed"
    assert store.reordered


def test_unclaim_undoes_a_claim_whose_attempt_could_not_start(store: Store) -> None:
    """No descriptor was free for the spawn: the job waits again as it was,
    counts and all, and the next claim takes the same attempt."""
    job_id = add(store)
    before = table_snapshot(store)
    [job] = claim(store)
    store.unclaim(job, T0 + 1)
    after = table_snapshot(store)
    assert after["attempts"] == before["attempts"] == []
    assert [row for row in after["counts"] if row[2]] == before["counts"]
    assert state(store, job_id) == "pending"
    [again] = claim(store)
    assert (again.id, again.run, again.attempts) == (job.id, job.run, job.attempts)


def test_unclaim_of_a_retry_keeps_its_earlier_attempts(store: Store) -> None:
    job_id = add(store, max_retries=2, backoff_base=1)
    [first] = claim(store)
    store.finish(first, FAIL, BACKOFF_MAX, T0)
    [second] = claim(store, now=T0 + 100)
    store.unclaim(second, T0 + 100)
    assert [row[0] for row in store.conn.execute("SELECT attempt FROM attempts")] == [1]
    [again] = claim(store, now=T0 + 100)
    assert (again.id, again.run, again.attempts) == (job_id, 2, 2)


def test_unclaim_of_a_job_canceled_meanwhile_leaves_it_canceled(store: Store) -> None:
    job_id = add(store)
    [job] = claim(store)
    store.cancel([job_id], T0)
    store.unclaim(job, T0 + 1)
    assert state(store, job_id) == "canceled"
    assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
