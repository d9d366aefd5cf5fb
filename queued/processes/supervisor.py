"""The supervisor: claims due jobs into free slots and sees each attempt through.

Theory of operation: one loop owns the slots. It starts as many due jobs as
there is room for (`queue_room`), then sleeps until something could change
the answer: `wake()` (a new job, an exit, a queue or concurrency change) or
the earliest future run_at. Nothing polls; an idle daemon sleeps in the
kernel. Young attempts are watched together (`YoungAttempts`: most jobs of a
busy queue end within milliseconds); any other step towards an end (a grown
attempt's watch, an output drain, a spawn that failed) runs in a task of the
loop's nursery. Every end, whatever led to it, reaches `_end` once, which
frees the slot, starts the next job in it, and hands the end to `Ends`.

Starting from memory: the loop reads the next due jobs ahead (`ReadAhead`)
and starts them as slots free up, queueing each start's record behind its
process instead of waiting for a commit before it. Records run in the order
they are queued, so a start is on disk before its attempt's end, and before
any later request sees the job. A crash before the start's commit leaves the
job pending: it runs again, as a job running at the crash does.

Claiming first: when other nodes share the store (`claims_before_start`),
nothing starts from memory. Each round claims as many due jobs as there are
free slots in one committed transaction (`_claim_committed`), starts them,
and sleeps until the next timer; the store's news of other nodes (new jobs,
room in a limited queue) wakes it as `wake()` does. The ends recorded behind
the processes join the claim's transaction when they are queued by then.
While attempts end quickly, a claim also takes a few jobs ahead of the free
slots (`ClaimedAhead`): committed, not started, so that a slot an end frees
starts the next one at once, and the claim that refills them runs while
the jobs run. Their starts are recorded behind the processes, all those of
a batch in one record (`mark_started`).

Faults around one attempt are that attempt's: an unexpected error while
starting, watching or ending it ends it as failed with the error's text
(`fault_outcome`). A spawn that finds no free descriptor starts nothing: the
job stays due (`StartHold`). Claiming stops by cancellation (`stop_claiming`):
the loop's claims are cancelled where they wait; attempts still end.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path

import trio

from queued import lifecycle
from queued.lifecycle import Exit
from queued.processes import descriptors
from queued.processes.attempt import Attempt
from queued.processes.claim_records import ClaimRecords
from queued.processes.claimed_ahead import ClaimedAhead
from queued.processes.ends import Ends, abandon, fault_outcome
from queued.processes.escapes import Escapes
from queued.processes.guardian_link import GuardianLink
from queued.processes.job_environment import JobEnvironments
from queued.processes.job_process import JobProcess, OutOfDescriptors, SpawnError
from queued.processes.log_folders import LogFolders, LogsUnusable
from queued.processes.node_resources import CUDA_VISIBLE_DEVICES, NodeResources
from queued.processes.output_copies import OutputCopies
from queued.processes.queue_room import queue_room
from queued.processes.read_ahead import ReadAhead
from queued.processes.running import RunningAttempts
from queued.processes.start_hold import StartHold
from queued.processes.store_calls import StoreCalls
from queued.processes.young_attempts import YoungAttempts
from queued.protocol import QueueInfo, Resources, Slot
from queued.resources import Pool, cuda_visible_devices, refusal
from queued.settings import Settings
from queued.store import Claimed, CommitUnknown, StorageError, StoreUnreachable
from queued.store.writer import Call, Writer

# Jobs read ahead beyond the slots: enough that a busy drain reads rarely, few
# enough that the read stays cheap.
AHEAD_EXTRA = 32
# Jobs due within this are read ahead too, so that their timers start them
# from memory rather than after a read queued behind whatever commits.
AHEAD_SECONDS = 1.0
# After a start's record or a read was refused, or no descriptor was free, claiming waits this long.
HOLD_SECONDS = 1.0

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        db: Writer,
        settings: Settings,
        logs_dir: Path,
        guardian: GuardianLink,
        instance: str,
        clock: Callable[[], float] = time.time,
        resources: NodeResources | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        # What the node has besides its slots (GPUs, counted resources), and
        # the anti-starvation rule's patience (see queued.resources).
        self.node_resources = resources or NodeResources()
        self.descriptors_reserved = descriptors.FDS_RESERVED  # the daemon's own (the web page adds its share)
        self.log_folders = LogFolders(logs_dir)
        self.guardian = guardian
        self.clock = clock
        self.queues: dict[str, QueueInfo] = {}
        self.served: frozenset[str] | None = None  # the queues this node serves (`--queues`; None: all)
        # False while this node cannot vouch for its lease (see LeaseKeeper): nothing starts.
        self.lease_held = True
        self.read_ahead = ReadAhead()
        self.claiming_stopped = trio.Event()  # set once nothing more will start
        self._claiming = trio.CancelScope()  # the loop's claims; cancelled by stop_claiming
        self._claims_ended = trio.Event()  # the loop left its claims (what one took is settled)
        self._wake = trio.Event()
        self._change = trio.Event()
        self._drained = trio.Event()
        # Attempts it may still start (`queued --exit-after-jobs`), None: no end;
        # `budget_spent` is set once it reached 0.
        self.start_budget: int | None = None
        self.budget_spent = trio.Event()
        self._interrupted = False  # a stop "now": running jobs are stopped, kept ends may be left
        self._nursery: trio.Nursery | None = None
        self._store = StoreCalls(db)
        self._hold = StartHold()
        # Attempts' output goes into the store too when it keeps output (PostgreSQL): any node shows it.
        self.output = OutputCopies(db, self._tell_output_news) if db.engine.keeps_output else None
        # Told the jobs whose output in the store grew or whose attempt's end
        # committed (the handlers' OutputNews, wired by daemon.py).
        self.output_news: Callable[[Iterable[int]], None] | None = None
        self._ends = Ends(
            self._store, settings, guardian, self.log_folders, clock, self._end_recorded, self.output
        )
        self._ends.on_kept = self._check_drained
        self._claims_first = self._store.claims_before_start
        # Claims first: jobs claimed ahead of the free slots.
        self._ahead = ClaimedAhead()
        self._dry = False  # a claim found fewer jobs than it asked for: none ahead until news
        self._environments = JobEnvironments(instance)
        self._young = YoungAttempts(on_exit=self._exited_young, on_grown=self._grown)
        self.attempts = RunningAttempts(self._young)
        self.running = self.attempts.by_job
        # Claims first: the starts, give-backs and lost claims recorded after a claim.
        self._claim_records = ClaimRecords(
            self._store, self.attempts, clock, self.claiming_stopped, self.read_ahead.forget, self.wake
        )
        self._escapes = Escapes(
            instance, running=self.attempts.unreaped, grace=lambda: self.settings.kill_grace
        )

    # -- commands from the handlers ---------------------------------------------

    @property
    def accepting(self) -> bool:
        return not self.claiming_stopped.is_set()

    def wake(self) -> None:
        self._dry = False  # there may be more to claim
        self._wake.set()
        self._change.set()

    def changed_elsewhere(self) -> None:
        """Other nodes changed jobs (their news): for those who watch (the web page)."""
        self._change.set()

    def next_change(self) -> trio.Event:
        """An event set at the next change of jobs, slots or queues (for status reports)."""
        if self._change.is_set():
            self._change = trio.Event()
        return self._change

    def set_queues(self, queues: list[QueueInfo]) -> None:
        self.queues = {q.name: q for q in queues}
        self.read_ahead.forget()
        self._claim_records.give_back(self._ahead.remove(self._may_hold))
        self.wake()

    def hold_claims(self, held: bool) -> None:
        """While `held`, claim and start nothing (this node's lease is in doubt);
        attempts already running go on."""
        if held == (not self.lease_held):
            return
        self.lease_held = not held
        self.read_ahead.forget()
        if held:  # never started now: they may be rescued and run elsewhere
            self._claim_records.give_back(self._ahead.all())
        self.wake()

    def room_freed(self, queues: set[str]) -> None:
        """Attempts of `queues` ended on other nodes: a limited one among them
        may have room now, if this node has room for it."""
        room = self._room()
        if any(room.get(name) and self.queues[name].concurrency is not None for name in queues):
            self.wake()

    def set_concurrency(self, concurrency: int) -> None:
        self.settings.concurrency = concurrency
        self.wake()

    def stop_jobs(self, ids: list[int], reason: str) -> None:
        if self._ahead:
            stopped = set(ids)
            self._claim_records.give_back(self._ahead.remove(lambda job: job.id not in stopped))
        self.attempts.stop_jobs(ids, reason)

    def signal_jobs(self, ids: list[int], sig: int) -> None:
        if self.attempts.signal_jobs(ids, sig):
            self._change.set()

    def pause_jobs(self, ids: list[int], *, paused: bool) -> list[int]:
        changed = self.attempts.pause_jobs(ids, paused=paused)
        if changed:
            self._change.set()
        return changed

    def paused_ids(self) -> set[int]:
        return self.attempts.paused_ids()

    def running_in(self, queue: str | None = None) -> list[int]:
        return self.attempts.running_in(queue)

    def slots(self) -> list[Slot]:
        return self.attempts.slots()

    @property
    def busy(self) -> bool:
        """Whether an attempt runs here (or is claimed ahead), or an end waits for its record."""
        return bool(self.running) or bool(self._ahead) or self._ends.recording > 0

    def is_running(self, job_id: int) -> bool:
        """Whether `job_id` has an attempt whose end is not recorded yet."""
        return job_id in self.running

    def live_run(self, job_id: int, run: int) -> tuple[int | None, str, str]:
        """(pid, stdout path, stderr path) of attempt `run` while it runs: the
        store learns them when it ends. The pid is None unless it runs now."""
        out, err = self.log_folders.paths(job_id, run)
        attempt = self.running.get(job_id)
        pid = attempt.pid if attempt is not None and attempt.claimed.run == run else None
        return pid, str(out), str(err)

    def descriptor_shortfall(self, concurrency: int) -> str | None:
        """Why the descriptor limit cannot carry `concurrency` attempts, or None."""
        return descriptors.shortfall(concurrency, descriptors.current_limit(), self.descriptors_reserved)

    def look_for_orphans(self) -> None:
        """Adopt, and stop, what another process of the daemon's left outside
        its group (an on-finish command): see `Escapes`."""
        self._escapes.look()

    def stop_claiming(self) -> None:
        """Start nothing more: the loop's claims are cancelled where they wait."""
        self._claiming.cancel()
        self.claiming_stopped.set()
        self.read_ahead.forget()
        self._check_drained()

    async def drain(self, interrupt: trio.Event) -> None:
        """Stop claiming and return once no attempt runs or awaits its record;
        once `interrupt` is set (already, or meanwhile), stop the running ones."""
        self.stop_claiming()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._interrupt_when, interrupt)
            await self._claims_ended.wait()
            await self._drained.wait()
            nursery.cancel_scope.cancel()

    async def _interrupt_when(self, interrupt: trio.Event) -> None:
        await interrupt.wait()
        self._interrupted = True
        self.stop_jobs(list(self.running), "interrupt")
        self._check_drained()

    def _end_recorded(self, job_id: int) -> None:
        """An end's record committed (or failed for good): readers of the store
        (the web page, `logs -f`) see it now, and a drain may be complete."""
        self._change.set()
        self._tell_output_news((job_id,))
        self._check_drained()

    def _tell_output_news(self, job_ids: Iterable[int]) -> None:
        if self.output_news is not None:
            self.output_news(job_ids)

    def _check_drained(self) -> None:
        if not self.claiming_stopped.is_set() or self.running:
            return
        if not self._ends.recording:
            self._drained.set()
        elif self._interrupted and self._store.unreachable and self._ends.recording == self._ends.kept:
            # Stopping now: the ends the store cannot take are left to the
            # next start's recovery (interrupted attempts, retried).
            log.warning(
                "%d attempt ends are not recorded: the job store is unreachable; "
                "they are recovered as interrupted",
                self._ends.kept,
            )
            self._drained.set()

    # -- the loop -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = self._ends.nursery = self._claim_records.nursery = nursery
            await nursery.start(self._young.run)
            await nursery.start(self._escapes.run)
            nursery.start_soon(self._wake_when_reconnected)
            task_status.started()
            with self._claiming:
                while True:
                    self._wake = trio.Event()
                    deadline = await self._claim_due()
                    with trio.move_on_at(deadline):
                        await self._wake.wait()
            # Claiming stopped; the attempts still running end in the nursery's tasks.
            given_back = self._claim_records.give_back(self._ahead.all())
            if given_back is not None:
                with trio.CancelScope(shield=True):
                    await given_back.done.wait()  # on disk before a shutdown can end the writer
            self._claims_ended.set()

    async def _claim_due(self) -> float:
        """Start every job that is due and has room; return when to look again."""
        while True:
            if self._store.lost is not None:
                return math.inf  # no start could be recorded: the database file is gone
            if self._store.unreachable:
                return math.inf  # claims resume when it answers again (_wake_when_reconnected)
            if not self.guardian.ready:
                return math.inf  # nothing starts unguarded; a new guardian wakes us
            if not self.lease_held:
                return math.inf  # the lease keeper wakes us once the lease holds again
            now = self.clock()
            if self._hold.holds(now):
                return self._deadline(self._hold.until)
            if self._claims_first:
                try:
                    deadline = await self._claim_first(now)
                except StorageError as exc:
                    self._cannot_claim(exc)
                    continue
                if deadline is None:
                    continue
                return deadline
            room = self._room()
            if not any(room.values()):
                return math.inf  # an exit, a resume or more concurrency will wake us
            if not self.read_ahead.valid_for(now, self._store.marks):
                try:
                    if not await self._look_ahead(now):  # something that can unclaim jobs came in meanwhile
                        await self._claim_committed()
                        continue
                except StorageError as exc:
                    self._cannot_claim(exc)
                    continue
                now = self.clock()
                room = self._room()
            if self._start_ahead(now, room) or self._hold.holds(self.clock()):
                continue
            if self.read_ahead.more_may_be_due():
                # Those read ahead all wait for full queues, and others may be
                # due beyond them: look in the store, then sleep until its next
                # timer (any other change wakes us, and we read again).
                try:
                    if await self._claim_committed():
                        continue
                    open_queues = [name for name, n in self._room().items() if n > 0]
                    due = await self._store.next_due(self.clock(), open_queues)
                except StorageError as exc:
                    self._cannot_claim(exc)
                    continue
                return self._deadline(math.inf if due is None else due)
            return self._deadline(self.read_ahead.next_look())

    async def _claim_first(self, now: float) -> float | None:
        """A round of claiming first: start what is claimed ahead into free
        slots, claim for those left (and ahead, while attempts end quickly);
        when to look again, None for at once."""
        self._claim_records.give_back(self._ahead.expired(now))
        self._start_claimed_ahead(now)
        room = self._room()
        ahead = self._ahead_wanted(now)
        if not any(room.values()) and not ahead:
            # An exit, a resume or more concurrency will wake us; what is held expires.
            return self._deadline(self._ahead.next_expiry())
        if await self._claim_committed(ahead):
            return None
        room = self._room()
        if not any(room.values()):
            return self._deadline(self._ahead.next_expiry())
        due = await self._store.next_due(self.clock(), [q for q, n in room.items() if n > 0])
        return self._deadline(min(math.inf if due is None else due, self._ahead.next_expiry()))

    def _ahead_wanted(self, now: float) -> int:
        """How many jobs to claim ahead of the free slots now (claims first only)."""
        if self._dry or self.start_budget is not None or not self._claims_first:
            return 0
        if self.node_resources.gpus or self.node_resources.counts:
            return 0  # what a job held ahead would hold of them is nobody's: none ahead
        return self._ahead.wanted(now, self.settings.concurrency)

    def _may_hold(self, job: Claimed) -> bool:
        """Whether a job claimed ahead may stay so (see `_may_hold_queue`)."""
        queue = self.queues.get(job.queue)
        return queue is not None and self._may_hold_queue(queue)

    def _may_hold_queue(self, queue: QueueInfo) -> bool:
        """Whether jobs of `queue` may be claimed ahead: it is served, not
        paused, and has no limit of its own (a limit counts every claim)."""
        served = self.served is None or queue.name in self.served
        return served and not queue.paused and queue.concurrency is None

    def _start_claimed_ahead(self, now: float) -> int:
        """Start jobs claimed ahead into the free slots; how many started."""
        if not self._ahead or not self._may_start(now):
            return 0
        started = 0
        while self._free() > 0:
            room = self._room()
            free = self._free()
            job = self._ahead.take(
                lambda held, room=room, free=free: room.get(held.queue, 0) > 0 and held.slots <= free
            )
            if job is None:
                break
            if not self._start(job, now, committed=True):
                self._ahead.hold([job], now)  # no descriptor free: it waits (or expires)
                break
            started += 1
        return started

    def _may_start(self, now: float) -> bool:
        return not (
            self.claiming_stopped.is_set()
            or not self.lease_held
            or not self.guardian.ready
            or self._hold.holds(now)
            or self._store.lost is not None  # no start could be recorded
            or self._store.unreachable
        )

    def _cannot_claim(self, exc: StorageError) -> None:
        """A failing store (a full disk) holds claiming back a while; it never
        stops the supervisor, and the running jobs go on. An unreachable one
        holds it until it answers again (the writer logs the outage)."""
        if isinstance(exc, StoreUnreachable):
            return
        log.error("cannot claim jobs: %s; retrying in %.0f s", exc, HOLD_SECONDS)
        self._hold.hold(self.clock() + HOLD_SECONDS)

    async def _wake_when_reconnected(self) -> None:
        """After the store was unreachable: claim again, without anyone's help."""
        while True:
            await self._store.reconnected().wait()
            self.wake()

    def _deadline(self, when: float) -> float:
        """A clock time as a trio deadline."""
        if when == math.inf:
            return math.inf
        return trio.current_time() + max(0.0, when - self.clock())

    def _free(self) -> int:
        """How many attempts may start: the slots free, and no more than the
        start budget (none once it is spent)."""
        free = self.settings.concurrency - self.attempts.slots_held
        return free if self.start_budget is None else min(free, self.start_budget)

    def _pool(self, slots_taken: int = 0) -> Pool:
        """What is free of the node, less `slots_taken` (by plain jobs taken
        in the start under way)."""
        attempts = self.attempts
        slots = self.settings.concurrency - attempts.slots_held - slots_taken
        return self.node_resources.free(slots, attempts.counts_held, attempts.gpus_held)

    def could_never_run(self, slots: int, needs: dict[str, int]) -> str | None:
        """Why this node could not run a job taking `slots` and needing
        `needs`, even idle (one line, for a refused add), or None."""
        return refusal(slots, needs, self.node_resources.capacity(self.settings.concurrency))

    def resources(self) -> Resources:
        """This node's resources, capacity and use (for `status`, and on a
        shared store each heartbeat's `nodes.resources`): its slots (the
        concurrency) and those its running jobs take, its counted resources
        and GPUs and those its running jobs hold."""
        attempts = self.attempts
        counts = self.node_resources.counts
        return Resources(
            slots=self.settings.concurrency,
            slots_used=attempts.slots_held,
            counts=dict(counts),
            counts_used={name: attempts.counts_held.get(name, 0) for name in counts},
            gpus=list(self.node_resources.gpus),
            gpus_used=sorted(attempts.gpus_held),
        )

    def _room(self) -> dict[str, int]:
        served = self.queues.values()
        if self.served is not None:
            served = [queue for queue in served if queue.name in self.served]
        return queue_room(self._free(), served, self.attempts.per_queue)

    async def _look_ahead(self, now: float) -> bool:
        """Read the next due jobs; False if they may be stale already."""
        read_at = self._store.marks
        ahead = await self._store.lookahead(
            now=now,
            horizon=now + AHEAD_SECONDS,
            queues=[
                name
                for name, queue in self.queues.items()
                if not queue.paused and (self.served is None or name in self.served)
            ],
            busy=list(self.running),
            limit=self.settings.concurrency + AHEAD_EXTRA,
        )
        return self.read_ahead.load(ahead, read_at, self._store.marks)

    def _start_ahead(self, now: float, room: dict[str, int]) -> int:
        """Start jobs read ahead while there is room; how many started."""
        concurrency = self.settings.concurrency
        jobs = self.read_ahead.take(
            now,
            room,
            self._free(),
            lambda slots_taken: self.node_resources.allocator(concurrency, self._pool(slots_taken), now),
        )
        for started, job in enumerate(jobs):
            if not self.guardian.ready or not self._start(job, now, committed=False):
                self.read_ahead.give_back(jobs[started:])  # no descriptor (or guardian): they wait
                return started
        return len(jobs)

    async def _claim_committed(self, ahead: int = 0) -> int:
        """Claim with a committed transaction before starting anything: always
        right, at the price of a commit between an exit and the next start.
        Claims first: also up to `ahead` more of the queues that may be held
        ahead, claimed not started (those that find no free slot are held).
        How many it started or held."""
        self.read_ahead.forget()
        now = self.clock()
        room = self._room()
        free = self._free()
        if ahead:
            for name, queue in self.queues.items():
                if name in room and self._may_hold_queue(queue):
                    room[name] += ahead
        slots = max(0, free) + ahead
        if slots <= 0 or not any(room.values()):
            return 0
        with trio.CancelScope(shield=True):  # once claimed, a job starts or waits again
            try:
                claimed = await self._store.claim(
                    now=now,
                    slots=slots,
                    queue_room=room,
                    busy=list(self.running),
                    # Jobs claimed ahead take slots only (see _ahead_wanted): the fit counts them.
                    fit=self.node_resources.fit(self.settings.concurrency, self._pool(-ahead)),
                    started=not self._claims_first,
                )
            except CommitUnknown as exc:
                self._claim_records.unclaim_when_back(exc.result or [], now)
                raise
            if len(claimed) < slots:
                self._dry = True  # no more now: none ahead until news of more
            if self._claims_first:
                now = self.clock()  # the attempts start now (`mark_started` says so)
            started = 0
            while started < len(claimed) and not self.claiming_stopped.is_set() and self.lease_held:
                job = claimed[started]
                if self._free() < job.slots or not self._room().get(job.queue, 0):
                    if not self._claims_first:
                        break
                    self._ahead.hold(claimed[started:], now)
                    return len(claimed)
                if not self._start(job, now, committed=True):
                    break  # no descriptor free
                started += 1
            if started < len(claimed):
                self.read_ahead.forget()
                unclaims = [self._store.unclaim(job, now) for job in claimed[started:]]
                await unclaims[-1].done.wait()  # on disk before a shutdown can end the writer
        return started

    def _start(self, claimed: Claimed, now: float, *, committed: bool) -> bool:
        """Spawn the attempt's process and, unless its claim committed already,
        queue its start's record behind it. False when no descriptor was free:
        then nothing started and nothing was recorded. A spawn that failed is
        handed on as an end, never ended here."""
        failure: Exit | None = None
        process: JobProcess | None = None
        try:
            self.log_folders.check(claimed.id)
            env = self._environments.for_attempt(claimed.env, job_id=claimed.id, run=claimed.run)
            if self.node_resources.gpus:
                env[CUDA_VISIBLE_DEVICES] = cuda_visible_devices(claimed.gpus)
            process = JobProcess(claimed.command, cwd=claimed.cwd, env=env)
        except OutOfDescriptors as exc:
            now = self.clock()
            self._hold.for_descriptors(claimed.id, str(exc), len(self.running), now, now + HOLD_SECONDS)
            self.wake()
            return False
        except SpawnError as exc:
            failure = lifecycle.spawn_failure(str(exc), lasting=exc.lasting)
        except LogsUnusable as exc:
            failure = lifecycle.spawn_failure(str(exc))
        except Exception as exc:
            failure = fault_outcome(claimed, exc)
        record = None if committed else self._store.start(claimed, now, claimed.gpus)
        attempt = Attempt(claimed, now, self.log_folders.paths(claimed.id, claimed.run), record)
        self.attempts.add(attempt)
        if self.start_budget is not None:
            self.start_budget -= 1
            if self.start_budget <= 0:
                self.budget_spent.set()
        if record is None:  # its claim committed the start: news for those watching (the web page)
            self._change.set()
            if self._claims_first:
                self._claim_records.mark_started(attempt)
        if record is not None:
            # The process runs while its start's record commits; if that fails, it stops.
            record.on_done = lambda call: self._start_recorded(attempt, call)
        if process is None:
            self._follow(attempt, partial(_already, failure or lifecycle.spawn_failure("unknown")))
            return True
        try:
            attempt.spawned(process, self.settings.log_max_size, self.output)
            self.guardian.register(process.pid)
            self._young.add(attempt)
        except Exception as exc:
            self._follow(attempt, partial(_already, self._abandon(attempt, exc)))
        return True

    def _start_recorded(self, attempt: Attempt, start: Call) -> None:
        """If the store refused an attempt's start (a failing disk, a job that
        changed since it was read), the process stops and the job, if still
        due, is read again after a pause that keeps a refusing disk (or a bug)
        from turning this into a spawn loop."""
        self._change.set()  # the start is in the store now: readers (the web page) see it
        if start.error is None:
            return
        log.error("job %d: its start was not recorded (%s); stopped", attempt.claimed.id, start.error)
        self.attempts.stop(attempt, "unrecorded")
        self.read_ahead.forget()
        self._hold.hold(self.clock() + HOLD_SECONDS)
        self.wake()

    # -- one attempt: every end reaches _end, once --------------------------------

    def _exited_young(self, attempt: Attempt) -> None:
        """Its leader exited while young (told by `YoungAttempts`)."""
        try:
            if not attempt.reap_young(self._reaped):
                self._follow(attempt, attempt.drain)  # an escaped process holds a pipe: drain it a while
                return
            outcome = attempt.young_outcome()
        except Exception as exc:
            outcome = self._abandon(attempt, exc)
        self._end(attempt, outcome)

    def _grown(self, attempt: Attempt) -> None:
        """It lives on (or is to be stopped): a task of its own watches it."""
        self._follow(attempt, partial(self._watch, attempt))

    async def _watch(self, attempt: Attempt) -> Exit:
        with self._escapes.long_attempt():
            return await attempt.watch(
                grace=self.settings.kill_grace, reaped=self._reaped, signal_escapees=self._signal_escapees
            )

    def _follow(self, attempt: Attempt, outcome: Callable[[], Awaitable[Exit]]) -> None:
        """See the attempt to its end in a task of the loop's nursery."""
        assert self._nursery is not None
        self._nursery.start_soon(self._see_through, attempt, outcome)

    async def _see_through(self, attempt: Attempt, outcome: Callable[[], Awaitable[Exit]]) -> None:
        try:
            ended = await outcome()
        except Exception as exc:
            ended = self._abandon(attempt, exc)
        self._end(attempt, ended)

    def _end(self, attempt: Attempt, outcome: Exit) -> None:
        """The attempt's process is gone: free its slot, record its end, and
        start the next job read ahead in the slot."""
        job = attempt.claimed
        self.attempts.remove(attempt)
        self._hold.attempt_ended()  # its descriptors are free now
        if self._claims_first:
            now = self.clock()
            self._ahead.ended(now - attempt.started_at, now)
        # Queued before the read that the free slot leads to, so that the read
        # sees what this end released.
        self._ends.record(attempt, outcome)
        if (job.has_dependents and outcome.succeeded) or attempt.stop_reason is not None:
            # Jobs it released, or (stopped) its own job, retried while its
            # process lived: the reads ahead left that one out as busy.
            self.read_ahead.forget()
        if self._claims_first:
            # The next job claimed ahead starts in the slot at once; the loop claims more.
            self._start_claimed_ahead(self.clock())
            self._wake.set()
            self._change.set()
        elif self._start_in_freed_slot():
            self._change.set()
        else:
            self.wake()

    def _start_in_freed_slot(self) -> bool:
        """Start the next job read ahead into the slot an end just freed, without
        a round of the loop; False when the loop must look (nothing valid read
        ahead, or slots still free)."""
        now = self.clock()
        if (
            self._claims_first  # nothing starts unclaimed: the loop claims for the slot
            or self.claiming_stopped.is_set()
            or not self.lease_held
            or not self.guardian.ready
            or self._hold.holds(now)
            or self._store.lost is not None  # no start could be recorded
            or self._store.unreachable
            or not self.read_ahead.valid_for(now, self._store.marks)
        ):
            return False
        self._start_ahead(now, self._room())
        return self.attempts.slots_held >= self.settings.concurrency

    def _abandon(self, attempt: Attempt, exc: BaseException) -> Exit:
        """A fault in handling a started attempt: it fails (`fault_outcome`),
        its group is killed and its leader collected, whatever state the fault
        left them in, and what it left outside its group is stopped."""
        outcome = fault_outcome(attempt.claimed, exc)
        abandon(attempt, self._reaped)
        return outcome

    def _reaped(self, attempt: Attempt) -> None:
        """Its leader is reaped: what it left outside its group is stopped."""
        self._escapes.ended(attempt.claimed.id, attempt.claimed.run)

    def _signal_escapees(self, attempt: Attempt, sig: int) -> None:
        if attempt.pid is not None:
            self._escapes.signal_attempt(attempt.claimed.id, attempt.claimed.run, attempt.pid, sig)

    # -- when the supervisor itself fails ----------------------------------------

    async def abort(self) -> None:
        """After the loop failed (a broken invariant): claim nothing more, stop
        every running job in order (SIGTERM to its group, SIGKILL after the
        grace period) and record each as interrupted."""
        self.stop_claiming()
        self._claims_ended.set()  # the loop is gone
        self._nursery = self._ends.nursery = self._claim_records.nursery = None
        attempts = list(self.running.values())
        live = [a.process for a in attempts if a.process is not None and a.process.returncode is None]
        for process in live:
            process.signal_group(signal.SIGTERM)
            process.signal_group(signal.SIGCONT)  # a paused job must run to see it
        with trio.move_on_after(self.settings.kill_grace):
            for process in live:
                await process.wait_exit()
        for attempt in attempts:
            abandon(attempt, self._reaped)
            if self.running.get(attempt.claimed.id) is attempt:
                self._end(attempt, lifecycle.INTERRUPTED)
        self._check_drained()


async def _already(outcome: Exit) -> Exit:
    """An end known at once (a spawn that failed), seen through as every other."""
    return outcome
