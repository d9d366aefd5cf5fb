"""The lease keeper (queued/processes/lease_keeper.py) against a fake store
side, on trio's autojumping clock: when it renews, when it stops claiming,
when it stops its jobs, and how it comes back."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from queued.processes.lease_keeper import LeaseKeeper
from queued.protocol import Resources
from queued.store import NodeIdentity, Store
from queued.store.postgres.nodes import LeaseUnreachable

LEASE, GRACE = 3.0, 0.5  # stop_at = sent + 2.0, dead_by = sent + 2.5


@dataclass
class FakeRenewal:
    held: bool = True
    next_expiry: float | None = None
    orphans: bool = False


@dataclass
class FakeLeases:
    answers: list = field(default_factory=list)  # what renew gives, in turn (then held)
    renewed: list[float] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    def register(self, card: object, incarnation: str) -> None:
        self.registered.append(incarnation)

    resources: list[Resources | None] = field(default_factory=list)

    def renew(self, incarnation: str, slots: int, resources: Resources | None = None) -> FakeRenewal:
        self.renewed.append(trio.current_time())
        self.resources.append(resources)
        answer = self.answers.pop(0) if self.answers else FakeRenewal()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def leave(self, incarnation: str) -> None: ...

    def close(self) -> None: ...


class FakeJobs:
    def __init__(self) -> None:
        self.running: dict[int, object] = {1: object(), 2: object()}
        self.held: list[tuple[float, bool]] = []
        self.stopped: list[tuple[float, list[int]]] = []
        self.woken = 0
        self._change = trio.Event()

    def hold_claims(self, held: bool) -> None:
        if not self.held or self.held[-1][1] != held:
            self.held.append((trio.current_time(), held))

    def stop_jobs(self, ids: list[int], reason: str) -> None:
        self.stopped.append((trio.current_time(), ids))

    def next_change(self) -> trio.Event:
        return self._change

    def wake(self) -> None:
        self.woken += 1

    def all_ended(self) -> None:
        self.running.clear()
        self._change.set()


class FakeGuardian:
    def __init__(self) -> None:
        self.deadlines: list[tuple[float | None, float | None]] = []

    def set_deadlines(self, stop_at: float | None, dead_by: float | None) -> None:
        self.deadlines.append((stop_at, dead_by))


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[object] = []
        self._reconnected = trio.Event()

    def reconnected(self) -> trio.Event:
        return self._reconnected

    def reconnect(self) -> None:
        """The writer reached the store again after an outage."""
        self._reconnected.set()
        self._reconnected = trio.Event()

    async def add(self, fn: object, *args: object) -> list:
        self.calls.append(fn)
        return []


async def inline(call):  # type: ignore[no-untyped-def]
    """The store's side answering at once, in virtual time (no thread)."""
    await trio.lowlevel.checkpoint()
    return call()


def keeper(leases: FakeLeases, resources=None) -> LeaseKeeper:
    k = LeaseKeeper(
        leases,  # type: ignore[arg-type]
        NodeIdentity("n1", ""),
        object(),
        LEASE,
        kill_grace=lambda: GRACE,
        slots=lambda: 2,
        backoff_max=lambda: 60.0,
        clock=trio.current_time,
        in_thread=inline,
        resources=resources,
    )
    k.register()
    return k


async def run_for(
    k: LeaseKeeper, jobs: FakeJobs, seconds: float, db: FakeWriter | None = None
) -> FakeGuardian:
    guardian = FakeGuardian()
    async with trio.open_nursery() as nursery:
        await nursery.start(k.run, jobs, guardian, db or FakeWriter())
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return guardian


async def test_a_healthy_node_renews_every_third_of_its_lease_and_moves_the_guardians_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    leases = FakeLeases()
    jobs = FakeJobs()
    guardian = await run_for(keeper(leases), jobs, 3.5, None)
    assert [round(t - start, 2) for t in leases.renewed] == [1.0, 2.0, 3.0]
    assert jobs.stopped == [] and all(not held for _, held in jobs.held)
    assert [round(stop - start, 2) for stop, _ in guardian.deadlines] == [2.0, 3.0, 4.0, 5.0]
    assert [round(dead - start, 2) for _, dead in guardian.deadlines] == [2.5, 3.5, 4.5, 5.5]
    assert jobs.woken == 3  # each heartbeat has the supervisor look once


async def test_a_node_that_cannot_renew_stops_claiming_then_stops_its_jobs_before_its_lease_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    leases = FakeLeases(answers=[LeaseUnreachable("down")] * 100)
    jobs = FakeJobs()
    k = keeper(leases)
    await run_for(k, jobs, 2.2)
    [(held_at, held)] = jobs.held
    assert held and round(held_at - start, 2) == 1.0  # the first failed renewal
    [(stopped_at, ids)] = jobs.stopped
    assert round(stopped_at - start, 2) == 2.0 and ids == [1, 2]  # dead by 2.5, the lease ends at 3
    assert k.problem is not None


async def test_a_node_renews_as_soon_as_the_writer_reached_the_store_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failed renewal is tried again a tenth of the lease later, or at once
    when the writer reconnects: `status` stops saying the lease is in doubt
    as soon as the store answers (it said so up to lease/10 longer)."""
    start = trio.current_time()
    leases = FakeLeases(answers=[LeaseUnreachable("down")])
    jobs = FakeJobs()
    db = FakeWriter()
    k = keeper(leases)

    async def store_back() -> None:
        await trio.sleep(1.05)
        assert k.problem is not None
        db.reconnect()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store_back)
        await nursery.start(k.run, jobs, FakeGuardian(), db)
        await trio.sleep(1.2)
        nursery.cancel_scope.cancel()
    assert [round(t - start, 2) for t in leases.renewed] == [1.0, 1.05]
    assert k.problem is None and jobs.held[-1][1] is False  # claiming again


async def test_a_lost_node_registers_anew_once_its_jobs_are_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leases = FakeLeases(answers=[LeaseUnreachable("down"), LeaseUnreachable("down"), FakeRenewal(held=False)])
    jobs = FakeJobs()
    k = keeper(leases)
    first = k.identity.incarnation

    async def jobs_end() -> None:
        await trio.sleep(2.5)
        jobs.all_ended()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs_end)
        await nursery.start(k.run, jobs, FakeGuardian(), FakeWriter())
        await trio.sleep(4)
        nursery.cancel_scope.cancel()
    assert len(leases.registered) == 2 and k.identity.incarnation == leases.registered[-1] != first
    assert jobs.stopped and jobs.held[-1][1] is False  # claiming again
    assert k.problem is None


async def test_a_renewal_that_sees_a_lost_node_has_it_rescued_and_wakes_at_the_next_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    leases = FakeLeases(answers=[FakeRenewal(next_expiry=0.3), FakeRenewal(orphans=True)])
    db = FakeWriter()
    await run_for(keeper(leases), FakeJobs(), 1.5, db)
    assert [round(t - start, 2) for t in leases.renewed[:2]] == [1.0, 1.35]  # 0.3 s, then a little
    assert db.calls == [Store.rescue]


async def test_each_heartbeat_carries_the_nodes_resources_as_they_are_then(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leases = FakeLeases()
    uses = iter([Resources(slots=2, slots_used=1), Resources(slots=2, slots_used=2), Resources(slots=2)])
    await run_for(keeper(leases, resources=lambda: next(uses)), FakeJobs(), 3.5, None)
    assert [use.slots_used for use in leases.resources] == [1, 2, 0]
