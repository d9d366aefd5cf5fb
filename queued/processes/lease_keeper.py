"""The lease keeper: a node's heartbeat on a shared store, and what the node
does when it cannot renew (the rules are queued/lease.py's).

Theory of operation: one task renews the lease every third of it, on a
connection of its own, on a worker thread (`NodeLeases`): a busy writer never
delays a heartbeat. It also wakes when another node's lease may have run out
(the renewal says when, on the database's clock) and then has the writer
rescue that node's attempts; heartbeats and those wake-ups are all it does
(each heartbeat also has the supervisor look at the store once, a net under
the wake-ups between nodes).

The lease is measured on this node's monotonic clock from the moment it sent
its last successful renewal. While a renewal fails, the node claims nothing;
at `Lease.stop_at` it stops its running jobs (they are about to be rescued
and run elsewhere), so that they are dead, kill grace included, by
`Lease.dead_by`, before the database can call the lease expired. The
guardian holds the same deadlines, so that a daemon frozen meanwhile (SIGSTOP)
does not let its jobs outlive the lease. When the database answers again and
the lease had run out, the node waits for its jobs to be gone, then
registers anew (a new incarnation: whatever the old one still tries to record
is refused) and goes on.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from queued import lease as rules
from queued.lease import Lease
from queued.protocol import Resources
from queued.store import NodeIdentity, Store
from queued.store.writer import Writer

log = logging.getLogger(__name__)
# Another node's lease is looked at this long after the database says it ends.
EXPIRY_SLACK = 0.05


class Renewal(Protocol):
    held: bool
    next_expiry: float | None
    orphans: bool


class Leases(Protocol):
    """The store's side (queued.store.postgres.nodes.NodeLeases): blocking calls."""

    def register(self, card: object, incarnation: str) -> None: ...

    def renew(self, incarnation: str, slots: int, resources: Resources | None = None) -> Renewal: ...

    def leave(self, incarnation: str) -> None: ...

    def close(self) -> None: ...


class Jobs(Protocol):
    """What the keeper asks of the supervisor."""

    running: dict

    def hold_claims(self, held: bool) -> None: ...

    def stop_jobs(self, ids: list[int], reason: str) -> None: ...

    def next_change(self) -> trio.Event: ...

    def wake(self) -> None: ...


class Deadlines(Protocol):
    def set_deadlines(self, stop_at: float | None, dead_by: float | None) -> None: ...


def new_incarnation() -> str:
    return secrets.token_hex(8)


class LeaseKeeper:
    def __init__(
        self,
        leases: Leases,
        identity: NodeIdentity,
        card: object,
        seconds: float,
        *,
        kill_grace: Callable[[], float],
        slots: Callable[[], int],
        backoff_max: Callable[[], float],
        resources: Callable[[], Resources] | None = None,
        clock: Callable[[], float] = time.monotonic,
        in_thread: Callable[[Callable[[], object]], Awaitable[object]] | None = None,
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.card = card
        self.seconds = seconds
        self.kill_grace = kill_grace
        self.slots = slots
        # The node's resources and their use, for
        # other nodes' `status`: renewed with the lease.
        self.resources = resources
        self.backoff_max = backoff_max
        self.clock = clock
        self.lease: Lease | None = None
        self.problem: str | None = None  # for status: why the lease is in doubt
        self._limiter = trio.CapacityLimiter(1)  # one call on the connection at a time
        self._in_thread = in_thread or self._on_worker_thread
        self._stopping = False  # this incarnation's jobs are being stopped: it is lost

    # -- start and stop, blocking (before the loop runs, after it ended) ------------

    def register(self) -> None:
        """At start: register a fresh incarnation (NameTaken, LeaseUnreachable)."""
        incarnation = new_incarnation()
        sent = self.clock()
        self.leases.register(self.card, incarnation)
        self.identity.incarnation = incarnation
        self.lease = Lease(sent, self.seconds)

    def leave(self) -> None:
        try:
            self.leases.leave(self.identity.incarnation)
        except Exception as exc:
            log.warning("could not tell the job store this node left (%s): its lease runs out by itself", exc)
        self.leases.close()

    # -- the loop ----------------------------------------------------------------

    async def run(
        self,
        jobs: Jobs,
        guardian: Deadlines,
        db: Writer,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self.lease is not None, "register() first"
        self._set_guardian(guardian)
        task_status.started()
        next_beat = self.lease.next_renewal()
        next_expiry = math.inf  # when another node's lease may run out
        while True:
            stop_at = math.inf if self._stopping else self.lease.stop_at(self.kill_grace())
            wake = min(next_beat, next_expiry, stop_at)
            until = trio.current_time() + max(0.0, wake - self.clock())
            if self.problem is None or self._stopping:
                await trio.sleep_until(until)
            elif await self._store_back_before(db, until):
                next_beat = self.clock()  # the writer reached the store again: renew now, not a try later
            now = self.clock()
            if not self._stopping and now >= self.lease.stop_at(self.kill_grace()):
                self._stop_jobs(jobs, "this node could not renew its lease in time")
            if now < min(next_beat, next_expiry):
                continue
            sent = self.clock()
            if self.resources is None:
                renewal = await self._call(self.leases.renew, self.identity.incarnation, self.slots())
            else:
                renewal = await self._call(
                    self.leases.renew, self.identity.incarnation, self.slots(), self.resources()
                )
            now = self.clock()
            if renewal is None:  # the database did not answer: claim nothing meanwhile
                jobs.hold_claims(True)
                next_beat = now + rules.retry_interval(self.seconds)
                continue
            if not renewal.held:
                self._stop_jobs(jobs, "the job store says this node's lease ran out")
                await self._register_anew(jobs, guardian)
                next_beat, next_expiry = self.lease.next_renewal(), math.inf
                continue
            self.lease = self.lease.renewed(sent)
            self._stopping = False  # (its jobs were stopped early: they record their interruption)
            self._set_guardian(guardian)
            if self.problem is not None:
                log.info("the lease of node %s is renewed again", self.identity.name)
                self.problem = None
            jobs.hold_claims(False)
            # Each heartbeat also has the supervisor look at the store once: a
            # net under the NOTIFY wake-ups other nodes send, for what no news
            # tells (due jobs another node's claim held locked, then left).
            jobs.wake()
            next_beat = self.lease.next_renewal()
            next_expiry = (
                math.inf if renewal.next_expiry is None else now + renewal.next_expiry + EXPIRY_SLACK
            )
            if renewal.orphans:
                await self._rescue(db)

    @staticmethod
    async def _store_back_before(db: Writer, until: float) -> bool:
        """Wait until `until` (trio time), or less: True as soon as the writer
        reconnected to the store, whose outage failed the last renewal."""
        with trio.move_on_at(until):
            await db.reconnected().wait()
            return True
        return False

    async def _call(self, fn: Callable[..., object], *args: object) -> object | None:
        """A blocking call of the connection on a thread, given up on (None)
        when it fails or takes longer than a renewal interval."""
        with trio.move_on_after(rules.renew_interval(self.seconds)):
            try:
                return await self._in_thread(lambda: fn(*args))
            except Exception as exc:
                self._doubt(str(exc))
                return None
        self._doubt(f"the job store did not answer within {rules.renew_interval(self.seconds):.1f}s")
        return None

    async def _on_worker_thread(self, call: Callable[[], object]) -> object:
        """The connection's calls, on a worker thread, one at a time; one given
        up on (cancelled) runs on there and holds the next one back."""
        return await trio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True)

    def _doubt(self, why: str) -> None:
        if self.problem is None:
            log.warning(
                "node %s cannot renew its lease: %s; claiming nothing meanwhile", self.identity.name, why
            )
        self.problem = f"cannot renew this node's lease: {why}"

    def _stop_jobs(self, jobs: Jobs, why: str) -> None:
        """This incarnation is lost: its jobs stop, they are run elsewhere."""
        self._stopping = True
        jobs.hold_claims(True)
        running = list(jobs.running)
        if running:
            log.error("%s: stopping its %d running job(s), which other nodes rescue", why, len(running))
            jobs.stop_jobs(running, "interrupt")
        else:
            log.error("%s", why)
        self.problem = why

    async def _register_anew(self, jobs: Jobs, guardian: Deadlines) -> None:
        """Once the jobs of the lost incarnation are gone, a new one."""
        while jobs.running:  # they are being killed: an end is at most a kill grace away
            await jobs.next_change().wait()
        while True:
            incarnation = new_incarnation()
            sent = self.clock()
            if await self._call(self._register, incarnation) is not None:
                break
            await trio.sleep(rules.retry_interval(self.seconds))
        self.identity.incarnation = incarnation
        self.lease = Lease(sent, self.seconds)
        self._stopping = False
        self.problem = None
        self._set_guardian(guardian)
        log.warning("node %s registered anew (incarnation %s)", self.identity.name, incarnation)
        jobs.hold_claims(False)

    def _register(self, incarnation: str) -> bool:
        self.leases.register(self.card, incarnation)
        return True

    def _set_guardian(self, guardian: Deadlines) -> None:
        assert self.lease is not None
        guardian.set_deadlines(self.lease.stop_at(self.kill_grace()), self.lease.dead_by)

    async def _rescue(self, db: Writer) -> None:
        """Another node's lease ran out: its attempts are interrupted, and retried."""
        try:
            rescued = await db.add(Store.rescue, self.backoff_max(), time.time())
        except Exception as exc:
            log.error("could not rescue the attempts of a lost node: %s", exc)
            return
        for attempt in rescued:
            log.warning(
                "job %d attempt %d: its node was lost; interrupted, now %s",
                attempt.job_id,
                attempt.run,
                attempt.state,
            )
