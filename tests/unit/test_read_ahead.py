"""The supervisor's read-ahead without a daemon: what it holds, when that is
valid, and which jobs a free slot takes."""

from __future__ import annotations

import math

from queued.processes.read_ahead import ReadAhead
from queued.resources import Allocator, Capacity, Pool
from queued.store import Ahead, Claimed

T0 = 1000.0
MARKS = (3, 5)  # the writer's (epoch, additions)


def job(
    job_id: int,
    queue: str = "default",
    priority: int = 0,
    run_at: float = T0 - 1,
    slots: int = 1,
    **needs: int,
) -> Claimed:
    return Claimed(
        id=job_id,
        run=1,
        attempts=1,
        command="true",
        queue=queue,
        cwd="/",
        env={},
        timeout=None,
        max_retries=0,
        backoff_base=2.0,
        priority=priority,
        run_at=run_at,
        slots=slots,
        needs=needs,
    )


def loaded(
    jobs: list[Claimed],
    *,
    complete: bool = True,
    upcoming: list[Claimed] | None = None,
    until: float | None = None,
) -> ReadAhead:
    read = ReadAhead()
    ahead = Ahead(jobs=jobs, complete=complete, upcoming=upcoming or [], until=until)
    assert read.load(ahead, MARKS, MARKS)
    return read


def ids(jobs: list[Claimed]) -> list[int]:
    return [j.id for j in jobs]


def test_nothing_read_is_never_valid() -> None:
    assert not ReadAhead().valid_for(T0, MARKS)


def test_a_read_is_valid_until_the_marks_move() -> None:
    read = loaded([job(1), job(2)])
    assert read.valid_for(T0, MARKS)
    assert not read.valid_for(T0, (4, 5))  # a call that may make a job unclaimable
    assert not read.valid_for(T0, (3, 6))  # a call that may add a job that outranks them


def test_a_complete_read_of_nothing_is_valid() -> None:
    read = loaded([], complete=True)
    assert read.valid_for(T0, MARKS)
    assert read.take(T0, {"default": 5}, 5) == []


def test_a_read_whose_epoch_moved_while_it_ran_is_stale_at_once() -> None:
    read = ReadAhead()
    ahead = Ahead(jobs=[job(1)], complete=True, upcoming=[], until=None)
    assert not read.load(ahead, MARKS, (4, 5))
    assert read.due_jobs() == [] and not read.valid_for(T0, MARKS)
    # An addition meanwhile leaves it usable now; the next look reads again.
    assert read.load(ahead, MARKS, (3, 6))
    assert ids(read.take(T0, {"default": 1}, 1)) == [1]
    assert not read.valid_for(T0, (3, 6))


def test_a_read_is_valid_until_the_first_run_at_it_did_not_see() -> None:
    read = loaded([job(1)], until=T0 + 10)
    assert read.valid_for(T0 + 9.9, MARKS)
    assert not read.valid_for(T0 + 10, MARKS)
    assert read.next_look() == T0 + 10
    assert loaded([job(1)], until=None).next_look() == math.inf


def test_jobs_are_taken_in_claim_order_up_to_the_free_slots() -> None:
    read = loaded([job(1), job(2), job(3)])
    assert ids(read.take(T0, {"default": 5}, 2)) == [1, 2]
    assert ids(read.due_jobs()) == [3]
    assert read.take(T0, {"default": 5}, 0) == []
    assert ids(read.take(T0, {"default": 5}, 5)) == [3]


def test_each_queue_gives_at_most_its_room_and_a_full_ones_job_keeps_its_place() -> None:
    read = loaded([job(1, "serial"), job(2, "serial"), job(3), job(4, "paused"), job(5)])
    room = {"serial": 1, "default": 1}
    assert ids(read.take(T0, room, 4)) == [1, 3]
    assert room == {"serial": 1, "default": 1}  # the caller's room is left as it was
    assert ids(read.due_jobs()) == [2, 4, 5]
    assert ids(read.take(T0, {"serial": 0, "default": 2}, 4)) == [5]
    assert ids(read.due_jobs()) == [2, 4]


def test_jobs_given_back_keep_their_place() -> None:
    read = loaded([job(1), job(2, "serial"), job(3), job(4)])
    taken = read.take(T0, {"default": 3}, 3)
    assert ids(taken) == [1, 3, 4]
    read.give_back(taken[1:])  # no descriptor was free for job 3
    assert ids(read.due_jobs()) == [2, 3, 4]


def test_upcoming_jobs_join_in_claim_order_once_due() -> None:
    upcoming = [job(7, priority=5, run_at=T0 + 1), job(8, priority=-1, run_at=T0 + 2)]
    read = loaded([job(1, priority=0), job(2, priority=3)], upcoming=upcoming, until=T0 + 5)
    assert read.next_look() == T0 + 1
    assert ids(read.upcoming_jobs()) == [7, 8]
    assert ids(read.take(T0 + 1.5, {"default": 0}, 4)) == []  # none has room: they all wait
    assert ids(read.due_jobs()) == [1, 2, 7] and ids(read.upcoming_jobs()) == [8]
    assert read.next_look() == T0 + 2
    assert ids(read.take(T0 + 2, {"default": 9}, 9)) == [8, 1, 2, 7]
    assert read.next_look() == T0 + 5


def test_an_incomplete_read_keeps_no_upcoming_jobs_and_reads_again_when_the_first_is_due() -> None:
    read = loaded([job(1)], complete=False, upcoming=[job(7, run_at=T0 + 1)], until=T0 + 3)
    assert read.upcoming_jobs() == []
    assert read.next_look() == T0 + 1
    assert not read.valid_for(T0 + 1, MARKS)


def test_more_may_be_due_beyond_an_incomplete_read_only() -> None:
    assert loaded([job(1)], complete=False).more_may_be_due()
    assert not loaded([job(1)], complete=True).more_may_be_due()
    assert not loaded([], complete=False).more_may_be_due()


def test_forget_drops_everything_until_the_next_read() -> None:
    read = loaded([job(1)], upcoming=[job(7, run_at=T0 + 1)], until=T0 + 5)
    read.forget()
    assert read.due_jobs() == [] and read.upcoming_jobs() == []
    assert not read.valid_for(T0, MARKS)
    assert read.take(T0, {"default": 1}, 1) == []


# --- with resources (see queued.resources) ------------------------------------


def fit_on(capacity: Capacity, free: Pool, patience: float = 60.0):
    """The supervisor's allocator factory: what is free, less the plain jobs taken so far."""
    asked: list[int] = []

    def fit(slots_taken: int) -> Allocator:
        asked.append(slots_taken)
        pool = Pool(slots=free.slots - slots_taken, counts=dict(free.counts), gpus=free.gpus)
        return Allocator(pool, capacity, T0, patience)

    fit.asked = asked  # type: ignore[attr-defined]
    return fit


GPU_NODE = Capacity(slots=4, gpus=(0, 1))


def test_plain_jobs_take_no_allocator() -> None:
    read = loaded([job(1), job(2)])
    fit = fit_on(GPU_NODE, Pool(slots=4, gpus=frozenset({0, 1})))
    assert ids(read.take(T0, {"default": 4}, 4, fit)) == [1, 2]
    assert fit.asked == []


def test_gpu_jobs_get_disjoint_gpus_and_plain_ones_behind_them_fill_the_slots() -> None:
    read = loaded([job(1), job(2, gpu=1), job(3, gpu=2), job(4, gpu=1), job(5)])
    fit = fit_on(GPU_NODE, Pool(slots=4, gpus=frozenset({0, 1})))
    taken = read.take(T0, {"default": 4}, 4, fit)
    assert [(j.id, j.gpus) for j in taken] == [(1, ()), (2, (0,)), (4, (1,)), (5, ())]
    assert fit.asked == [1]  # one plain job was taken before the first GPU job
    assert ids(read.due_jobs()) == [3]  # keeps its place


def test_a_job_taking_every_slot_waits_for_them_and_then_runs_alone() -> None:
    node = Capacity(slots=2)
    read = loaded([job(1, slots=2), job(2)])
    # One slot busy: the big job does not fit, the small one behind it does (backfill).
    assert ids(read.take(T0, {"default": 1}, 1, fit_on(node, Pool(slots=1)))) == [2]
    read = loaded([job(1, slots=2), job(2)])
    assert ids(read.take(T0, {"default": 2}, 2, fit_on(node, Pool(slots=2)))) == [1]
    assert ids(read.due_jobs()) == [2]


def test_a_starved_big_job_holds_the_free_slot() -> None:
    node = Capacity(slots=2)
    read = loaded([job(1, slots=2, run_at=T0 - 61), job(2)])
    assert read.take(T0, {"default": 1}, 1, fit_on(node, Pool(slots=1))) == []
    assert ids(read.due_jobs()) == [1, 2]


def test_without_an_allocator_only_plain_jobs_start() -> None:
    read = loaded([job(1, slots=2), job(2, gpu=1), job(3)])
    assert ids(read.take(T0, {"default": 4}, 4)) == [3]
    assert ids(read.due_jobs()) == [1, 2]
