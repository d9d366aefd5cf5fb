"""Resources and weights: parsing, GPU detection, and which waiting jobs start
(backfill, and the anti-starvation rule)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queued.resources import (
    STARVATION_PATIENCE,
    Capacity,
    Holding,
    Pool,
    Start,
    Waiting,
    allocate,
    cuda_visible_devices,
    free_pool,
    never_fits,
    node_capacity,
    parse_needs,
    parse_nvidia_smi,
    parse_resources,
    parse_slots,
    refusal,
    shortfall,
)

# --- parsing -----------------------------------------------------------------


def test_parse_resources() -> None:
    assert parse_resources("gpu=2,licence=1") == {"gpu": 2, "licence": 1}
    assert parse_resources(" gpu = 0 , Matlab.seat-2=10 ") == {"gpu": 0, "Matlab.seat-2": 10}


def test_parse_needs() -> None:
    assert parse_needs("gpu=1") == {"gpu": 1}
    assert parse_needs("gpu=2,licence=1") == {"gpu": 2, "licence": 1}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "--resources is empty: use NAME=COUNT pairs separated by commas, e.g. gpu=2,licence=1"),
        ("gpu", "invalid --resources item 'gpu': use NAME=COUNT"),
        ("gpu=", "invalid --resources item 'gpu=': use NAME=COUNT"),
        ("=2", "invalid --resources item '=2'"),
        ("gpu=2,", "invalid --resources item ''"),
        ("gpu=two", "invalid count 'two' for gpu: a whole number from 0 to 1,000,000"),
        ("gpu=-1", "invalid count '-1' for gpu"),
        ("gpu=1.5", "invalid count '1.5' for gpu"),
        ("gpu=99999999", "invalid count '99999999' for gpu"),
        ("gpu=1025", "invalid count '1025' for gpu: at most 1,024"),
        ("gpu=1,gpu=2", "--resources names 'gpu' twice"),
        ("2gpu=1", "invalid resource name '2gpu': a letter, then letters"),
        ("gp u=1", "invalid resource name 'gp u'"),
        ("slots=4", "'slots' is not a resource: use --slots N for a job, the concurrency for a node"),
    ],
)
def test_resource_refusals(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_resources(text)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("gpu=0", "invalid count '0' for gpu: a whole number from 1 to 1,000,000"),
        ("", "--needs is empty"),
        ("gpu:1", "invalid --needs item 'gpu:1': use NAME=COUNT, e.g. gpu=1"),
    ],
)
def test_needs_refusals(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_needs(text)


def test_parse_slots() -> None:
    assert parse_slots("2") == 2
    assert parse_slots(" 4096 ") == 4096
    for bad in ("0", "-1", "two", "1.5", "", "4097"):
        with pytest.raises(ValueError, match=r"invalid --slots .*: a whole number from 1 to 4,096"):
            parse_slots(bad)


NVIDIA_SMI = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5f1a3c-0000-0000-0000-000000000000)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5f1a3c-1111-0000-0000-000000000000)
  MIG 3g.20gb     Device  0: (UUID: MIG-2a3b0000-0000-0000-0000-000000000000)
GPU 3: Tesla V100-SXM2-16GB (UUID: GPU-aaaa)
"""


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi(NVIDIA_SMI) == (0, 1, 3)
    assert parse_nvidia_smi("") == ()
    failure = (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n"
    )
    assert parse_nvidia_smi(failure) == ()
    assert parse_nvidia_smi("No devices found.\n") == ()


def test_node_capacity() -> None:
    # Detected by default, and only GPUs.
    assert node_capacity(4, None, (1, 0)) == Capacity(slots=4, counts={}, gpus=(0, 1))
    # Configured resources add to the detected GPUs.
    assert node_capacity(4, {"licence": 1}, (0,)) == Capacity(slots=4, counts={"licence": 1}, gpus=(0,))
    # A configured gpu count wins: the first N detected, or 0..N-1 if fewer are detected.
    assert node_capacity(4, {"gpu": 1}, (2, 3)).gpus == (2,)
    assert node_capacity(4, {"gpu": 2}, ()).gpus == (0, 1)
    assert node_capacity(4, {"gpu": 0, "licence": 0}, (0, 1)) == Capacity(slots=4, counts={}, gpus=())


def test_cuda_visible_devices() -> None:
    assert cuda_visible_devices((0, 2)) == "0,2"
    assert cuda_visible_devices(()) == ""


# --- what a node can run ---------------------------------------------------

NODE = Capacity(slots=4, counts={"licence": 1}, gpus=(0, 1))


def test_never_fits() -> None:
    assert never_fits(1, {}, NODE) is None
    assert never_fits(4, {"gpu": 2, "licence": 1}, NODE) is None
    assert never_fits(5, {}, NODE) == "takes 5 slots; this node has 4"
    assert never_fits(1, {"gpu": 3}, NODE) == "needs gpu=3; this node has gpu=2"
    assert never_fits(1, {"tpu": 1}, NODE) == "needs tpu=1; this node has no tpu"


def test_refusal_at_add() -> None:
    assert refusal(1, {}, NODE) is None
    assert refusal(4, {"gpu": 2, "licence": 1}, NODE) is None
    assert (
        refusal(5, {}, NODE)
        == "takes 5 slots but this daemon has 4; raise them with `queuectl workers scale 5`"
    )
    assert refusal(5, {}, Capacity(slots=0)) is None  # scaled to 0: it runs nothing for now
    assert refusal(1, {"gpu": 3}, NODE) == "needs gpu=3 but this daemon has gpu=2"
    assert refusal(1, {"gpu": 1}, Capacity(slots=4)) == (
        "needs gpu=1 but this daemon has no gpu; start queued with --resources gpu=N"
    )
    assert refusal(1, {"tpu": 1}, NODE) == (
        "needs tpu=1 but this daemon has no tpu; start queued with --resources tpu=N"
    )


def test_free_pool_and_shortfall() -> None:
    pool = free_pool(NODE, [Holding(slots=2, needs={"gpu": 1}, gpus=(0,)), Holding(needs={"licence": 1})])
    assert (pool.slots, pool.counts, pool.gpus) == (1, {"licence": 0}, frozenset({1}))
    assert shortfall(1, {"gpu": 1}, pool) is None
    assert shortfall(2, {"gpu": 2, "licence": 1}, pool) == (
        "slots: needs 2, 1 free; gpu: needs 2, 1 free; licence: needs 1, 0 free"
    )


# --- allocation ------------------------------------------------------------

NOW = 10_000.0


def job(job_id: int, slots: int = 1, waited: float = 0.0, **needs: int) -> Waiting:
    return Waiting(job_id=job_id, slots=slots, needs=needs, waiting_since=NOW - waited)


def idle(capacity: Capacity = NODE) -> Pool:
    return free_pool(capacity, [])


def test_jobs_start_in_claim_order_while_they_fit() -> None:
    allocation = allocate(idle(), [job(1), job(2), job(3), job(4), job(5)], NODE, NOW)
    assert [start.job_id for start in allocation.started] == [1, 2, 3, 4]
    assert allocation.holding == ()


def test_gpu_jobs_get_disjoint_lowest_indices() -> None:
    node = Capacity(slots=8, gpus=(0, 1, 2, 3))
    pool = free_pool(node, [Holding(needs={"gpu": 1}, gpus=(1,))])
    allocation = allocate(pool, [job(1, gpu=1), job(2, gpu=2), job(3, gpu=1), job(4)], node, NOW)
    assert allocation.started == (
        Start(job_id=1, gpus=(0,)),
        Start(job_id=2, gpus=(2, 3)),
        Start(job_id=4, gpus=()),
    )


def test_a_job_taking_every_slot_runs_alone() -> None:
    node = Capacity(slots=2)
    assert allocate(idle(node), [job(1, slots=2), job(2)], node, NOW).started == (Start(job_id=1),)
    busy = free_pool(node, [Holding()])
    # Not yet starved: the small job behind fills the free slot (backfill).
    assert allocate(busy, [job(1, slots=2), job(2)], node, NOW).started == (Start(job_id=2),)


def test_counted_resources_are_exclusive() -> None:
    allocation = allocate(idle(), [job(1, licence=1), job(2, licence=1), job(3)], NODE, NOW)
    assert [start.job_id for start in allocation.started] == [1, 3]


def test_a_job_that_never_fits_here_holds_nothing() -> None:
    allocation = allocate(idle(), [job(1, gpu=3, waited=1e6), job(2, slots=9, waited=1e6), job(3)], NODE, NOW)
    assert allocation.started == (Start(job_id=3),)
    assert allocation.holding == ()


def test_no_free_slot_starts_nothing() -> None:
    full = free_pool(NODE, [Holding(slots=4)])
    assert allocate(full, [job(1), job(2, gpu=1)], NODE, NOW).started == ()
    over = free_pool(NODE, [Holding(slots=6)])  # after `workers scale` down
    assert allocate(over, [job(1)], NODE, NOW).started == ()


# --- anti-starvation ---------------------------------------------------------


def test_a_starved_big_job_holds_what_is_free_so_nothing_smaller_overtakes_it() -> None:
    node = Capacity(slots=4)
    pool = free_pool(node, [Holding(), Holding()])  # 2 of 4 slots free
    big, small = job(1, slots=4, waited=STARVATION_PATIENCE), job(2)
    allocation = allocate(pool, [big, small], node, NOW)
    assert allocation.started == ()
    assert allocation.holding == (1,)
    # Just under the patience, the small one is still started around it.
    patient = job(1, slots=4, waited=STARVATION_PATIENCE - 1)
    assert allocate(pool, [patient, small], node, NOW).started == (Start(job_id=2),)


def test_a_starved_gpu_job_holds_the_free_gpus_but_not_what_it_does_not_need() -> None:
    node = Capacity(slots=4, counts={"licence": 1}, gpus=(0, 1))
    pool = free_pool(node, [Holding(needs={"gpu": 1}, gpus=(0,))])
    waiting = [job(1, gpu=2, waited=3600), job(2, gpu=1), job(3, licence=1), job(4)]
    allocation = allocate(pool, waiting, node, NOW)
    # GPU 1 is held for job 1; jobs needing no GPU use what is left.
    assert allocation.started == (Start(job_id=3), Start(job_id=4))
    assert allocation.holding == (1,)


def test_jobs_ahead_of_a_starved_job_are_not_held_back() -> None:
    node = Capacity(slots=2)
    pool = free_pool(node, [Holding()])
    urgent, big = job(1), job(2, slots=2, waited=3600)
    assert allocate(pool, [urgent, big], node, NOW).started == (Start(job_id=1),)


def test_the_first_starved_job_is_served_first() -> None:
    node = Capacity(slots=4, gpus=(0, 1, 2, 3))
    pool = free_pool(node, [Holding(needs={"gpu": 2}, gpus=(0, 1))])
    waiting = [job(1, gpu=3, waited=3600), job(2, gpu=2, waited=3600), job(3, gpu=1)]
    allocation = allocate(pool, waiting, node, NOW)
    assert allocation.started == ()
    assert allocation.holding == (1, 2)


def simulate(node: Capacity, arrivals: int, duration: float, patience: float) -> dict[int, float]:
    """A node fed a steady stream of 1-slot jobs behind one job taking every
    slot: the start time of each job, by id (job 0 is the big one)."""
    running: list[tuple[float, Holding]] = [(0.5 * i, Holding()) for i in range(node.slots)]  # staggered ends
    waiting = [Waiting(job_id=0, slots=node.slots, waiting_since=0.0)]
    started: dict[int, float] = {}
    next_id, now = 1, 0.0
    while now < arrivals:
        waiting.append(Waiting(job_id=next_id, waiting_since=now))
        next_id += 1
        running = [(end, holding) for end, holding in running if end > now]
        allocation = allocate(
            free_pool(node, [holding for _, holding in running]), waiting, node, now, patience
        )
        for start in allocation.started:
            started[start.job_id] = now
            slots = next(w.slots for w in waiting if w.job_id == start.job_id)
            running.append((now + duration, Holding(slots=slots)))
        waiting = [w for w in waiting if w.job_id not in started]
        now += 0.25
    return started


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones() -> None:
    node = Capacity(slots=4)
    started = simulate(node, arrivals=200, duration=2.0, patience=10.0)
    # It starts within the patience plus one run of the jobs ahead of it.
    assert 0 in started
    assert started[0] <= 10.0 + 2.0 + 0.25
    # And smaller jobs did fill the gaps before it starved.
    assert sum(1 for job_id, at in started.items() if job_id and at < started[0]) > 0


def test_without_the_rule_the_big_job_would_starve() -> None:
    started = simulate(Capacity(slots=4), arrivals=200, duration=2.0, patience=float("inf"))
    assert 0 not in started


@given(
    slots=st.integers(min_value=1, max_value=6),
    gpus=st.integers(min_value=0, max_value=4),
    holding_gpus=st.integers(min_value=0, max_value=4),
    jobs=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=3), st.booleans()
        ),
        max_size=12,
    ),
)
def test_allocation_never_oversubscribes(slots, gpus, holding_gpus, jobs) -> None:
    node = Capacity(slots=slots, counts={"licence": 1}, gpus=tuple(range(gpus)))
    held = tuple(range(min(holding_gpus, gpus)))
    pool = free_pool(node, [Holding(needs={"gpu": len(held)}, gpus=held)] if held else [])
    waiting = [
        Waiting(
            job_id=i,
            slots=job_slots,
            needs={"gpu": need} if need else {},
            waiting_since=NOW - (3600 if starved else 0),
        )
        for i, (job_slots, need, starved) in enumerate(jobs)
    ]
    allocation = allocate(pool, waiting, node, NOW)
    by_id = {w.job_id: w for w in waiting}
    assert sum(by_id[s.job_id].slots for s in allocation.started) <= pool.slots
    given_gpus = [index for start in allocation.started for index in start.gpus]
    assert len(given_gpus) == len(set(given_gpus))
    assert set(given_gpus) <= pool.gpus
    for start in allocation.started:
        assert len(start.gpus) == by_id[start.job_id].needs.get("gpu", 0)
    # Behind the first starved job that could run here, nothing takes what it needs.
    starved = [
        w
        for w in waiting
        if w.waiting_since <= NOW - 3600
        and w.job_id not in {s.job_id for s in allocation.started}
        and never_fits(w.slots, w.needs, node) is None
    ]
    if starved:
        first = starved[0]
        ahead = [s for s in allocation.started if s.job_id < first.job_id]
        behind = [s for s in allocation.started if s.job_id > first.job_id]
        slots_left = pool.slots - sum(by_id[s.job_id].slots for s in ahead)
        gpus_left = len(pool.gpus) - sum(len(s.gpus) for s in ahead)
        held_slots = min(first.slots, slots_left)
        held_gpus = min(first.needs.get("gpu", 0), gpus_left)
        assert sum(by_id[s.job_id].slots for s in behind) <= slots_left - held_slots
        assert sum(len(s.gpus) for s in behind) <= gpus_left - held_gpus
