"""The SQLite store, driven directly (autocommit) on a temporary database."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from queued import lifecycle, validation
from queued.lifecycle import STATES, classify_exit
from queued.protocol import JobSpec
from queued.settings import Settings
from queued.store import Claimed, Recovered, Refused, Store
from queued.store.sqlite import SqliteStore, schema
from tests.store_harness import Direct

from .conftest import T0

ROOM = {"default": 1000}
OK = classify_exit(0)
FAIL = classify_exit(1)
BACKOFF_MAX = 3600.0


def new(command: str = "true", *, now: float = T0, **spec: object) -> validation.NewJob:
    return validation.new_job(
        JobSpec(command=command, **spec),  # type: ignore[arg-type]
        cwd="/tmp",
        env={"HOME": "/root"},
        settings=Settings(),
        now=now,
    )


def add(store: Store, command: str = "true", *, now: float = T0, **spec: object) -> int:
    [job_id] = store.add_jobs([new(command, now=now, **spec)], now)
    return job_id


def state(store: Store, job_id: int) -> str:
    return store.states([job_id])[job_id]


def job(store: Store, job_id: int):
    return store.get_job(job_id)[0]


def claim(
    store: Store, now: float = T0, slots: int = 1000, room: dict[str, int] | None = None
) -> list[Claimed]:
    return store.claim(now=now, slots=slots, queue_room=ROOM if room is None else room)


def claim_one(store: Store, job_id: int, now: float = T0) -> Claimed:
    claimed = claim(store, now)
    assert [c.id for c in claimed] == [job_id]
    return claimed[0]


def run_to(store: Store, job_id: int, exit: lifecycle.Exit, now: float = T0) -> str:
    """Claim `job_id` (it must be the only due job) and finish it with `exit`."""
    return store.finish(claim_one(store, job_id, now), exit, BACKOFF_MAX, now)


def table_snapshot(store: Store) -> dict[str, list[tuple]]:
    return {
        name: store.conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
        for name in ("jobs", "attempts", "dependencies", "counts", "queues")
    }


# ----------------------------------------------------------------------------
# Adding


def test_add_jobs_returns_increasing_ids(store: Store) -> None:
    first = store.add_jobs([new("a"), new("b"), new("c")], T0)
    second = store.add_jobs([new("d")], T0)
    assert first == sorted(first) and len(set(first)) == 3
    assert second[0] > first[-1]
    assert [job(store, i).command for i in first + second] == ["a", "b", "c", "d"]


def test_ids_keep_growing_after_the_newest_is_removed(store: Store) -> None:
    job_id = add(store)
    store.cancel([job_id], T0)
    store.remove([job_id])
    assert add(store) > job_id


def test_added_job_fields(store: Store) -> None:
    job_id = add(store, "echo hi", priority=4, label="l", max_retries=1, timeout=9.0, delay=30.0)
    stored, runs, env = store.get_job(job_id)
    assert stored.state == "pending"
    assert (stored.command, stored.priority, stored.label) == ("echo hi", 4, "l")
    assert (stored.max_retries, stored.timeout, stored.attempts) == (1, 9.0, 0)
    assert stored.run_at == T0 + 30
    assert stored.created_at == stored.updated_at == T0
    assert stored.cwd == "/tmp"
    assert runs == []
    assert env == {"HOME": "/root"}


def test_unknown_queue_refused(store: Store) -> None:
    with pytest.raises(Refused) as info:
        store.add_jobs([new(queue="nope")], T0)
    assert info.value.code == "not_found"
    assert "nope" in info.value.message
    assert store.list_jobs() == []


def test_after_unknown_id_refused(store: Store) -> None:
    existing = add(store)
    with pytest.raises(Refused) as info:
        store.add_jobs([new(after=[existing, 99])], T0)
    assert info.value.code == "not_found"
    assert "99" in info.value.message
    assert [j.id for j in store.list_jobs()] == [existing]


def test_a_refused_call_keeps_nothing_inside_its_batch(store: Store) -> None:
    # As the writer runs each change: a refusal rolls the whole call back, and
    # the batch's other calls are kept.
    before = table_snapshot(store)
    with store.transaction(), pytest.raises(Refused):
        store.add_jobs([new("ok"), new(queue="missing")], T0)
    assert table_snapshot(store) == before
    with store.transaction():
        [kept] = store.add_jobs([new("kept")], T0)
        with pytest.raises(Refused):
            store.add_jobs([new("ok"), new(queue="missing")], T0)
    assert [job.id for job in store.list_jobs()] == [kept]


@pytest.mark.parametrize("dead_state", ["dead", "canceled"])
def test_after_a_dead_or_canceled_job_is_refused(store: Store, dead_state: str) -> None:
    """Issue #11: such a job could never run; it was made and canceled at once."""
    dep = add(store, max_retries=0)
    if dead_state == "dead":
        assert run_to(store, dep, FAIL) == "dead"
    else:
        store.cancel([dep], T0)
    before = table_snapshot(store)
    with pytest.raises(Refused) as refused:
        add(store, after=[dep])
    assert refused.value.code == "invalid"
    assert refused.value.message.startswith(
        f"--after {dep}: job {dep} is {dead_state}, so this job could never run"
    )
    assert table_snapshot(store) == before


def test_after_completed_dependency_is_ready(store: Store) -> None:
    dep = add(store)
    run_to(store, dep, OK)
    dependent = add(store, after=[dep])
    assert claim_one(store, dependent).id == dependent


# ----------------------------------------------------------------------------
# Claiming


def test_claim_order_priority_then_run_at_then_id(store: Store) -> None:
    j1 = add(store, "j1", delay=10.0)
    j2 = add(store, "j2", delay=5.0)
    j3 = add(store, "j3", priority=-1, delay=20.0)
    j4 = add(store, "j4", delay=5.0)
    j5 = add(store, "j5", priority=1)
    j6 = add(store, "j6", priority=-1, delay=20.0)
    order = [c.id for c in claim(store, T0 + 100)]
    assert order == [j3, j6, j2, j4, j1, j5]


def test_claim_one_at_a_time_follows_the_same_order(store: Store) -> None:
    low = add(store, priority=5)
    high = add(store, priority=-5)
    mid = add(store)
    order = [c.id for _ in range(3) for c in claim(store, T0, slots=1)]
    assert order == [high, mid, low]
    assert claim(store, T0, slots=1) == []


def test_claim_respects_run_at(store: Store) -> None:
    job_id = add(store, delay=10.0)
    assert claim(store, T0 + 9.999) == []
    assert state(store, job_id) == "pending"
    claimed = claim_one(store, job_id, T0 + 10.0)  # run_at <= now
    assert (claimed.run, claimed.attempts) == (1, 1)
    stored, runs, _ = store.get_job(job_id)
    assert stored.state == "running" and stored.attempts == 1
    assert [(r.attempt, r.started_at, r.ended_at) for r in runs] == [(1, T0 + 10.0, None)]


def test_claimed_record(store: Store) -> None:
    job_id = add(store, "echo $X", env={"X": "1"}, timeout=5.0, max_retries=2, backoff_base=3.0)
    claimed = claim_one(store, job_id)
    assert claimed.command == "echo $X"
    assert claimed.queue == "default"
    assert claimed.cwd == "/tmp"
    assert claimed.env == {"HOME": "/root", "X": "1"}
    assert (claimed.timeout, claimed.max_retries, claimed.backoff_base) == (5.0, 2, 3.0)


def test_claim_respects_slots(store: Store) -> None:
    ids = [add(store) for _ in range(5)]
    assert [c.id for c in claim(store, slots=2)] == ids[:2]
    assert claim(store, slots=0) == []
    assert [c.id for c in claim(store, slots=10)] == ids[2:]


def test_claim_respects_queue_room_and_paused_queues(store: Store) -> None:
    for name in ("a", "b", "paused"):
        store.add_queue(name, None, T0)
    ids = {name: [add(store, queue=name) for _ in range(3)] for name in ("default", "a", "b", "paused")}
    # The supervisor leaves paused queues out of queue_room, and gives full ones 0.
    claimed = claim(store, slots=100, room={"default": 0, "a": 1, "b": 2})
    by_queue = Counter(c.queue for c in claimed)
    assert by_queue == {"a": 1, "b": 2}
    assert [c.id for c in claimed if c.queue == "a"] == ids["a"][:1]
    assert [c.id for c in claimed if c.queue == "b"] == ids["b"][:2]
    assert all(state(store, i) == "pending" for i in ids["paused"] + ids["default"])
    assert claim(store, slots=100, room={}) == []


def test_claim_fills_other_queues_when_the_best_jobs_are_in_a_full_one(store: Store) -> None:
    store.add_queue("a", None, T0)
    store.add_queue("b", None, T0)
    a_ids = [add(store, queue="a", priority=-10) for _ in range(3)]
    b_ids = [add(store, queue="b") for _ in range(3)]
    claimed = claim(store, slots=3, room={"a": 1, "b": 3})
    assert [c.id for c in claimed] == [a_ids[0], b_ids[0], b_ids[1]]


def test_claim_skips_jobs_with_unmet_dependencies(store: Store) -> None:
    dep = add(store, delay=100.0)
    dependent = add(store, after=[dep])
    assert claim(store, T0) == []
    assert state(store, dependent) == "pending"


# ----------------------------------------------------------------------------
# Finishing attempts


def test_finish_success_completes(store: Store) -> None:
    job_id = add(store)
    claimed = claim_one(store, job_id)
    assert store.finish(claimed, OK, BACKOFF_MAX, T0 + 3) == "completed"
    stored, runs, _ = store.get_job(job_id)
    assert stored.state == "completed"
    assert stored.exit_code == 0 and stored.error is None
    assert stored.updated_at == T0 + 3
    assert [(r.ended_at, r.exit_code, r.signal, r.error) for r in runs] == [(T0 + 3, 0, None, None)]
    assert store.finished == [job_id]


def test_finish_failure_waits_for_backoff(store: Store) -> None:
    job_id = add(store, max_retries=3)
    claimed = claim_one(store, job_id)
    assert store.finish(claimed, FAIL, BACKOFF_MAX, T0 + 1) == "failed"
    stored = job(store, job_id)
    assert stored.state == "failed"
    assert stored.run_at == T0 + 1 + 2  # backoff before retry 1: 2 ** 1
    assert stored.exit_code == 1 and stored.error == "exited with status 1"
    assert store.finished == []
    # Not due before its run_at, claimed directly from failed once it is.
    assert claim(store, T0 + 2.9) == []
    claimed = claim_one(store, job_id, T0 + 3)
    assert (claimed.run, claimed.attempts) == (2, 2)
    assert store.finish(claimed, FAIL, BACKOFF_MAX, T0 + 4) == "failed"
    assert job(store, job_id).run_at == T0 + 4 + 4  # 2 ** 2


def test_finish_backoff_is_capped(store: Store) -> None:
    job_id = add(store, max_retries=3, backoff_base=100.0)
    assert store.finish(claim_one(store, job_id), FAIL, 30.0, T0) == "failed"
    assert job(store, job_id).run_at == T0 + 30


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_finish_exhausted_goes_dead(store: Store, max_retries: int) -> None:
    job_id = add(store, max_retries=max_retries)
    now = T0
    states = []
    for _ in range(max_retries + 1):
        now = job(store, job_id).run_at
        states.append(run_to(store, job_id, FAIL, now))
    assert states == ["failed"] * max_retries + ["dead"]
    stored, runs, _ = store.get_job(job_id)
    assert stored.state == "dead" and stored.attempts == max_retries + 1
    assert [r.attempt for r in runs] == list(range(1, max_retries + 2))
    assert store.finished == [job_id]
    assert claim(store, now + 10**6) == []


def test_finish_signal_records_signal(store: Store) -> None:
    job_id = add(store, max_retries=0)
    assert run_to(store, job_id, classify_exit(-9)) == "dead"
    stored, [run], _ = store.get_job(job_id)
    assert (run.exit_code, run.signal) == (None, 9)
    assert stored.error is not None and "SIGKILL" in stored.error


def test_finish_records_pid_and_logs(store: Store) -> None:
    job_id = add(store)
    claimed = claim_one(store, job_id)
    store.finish(claimed, OK, BACKOFF_MAX, T0, pid=4242, stdout="/logs/1.out", stderr="/logs/1.err")
    [run] = store.get_job(job_id)[1]
    assert (run.pid, run.stdout_path, run.stderr_path) == (4242, "/logs/1.out", "/logs/1.err")


# ----------------------------------------------------------------------------
# Dependencies


def test_completion_of_dependency_makes_dependent_claimable(store: Store) -> None:
    a = add(store)
    b = add(store, after=[a])
    [running_a] = claim(store)
    assert running_a.id == a
    assert claim(store) == []
    assert store.finish(running_a, OK, BACKOFF_MAX, T0) == "completed"
    assert claim_one(store, b).id == b


def test_dependent_waits_for_every_dependency(store: Store) -> None:
    a = add(store)
    b = add(store)
    c = add(store, after=[a, b])
    first, second = claim(store, slots=2)
    assert store.finish(first, OK, BACKOFF_MAX, T0) == "completed"
    assert claim(store) == []
    assert state(store, c) == "pending"
    assert store.finish(second, OK, BACKOFF_MAX, T0) == "completed"
    assert claim_one(store, c).id == c


def test_failed_attempt_of_dependency_keeps_dependent_waiting(store: Store) -> None:
    a = add(store, max_retries=1)
    b = add(store, after=[a])
    assert run_to(store, a, FAIL) == "failed"
    assert state(store, b) == "pending"
    assert run_to(store, a, OK, T0 + 2) == "completed"
    assert claim_one(store, b, T0 + 2).id == b


def test_dead_dependency_cancels_dependents_transitively(store: Store) -> None:
    a = add(store, max_retries=0)
    b = add(store, after=[a])
    c = add(store, after=[b])
    other = add(store, delay=1000.0)
    assert run_to(store, a, FAIL) == "dead"
    jb, jc = job(store, b), job(store, c)
    assert (jb.state, jc.state) == ("canceled", "canceled")
    assert jb.error == f"canceled: dependency {a} is dead"
    assert jc.error == f"canceled: dependency {b} is canceled"
    assert state(store, other) == "pending"
    assert sorted(store.finished) == sorted([a, b, c])


def test_cancel_cancels_dependents_transitively(store: Store) -> None:
    a = add(store, delay=100.0)
    b = add(store, after=[a])
    c = add(store, after=[b])
    store.cancel([a], T0)
    assert [state(store, i) for i in (a, b, c)] == ["canceled"] * 3
    assert job(store, b).error is not None and str(a) in (job(store, b).error or "")


def test_a_chain_of_100000_dependents_is_canceled_without_recursion(store: Store) -> None:
    """Issue #17 item 7: the cascade recursed once per link and hit Python's
    recursion limit at ~1,000. The chain is built with one bulk add."""
    a = add(store, max_retries=0)
    chain = [new(after=[a + n]) for n in range(100_000)]  # ids are consecutive within one add
    with store.transaction():  # as the daemon's writer does: one commit, not 100,000
        ids = store.add_jobs(chain, T0)
        assert ids == list(range(a + 1, a + 100_001))
        store.finished.clear()
        assert run_to(store, a, FAIL) == "dead"
    assert store.counts()["canceled"] == 100_000
    assert job(store, ids[-1]).error == f"canceled: dependency {ids[-2]} is canceled"
    assert len(store.finished) == 100_001


def test_cascade_through_a_diamond_names_the_lowest_blocker_once(store: Store) -> None:
    a = add(store, delay=100.0)
    b = add(store, after=[a])
    c = add(store, after=[a])
    d = add(store, after=[b, c])
    held = add(store, after=[d], hold=True)
    store.finished.clear()
    store.cancel([a], T0)
    assert [state(store, i) for i in (b, c, d, held)] == ["canceled"] * 4
    assert job(store, d).error == f"canceled: dependency {b} is canceled"
    assert sorted(store.finished) == [a, b, c, d, held]
    assert store.counts() == manual_counts(store) and store.counts()["canceled"] == 5


# ----------------------------------------------------------------------------
# Cancel, retry, remove, clean


def test_cancel_pending_running_and_failed(store: Store) -> None:
    failed = add(store, max_retries=5)
    assert run_to(store, failed, FAIL) == "failed"
    pending = add(store, delay=100.0)
    running = add(store)
    claimed = claim_one(store, running)
    stopped = store.cancel([pending, running, failed], T0 + 1)
    assert stopped == [running]
    for job_id in (pending, running, failed):
        stored = job(store, job_id)
        assert stored.state == "canceled"
        assert stored.error == "canceled by user"
        assert stored.updated_at == T0 + 1
    # The process ends after the cancel: the job stays canceled.
    assert store.finish(claimed, OK, BACKOFF_MAX, T0 + 2) == "canceled"
    assert state(store, running) == "canceled"
    assert store.get_job(running)[1][-1].ended_at == T0 + 2


@pytest.mark.parametrize("finished_state", ["completed", "dead", "canceled"])
def test_cancel_of_finished_job_refused_and_nothing_changes(store: Store, finished_state: str) -> None:
    target = add(store, max_retries=0)
    if finished_state == "canceled":
        store.cancel([target], T0)
    else:
        run_to(store, target, OK if finished_state == "completed" else FAIL)
    pending = add(store, delay=100.0)
    before = table_snapshot(store)
    with pytest.raises(Refused) as info:
        store.cancel([pending, target], T0 + 5)
    assert info.value.code == "invalid"
    assert str(target) in info.value.message and finished_state in info.value.message
    assert table_snapshot(store) == before


def test_cancel_unknown_id(store: Store) -> None:
    job_id = add(store)
    with pytest.raises(Refused) as info:
        store.cancel([job_id, 404], T0)
    assert info.value.code == "not_found"
    assert state(store, job_id) == "pending"


def test_retry_dead_resets_and_runs_again(store: Store) -> None:
    job_id = add(store, max_retries=1)
    run_to(store, job_id, FAIL)
    assert run_to(store, job_id, FAIL, T0 + 2) == "dead"
    assert store.retry([job_id], False, T0 + 50) == [job_id]
    stored = job(store, job_id)
    assert stored.state == "pending"
    assert stored.attempts == 0
    assert stored.exit_code is None and stored.error is None
    assert stored.run_at == T0 + 50
    claimed = claim_one(store, job_id, T0 + 50)
    assert claimed.attempts == 1  # the retry policy starts over
    assert claimed.run == 3  # but log names keep counting
    assert store.finish(claimed, FAIL, BACKOFF_MAX, T0 + 51) == "failed"


def test_retry_all_dead(store: Store) -> None:
    dead = []
    for _ in range(2):
        dead.append(add(store, max_retries=0))
        run_to(store, dead[-1], FAIL)
    done = add(store)
    run_to(store, done, OK)
    assert store.retry([], True, T0) == dead
    assert [state(store, i) for i in dead] == ["pending", "pending"]
    assert state(store, done) == "completed"


def test_retry_of_unfinished_job_refused(store: Store) -> None:
    job_id = add(store)
    with pytest.raises(Refused) as info:
        store.retry([job_id], False, T0)
    assert info.value.code == "invalid"
    assert state(store, job_id) == "pending"


def test_retry_dependency_and_dependent_together(store: Store) -> None:
    a = add(store, max_retries=0)
    b = add(store, after=[a])
    run_to(store, a, FAIL)
    assert state(store, b) == "canceled"
    with pytest.raises(Refused) as info:
        store.retry([b], False, T0)
    assert info.value.code == "invalid" and str(a) in info.value.message
    assert store.retry([b, a], False, T0 + 1) == [a, b]
    [running_a] = claim(store, T0 + 1)
    assert running_a.id == a  # b waits for a again
    assert store.finish(running_a, OK, BACKOFF_MAX, T0 + 2) == "completed"
    assert claim_one(store, b, T0 + 2).id == b


def test_remove_running_refused(store: Store) -> None:
    job_id = add(store)
    claim_one(store, job_id)
    with pytest.raises(Refused) as info:
        store.remove([job_id])
    assert info.value.code == "invalid"
    assert state(store, job_id) == "running"


def test_remove_pending_refused_and_unknown_not_found(store: Store) -> None:
    job_id = add(store)
    with pytest.raises(Refused) as info:
        store.remove([job_id])
    assert info.value.code == "invalid"
    with pytest.raises(Refused) as info:
        store.remove([12345])
    assert info.value.code == "not_found"


def test_an_attempt_ending_after_its_job_was_removed_says_so(store: Store) -> None:
    """`rm` in a canceled job's kill grace: the end finds no job, and says so
    (None) for the supervisor to delete the attempt's logs, which no row names."""
    job_id = add(store)
    claimed = claim_one(store, job_id)
    store.cancel([job_id], T0)
    assert store.remove([job_id]) == []
    assert store.finish(claimed, OK, BACKOFF_MAX, T0 + 1, stdout="/logs/1.out", stderr="/logs/1.err") is None


def test_remove_finished_returns_log_paths(store: Store) -> None:
    job_id = add(store)
    claimed = claim_one(store, job_id)
    store.finish(claimed, OK, BACKOFF_MAX, T0, pid=1, stdout="/l/out", stderr="/l/err")
    assert sorted(store.remove([job_id])) == ["/l/err", "/l/out"]
    assert store.states([job_id]) == {}
    assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0


def test_clean_by_state_and_age(store: Store) -> None:
    old_done = add(store)
    run_to(store, old_done, OK, T0)
    old_dead = add(store, max_retries=0, now=T0)
    run_to(store, old_dead, FAIL, T0)
    new_done = add(store, now=T0 + 100)
    run_to(store, new_done, OK, T0 + 100)
    pending = add(store, now=T0 + 100)

    count, _ = store.clean(["completed"], older_than=T0 + 50)
    assert count == 1
    assert set(store.states([old_done, old_dead, new_done, pending])) == {old_dead, new_done, pending}

    count, _ = store.clean(["completed", "dead", "canceled"], older_than=None)
    assert count == 2
    assert set(store.states([old_dead, new_done, pending])) == {pending}


def test_clean_returns_log_paths(store: Store) -> None:
    job_id = add(store)
    claimed = claim_one(store, job_id)
    store.finish(claimed, OK, BACKOFF_MAX, T0, pid=1, stdout="/l/out", stderr="/l/err")
    count, paths = store.clean(["completed"], None)
    assert count == 1 and sorted(paths) == ["/l/err", "/l/out"]


# ----------------------------------------------------------------------------
# Counts, timers, interrupted jobs


def manual_counts(store: Store) -> dict[str, int]:
    totals = dict.fromkeys(STATES, 0)
    for (job_state,) in store.conn.execute("SELECT state FROM jobs"):
        totals[job_state] += 1
    return totals


def test_counts_match_a_manual_count(store: Store) -> None:
    store.add_queue("other", 2, T0)
    assert store.counts() == manual_counts(store) == dict.fromkeys(manual_counts(store), 0)
    ids = store.add_jobs([new(max_retries=1) for _ in range(8)] + [new(queue="other") for _ in range(3)], T0)
    assert store.counts() == manual_counts(store)
    claimed = claim(store, slots=6)
    store.finish(claimed[0], OK, BACKOFF_MAX, T0)
    store.finish(claimed[1], FAIL, BACKOFF_MAX, T0)
    store.finish(claimed[2], classify_exit(-9), BACKOFF_MAX, T0)
    assert store.counts() == manual_counts(store)
    canceled_dependent = add(store, after=[ids[-1]])
    store.cancel([claimed[3].id, ids[-1]], T0)
    dependent = add(store, after=[claimed[0].id])
    assert store.counts() == manual_counts(store)
    now = T0 + 10
    for again in claim(store, now, slots=100):
        store.finish(again, FAIL, BACKOFF_MAX, now)
    assert store.counts() == manual_counts(store)
    store.retry([claimed[3].id], False, now)
    store.remove([claimed[0].id])
    store.clean(["canceled", "dead"], None)
    assert store.counts() == manual_counts(store)
    held = store.add_jobs([new(hold=True), new(queue="other", hold=True)], now)
    store.hold([claimed[3].id], now)
    store.edit(held[0], {"queue": "other"}, now)
    store.edit(claimed[3].id, {"queue": "other", "priority": 4}, now)
    assert store.counts() == manual_counts(store)
    per_queue = dict(((q, s), n) for q, s, n in store.conn.execute("SELECT queue, state, n FROM counts"))
    manual = store.conn.execute("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state").fetchall()
    assert {key: n for key, n in per_queue.items() if n} == {(q, s_): n for q, s_, n in manual}
    store.release([held[1]], now)
    store.restart(held[0], {}, False, now)
    assert store.counts() == manual_counts(store)
    counts = store.counts()
    assert sum(counts.values()) == store.conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    assert state(store, dependent) in ("failed", "dead")
    assert store.states([canceled_dependent]) == {}
    # Per-queue numbers in queues() come from the same table.
    per_queue = {q.name: (q.running, q.pending, q.failed) for q in store.queues()}
    for name, (running, pending, failed) in per_queue.items():
        rows = Counter(s for (s,) in store.conn.execute("SELECT state FROM jobs WHERE queue = ?", (name,)))
        assert (running, pending, failed) == (rows["running"], rows["pending"], rows["failed"])


def test_next_due_returns_earliest_future_run_at(store: Store) -> None:
    store.add_queue("other", None, T0)
    assert store.next_due(T0, ["default"]) is None
    add(store)  # due now: not in the future
    add(store, delay=50.0)
    add(store, delay=20.0)
    add(store, delay=5.0, queue="other")
    blocker = add(store, delay=100.0)
    add(store, after=[blocker], delay=1.0)  # waits for a dependency, not a timer
    assert store.next_due(T0, ["default"]) == T0 + 20
    assert store.next_due(T0, ["default", "other"]) == T0 + 5
    assert store.next_due(T0 + 20, ["default"]) == T0 + 50
    assert store.next_due(T0 + 100, ["default"]) is None
    assert store.next_due(T0, []) is None


def test_next_due_sees_failed_jobs(store: Store) -> None:
    job_id = add(store, max_retries=2)
    run_to(store, job_id, FAIL, T0)
    assert store.next_due(T0, ["default"]) == T0 + 2


def test_recover_records_what_a_dead_daemon_left_running_as_interrupted(store: Store) -> None:
    a = add(store, max_retries=1)
    run_to(store, a, FAIL)
    b = add(store)
    add(store, delay=100.0)
    claimed = {c.id: c for c in claim(store, T0 + 2)}
    assert set(claimed) == {a, b}
    # Each attempt is finished as interrupted, under the job's retry policy.
    assert store.recover(BACKOFF_MAX, T0 + 3) == [Recovered(a, 2, "dead"), Recovered(b, 1, "failed")]
    assert store.finished == [a]
    _, runs, _ = store.get_job(a)
    assert runs[-1].error == lifecycle.INTERRUPTED.error
    assert store.recover(BACKOFF_MAX, T0 + 4) == []


# ----------------------------------------------------------------------------
# Queues and config


def test_queue_management(store: Store) -> None:
    store.add_queue("gpu", 1, T0)
    with pytest.raises(Refused) as info:
        store.add_queue("gpu", 2, T0)
    assert info.value.code == "invalid"
    store.set_paused("gpu", True)
    assert [(q.name, q.concurrency, q.paused) for q in store.queues()] == [
        ("default", None, False),
        ("gpu", 1, True),
    ]
    with pytest.raises(Refused) as info:
        store.set_paused("nope", True)
    assert info.value.code == "not_found"
    with pytest.raises(Refused):
        store.remove_queue("default")
    job_id = add(store, queue="gpu")
    with pytest.raises(Refused):
        store.remove_queue("gpu")
    store.cancel([job_id], T0)
    with pytest.raises(Refused):
        store.remove_queue("gpu")  # still holds a finished job
    store.remove([job_id])
    store.remove_queue("gpu")
    assert [q.name for q in store.queues()] == ["default"]


def test_config_persists(store: Store) -> None:
    assert store.config() == {}
    store.set_config("timeout", "5m")
    store.set_config("timeout", "10m")
    store.set_config("max-retries", "1")
    assert store.config() == {"timeout": "10m", "max-retries": "1"}


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


# ----------------------------------------------------------------------------
# Bugs found once, fixed since: kept as regression tests


def test_dependency_completing_twice_does_not_release_dependent_early(store: Store) -> None:
    a = add(store)
    c = add(store, delay=1000.0)
    b = add(store, after=[a, c])
    assert run_to(store, a, OK) == "completed"
    store.retry([a], False, T0 + 1)
    assert run_to(store, a, OK, T0 + 1) == "completed"
    assert state(store, c) == "pending"
    # b must wait for c (the bug: it is claimed here, with c still pending).
    assert b not in [cl.id for cl in claim(store, T0 + 2)]


def test_finish_of_a_stale_attempt_does_not_move_the_job(store: Store) -> None:
    job_id = add(store)
    old = claim_one(store, job_id)
    store.cancel([job_id], T0 + 1)  # its process takes a while to die
    store.retry([job_id], False, T0 + 2)
    new = claim_one(store, job_id, T0 + 2)
    assert new.run == old.run + 1
    store.finish(old, classify_exit(-15), BACKOFF_MAX, T0 + 3)  # the old process finally exits
    assert state(store, job_id) == "running"  # the new attempt is still running


def test_a_cwd_and_environment_that_are_not_utf8_come_back_exactly(store: Store) -> None:
    """Issue #17 item 9: stored as the bytes they are, restored into the same str
    (os.fsdecode's surrogates), which posix_spawn turns back into those bytes."""
    cwd, value = os.fsdecode(b"/tmp/d\xe9"), os.fsdecode(b"caf\xe9")
    job_new = validation.new_job(
        JobSpec(command="true"), cwd=cwd, env={"X": value, "PLAIN": "1"}, settings=Settings(), now=T0
    )
    [job_id] = store.add_jobs([job_new], T0)
    store.forget_caches()
    [claimed] = claim(store)
    assert claimed.cwd == b"/tmp/d\xe9"  # os.chdir takes it as it is
    assert claimed.env == {"X": value, "PLAIN": "1"}
    stored, _, env = store.get_job(job_id)
    assert (stored.cwd, env["X"]) == ("/tmp/d\\xe9", "caf\\xe9")  # readable, for show


def test_a_version_1_database_gains_the_attempts_log_incomplete_column(tmp_path: Path) -> None:
    """A database written by the previous queued is migrated in place, its rows kept."""
    path = tmp_path / "q.db"
    _make_database(path, jobs=2)
    conn = sqlite3.connect(path)
    conn.executescript("ALTER TABLE attempts DROP COLUMN log_incomplete; PRAGMA user_version = 1;")
    conn.close()
    conn = schema.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 2
    columns = [row[1] for row in conn.execute("PRAGMA table_info(attempts)")]
    assert columns[-1] == "log_incomplete"
    assert SqliteStore(conn).counts()["pending"] == 2
    conn.close()
