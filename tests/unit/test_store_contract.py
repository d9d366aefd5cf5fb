"""The store contract (`queued.store.contract.Store`), driven directly through
`tests/store_harness.Direct` on every engine of tests/engines.py: what any
engine must do, seen only through the contract. What one engine does inside
(SQLite's tables, files, savepoints) is tested beside it, in
test_sqlite_engine.py."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from queued import lifecycle, validation
from queued.lifecycle import STATES, classify_exit
from queued.protocol import JobSpec
from queued.resources import Capacity, Fit, Pool
from queued.settings import Settings
from queued.store import Changes, Claimed, Recovered, Refused
from queued.store.contract import AttemptEnd, Engine, Fired, OutputChunk
from tests.engines import join_node
from tests.store_harness import (
    BACKOFF_MAX,
    FAIL,
    OK,
    ROOM,
    T0,
    Direct,
    add,
    claim,
    claim_one,
    job,
    new,
    observable,
    run_to,
    state,
)

Store = Direct  # what the tests are given: the contract, answering plainly


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


def told(changes: Changes) -> tuple[list[int], list[int], bool]:
    """What a mutation told, finished and released in id order."""
    return sorted(changes.finished), sorted(changes.released), changes.reordered


NOTHING_TOLD: tuple[list[int], list[int], bool] = ([], [], False)


# ----------------------------------------------------------------------------
# Adding


def test_add_jobs_returns_increasing_ids(store: Store) -> None:
    first = store.add_jobs([new("a"), new("b"), new("c")], T0)
    second = store.add_jobs([new("d")], T0)
    assert first == sorted(first) and len(set(first)) == 3
    assert second[0] > first[-1]
    assert [job(store, i).command for i in first + second] == ["a", "b", "c", "d"]


def test_the_ids_of_one_add_are_consecutive(store: Store) -> None:
    """Jobs with and without dependencies, in one add: their ids follow each
    other in the order given, so that a job may name one added before it in
    the same add (as the 100,000-job chain below does)."""
    dep = add(store)
    mixed = [new("p1"), new("d1", after=[dep]), new("p2"), new("p3"), new("d2", after=[dep]), new("p4")]
    ids = store.add_jobs(mixed, T0)
    assert ids == list(range(ids[0], ids[0] + len(mixed)))
    assert [job(store, i).command for i in ids] == ["p1", "d1", "p2", "p3", "d2", "p4"]
    assert store.add_jobs([new() for _ in range(300)], T0) == list(range(ids[-1] + 1, ids[-1] + 301))


def test_a_dependency_may_be_a_job_of_the_same_add(store: Store) -> None:
    a = add(store, delay=100.0)
    first, second, third, plain = store.add_jobs(
        [new("first"), new("second", after=[a + 1]), new("third", after=[a + 1, a + 2]), new("plain")], T0
    )
    assert (first, second, third, plain) == (a + 1, a + 2, a + 3, a + 4)
    assert (job(store, second).depends_on, job(store, second).waiting_on) == ([first], [first])
    assert job(store, third).depends_on == [first, second]
    claimed = claim(store)
    assert [c.id for c in claimed] == [first, plain]
    running_first = claimed[0]
    _, changes = store.changes_of("finish", running_first, OK, BACKOFF_MAX, T0)
    assert changes.released == [second]
    running_second = claim_one(store, second)
    _, changes = store.changes_of("finish", running_second, OK, BACKOFF_MAX, T0)
    assert changes.released == [third]
    assert claim_one(store, third).id == third


def test_a_dependency_on_a_later_job_of_the_same_add_is_refused(store: Store) -> None:
    a = add(store)
    before = observable(store)
    with pytest.raises(Refused) as info:
        store.add_jobs([new("early", after=[a + 2]), new("late")], T0)
    assert info.value.code == "not_found" and str(a + 2) in info.value.message
    assert observable(store) == before


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


def test_list_jobs_pages_back_and_filters_by_command_and_creation_time(store: Store) -> None:
    first = add(store, "make all", now=T0)
    second = add(store, "echo 50%_done", now=T0 + 10)
    third = add(store, "make test", now=T0 + 20)
    assert [j.id for j in store.list_jobs(before=third)] == [first, second]
    assert [j.id for j in store.list_jobs(before=third, limit=1)] == [second]
    assert [j.id for j in store.list_jobs(command="make")] == [first, third]
    assert [j.id for j in store.list_jobs(command="50%_")] == [second]  # no pattern: the text itself
    assert [j.id for j in store.list_jobs(command="50%x")] == []
    assert [j.id for j in store.list_jobs(created_after=T0 + 10)] == [second, third]
    assert [j.id for j in store.list_jobs(created_before=T0 + 10)] == [first]
    assert [j.id for j in store.list_jobs(created_after=T0, created_before=T0 + 20, command="e")] == [
        first,
        second,
    ]


def test_after_unknown_id_refused(store: Store) -> None:
    existing = add(store)
    with pytest.raises(Refused) as info:
        store.add_jobs([new(after=[existing, 99])], T0)
    assert info.value.code == "not_found"
    assert "99" in info.value.message
    assert [j.id for j in store.list_jobs()] == [existing]


def test_a_refused_call_keeps_nothing_inside_its_batch(store: Store) -> None:
    # As the writer runs each change: a refusal rolls the whole call back, and
    # the batch's other calls are kept. (Was: a snapshot of SQLite's tables;
    # now what the contract shows. The tables: test_sqlite_engine.py.)
    before = observable(store)
    with store.transaction(), pytest.raises(Refused):
        store.add_jobs([new("ok"), new(queue="missing")], T0)
    assert observable(store) == before
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
    before = observable(store)
    with pytest.raises(Refused) as refused:
        add(store, after=[dep])
    assert refused.value.code == "invalid"
    assert refused.value.message.startswith(
        f"--after {dep}: job {dep} is {dead_state}, so this job could never run"
    )
    assert observable(store) == before


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


def test_claim_leaves_busy_jobs_waiting(store: Store) -> None:
    """`busy`: jobs that still have a process from an earlier attempt (a cancel
    in its kill grace, then a retry) wait for it to be gone."""
    first, second, third = (add(store, priority=p) for p in (-1, 0, 1))
    claimed = store.claim(now=T0, slots=2, queue_room={"default": 5}, busy=[first])
    assert [c.id for c in claimed] == [second, third]
    assert state(store, first) == "pending"
    assert store.claim(now=T0, slots=5, queue_room={"default": 5}, busy=[first]) == []
    assert [c.id for c in store.claim(now=T0, slots=5, queue_room={"default": 5})] == [first]


def test_claim_counts_what_it_takes_against_each_queues_room(store: Store) -> None:
    store.add_queue("a", None, T0)
    a_ids = [add(store, queue="a", priority=-1) for _ in range(4)]
    plain = [add(store) for _ in range(4)]
    claimed = store.claim(now=T0, slots=5, queue_room={"a": 2, "default": 2})
    assert [c.id for c in claimed] == [*a_ids[:2], *plain[:2]]
    claimed = store.claim(now=T0, slots=5, queue_room={"a": 0, "default": 1})
    assert [c.id for c in claimed] == [plain[2]]


def test_claim_keeps_a_limited_queue_within_its_concurrency_counting_every_running_job(
    store: Store,
) -> None:
    """Running jobs the caller does not count (another node's) count too: a
    claim never takes a limited queue past its concurrency."""
    store.add_queue("gpu", 2, T0)
    gpu = [add(store, queue="gpu") for _ in range(4)]
    plain = add(store)
    elsewhere = store.claim(now=T0, slots=1, queue_room={"gpu": 2})
    assert [c.id for c in elsewhere] == gpu[:1]
    # This caller has room 2 for gpu by its own count; the store leaves 1.
    claimed = store.claim(now=T0, slots=5, queue_room={"gpu": 2, "default": 5})
    assert [c.id for c in claimed] == [gpu[1], plain]
    assert store.claim(now=T0, slots=5, queue_room={"gpu": 2}) == []
    store.finish(elsewhere[0], OK, BACKOFF_MAX, T0)
    assert [c.id for c in store.claim(now=T0, slots=5, queue_room={"gpu": 2})] == [gpu[2]]
    store.cancel([gpu[1]], T0)  # a canceled job runs no more, as far as the store says
    assert [c.id for c in store.claim(now=T0, slots=5, queue_room={"gpu": 2})] == [gpu[3]]


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


def test_finish_records_what_the_logs_miss(store: Store) -> None:
    job_id = add(store)
    missed = "stdout: 1,234 bytes lost: No space left on device"
    store.finish(claim_one(store, job_id), OK, BACKOFF_MAX, T0, log_incomplete=missed)
    [run] = store.get_job(job_id)[1]
    assert run.log_incomplete == missed


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


def counted(store: Store) -> dict[str, int]:
    """Jobs per state, counted one by one from the jobs the store lists."""
    totals = dict.fromkeys(STATES, 0)
    for listed in store.list_jobs():
        totals[listed.state] += 1
    return totals


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
    # Was: against a count of SQLite's jobs table; now the jobs the store lists.
    assert store.counts() == counted(store) and store.counts()["canceled"] == 5


def test_a_fan_out_of_10000_dependents_is_canceled_at_once(store: Store) -> None:
    """A root with 10,000 dependents (and one of theirs each for the first
    ten): every one canceled, naming the root, counted and told once."""
    root = add(store, delay=100.0)
    fan = [new(after=[root]) for _ in range(10_000)]
    with store.transaction():
        ids = store.add_jobs(fan, T0)
        grandchildren = store.add_jobs([new(after=[dependent]) for dependent in ids[:10]], T0)
    store.finished.clear()
    store.cancel([root], T0)
    assert sorted(store.finished) == [root, *ids, *grandchildren]
    assert {job(store, i).error for i in (ids[0], ids[-1])} == {f"canceled: dependency {root} is canceled"}
    assert job(store, grandchildren[-1]).error == f"canceled: dependency {ids[9]} is canceled"
    assert store.counts() == counted(store) and store.counts()["canceled"] == 10_011


def test_a_lattice_of_depth_40_is_canceled_by_its_links_not_its_paths(store: Store) -> None:
    """Two jobs per level, each after both of the level above: 2**40 paths
    from the root to the last level, 160 links. Each job names the lower of
    the two it waited for, once."""
    root = add(store, delay=100.0)
    levels = 40
    lattice = [new(after=[root])] * 2 + [
        new(after=[root + 2 * level - 1, root + 2 * level]) for level in range(1, levels) for _ in range(2)
    ]
    ids = store.add_jobs(lattice, T0)
    store.finished.clear()
    store.cancel([root], T0)
    assert sorted(store.finished) == [root, *ids]
    assert job(store, ids[1]).error == f"canceled: dependency {root} is canceled"
    assert [job(store, i).error for i in ids[-2:]] == [f"canceled: dependency {ids[-4]} is canceled"] * 2
    assert store.counts() == counted(store) and store.counts()["canceled"] == 2 * levels + 1


def test_a_diamond_at_depth_names_the_lowest_blocker_not_the_first_reached(store: Store) -> None:
    """Two chains from the root meet: a long one of lower ids, a short one of
    higher ids. The short reaches the meeting first; the lower id is named."""
    root = add(store, delay=100.0)
    long_chain = store.add_jobs([new(after=[root + n]) for n in range(50)], T0)
    short = add(store, after=[root])
    meeting = add(store, after=[short, long_chain[-1]])
    after_meeting = add(store, after=[meeting], hold=True)
    store.finished.clear()
    store.cancel([root], T0)
    assert job(store, meeting).error == f"canceled: dependency {long_chain[-1]} is canceled"
    assert job(store, after_meeting).error == f"canceled: dependency {meeting} is canceled"
    assert sorted(store.finished) == [root, *long_chain, short, meeting, after_meeting]
    assert store.counts() == counted(store)


def test_a_cascade_leaves_dependents_that_started_and_theirs(store: Store) -> None:
    """Only unstarted dependents (pending, held) are canceled: one running,
    one failed and waiting for its retry, one completed keep their state, and
    the job after the running one waits on (it may still complete). Counted
    right, and a change after the cascade in the same batch is counted too."""
    base = add(store)
    running, failed, done = (add(store, after=[base], max_retries=1) for _ in range(3))
    assert run_to(store, base, OK) == "completed"
    claimed = {c.id: c for c in claim(store)}
    assert sorted(claimed) == [running, failed, done]
    assert store.finish(claimed[done], OK, BACKOFF_MAX, T0) == "completed"
    assert store.finish(claimed[failed], FAIL, BACKOFF_MAX, T0) == "failed"
    after_running = add(store, after=[running])
    store.retry([base], False, T0 + 1)  # waits again; nothing claims it before the cancel
    pending, held = add(store, after=[base]), add(store, after=[base], hold=True)
    store.finished.clear()
    with store.transaction():  # as one writer batch
        store.cancel([base], T0 + 2)
        assert store.finish(claimed[running], OK, BACKOFF_MAX, T0 + 3) == "completed"
    assert sorted(store.finished) == sorted([base, pending, held, running])
    assert {i: state(store, i) for i in (running, failed, done, after_running, pending, held)} == {
        running: "completed",
        failed: "failed",
        done: "completed",
        after_running: "pending",
        pending: "canceled",
        held: "canceled",
    }
    assert job(store, held).error == f"canceled: dependency {base} is canceled"
    assert store.counts() == counted(store) and (store.counts()["canceled"], store.counts()["completed"]) == (
        3,
        2,
    )


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


def test_cancel_names_the_running_jobs_it_stops_in_id_order(store: Store) -> None:
    # Claimed last first: PostgreSQL's rows then lie in the table in the other order.
    ids = [add(store, delay=delay) for delay in (3.0, 2.0, 1.0)]
    for step in (1, 2, 3):
        claim(store, T0 + step)
    assert store.states(ids) == dict.fromkeys(ids, "running")
    assert store.cancel(list(reversed(ids)), T0 + 4) == ids


@pytest.mark.parametrize("finished_state", ["completed", "dead", "canceled"])
def test_cancel_of_finished_job_refused_and_nothing_changes(store: Store, finished_state: str) -> None:
    target = add(store, max_retries=0)
    if finished_state == "canceled":
        store.cancel([target], T0)
    else:
        run_to(store, target, OK if finished_state == "completed" else FAIL)
    pending = add(store, delay=100.0)
    before = observable(store)
    with pytest.raises(Refused) as info:
        store.cancel([pending, target], T0 + 5)
    assert info.value.code == "invalid"
    assert str(target) in info.value.message and finished_state in info.value.message
    assert observable(store) == before


def test_cancel_unknown_id(store: Store) -> None:
    job_id = add(store)
    with pytest.raises(Refused) as info:
        store.cancel([job_id, 404], T0)
    assert info.value.code == "not_found"
    assert state(store, job_id) == "pending"


def test_cancel_what_can_cancels_those_it_can_and_says_why_not_the_others(store: Store) -> None:
    done = add(store)
    run_to(store, done, OK)
    running = add(store)
    claim_one(store, running)
    pending = add(store, delay=100.0)
    stopped, canceled, refused = store.cancel_what_can([pending, running, done, 404], T0 + 1)
    assert (stopped, canceled) == ([running], sorted([pending, running]))
    assert sorted(refused) == [done, 404]
    assert refused[404] == "no job 404" and "completed" in refused[done]
    assert [state(store, i) for i in (pending, running, done)] == ["canceled", "canceled", "completed"]
    assert store.cancel_what_can([done], T0 + 2) == ([], [], {done: refused[done]})


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


def test_a_retried_dependency_makes_its_dependents_wait_again(store: Store) -> None:
    a = add(store)
    run_to(store, a, OK)
    b = add(store, after=[a], delay=10.0)
    assert job(store, b).waiting_on == []
    store.retry([a], False, T0 + 1)
    assert job(store, b).waiting_on == [a]
    [again] = claim(store, T0 + 20)
    assert again.id == a  # b waits for the new run of a
    store.finish(again, OK, BACKOFF_MAX, T0 + 21)
    assert claim_one(store, b, T0 + 21).id == b


def test_a_failed_job_whose_dependency_is_retried_does_not_say_it_waits(store: Store) -> None:
    """It ran once its dependency completed; a retry of that dependency since
    does not hold it back (only unstarted jobs are recounted), so it must not
    show the dependency as waited for."""
    a = add(store)
    run_to(store, a, OK)
    b = add(store, after=[a], max_retries=3)
    run_to(store, b, FAIL)
    assert state(store, b) == "failed"
    store.retry([a], False, T0 + 1)
    assert job(store, b).waiting_on == []
    assert b in [c.id for c in claim(store, T0 + 100)]


def test_a_completed_dependency_removed_since_is_waited_for_no_more(store: Store) -> None:
    """`rm` of a dependency that completed: its dependent runs (it waits for
    nothing), and says so; it once said "waiting for" the removed job."""
    a = add(store)
    run_to(store, a, OK)
    b = add(store, after=[a], delay=50.0)
    store.remove([a])
    assert (job(store, b).depends_on, job(store, b).waiting_on) == ([a], [])
    assert [j.waiting_on for j in store.list_jobs(ids=[b])] == [[]]
    assert claim_one(store, b, T0 + 50).id == b


def test_hold_and_release(store: Store) -> None:
    job_id = add(store, delay=5.0)
    assert store.hold([job_id], T0) == [job_id]
    assert state(store, job_id) == "held"
    assert claim(store, T0 + 10) == [] and ahead(store, now=T0 + 10).jobs == []
    assert store.release([job_id], T0 + 10) == [job_id]
    assert state(store, job_id) == "pending"
    assert claim_one(store, job_id, T0 + 10).run_at == T0 + 5  # its own run_at, passed


def test_edit_changes_a_job_that_has_not_started(store: Store) -> None:
    store.add_queue("other", None, T0)
    job_id = add(store, "old", delay=100.0)
    store.edit(job_id, {"command": "new", "priority": 3, "queue": "other"}, T0 + 1)
    edited = job(store, job_id)
    assert (edited.command, edited.priority, edited.queue, edited.updated_at) == ("new", 3, "other", T0 + 1)
    assert [(q.name, q.pending) for q in store.queues()] == [("default", 0), ("other", 1)]


def test_a_cwd_that_is_not_utf8_is_kept_by_every_read_and_by_a_restart(store: Store) -> None:
    odd = os.fsdecode(b"/tmp/caf\xe9")
    job_new = validation.new_job(JobSpec(command="pwd"), cwd=odd, env={}, settings=Settings(), now=T0)
    [job_id] = store.add_jobs([job_new], T0)
    copy = store.restart(job_id, {}, False, T0 + 1)
    for read in (store.get_job(job_id)[0], *store.list_jobs(), *store.jobs_by_id([job_id, copy])):
        assert read.cwd == "/tmp/caf\\xe9"  # readable, for show
    store.forget_caches()
    assert [(c.id, c.cwd) for c in claim(store, T0 + 1)] == [
        (job_id, b"/tmp/caf\xe9"),
        (copy, b"/tmp/caf\xe9"),
    ]


def test_restart_adds_a_copy_with_the_changes_asked(store: Store) -> None:
    original = add(store, "cmd", env={"X": "1"}, priority=2, label="l", max_retries=0)
    run_to(store, original, FAIL)
    copy = store.restart(original, {"priority": 7}, False, T0 + 5)
    assert copy > original
    was, now_ = job(store, original), job(store, copy)
    assert (now_.command, now_.label, now_.priority, now_.state) == ("cmd", "l", 7, "pending")
    assert (now_.run_at, now_.depends_on, was.state) == (T0 + 5, [], "dead")
    assert store.get_job(copy)[2] == store.get_job(original)[2]
    held = store.restart(original, {}, True, T0 + 5)
    assert state(store, held) == "held"


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
    # (Its attempts' rows go with it: SQLite's, in test_sqlite_engine.py.)
    with pytest.raises(Refused):
        store.get_job(job_id)


def test_reads_and_removes_of_more_jobs_than_one_statement_binds(store: Store) -> None:
    # SQLite binds at most a few hundred values a statement: its reads go in pieces.
    ids = store.add_jobs([new(f"echo {i}") for i in range(1_000)], T0)
    last = add(store, after=[ids[0]])
    ids = [*ids, last]
    assert store.states(ids) == dict.fromkeys(ids, "pending")
    read = store.jobs_by_id(list(reversed(ids)))
    assert [j.id for j in read] == ids and read[-1].depends_on == [ids[0]]
    assert store.cancel(ids, T0 + 1) == []
    assert store.remove(ids) == [] and store.states(ids) == {}


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


def test_clean_by_age_counts_from_the_last_end_of_each_state_it_names(store: Store) -> None:
    """A job retried and finished again is as old as its last end; a clean of
    some states leaves the others of any age."""
    again = add(store)
    run_to(store, again, OK, T0)
    canceled = add(store, delay=100.0)
    store.cancel([canceled], T0)
    store.retry([again], False, T0 + 100)
    run_to(store, again, OK, T0 + 100)
    assert store.clean(["completed", "dead"], older_than=T0 + 50) == (0, [])
    assert store.clean(["canceled", "dead"], older_than=T0 + 50) == (1, [])
    assert store.clean(["completed"], older_than=T0 + 101) == (1, [])
    assert store.list_jobs() == []


def test_clean_returns_log_paths(store: Store) -> None:
    job_id = add(store)
    claimed = claim_one(store, job_id)
    store.finish(claimed, OK, BACKOFF_MAX, T0, pid=1, stdout="/l/out", stderr="/l/err")
    count, paths = store.clean(["completed"], None)
    assert count == 1 and sorted(paths) == ["/l/err", "/l/out"]


# ----------------------------------------------------------------------------
# Unique keys


def test_an_add_of_a_held_key_returns_the_unfinished_job_in_each_unfinished_state(store: Store) -> None:
    first = add(store, "build", unique_key="nightly")
    assert store.add_jobs([new("other", unique_key="nightly")], T0).existing == [True]
    assert store.add_jobs([new("other", unique_key="nightly")], T0) == [first]
    store.hold([first], T0)
    assert store.add_jobs([new(unique_key="nightly")], T0) == [first]
    store.release([first], T0)
    claimed = claim_one(store, first)
    assert store.add_jobs([new(unique_key="nightly")], T0) == [first]
    store.retry([], False, T0)  # nothing: a no-op keeps the key where it is
    assert store.finish(claimed, FAIL, BACKOFF_MAX, T0) == "failed"
    assert store.add_jobs([new(unique_key="nightly")], T0) == [first]
    listed = store.list_jobs()
    assert [(j.id, j.command, j.unique_key) for j in listed] == [(first, "build", "nightly")]
    assert job(store, first).unique_key == "nightly"
    assert store.counts()["failed"] == 1 and sum(store.counts().values()) == 1


def test_a_finished_job_frees_its_key_unless_the_add_gives_a_window(store: Store) -> None:
    first = add(store, unique_key="k")
    run_to(store, first, OK, T0 + 10)  # completed at T0 + 10
    hour = 3600.0
    at_edge = T0 + 10 + hour
    [within] = store.add_jobs([new(unique_key="k", unique_for=hour, now=at_edge - 1)], at_edge - 1)
    assert within == first
    [second] = store.add_jobs([new(unique_key="k", unique_for=hour, now=at_edge)], at_edge)
    assert second > first  # ended exactly the window ago: no longer held
    [third] = store.add_jobs([new(unique_key="other", now=T0 + 20)], T0 + 20)
    assert third > second
    # Without a window a completed job holds nothing, even a second after it ended.
    run_to(store, third, OK, T0 + 30)
    assert store.add_jobs([new(unique_key="other", now=T0 + 31)], T0 + 31) != [third]


def test_the_window_returns_the_unfinished_job_first_then_the_last_completed(store: Store) -> None:
    a = add(store, unique_key="k")
    run_to(store, a, OK, T0 + 1)
    b = add(store, unique_key="k", now=T0 + 2)
    run_to(store, b, OK, T0 + 3)
    assert store.add_jobs([new(unique_key="k", unique_for=60, now=T0 + 4)], T0 + 4) == [b]
    c = add(store, unique_key="k", now=T0 + 5)  # no window: b does not hold it
    assert c not in (a, b)
    assert store.add_jobs([new(unique_key="k", unique_for=60, now=T0 + 6)], T0 + 6) == [c]


@pytest.mark.parametrize("ending", ["dead", "canceled"])
def test_a_job_that_did_not_complete_holds_no_window(store: Store, ending: str) -> None:
    """Only a completed job did the work a window protects (lifecycle.UNIQUE_WINDOW_STATES)."""
    first = add(store, unique_key="k", max_retries=0)
    if ending == "dead":
        run_to(store, first, FAIL, T0 + 1)
    else:
        store.cancel([first], T0 + 1)
    assert state(store, first) == ending
    [again] = store.add_jobs([new(unique_key="k", unique_for=3600, now=T0 + 2)], T0 + 2)
    assert again != first and state(store, again) == "pending"


def test_one_add_of_new_and_existing_jobs_answers_each_in_order(store: Store) -> None:
    held = add(store, "old", unique_key="a")
    answer = store.add_jobs(
        [
            new("one", unique_key="a"),
            new("two"),
            new("three", unique_key="b"),
            new("four", unique_key="b", unique_for=60),
            new("five", after=[held]),
        ],
        T0,
    )
    assert answer.existing == [True, False, False, True, False]
    assert answer[0] == held and answer[3] == answer[2]
    two, three, five = answer[1], answer[2], answer[4]
    assert [two, three, five] == list(range(two, two + 3))  # the new ones: consecutive
    assert [job(store, i).command for i in (two, three, five)] == ["two", "three", "five"]
    assert job(store, five).depends_on == [held]
    assert store.counts()["pending"] == 4


def test_an_add_that_finds_its_key_applies_nothing_of_its_own(store: Store) -> None:
    store.add_queue("other", None, T0)
    first = add(store, "cmd", unique_key="k", priority=1)
    assert store.add_jobs([new("else", unique_key="k", queue="other", priority=9, hold=True)], T0) == [first]
    kept = job(store, first)
    assert (kept.command, kept.queue, kept.priority, kept.state) == ("cmd", "default", 1, "pending")
    assert [(q.name, q.pending, q.held) for q in store.queues()] == [("default", 1, 0), ("other", 0, 0)]


def test_jobs_may_depend_on_a_unique_job_found_or_added(store: Store) -> None:
    build = add(store, unique_key="build")
    [found] = store.add_jobs([new(unique_key="build")], T0)
    after = add(store, after=[found])
    assert found == build and job(store, after).waiting_on == [build]
    run_to(store, build, OK, T0)
    assert job(store, after).waiting_on == []
    assert claim_one(store, after).id == after


def test_a_cascade_cancel_frees_a_dependents_key(store: Store) -> None:
    base = add(store, max_retries=0)
    dependent = add(store, after=[base], unique_key="k")
    run_to(store, base, FAIL)
    assert state(store, dependent) == "canceled"
    assert store.add_jobs([new(unique_key="k")], T0) != [dependent]


def test_retry_of_a_job_whose_key_another_holds_is_refused(store: Store) -> None:
    old = add(store, unique_key="k")
    run_to(store, old, OK)
    newer = add(store, unique_key="k")
    before = observable(store)
    with pytest.raises(Refused) as info:
        store.retry([old], False, T0 + 1)
    assert info.value.code == "invalid"
    assert info.value.message == (
        f"cannot retry job {old}: its unique key 'k' is held by job {newer} (pending); "
        "wait for that one or cancel it"
    )
    assert observable(store) == before
    store.cancel([newer], T0 + 2)
    assert store.retry([old], False, T0 + 3) == [old]
    assert store.add_jobs([new(unique_key="k")], T0 + 3) == [old]


def test_retry_of_two_finished_jobs_of_one_key_is_refused(store: Store) -> None:
    a = add(store, unique_key="k", max_retries=0)
    run_to(store, a, FAIL)
    b = add(store, unique_key="k", max_retries=0)
    run_to(store, b, FAIL)
    before = observable(store)
    with pytest.raises(Refused, match=f"cannot retry job {b}: its unique key 'k' is held by job {a}"):
        store.retry([], True, T0 + 1)
    assert observable(store) == before
    assert store.retry([b], False, T0 + 1) == [b]


def test_restart_keeps_the_key_and_is_refused_while_it_is_held(store: Store) -> None:
    first = add(store, "cmd", unique_key="k")
    before = observable(store)
    with pytest.raises(Refused) as info:
        store.restart(first, {}, False, T0 + 1)
    assert info.value.message == (
        f"cannot restart job {first}: it holds its unique key 'k' while pending; wait for it or cancel it"
    )
    assert observable(store) == before
    run_to(store, first, OK)
    copy = store.restart(first, {"priority": 2}, True, T0 + 2)
    assert (job(store, copy).unique_key, state(store, copy)) == ("k", "held")
    assert store.add_jobs([new(unique_key="k")], T0 + 3) == [copy]


def test_edit_leaves_the_key_as_it_is(store: Store) -> None:
    first = add(store, unique_key="k")
    store.edit(first, {"command": "changed", "label": "l"}, T0 + 1)
    assert job(store, first).unique_key == "k"
    assert store.add_jobs([new(unique_key="k")], T0 + 2) == [first]


def test_remove_and_clean_free_nothing_held(store: Store) -> None:
    """A finished job's key was free already; removing it changes no answer."""
    first = add(store, unique_key="k")
    run_to(store, first, OK)
    assert store.add_jobs([new(unique_key="k", unique_for=60)], T0 + 1) == [first]
    store.remove([first])
    assert store.add_jobs([new(unique_key="k", unique_for=60)], T0 + 1) != [first]


# ----------------------------------------------------------------------------
# Reading jobs


def test_list_jobs_filters_and_keeps_the_newest(store: Store) -> None:
    store.add_queue("other", None, T0)
    a = add(store, label="x")
    b = add(store, queue="other", label="x")
    c = add(store, hold=True)
    assert [j.id for j in store.list_jobs()] == [a, b, c]
    assert [j.id for j in store.list_jobs(states=["held"])] == [c]
    assert [j.id for j in store.list_jobs(queue="other")] == [b]
    assert [j.id for j in store.list_jobs(label="x")] == [a, b]
    assert [j.id for j in store.list_jobs(ids=[c, a, 404])] == [a, c]
    assert [j.id for j in store.list_jobs(limit=2)] == [b, c]
    assert [j.id for j in store.list_jobs(states=["pending"], label="x", queue="default")] == [a]
    assert [j.id for j in store.jobs_by_id([c, 404, a])] == [a, c]
    assert store.unfinished_ids() == [a, b, c]


# ----------------------------------------------------------------------------
# Counts, timers, interrupted jobs


def counts_history(store: Store, ids: dict[str, int]) -> Iterator[str]:
    """Jobs through every kind of change, pausing (yielding) where the counts
    are checked; the ids the checks need, in `ids`."""
    store.add_queue("other", 2, T0)
    yield "empty"
    added = store.add_jobs(
        [new(max_retries=1) for _ in range(8)] + [new(queue="other") for _ in range(3)], T0
    )
    yield "added"
    claimed = claim(store, slots=6)
    store.finish(claimed[0], OK, BACKOFF_MAX, T0)
    store.finish(claimed[1], FAIL, BACKOFF_MAX, T0)
    store.finish(claimed[2], classify_exit(-9), BACKOFF_MAX, T0)
    yield "finished"
    ids["canceled_dependent"] = add(store, after=[added[-1]])
    store.cancel([claimed[3].id, added[-1]], T0)
    ids["dependent"] = add(store, after=[claimed[0].id])
    yield "canceled"
    now = T0 + 10
    for again in claim(store, now, slots=100):
        store.finish(again, FAIL, BACKOFF_MAX, now)
    yield "failed again"
    store.retry([claimed[3].id], False, now)
    store.remove([claimed[0].id])
    store.clean(["canceled", "dead"], None)
    yield "retried and removed"
    held = store.add_jobs([new(hold=True), new(queue="other", hold=True)], now)
    store.hold([claimed[3].id], now)
    store.edit(held[0], {"queue": "other"}, now)
    store.edit(claimed[3].id, {"queue": "other", "priority": 4}, now)
    yield "held and edited"
    store.release([held[1]], now)
    store.restart(held[0], {}, False, now)
    yield "released and restarted"


def test_counts_match_a_manual_count(store: Store) -> None:
    # Was: against SQLite's jobs table; now against the jobs the store lists
    # (the counts table itself: test_sqlite_engine.py).
    ids: dict[str, int] = {}
    for step in counts_history(store, ids):
        assert store.counts() == counted(store), step
        # Per-queue numbers in queues() agree with the jobs listed per queue.
        for queue in store.queues():
            listed = Counter(j.state for j in store.list_jobs(queue=queue.name))
            assert (queue.running, queue.pending, queue.held, queue.failed) == (
                listed["running"],
                listed["pending"],
                listed["held"],
                listed["failed"],
            ), (step, queue.name)
    assert list(store.counts()) == list(STATES)
    assert sum(store.counts().values()) == len(store.list_jobs())
    assert state(store, ids["dependent"]) in ("failed", "dead")
    assert store.states([ids["canceled_dependent"]]) == {}


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


def test_recover_tells_what_it_finished_and_reordered(store: Store) -> None:
    dead_soon = add(store, max_retries=0)
    dependent = add(store, after=[dead_soon])
    retried = add(store, max_retries=2)
    claim(store)
    recovered, changes = store.changes_of("recover", BACKOFF_MAX, T0 + 3)
    assert recovered == [Recovered(dead_soon, 1, "dead"), Recovered(retried, 1, "failed")]
    assert told(changes) == ([dead_soon, dependent], [], True)  # the retry is due at its backoff
    [run] = store.get_job(retried)[1]
    assert (run.ended_at, run.error) == (T0 + 3, lifecycle.INTERRUPTED.error)
    assert job(store, retried).run_at == T0 + 3 + 2
    assert state(store, dependent) == "canceled"


def test_recover_makes_the_default_queue_and_keeps_it_as_it_is(engine: Engine) -> None:
    store = Direct(engine)
    assert store.recover(BACKOFF_MAX, T0) == []
    assert [(q.name, q.concurrency, q.paused) for q in store.queues()] == [("default", None, False)]
    store.set_paused("default", True)
    job_id = add(store)
    assert store.recover(BACKOFF_MAX, T0 + 1) == []
    assert [(q.name, q.paused, q.pending) for q in store.queues()] == [("default", True, 1)]
    assert state(store, job_id) == "pending"


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


def test_a_queue_removed_and_added_again_counts_none_of_its_old_jobs(store: Store) -> None:
    store.add_queue("gpu", None, T0)
    done = add(store, queue="gpu")
    waiting = add(store, queue="gpu", hold=True)
    store.cancel([done, waiting], T0)
    store.remove([done, waiting])
    store.remove_queue("gpu")
    store.add_queue("gpu", None, T0 + 1)
    add(store, queue="gpu", hold=True)
    [gpu] = [q for q in store.queues() if q.name == "gpu"]
    assert (gpu.pending, gpu.held, gpu.running, gpu.failed) == (0, 1, 0, 0)
    assert store.counts()["held"] == 1 and store.counts()["canceled"] == 0


def test_a_queue_limit_changes_and_clears(store: Store) -> None:
    store.add_queue("gpu", 1, T0)
    store.set_queue_concurrency("gpu", 3)
    store.set_queue_concurrency("default", 2)
    assert [(q.name, q.concurrency) for q in store.queues()] == [("default", 2), ("gpu", 3)]
    store.set_queue_concurrency("gpu", None)
    assert [(q.name, q.concurrency, q.paused) for q in store.queues()] == [
        ("default", 2, False),
        ("gpu", None, False),
    ]
    for value in (0, -1):
        with pytest.raises(Refused) as info:
            store.set_queue_concurrency("gpu", value)
        assert info.value.code == "invalid" and "at least 1" in info.value.message
    assert [q.concurrency for q in store.queues()] == [2, None]  # the refusals changed nothing


def test_pause_and_resume_every_queue(store: Store) -> None:
    store.add_queue("b", None, T0)
    store.set_all_paused(True)
    assert [q.paused for q in store.queues()] == [True, True]
    store.set_all_paused(False)
    assert [q.paused for q in store.queues()] == [False, False]


def test_config_persists(store: Store) -> None:
    assert store.config() == {}
    store.set_config("timeout", "5m")
    store.set_config("timeout", "10m")
    store.set_config("max-retries", "1")
    assert store.config() == {"timeout": "10m", "max-retries": "1"}


# ----------------------------------------------------------------------------
# Reading due jobs ahead (`lookahead`) and recording their starts (`start`)


def test_lookahead_reads_in_claim_order_and_takes_nothing(store: Store) -> None:
    low = add(store, priority=5)
    first = add(store, priority=-1)
    later = add(store, delay=10)
    plain = add(store)
    before = observable(store)
    read = ahead(store)
    assert [j.id for j in read.jobs] == [first, plain, low]
    assert read.complete and read.upcoming == [] and read.until == T0 + 10
    assert observable(store) == before  # was: SQLite's tables
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


def test_lookahead_reads_what_a_claim_would_take(store: Store) -> None:
    job_id = add(store, "echo $X", env={"X": "1"}, timeout=5.0, max_retries=2, backoff_base=3.0, priority=-2)
    dep = add(store, delay=100.0)
    add(store, after=[dep])
    [read] = ahead(store).jobs
    assert read.has_dependents is False
    [claimed] = claim(store)
    assert read == claimed
    assert [c.has_dependents for c in ahead(store, now=T0 + 100).jobs] == [True]
    assert job_id == claimed.id


def test_start_records_the_attempt_the_read_promised(store: Store) -> None:
    job_id = add(store, "echo $X", env={"X": "1"})
    [job_] = ahead(store).jobs
    assert (job_.run, job_.attempts, job_.env["X"]) == (1, 1, "1")
    store.start(job_, T0 + 1)
    assert state(store, job_id) == "running"
    # Was: SQLite's attempts table; now the runs get_job reads from it.
    assert [(r.attempt, r.started_at) for r in store.get_job(job_id)[1]] == [(1, T0 + 1)]
    assert store.finish(job_, OK, BACKOFF_MAX, T0 + 2) == "completed"


def test_a_retry_is_read_with_its_next_run_number(store: Store) -> None:
    job_id = add(store, max_retries=1, backoff_base=1)
    [first] = claim(store)
    assert store.finish(first, FAIL, BACKOFF_MAX, T0) == "failed"
    [again] = ahead(store, now=T0 + 100).jobs
    assert (again.id, again.run, again.attempts) == (job_id, 2, 2)
    store.start(again, T0 + 100)
    assert state(store, job_id) == "running"


def _change_since_the_read(store: Store, change: str, job_id: int, dep: int) -> None:
    if change == "cancel":
        store.cancel([job_id], T0)
    elif change == "claimed":
        claim(store)
    elif change == "remove":
        store.cancel([job_id], T0)
        store.remove([job_id])
    elif change == "hold":
        store.hold([job_id], T0)
    elif change == "ran and failed":
        [again] = claim(store)
        store.finish(again, FAIL, BACKOFF_MAX, T0)
    elif change == "dependency retried":
        store.retry([dep], False, T0)  # an `add` for the writer: the read-ahead is not made stale by it


@pytest.mark.parametrize(
    "change", ["cancel", "claimed", "remove", "hold", "ran and failed", "dependency retried"]
)
def test_start_refuses_a_job_that_changed_since_the_read(store: Store, change: str) -> None:
    dep = add(store)
    run_to(store, dep, OK)
    job_id = add(store, after=[dep], max_retries=3, backoff_base=1.0)
    [job_] = ahead(store).jobs
    _change_since_the_read(store, change, job_id, dep)
    before = observable(store)
    with pytest.raises(Refused, match=f"job {job_id} changed"):
        store.start(job_, T0)
    assert observable(store) == before  # was: SQLite's tables (still checked there)


def test_start_refused_inside_a_batch_writes_nothing_of_its_own(store: Store) -> None:
    """The writer runs the supervisor's records without a savepoint: `start`
    must refuse before it writes, or the batch would commit half of it."""
    job_id = add(store)
    [job_] = ahead(store).jobs
    store.cancel([job_id], T0)
    before = observable(store)
    with store.transaction():
        store.set_config("marker", "kept")
        with pytest.raises(Refused):
            store.start(job_, T0 + 1)
    assert observable(store) == {**before, "config": {"marker": "kept"}}


def test_finishes_that_make_jobs_claimable_say_so(store: Store) -> None:
    dep = add(store)
    dependent = add(store, after=[dep])
    [job_] = claim(store)
    store.reordered = False
    assert store.finish(job_, OK, BACKOFF_MAX, T0) == "completed"
    assert store.reordered and state(store, dependent) == "pending"
    retried = add(store, max_retries=1)
    [job_] = [c for c in claim(store) if c.id == retried]
    store.reordered = False
    assert store.finish(job_, FAIL, BACKOFF_MAX, T0) == "failed"
    assert store.reordered


# ----------------------------------------------------------------------------
# Undoing a claim (`unclaim`)


def test_unclaim_undoes_a_claim_whose_attempt_could_not_start(store: Store) -> None:
    """No descriptor was free for the spawn: the job waits again as it was,
    counts and all, and the next claim takes the same attempt."""
    job_id = add(store)
    counts, queues = store.counts(), store.queues()
    [job_] = claim(store)
    store.unclaim(job_, T0 + 1)
    # Was: SQLite's attempts and counts tables; now what get_job, counts and queues show.
    assert store.get_job(job_id)[1] == []
    assert (store.counts(), store.queues()) == (counts, queues)
    assert state(store, job_id) == "pending"
    [again] = claim(store)
    assert (again.id, again.run, again.attempts) == (job_.id, job_.run, job_.attempts)


def test_attempts_claimed_not_started_count_as_running_until_marked_started(store: Store) -> None:
    """A node claiming ahead of its free slots: the jobs are running to
    everyone (a limited queue counts them), their attempts have no process
    until `mark_started` records it."""
    store.add_queue("one", 1, T0)
    limited = add(store, queue="one")
    plain = add(store)
    other = add(store, queue="one")
    claimed = store.claim(now=T0, slots=5, queue_room={"one": 5, "default": 5}, started=False)
    assert [c.id for c in claimed] == [limited, plain]
    assert state(store, limited) == state(store, plain) == "running"
    assert store.claim(now=T0, slots=5, queue_room={"one": 5}) == []  # the limit counts it
    [run] = store.get_job(plain)[1]
    assert (run.pid, run.started_at, run.ended_at) == (None, T0, None)
    assert store.mark_started([(plain, 1, 4242, T0 + 1), (limited, 1, None, T0 + 2)]) == []
    [run] = store.get_job(plain)[1]
    assert (run.pid, run.started_at) == (4242, T0 + 1)
    assert store.get_job(limited)[1][0].started_at == T0 + 2
    # Marked once: a second mark (or one of an attempt never claimed so) is told back.
    assert store.mark_started([(plain, 1, 4243, T0 + 3), (other, 1, 1, T0 + 3)]) == [plain, other]
    assert store.get_job(plain)[1][0].pid == 4242
    store.finish(claimed[1], OK, BACKOFF_MAX, T0 + 4, pid=None)
    assert store.get_job(plain)[1][0].pid == 4242


def test_recover_gives_back_attempts_claimed_and_never_started_without_counting_them(
    store: Store,
) -> None:
    """A daemon that died holding jobs claimed ahead: they never ran, so they
    wait again with their attempt forgotten; a started one is interrupted."""
    started = add(store, max_retries=1)
    held = add(store, max_retries=0)
    retried = add(store, max_retries=2)
    [first] = claim(store, slots=1)
    store.finish(first, FAIL, BACKOFF_MAX, T0)
    claimed = store.claim(now=T0 + 100, slots=5, queue_room=ROOM, started=False)
    assert sorted(c.id for c in claimed) == [started, held, retried]
    store.mark_started([(started, 2, 99, T0 + 100)])
    recovered, changes = store.changes_of("recover", BACKOFF_MAX, T0 + 101)
    assert recovered == [Recovered(started, 2, "dead")]
    assert changes.reordered
    assert state(store, held) == "pending" and store.get_job(held)[1] == []
    assert state(store, retried) == "pending"
    assert [run.attempt for run in store.get_job(retried)[1]] == []
    again = {c.id: c for c in claim(store, now=T0 + 200)}
    assert (again[held].run, again[held].attempts) == (1, 1)
    # The one it was claimed ahead for: its earlier failure still counts, the lost claim does not.
    assert set(again) == {held, retried}


def test_a_canceled_job_claimed_ahead_is_told_back_and_its_claim_undone(store: Store) -> None:
    job_id = add(store)
    [claimed] = store.claim(now=T0, slots=1, queue_room=ROOM, started=False)
    store.cancel([job_id], T0 + 1)
    assert store.mark_started([(job_id, claimed.run, 7, T0 + 2)]) == [job_id]  # its process must stop
    store.unclaim(claimed, T0 + 2)
    assert state(store, job_id) == "canceled"
    assert store.get_job(job_id)[1] == []


def test_unclaim_of_a_retry_keeps_its_earlier_attempts(store: Store) -> None:
    job_id = add(store, max_retries=2, backoff_base=1)
    [first] = claim(store)
    store.finish(first, FAIL, BACKOFF_MAX, T0)
    [second] = claim(store, now=T0 + 100)
    store.unclaim(second, T0 + 100)
    assert [run.attempt for run in store.get_job(job_id)[1]] == [1]  # was: SQLite's attempts table
    [again] = claim(store, now=T0 + 100)
    assert (again.id, again.run, again.attempts) == (job_id, 2, 2)


def test_unclaim_of_a_job_canceled_meanwhile_leaves_it_canceled(store: Store) -> None:
    job_id = add(store)
    [job_] = claim(store)
    store.cancel([job_id], T0)
    store.unclaim(job_, T0 + 1)
    assert state(store, job_id) == "canceled"
    assert store.get_job(job_id)[1] == []  # was: SQLite's attempts table


def test_unclaim_of_a_job_removed_meanwhile_changes_nothing(store: Store) -> None:
    job_id = add(store)
    other = add(store, delay=10.0)
    [job_] = claim(store)
    store.cancel([job_id], T0)
    store.remove([job_id])
    before = observable(store)
    _, changes = store.changes_of("unclaim", job_, T0 + 1)
    assert told(changes) == NOTHING_TOLD
    assert observable(store) == before and store.unfinished_ids() == [other]


# ----------------------------------------------------------------------------
# What each change tells (`Written.changes`, merged by the writer per batch)


def test_changes_that_finish_nothing_release_nothing_and_reorder_nothing_say_so(store: Store) -> None:
    done = add(store)
    run_to(store, done, OK)
    lone = add(store)
    run_to(store, lone, OK)
    [pending] = store.add_jobs([new(delay=100.0)], T0)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("add_jobs", ([new(), new(after=[done]), new(hold=True)], T0)),
        ("hold", ([pending], T0)),
        ("edit", (pending, {"priority": 3}, T0)),
        ("restart", (done, {}, False, T0)),
        ("retry", ([lone], False, T0)),  # a completed job without dependents
        ("add_queue", ("q", None, T0)),
        ("set_paused", ("q", True)),
        ("set_queue_concurrency", ("q", 3)),
        ("set_all_paused", (False,)),
        ("set_config", ("timeout", "5m")),
        ("remove_queue", ("q",)),
    ]
    for name, args in calls:
        _, changes = store.changes_of(name, *args)
        assert told(changes) == NOTHING_TOLD, name
    for name, kwargs in [
        ("lookahead", {"now": T0, "horizon": T0, "queues": ["default"], "busy": [], "limit": 5}),
        ("claim", {"now": T0, "slots": 1, "queue_room": {"default": 1}}),
    ]:
        _, changes = store.changes_of(name, **kwargs)
        assert told(changes) == NOTHING_TOLD, name
    [claimed] = store.claim(now=T0, slots=1, queue_room={"default": 1})
    _, changes = store.changes_of("unclaim", claimed, T0)
    assert told(changes) == NOTHING_TOLD
    _, changes = store.changes_of("start", ahead(store).jobs[0], T0)
    assert told(changes) == NOTHING_TOLD
    _, changes = store.changes_of("remove", [done])
    assert told(changes) == NOTHING_TOLD
    store.cancel([claimed.id], T0)
    _, changes = store.changes_of("clean", ["canceled"], None)
    assert told(changes) == NOTHING_TOLD


def test_cancel_tells_the_jobs_it_finished_and_their_dependents(store: Store) -> None:
    a = add(store, delay=100.0)
    b = add(store, after=[a])
    c = add(store, after=[b])
    running = add(store)
    claim_one(store, running)
    stopped, changes = store.changes_of("cancel", [running, a], T0)
    assert stopped == [running]
    assert told(changes) == ([a, b, c, running], [], False)
    d = add(store, delay=100.0)
    e = add(store, after=[d])
    (_, canceled, _), changes = store.changes_of("cancel_what_can", [d, a], T0)
    assert canceled == [d]
    assert told(changes) == ([d, e], [], False)


def test_a_completed_attempt_tells_its_job_finished_and_the_dependents_it_released(store: Store) -> None:
    a = add(store)
    b = add(store)
    only_a = add(store, after=[a])
    both = add(store, after=[a, b])
    first, second = claim(store, slots=2)
    _, changes = store.changes_of("finish", first, OK, BACKOFF_MAX, T0)
    assert told(changes) == ([a], [only_a], True)
    _, changes = store.changes_of("finish", second, OK, BACKOFF_MAX, T0)
    assert told(changes) == ([b], [both], True)
    [next_best] = claim(store, slots=1)
    assert next_best.id == only_a
    _, changes = store.changes_of("finish", next_best, OK, BACKOFF_MAX, T0 + 1)
    assert told(changes) == ([only_a], [], False)  # no dependents: nothing to recount


def test_a_failed_attempt_tells_its_retry_time_and_a_dead_one_its_cascade(store: Store) -> None:
    retried = add(store, max_retries=1)
    dependent = add(store, after=[retried])
    _, changes = store.changes_of("finish", claim_one(store, retried), FAIL, BACKOFF_MAX, T0)
    assert told(changes) == ([], [], True)  # due again at T0 + 2, maybe before what was read ahead
    _, changes = store.changes_of("finish", claim_one(store, retried, T0 + 2), FAIL, BACKOFF_MAX, T0 + 2)
    assert told(changes) == ([retried, dependent], [], False)


def test_an_attempt_that_no_longer_decides_its_job_tells_nothing(store: Store) -> None:
    job_id = add(store)
    old = claim_one(store, job_id)
    store.cancel([job_id], T0 + 1)
    _, changes = store.changes_of("finish", old, OK, BACKOFF_MAX, T0 + 2)  # canceled already: told then
    assert told(changes) == NOTHING_TOLD
    store.retry([job_id], False, T0 + 3)
    claim_one(store, job_id, T0 + 3)
    _, changes = store.changes_of("finish", old, FAIL, BACKOFF_MAX, T0 + 4)  # a stale attempt
    assert told(changes) == NOTHING_TOLD


def test_release_says_the_claimable_jobs_may_be_reordered(store: Store) -> None:
    job_id = add(store, hold=True)
    _, changes = store.changes_of("release", [job_id], T0)
    assert told(changes) == ([], [], True)


def test_a_dependency_retried_and_completed_again_releases_its_dependents_again(store: Store) -> None:
    a = add(store)
    run_to(store, a, OK)
    dependent = add(store, after=[a], delay=100.0)
    _, changes = store.changes_of("retry", [a], False, T0 + 1)
    assert told(changes) == ([], [], True)  # a recount: its dependents wait again, none is released
    _, changes = store.changes_of("finish", claim_one(store, a, T0 + 1), OK, BACKOFF_MAX, T0 + 2)
    assert told(changes) == ([a], [dependent], True)


def test_what_each_call_of_a_batch_tells_is_merged(store: Store) -> None:
    a = add(store)
    b = add(store, delay=100.0)
    dependent = add(store, after=[a])
    held = add(store, hold=True)
    store.changes = Changes()
    with store.transaction():
        run_to(store, a, OK)
        store.cancel([b], T0)
        store.release([held], T0)
    assert told(store.changes) == ([a, b], [dependent], True)


# ----------------------------------------------------------------------------
# A refusal keeps nothing, whichever method refuses


def build_world(store: Store) -> dict[str, Any]:
    """Jobs in every state, queues in every situation, for the refusals below."""
    store.add_queue("spare", None, T0)
    store.add_queue("busy", None, T0)
    store.add_queue("done", None, T0)
    w: dict[str, Any] = {}
    w["completed"] = add(store)
    run_to(store, w["completed"], OK)
    w["canceled"] = add(store, delay=100.0)
    store.cancel([w["canceled"]], T0)
    w["dead"] = add(store, max_retries=0)
    w["doomed"] = add(store, after=[w["dead"]])  # canceled when "dead" dies
    run_to(store, w["dead"], FAIL)
    w["failed"] = add(store, max_retries=5)
    run_to(store, w["failed"], FAIL)
    w["running"] = add(store)
    [w["stale"]] = ahead(store).jobs  # read ahead, then claimed: no longer what was read
    claim_one(store, w["running"])
    w["pending"] = add(store, delay=100.0, env={"K": "v"})
    w["held"] = add(store, hold=True)
    w["waiting"] = add(store, after=[w["pending"]])
    add(store, queue="busy", delay=100.0)
    [finished_elsewhere] = store.add_jobs([new(queue="done")], T0)
    store.finish(store.claim(now=T0, slots=1, queue_room={"done": 1})[0], OK, BACKOFF_MAX, T0, stdout="/l/o")
    w["finished_elsewhere"] = finished_elsewhere
    store.set_config("timeout", "5m")
    return w


REFUSALS: dict[str, tuple[str, Callable[[Store, dict[str, Any]], object]]] = {
    "add: unknown queue": ("not_found", lambda s, w: s.add_jobs([new("ok"), new(queue="missing")], T0)),
    "add: unknown dependency": ("not_found", lambda s, w: s.add_jobs([new("ok"), new(after=[999])], T0)),
    "add: dead dependency": ("invalid", lambda s, w: s.add_jobs([new("ok"), new(after=[w["dead"]])], T0)),
    "add: canceled dependency": ("invalid", lambda s, w: s.add_jobs([new(after=[w["canceled"]])], T0)),
    "cancel: completed": ("invalid", lambda s, w: s.cancel([w["pending"], w["completed"]], T0 + 9)),
    "cancel: dead": ("invalid", lambda s, w: s.cancel([w["failed"], w["dead"]], T0 + 9)),
    "cancel: canceled": ("invalid", lambda s, w: s.cancel([w["running"], w["canceled"]], T0 + 9)),
    "cancel: unknown": ("not_found", lambda s, w: s.cancel([w["pending"], 404], T0 + 9)),
    "retry: unfinished": ("invalid", lambda s, w: s.retry([w["canceled"], w["pending"]], False, T0 + 9)),
    # The canceled job is retried first, then its dependent refused: both undone.
    "retry: dependency dead": ("invalid", lambda s, w: s.retry([w["canceled"], w["doomed"]], False, T0 + 9)),
    "retry: unknown": ("not_found", lambda s, w: s.retry([w["dead"], 404], False, T0 + 9)),
    "hold: running": ("invalid", lambda s, w: s.hold([w["pending"], w["running"]], T0 + 9)),
    "release: not held": ("invalid", lambda s, w: s.release([w["held"], w["pending"]], T0 + 9)),
    "edit: running": ("invalid", lambda s, w: s.edit(w["running"], {"priority": 1}, T0 + 9)),
    "edit: unknown": ("not_found", lambda s, w: s.edit(404, {"priority": 1}, T0 + 9)),
    "edit: nothing to change": ("invalid", lambda s, w: s.edit(w["pending"], {}, T0 + 9)),
    "edit: unknown queue": ("not_found", lambda s, w: s.edit(w["pending"], {"queue": "missing"}, T0 + 9)),
    "restart: unknown": ("not_found", lambda s, w: s.restart(404, {}, False, T0 + 9)),
    "remove: running": ("invalid", lambda s, w: s.remove([w["completed"], w["running"]])),
    "remove: unfinished": ("invalid", lambda s, w: s.remove([w["completed"], w["pending"]])),
    "remove: unknown": ("not_found", lambda s, w: s.remove([w["completed"], 404])),
    "add_queue: exists": ("invalid", lambda s, w: s.add_queue("spare", 3, T0 + 9)),
    "remove_queue: default": ("invalid", lambda s, w: s.remove_queue("default")),
    "remove_queue: unknown": ("not_found", lambda s, w: s.remove_queue("missing")),
    "remove_queue: unfinished jobs": ("invalid", lambda s, w: s.remove_queue("busy")),
    "remove_queue: finished jobs": ("invalid", lambda s, w: s.remove_queue("done")),
    "set_paused: unknown": ("not_found", lambda s, w: s.set_paused("missing", True)),
    "set_queue_concurrency: unknown": ("not_found", lambda s, w: s.set_queue_concurrency("missing", 2)),
    "set_queue_concurrency: below 1": ("invalid", lambda s, w: s.set_queue_concurrency("spare", 0)),
    "get_job: unknown": ("not_found", lambda s, w: s.get_job(404)),
    "start: changed since read": ("invalid", lambda s, w: s.start(w["stale"], T0 + 9)),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refusal_keeps_nothing_and_the_batch_goes_on(store: Store, case: str) -> None:
    code, refused_call = REFUSALS[case]
    world = build_world(store)
    before = observable(store)
    store.changes = Changes()
    with store.transaction():
        store.set_config("marker", case)  # an earlier call of the same batch: kept
        with pytest.raises(Refused) as info:
            refused_call(store, world)
    assert info.value.code == code
    assert info.value.message  # a reason in the user's words
    assert told(store.changes) == NOTHING_TOLD  # nobody hears of it
    assert observable(store) == {**before, "config": {**before["config"], "marker": case}}


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
    new_ = claim_one(store, job_id, T0 + 2)
    assert new_.run == old.run + 1
    store.finish(old, classify_exit(-15), BACKOFF_MAX, T0 + 3)  # the old process finally exits
    assert state(store, job_id) == "running"  # the new attempt is still running


def not_utf8_job() -> tuple[validation.NewJob, str]:
    """A job whose cwd and environment are not UTF-8 (os.fsdecode's surrogates)."""
    cwd, value = os.fsdecode(b"/tmp/d\xe9"), os.fsdecode(b"caf\xe9")
    job_new = validation.new_job(
        JobSpec(command="true"), cwd=cwd, env={"X": value, "PLAIN": "1"}, settings=Settings(), now=T0
    )
    return job_new, value


def test_a_cwd_and_environment_that_are_not_utf8_come_back_exactly(store: Store) -> None:
    """Issue #17 item 9: kept as the bytes they are, restored into the same str
    (os.fsdecode's surrogates), which posix_spawn turns back into those bytes.
    (How SQLite stores them, read back past its cache: test_sqlite_engine.py.)"""
    job_new, value = not_utf8_job()
    [job_id] = store.add_jobs([job_new], T0)
    [read] = ahead(store).jobs
    [claimed] = claim(store)
    assert claimed.cwd == read.cwd == b"/tmp/d\xe9"  # os.chdir takes it as it is
    assert claimed.env == read.env == {"X": value, "PLAIN": "1"}
    stored, _, env = store.get_job(job_id)
    assert (stored.cwd, env["X"]) == ("/tmp/d\\xe9", "caf\\xe9")  # readable, for show
    copy = store.restart(job_id, {}, False, T0)
    assert [(c.cwd, c.env) for c in claim(store)] == [(b"/tmp/d\xe9", {"X": value, "PLAIN": "1"})]
    assert copy > job_id


# ----------------------------------------------------------------------------
# A random history, checked after every call


def check_invariants(store: Store, now: float, paused: set[str]) -> None:
    """What must hold after any call, seen through the contract alone."""
    jobs = {j.id: j for j in store.list_jobs()}
    states = {job_id: j.state for job_id, j in jobs.items()}
    assert store.counts() == counted(store)
    for queue in store.queues():
        listed = Counter(j.state for j in jobs.values() if j.queue == queue.name)
        assert (queue.running, queue.pending, queue.held, queue.failed) == (
            listed["running"],
            listed["pending"],
            listed["held"],
            listed["failed"],
        )
    assert store.unfinished_ids() == [i for i, s in states.items() if s in lifecycle.UNFINISHED_STATES]
    holders = Counter(
        j.unique_key for j in jobs.values() if j.unique_key and j.state in lifecycle.UNIQUE_STATES
    )
    assert not [key for key, n in holders.items() if n > 1], holders
    for j in jobs.values():
        if j.state in lifecycle.UNSTARTED_STATES:
            # What it waits for: its dependencies that exist and have not completed;
            # none of them can never complete (the cascade canceled it then).
            assert j.waiting_on == [d for d in j.depends_on if states.get(d, "completed") != "completed"], j
            assert not [d for d in j.depends_on if states.get(d) in lifecycle.ENDED_BADLY_STATES], j
        elif j.state not in lifecycle.EDITABLE_STATES:
            assert j.waiting_on == []
        runs = store.get_job(j.id)[1]
        if j.state == "running":
            assert runs and runs[-1].ended_at is None, j
    open_queues = [q.name for q in store.queues() if q.name not in paused]
    due = [
        j.id
        for j in jobs.values()
        if j.state in lifecycle.WAITING_STATES
        and j.run_at <= now
        and not j.waiting_on
        and j.queue in open_queues
    ]
    read = ahead(store, now=now, queues=tuple(open_queues), limit=1000)
    assert sorted(c.id for c in read.jobs) == due and read.complete
    assert [c.claim_key for c in read.jobs] == sorted(c.claim_key for c in read.jobs)


@pytest.mark.parametrize("seed", range(4))
def test_a_random_history_keeps_every_rule(store: Store, seed: int) -> None:
    """Adds, claims, starts, ends, cancels, retries, holds, edits, removals and
    restarts of the daemon in a random order (the same each run): after each,
    the invariants hold, and a refused call changed nothing."""
    rng = random.Random(seed)
    store.add_queue("other", None, T0)
    now = T0
    running: dict[int, Claimed] = {}  # attempts whose process still runs, as the supervisor knows them
    paused: set[str] = set()

    def some(ids: list[int], most: int = 3) -> list[int]:
        return rng.sample(ids, min(len(ids), rng.randint(1, most))) if ids else [404]

    for _ in range(150):
        ids = [j.id for j in store.list_jobs()]
        terminal = [j.id for j in store.list_jobs(states=list(lifecycle.TERMINAL_STATES))]
        action = rng.choice(
            ["add", "add", "claim", "finish", "finish", "cancel", "retry", "hold", "release", "edit",
             "remove", "start", "unclaim", "time", "pause", "recover"]
        )  # fmt: skip
        before = observable(store)
        try:
            if action == "add":
                specs = [
                    new(
                        after=rng.sample(ids, min(len(ids), rng.randint(0, 2))),
                        hold=rng.random() < 0.1,
                        delay=rng.choice([None, 0.0, 5.0, 30.0]),
                        priority=rng.randint(-2, 2),
                        queue=rng.choice(["default", "other"]),
                        max_retries=rng.randint(0, 2),
                        unique_key=rng.choice([None, None, "k1", "k2"]),
                        now=now,
                    )
                    for _ in range(rng.randint(1, 3))
                ]
                store.add_jobs(specs, now)
            elif action == "claim":
                room = {q: rng.randint(0, 3) for q in ("default", "other") if q not in paused}
                for claimed in store.claim(
                    now=now, slots=rng.randint(1, 4), queue_room=room, busy=list(running)
                ):
                    running[claimed.id] = claimed
            elif action == "start":
                read = ahead(store, now=now, queues=("default", "other"), busy=list(running)).jobs
                if read:
                    store.start(read[0], now)
                    running[read[0].id] = read[0]
            elif action == "finish" and running:
                claimed = running.pop(rng.choice(list(running)))
                exit = rng.choice([OK, OK, FAIL, classify_exit(-9)])
                store.finish(claimed, exit, BACKOFF_MAX, now)
            elif action == "unclaim" and running:
                claimed = running.pop(rng.choice(list(running)))
                if store.states([claimed.id]).get(claimed.id) == "running":  # canceled and removed: gone
                    store.unclaim(claimed, now)
                else:
                    running[claimed.id] = claimed  # canceled meanwhile: its process still ends
            elif action == "cancel":
                store.cancel_what_can(some(ids), now) if rng.random() < 0.5 else store.cancel(some(ids), now)
            elif action == "retry":
                store.retry(some(terminal), rng.random() < 0.1, now)
            elif action == "hold":
                store.hold(some(ids), now)
            elif action == "release":
                store.release(some(ids), now)
            elif action == "edit":
                store.edit(some(ids, 1)[0], {"priority": rng.randint(-2, 2)}, now)
            elif action == "remove":
                store.remove(some(terminal)) if rng.random() < 0.8 else store.clean(["completed"], now - 10)
            elif action == "time":
                now += rng.choice([1.0, 5.0, 30.0])
            elif action == "pause":
                queue = rng.choice(["default", "other"])
                paused ^= {queue}
                store.set_paused(queue, queue in paused)
            elif action == "recover":  # the daemon died: what ran is interrupted
                store.recover(BACKOFF_MAX, now)
                running.clear()
        except Refused:
            assert observable(store) == before, action
        check_invariants(store, now, paused)


# ----------------------------------------------------------------------------
# Attempts' output (engines that keep it: `keeps_output`)


def _keeps_output(store: Store) -> None:
    if not store.keeps_output:
        pytest.skip("this engine keeps no output (the log files hold it)")


def _chunk(claimed: Claimed, at: int, data: bytes, stream: str = "stdout") -> OutputChunk:
    return OutputChunk(job_id=claimed.id, attempt=claimed.run, stream=stream, at=at, data=data)  # type: ignore[arg-type]


def test_an_engine_without_output_refuses_to_keep_or_read_it(store: Store) -> None:
    if store.keeps_output:
        pytest.skip("this engine keeps output")
    running = claim_one(store, add(store))
    with pytest.raises(Refused, match="log files"):
        store.append_output([_chunk(running, 0, b"x")])
    with pytest.raises(Refused, match="log files"):
        store.read_output(running.id, running.run, "stdout", 0, 100)


def test_output_is_read_back_by_stream_and_attempt(store: Store) -> None:
    _keeps_output(store)
    job_id = add(store, max_retries=1)
    first = claim_one(store, job_id)
    store.append_output([_chunk(first, 0, b"one\n"), _chunk(first, 0, b"err\n", "stderr")])
    store.append_output([_chunk(first, 4, b"two\n")])
    assert store.read_output(job_id, first.run, "stdout", 0, 100) == (b"one\ntwo\n", 8)
    assert store.read_output(job_id, first.run, "stderr", 0, 100) == (b"err\n", 4)
    assert store.read_output(job_id, first.run, "stdout", 3, 3) == (b"\ntw", 8)
    assert store.read_output(job_id, first.run, "stdout", 8, 100) == (b"", 8)  # at the end
    assert store.read_output(job_id, first.run, "stdout", 10**12, 100) == (b"", 8)  # far past it
    store.finish(first, FAIL, BACKOFF_MAX, T0)
    second = claim_one(store, job_id, T0 + 2 * BACKOFF_MAX)  # its retry is due
    assert store.read_output(job_id, second.run, "stdout", 0, 100) == (b"", 0)  # its own, empty
    store.append_output([_chunk(second, 0, b"again\n")])
    assert store.read_output(job_id, second.run, "stdout", 0, 100) == (b"again\n", 6)
    assert store.read_output(job_id, first.run, "stdout", 0, 100) == (b"one\ntwo\n", 8)
    assert store.read_output(job_id + 1, 1, "stdout", 0, 100) == (b"", 0)  # no such job


def test_big_output_reads_back_whole_from_any_offset(store: Store) -> None:
    """Chunks larger than an engine's pieces, read in slices that begin and
    end anywhere, give back exactly the bytes kept."""
    _keeps_output(store)
    running = claim_one(store, add(store))
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(300_000))
    at = 0
    with store.transaction():
        for size in (1, 70_000, 150_000, 3, 79_996):
            store.append_output([_chunk(running, at, data[at : at + size])])
            at += size
    assert at == len(data)
    for offset, limit in (
        (0, 10**6),
        (1, 65_536),
        (65_535, 2),
        (69_999, 100_000),
        (299_999, 5),
        (123_457, 99_999),
    ):
        assert store.read_output(running.id, running.run, "stdout", offset, limit) == (
            data[offset : offset + limit],
            len(data),
        )


def test_a_chunk_kept_twice_is_kept_once_and_a_gap_stops_a_read(store: Store) -> None:
    """A record tried again after a failing commit may repeat a chunk, or
    arrive after the chunk that follows it."""
    _keeps_output(store)
    running = claim_one(store, add(store))
    store.append_output([_chunk(running, 0, b"abc")])
    store.append_output([_chunk(running, 0, b"abc")])
    store.append_output([_chunk(running, 6, b"ghi")])  # 3..6 not kept yet
    assert store.read_output(running.id, running.run, "stdout", 0, 100) == (b"abc", 9)
    assert store.read_output(running.id, running.run, "stdout", 3, 100) == (b"", 9)
    store.append_output([_chunk(running, 3, b"def")])
    assert store.read_output(running.id, running.run, "stdout", 0, 100) == (b"abcdefghi", 9)


def test_output_goes_with_its_job_and_of_a_removed_one_is_dropped(store: Store) -> None:
    _keeps_output(store)
    removed, cleaned, kept = (add(store, f"job {n}") for n in range(3))
    runs = {c.id: c for c in claim(store)}
    store.append_output([_chunk(runs[job_id], 0, b"out %d" % job_id) for job_id in runs])
    for job_id in (removed, cleaned):
        store.finish(runs[job_id], OK, BACKOFF_MAX, T0)
    store.finish(runs[kept], FAIL, BACKOFF_MAX, T0)  # dead: not cleaned below
    store.remove([removed])
    store.clean(["completed"], T0 + 1)
    assert store.read_output(removed, 1, "stdout", 0, 100) == (b"", 0)
    assert store.read_output(cleaned, 1, "stdout", 0, 100) == (b"", 0)
    assert store.read_output(kept, 1, "stdout", 0, 100) == (b"out %d" % kept, len(b"out %d" % kept))
    # A late chunk of an attempt whose job is gone is dropped, and the rest of the call kept.
    late = claim_one(store, add(store))
    store.append_output([_chunk(runs[removed], 9, b"late"), _chunk(late, 0, b"kept")])
    assert store.read_output(removed, 1, "stdout", 0, 100) == (b"", 0)
    assert store.read_output(late.id, late.run, "stdout", 0, 100) == (b"kept", 4)


# ----------------------------------------------------------------------------
# Nodes: each attempt names its node; jobs pinned to a node run only there


def pinned(command: str = "true", node: str = "n1", **spec: object) -> validation.NewJob:
    import msgspec

    return msgspec.structs.replace(new(command, **spec), node=node)


def test_attempts_name_the_node_that_started_them(store: Store) -> None:
    join_node(store.engine, "n1")
    claimed_id = add(store)
    read_id = add(store)
    [claimed] = claim(store, slots=1)
    assert claimed.id == claimed_id
    [read] = ahead(store).jobs
    store.start(read, T0)
    for job_id in (claimed_id, read_id):
        [run] = store.get_job(job_id)[1]
        assert run.node == "n1"
        assert job(store, job_id).node == "n1"
    assert [j.node for j in store.list_jobs()] == ["n1", "n1"]


def test_a_job_pinned_to_another_node_is_neither_read_nor_claimed_nor_timed(store: Store) -> None:
    join_node(store.engine, "n1")
    elsewhere, later_elsewhere = store.add_jobs([pinned(node="n2"), pinned(node="n2", delay=5.0)], T0)
    assert job(store, elsewhere).pinned == "n2"
    assert ahead(store, horizon=T0 + 10).jobs == [] and ahead(store, horizon=T0 + 10).upcoming == []
    assert claim(store) == []
    assert store.next_due(T0, ["default"]) is None
    [here] = store.add_jobs([pinned(node="n1")], T0)
    anywhere = add(store)
    assert [c.id for c in claim(store)] == [here, anywhere]
    assert state(store, elsewhere) == "pending" and state(store, later_elsewhere) == "pending"


def test_a_restarted_copy_stays_pinned(store: Store) -> None:
    join_node(store.engine, "n1")
    [original] = store.add_jobs([pinned(node="n2")], T0)
    copy = store.restart(original, {}, False, T0 + 1)
    assert job(store, copy).pinned == "n2"


def test_waits_here_sees_only_jobs_this_node_may_run_some_day(store: Store) -> None:
    """What keeps a batch runner (--exit-when-idle): a job it may run, due or
    not, its dependencies met or not, retries included; not held jobs, paused
    queues, jobs pinned to another node (gone or not) or in queues it does
    not serve."""
    join_node(store.engine, "n1")
    assert not store.waits_here(None)
    store.add_jobs([pinned(node="gone")], T0)
    store.add_jobs([new(hold=True)], T0)
    store.add_queue("paused", None, T0)
    store.set_paused("paused", True)
    store.add_jobs([new(queue="paused")], T0)
    assert not store.waits_here(None) and not store.waits_here(["default", "paused"])
    store.add_queue("other", None, T0)
    store.add_jobs([new(queue="other", delay=3600.0)], T0)
    assert store.waits_here(None) and store.waits_here(["other"])
    assert not store.waits_here(["default"])  # not a queue it serves
    [mine] = store.add_jobs([pinned(node="n1", max_retries=1)], T0)
    assert store.waits_here(["default"])
    assert run_to(store, mine, FAIL) == "failed"  # awaiting its retry: it still waits
    assert store.waits_here(["default"])
    store.add_jobs([new(after=[mine])], T0)  # waiting for a dependency counts too
    store.cancel([mine], T0)
    assert not store.waits_here(["default"])


def test_nodes_lists_this_node_and_rescue_takes_nothing_from_a_live_one(store: Store) -> None:
    join_node(store.engine, "n1")
    job_id = add(store)
    claim(store)
    [me] = [node for node in store.nodes() if node.this]
    assert (me.name, me.state) == ("n1", "alive")
    assert store.rescue(BACKOFF_MAX, T0 + 1) == []
    assert state(store, job_id) == "running"
    store.finish(claim_one_again(store, job_id), OK, BACKOFF_MAX, T0 + 2)
    assert state(store, job_id) == "completed"


def claim_one_again(store: Store, job_id: int) -> Claimed:
    """The Claimed of a running job's latest attempt, as the supervisor keeps it."""
    [run] = store.get_job(job_id)[1][-1:]
    found = job(store, job_id)
    return Claimed(
        id=job_id,
        run=run.attempt,
        attempts=found.attempts,
        command=found.command,
        queue=found.queue,
        cwd=found.cwd,
        env={},
        timeout=found.timeout,
        max_retries=found.max_retries,
        backoff_base=found.backoff_base,
    )


# ----------------------------------------------------------------------------
# Schedules (queued/schedules.py): each firing adds one job, exactly once


def a_schedule(name: str = "nightly", expression: str = "@every 10s", **options: Any):
    from queued.schedules import new_schedule

    spec = {key: options.pop(key) for key in list(options) if key in JobSpec.__struct_fields__}
    return new_schedule(
        name,
        expression,
        options.pop("tz", "UTC"),
        new("echo hi", **spec),
        no_overlap=options.pop("no_overlap", False),
        catch_up=options.pop("catch_up", "one"),
        now=T0,
    )


def test_a_schedule_is_stored_with_its_job(store: Store) -> None:
    store.add_schedule(a_schedule(queue="default", priority=3, timeout=5.0, max_retries=2), T0)
    [stored] = store.schedules()
    assert (stored.name, stored.expression, stored.tz, stored.command) == (
        "nightly",
        "@every 10s",
        "UTC",
        "echo hi",
    )
    assert (stored.queue, stored.priority, stored.timeout, stored.max_retries) == ("default", 3, 5.0, 2)
    assert (stored.created_at, stored.since, stored.paused, stored.cwd) == (T0, T0, False, "/tmp")
    assert (stored.last_firing, stored.last_job_id, stored.last_job_state) == (None, None, None)


def test_schedule_names_are_unique_and_queues_must_exist(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    with pytest.raises(Refused, match="already exists") as taken:
        store.add_schedule(a_schedule(), T0)
    assert taken.value.code == "invalid"
    with pytest.raises(Refused, match="unknown queue") as unknown:
        store.add_schedule(a_schedule("other", queue="nope"), T0)
    assert unknown.value.code == "not_found"
    assert [s.name for s in store.schedules()] == ["nightly"]


def test_a_firing_adds_an_ordinary_labelled_job_with_the_captured_environment(store: Store) -> None:
    store.add_schedule(a_schedule(priority=4), T0)
    fired = store.fire_schedule("nightly", T0 + 10, T0 + 10.002)
    assert fired.outcome == "added"
    added, _runs, env = store.get_job(fired.job_id)
    assert (added.command, added.label, added.priority, added.state) == ("echo hi", "nightly", 4, "pending")
    assert (added.run_at, added.cwd, env) == (T0 + 10.002, "/tmp", {"HOME": "/root"})
    [stored] = store.schedules()
    assert (stored.last_firing, stored.last_run_at) == (T0 + 10, T0 + 10.002)
    assert (stored.last_job_id, stored.last_job_state) == (fired.job_id, "pending")
    assert claim(store, now=T0 + 11)[0].id == fired.job_id


def test_each_firing_is_added_once(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    first = store.fire_schedule("nightly", T0 + 10, T0 + 10)
    again = store.fire_schedule("nightly", T0 + 10, T0 + 10.5)
    earlier = store.fire_schedule("nightly", T0 + 5, T0 + 10.5)  # before the latest: passed already
    assert (first.outcome, again, earlier) == ("added", Fired("taken"), Fired("taken"))
    assert [j.id for j in store.list_jobs(label="nightly")] == [first.job_id]
    assert store.fire_schedule("nightly", T0 + 20, T0 + 20).outcome == "added"
    assert len(store.list_jobs(label="nightly")) == 2


def test_a_paused_schedule_fires_nothing_and_counts_from_its_resume(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    store.pause_schedule("nightly", True, T0 + 1)
    assert store.fire_schedule("nightly", T0 + 10, T0 + 10) == Fired("paused")
    with pytest.raises(Refused, match="paused already"):
        store.pause_schedule("nightly", True, T0 + 2)
    store.pause_schedule("nightly", False, T0 + 35)
    [stored] = store.schedules()
    assert (stored.paused, stored.since, stored.last_firing) == (False, T0 + 35, None)
    assert store.list_jobs(label="nightly") == []


def test_schedule_run_adds_one_job_now_without_a_firing(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    store.pause_schedule("nightly", True, T0)
    fired = store.fire_schedule("nightly", None, T0 + 3)
    assert fired.outcome == "added" and job(store, fired.job_id).label == "nightly"
    [stored] = store.schedules()
    assert (stored.last_firing, stored.last_run_at, stored.last_job_id) == (None, T0 + 3, fired.job_id)
    with pytest.raises(Refused, match="no schedule 'nope'") as unknown:
        store.fire_schedule("nope", None, T0)
    assert unknown.value.code == "not_found"
    assert store.fire_schedule("nope", T0 + 10, T0 + 10) == Fired("gone")


def test_no_overlap_skips_a_firing_while_the_latest_job_is_unfinished(store: Store) -> None:
    store.add_schedule(a_schedule(no_overlap=True), T0)
    first = store.fire_schedule("nightly", T0 + 10, T0 + 10).job_id
    running = claim_one(store, first, T0 + 10)
    assert store.fire_schedule("nightly", T0 + 20, T0 + 20) == Fired("overlap")
    assert store.schedules()[0].last_firing == T0 + 20  # recorded: no other node adds it
    assert store.fire_schedule("nightly", T0 + 20, T0 + 20) == Fired("taken")
    store.finish(running, OK, BACKOFF_MAX, T0 + 25)
    second = store.fire_schedule("nightly", T0 + 30, T0 + 30)
    assert second.outcome == "added"
    store.cancel([second.job_id], T0 + 31)
    store.remove([second.job_id])  # a removed latest job is finished
    assert store.fire_schedule("nightly", T0 + 40, T0 + 40).outcome == "added"


def test_a_firing_asked_ahead_adds_its_job_due_at_its_time(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    fired = store.fire_schedule("nightly", T0 + 10, T0 + 9.5)
    added = job(store, fired.job_id)
    assert (fired.outcome, added.run_at, added.created_at) == ("added", T0 + 10, T0 + 9.5)
    assert claim(store, now=T0 + 9.9) == []  # not before its time
    assert claim(store, now=T0 + 10)[0].id == fired.job_id


def test_no_overlap_asked_ahead_records_nothing_until_the_firings_time(store: Store) -> None:
    """The latest job still runs when the next firing is asked ahead: it may
    end before that firing's time, so nothing is decided (or recorded) yet."""
    store.add_schedule(a_schedule(no_overlap=True), T0)
    first = store.fire_schedule("nightly", T0 + 10, T0 + 9.5).job_id
    running = claim_one(store, first, T0 + 10)
    assert store.fire_schedule("nightly", T0 + 20, T0 + 19.5) == Fired("early")
    assert store.schedules()[0].last_firing == T0 + 10  # nothing recorded
    store.finish(running, OK, BACKOFF_MAX, T0 + 19.8)
    second = store.fire_schedule("nightly", T0 + 20, T0 + 20)
    assert second.outcome == "added" and job(store, second.job_id).run_at == T0 + 20
    claim_one(store, second.job_id, T0 + 20)
    assert store.fire_schedule("nightly", T0 + 30, T0 + 29.5) == Fired("early")
    assert store.fire_schedule("nightly", T0 + 30, T0 + 30) == Fired("overlap")  # decided at its time


def test_overlapping_firings_add_jobs_without_no_overlap(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    store.fire_schedule("nightly", T0 + 10, T0 + 10)
    assert store.fire_schedule("nightly", T0 + 20, T0 + 20).outcome == "added"


def test_a_firing_whose_job_cannot_be_added_records_nothing(store: Store) -> None:
    store.add_queue("night", None, T0)
    store.add_schedule(a_schedule(queue="night"), T0)
    store.remove_queue("night")
    with pytest.raises(Refused, match="unknown queue"):
        store.fire_schedule("nightly", T0 + 10, T0 + 10)
    assert store.schedules()[0].last_firing is None


def test_removing_a_schedule_keeps_its_jobs_and_forgets_its_firings(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    job_id = store.fire_schedule("nightly", T0 + 10, T0 + 10).job_id
    store.remove_schedule("nightly")
    assert store.schedules() == []
    assert job(store, job_id).label == "nightly"
    with pytest.raises(Refused, match="no schedule"):
        store.remove_schedule("nightly")
    with pytest.raises(Refused, match="no schedule"):
        store.pause_schedule("nightly", True, T0)
    store.add_schedule(a_schedule(), T0 + 11)  # the name again: a new schedule
    assert store.fire_schedule("nightly", T0 + 10, T0 + 12).outcome == "added"


def test_a_long_running_schedule_keeps_a_few_firings(store: Store) -> None:
    store.add_schedule(a_schedule(), T0)
    with store.transaction():
        for k in range(1, 40):
            store.fire_schedule("nightly", T0 + 10 * k, T0 + 10 * k)
    assert store.fire_schedule("nightly", T0 + 390, T0 + 400) == Fired("taken")
    assert len(store.list_jobs(label="nightly")) == 39


@pytest.mark.engines("postgresql")
def test_two_nodes_racing_for_one_firing_add_one_job(store: Store) -> None:
    """Two connections (two nodes) fire the same time at once: the second
    waits for the first's commit and adds nothing."""
    import threading

    from queued.store.postgres import PostgresStore

    store.add_schedule(a_schedule(), T0)
    other = PostgresStore.open(store.engine.url)
    try:
        store.engine.begin()
        mine = store.engine.call(store.engine.fire_schedule, ("nightly", T0 + 10, T0 + 10), {}, guarded=True)
        theirs: list[Any] = []

        def race() -> None:
            other.begin()
            theirs.append(other.call(other.fire_schedule, ("nightly", T0 + 10, T0 + 10.1), {}, guarded=True))
            other.commit()

        thread = threading.Thread(target=race)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second node must wait for the first's transaction"
        store.engine.commit()
        thread.join(10)
        assert mine.value.outcome == "added" and theirs[0].value == Fired("taken")
        assert [j.id for j in store.list_jobs(label="nightly")] == [mine.value.job_id]
    finally:
        other.close()


# -- resources and weights: what a job needs, what its attempts held ----------------


def test_a_job_keeps_its_slots_and_needs_and_a_plain_one_has_none(store: Store) -> None:
    big = add(store, "train", slots=2, needs={"gpu": 1, "licence": 1})
    plain = add(store, "true")
    assert (job(store, big).slots, job(store, big).needs) == (2, {"gpu": 1, "licence": 1})
    assert (job(store, plain).slots, job(store, plain).needs) == (1, {})
    listed = {j.id: (j.slots, j.needs) for j in store.list_jobs()}
    assert listed == {big: (2, {"gpu": 1, "licence": 1}), plain: (1, {})}
    assert [(j.slots, j.needs) for j in store.jobs_by_id([big])] == [(2, {"gpu": 1, "licence": 1})]


def test_many_jobs_of_one_add_keep_each_their_needs(store: Store) -> None:
    """A bulk add goes in with one statement (COPY on PostgreSQL): each row its own."""
    jobs = [new(f"j{i}", slots=1 + i % 3, needs={"gpu": i % 2} if i % 2 else {}) for i in range(150)]
    ids = store.add_jobs(jobs, T0)
    found = {j.id: (j.slots, j.needs) for j in store.jobs_by_id(ids)}
    assert [found[i] for i in ids] == [(1 + i % 3, {"gpu": 1} if i % 2 else {}) for i in range(150)]
    few = store.add_jobs([new("a", needs={"licence": 2}), new("b"), new("c", slots=3)], T0)
    assert [(j.slots, j.needs) for j in store.jobs_by_id(few)] == [(1, {"licence": 2}), (1, {}), (3, {})]


def test_claims_and_the_read_ahead_carry_what_a_job_needs(store: Store) -> None:
    big = add(store, "train", slots=2, needs={"gpu": 2})
    plain = add(store, "true")
    later = add(store, "later", delay=10.0, needs={"licence": 1})
    read = ahead(store, horizon=T0 + 20)
    assert [(c.id, c.slots, c.needs) for c in read.jobs] == [(big, 2, {"gpu": 2}), (plain, 1, {})]
    assert [(c.id, c.slots, c.needs) for c in read.upcoming] == [(later, 1, {"licence": 1})]
    claimed = claim(store)
    assert [(c.id, c.slots, c.needs) for c in claimed] == [(big, 2, {"gpu": 2}), (plain, 1, {})]


def test_an_attempt_keeps_the_gpus_it_held(store: Store) -> None:
    """`start` and `claim` record the GPU indices an attempt holds; `show`
    reads them on each attempt, and a job's latest one's on the job."""
    read_ahead = add(store, "a", needs={"gpu": 2})
    [ahead_job] = ahead(store).jobs
    store.start(ahead_job, T0, (1, 3))
    claimed_job = add(store, "b", needs={"gpu": 1})
    plain = add(store, "c")
    claimed = store.claim(now=T0, slots=10, queue_room={"default": 10}, gpus={claimed_job: (0,)})
    assert [c.id for c in claimed] == [claimed_job, plain]
    assert job(store, read_ahead).gpus == [1, 3]
    assert [run.gpus for run in store.get_job(read_ahead)[1]] == [[1, 3]]
    assert (job(store, claimed_job).gpus, job(store, plain).gpus) == ([0], [])
    assert [run.gpus for run in store.get_job(plain)[1]] == [[]]
    store.finish(ahead_job, FAIL, BACKOFF_MAX, T0 + 1)
    [again] = store.claim(now=T0 + 100, slots=1, queue_room={"default": 1})
    assert again.id == read_ahead
    assert [run.gpus for run in store.get_job(read_ahead)[1]] == [[1, 3], []]


def gpu_fit(
    slots: int, gpus: tuple[int, ...] = (0, 1), free_gpus: tuple[int, ...] | None = None, **counts: int
):
    """A node of `slots` slots (all free), `gpus` (those `free_gpus` free) and `counts`."""
    capacity = Capacity(slots=slots, counts=counts, gpus=gpus)
    free = Pool(slots=slots, counts=dict(counts), gpus=frozenset(gpus if free_gpus is None else free_gpus))
    return Fit(capacity=capacity, free=free, patience=60.0)


def test_a_claim_with_a_fit_takes_only_what_fits_now_with_its_gpus(store: Store) -> None:
    plain = add(store, "plain")
    two = add(store, "two gpus", needs={"gpu": 2})
    one = add(store, "one gpu", needs={"gpu": 1})
    wide = add(store, "wide", slots=2)
    never = add(store, "a tpu", needs={"tpu": 1})
    after = add(store, "after")
    fit = gpu_fit(3, free_gpus=(1,))
    claimed = store.claim(now=T0, slots=3, queue_room={"default": 3}, fit=fit)
    # `two` does not fit the one GPU free and `wide` not the slot left: backfill.
    assert [(c.id, c.gpus) for c in claimed] == [(plain, ()), (one, (1,)), (after, ())]
    assert [run.gpus for run in store.get_job(one)[1]] == [[1]]
    waiting = {j.id for j in store.jobs_by_id([two, wide, never]) if j.state == "pending"}
    assert waiting == {two, wide, never}  # passed over, still claimable by others
    # Idle, the node takes `two` with both GPUs, then `wide`; never the tpu job.
    for job_id in (plain, one, after):
        store.finish(claim_one_of(claimed, job_id), OK, BACKOFF_MAX, T0 + 1)
    claimed = store.claim(now=T0 + 2, slots=3, queue_room={"default": 3}, fit=gpu_fit(3))
    assert [(c.id, c.gpus) for c in claimed] == [(two, (0, 1)), (wide, ())]
    assert store.claim(now=T0 + 2, slots=3, queue_room={"default": 3}, fit=gpu_fit(3)) == []
    assert job(store, never).state == "pending"


def test_a_claim_with_a_fit_lets_a_starved_job_hold_what_is_free(store: Store) -> None:
    big = add(store, "big", slots=2)  # due at T0
    small = add(store, "small")
    half_free = Fit(capacity=Capacity(slots=2), free=Pool(slots=1), patience=60.0)
    # Before its patience, the small job behind it takes the free slot...
    assert [c.id for c in store.claim(now=T0 + 1, slots=1, queue_room={"default": 1}, fit=half_free)] == [
        small
    ]
    small_two = add(store, "small two")
    # ...after it, the big job holds it: nothing is taken.
    assert store.claim(now=T0 + 61, slots=1, queue_room={"default": 1}, fit=half_free) == []
    idle = Fit(capacity=Capacity(slots=2), free=Pool(slots=2), patience=60.0)
    assert [c.id for c in store.claim(now=T0 + 62, slots=2, queue_room={"default": 2}, fit=idle)] == [big]
    assert job(store, small_two).state == "pending"


def test_a_claim_with_a_fit_keeps_to_queue_room(store: Store) -> None:
    store.add_queue("serial", 1, T0)
    first = add(store, "a", queue="serial", needs={"gpu": 1})
    second = add(store, "b", queue="serial", needs={"gpu": 1})
    claimed = store.claim(now=T0, slots=4, queue_room={"serial": 4}, fit=gpu_fit(4))
    assert [(c.id, c.gpus) for c in claimed] == [(first, (0,))]
    assert job(store, second).state == "pending"


def claim_one_of(claimed: list[Claimed], job_id: int) -> Claimed:
    return next(c for c in claimed if c.id == job_id)


def test_edit_and_restart_change_or_keep_what_a_job_needs(store: Store) -> None:
    job_id = add(store, "train", delay=100.0, slots=2, needs={"gpu": 1})
    store.edit(job_id, {"slots": 3}, T0 + 1)
    assert (job(store, job_id).slots, job(store, job_id).needs) == (3, {"gpu": 1})
    store.edit(job_id, {"needs": {"gpu": 2, "licence": 1}}, T0 + 2)
    assert job(store, job_id).needs == {"gpu": 2, "licence": 1}
    copy = store.restart(job_id, {}, False, T0 + 3)
    assert (job(store, copy).slots, job(store, copy).needs) == (3, {"gpu": 2, "licence": 1})
    store.edit(job_id, {"needs": {}}, T0 + 4)
    assert job(store, job_id).needs == {}
    lighter = store.restart(copy, {"slots": 1, "needs": {}}, False, T0 + 5)
    assert (job(store, lighter).slots, job(store, lighter).needs) == (1, {})


def test_a_schedules_jobs_need_what_it_says(store: Store) -> None:
    store.add_schedule(a_schedule(slots=2, needs={"gpu": 1}), T0)
    store.add_schedule(a_schedule("plain"), T0)
    assert [(s.name, s.slots, s.needs) for s in store.schedules()] == [
        ("nightly", 2, {"gpu": 1}),
        ("plain", 1, {}),
    ]
    fired = store.fire_schedule("nightly", T0 + 10, T0 + 10)
    assert (job(store, fired.job_id).slots, job(store, fired.job_id).needs) == (2, {"gpu": 1})
    fired = store.fire_schedule("plain", T0 + 10, T0 + 10)
    assert (job(store, fired.job_id).slots, job(store, fired.job_id).needs) == (1, {})


def test_finish_many_records_each_end_as_finish_would(store: Store) -> None:
    """The ends of a batch in one call: each at its own time, each job moved
    on as lifecycle says, with every cascade and what others must learn."""
    ok = add(store)
    retried = add(store, "false", max_retries=1, backoff_base=10.0)
    dead = add(store, "false", max_retries=0)
    gone = add(store)
    doomed = add(store, after=[dead], delay=100.0)
    released = add(store, after=[ok])
    claimed = {c.id: c for c in claim(store, T0, slots=4)}
    assert sorted(claimed) == [ok, retried, dead, gone]
    store.cancel([gone], T0)  # canceled and removed while its process lived
    assert store.remove([gone]) == []
    ends = [
        AttemptEnd(claimed[ok], OK, T0 + 1, pid=11, stdout="/l/1.out", stderr="/l/1.err"),
        AttemptEnd(claimed[retried], FAIL, T0 + 2, log_incomplete="the disk was full"),
        AttemptEnd(claimed[dead], FAIL, T0 + 3),
        AttemptEnd(claimed[gone], OK, T0 + 4),
    ]
    results, changes = store.changes_of("finish_many", ends, BACKOFF_MAX)
    assert results == ["completed", "failed", "dead", None]
    assert sorted(changes.finished) == sorted([ok, dead, doomed])
    assert changes.released == [released] and changes.reordered
    assert (state(store, doomed), state(store, released)) == ("canceled", "pending")
    assert job(store, doomed).error == f"canceled: dependency {dead} is dead"
    assert job(store, retried).run_at == T0 + 2 + 10.0
    assert job(store, ok).updated_at == T0 + 1 and job(store, dead).updated_at == T0 + 3
    [run] = store.get_job(ok)[1]
    assert (run.ended_at, run.exit_code, run.pid, run.stdout_path) == (T0 + 1, 0, 11, "/l/1.out")
    [run] = store.get_job(retried)[1]
    assert (run.ended_at, run.exit_code, run.log_incomplete) == (T0 + 2, 1, "the disk was full")
    # Told again (a COMMIT lost on the way back): nothing changes the second time.
    again, changes = store.changes_of("finish_many", ends[:3], BACKOFF_MAX)
    assert again == ["completed", "failed", "dead"] and not changes
    assert job(store, retried).attempts == 1 and job(store, retried).run_at == T0 + 12.0
    assert store.counts() == counted(store)  # finished ones counted once each


def test_finish_many_takes_an_end_told_again_and_the_next_attempts_of_one_job_in_order(store: Store) -> None:
    job_id = add(store, "false", max_retries=1)
    first = claim_one(store, job_id)
    second = claim_one_again_after(store, first)
    results = store.finish_many(
        [AttemptEnd(first, FAIL, T0 + 1), AttemptEnd(second, OK, T0 + 2)], BACKOFF_MAX
    )
    assert results[1] == "completed" and state(store, job_id) == "completed"


def claim_one_again_after(store: Store, first: Claimed) -> Claimed:
    """`first`'s job claimed again, its first attempt recorded as failed and
    then told again: the second claim's attempt is the job's latest."""
    store.finish(first, FAIL, BACKOFF_MAX, T0)
    return claim_one(store, first.id, T0 + BACKOFF_MAX)
