"""The supervisor: claims due jobs into free slots and sees each attempt through.

Theory of operation: one loop task owns the slots. It starts as many due jobs
as there is room for (globally and per queue), then sleeps until something
could change the answer: `wake()` (a new job, an exit, a queue or concurrency
change) or the earliest future run_at. Nothing polls; an idle daemon sleeps in
the kernel. Young attempts are watched together (`YoungAttempts`: most jobs of
a busy queue end within milliseconds); one that lives longer, or is to be
stopped, gets a task of its own in the loop's nursery (`Attempt.watch`). Each
end is recorded without deciding anything here: `Store.finish` asks
`lifecycle`.

Starting from memory: the loop reads the next due jobs ahead (`Store.lookahead`)
and starts them one by one as slots free up, queueing each start's record
(`Store.start`) behind the process instead of waiting for a commit before
it. The jobs read ahead stay valid while no call that could make one of them
unclaimable has been queued since the read (`Writer.epoch`), and no job that
could outrank them has appeared (`Writer.additions`, a due time reached).
Records run in the order they are queued, so a start is on disk before its
attempt's end, and before any later request sees the job. A crash before the
start's commit leaves the job pending: it runs again, as a job running at the
crash does.

Faults around one attempt are that attempt's: an unexpected error while
starting, watching or ending it ends it as failed with the error's text
(retried under its policy) and is logged once, with its traceback. The checks
sit at the few entry points (`_start`, `_exited_young`, the tasks of grown and
draining attempts), so they cost nothing per job. A spawn that finds no free
descriptor starts nothing: the job stays due and is tried again when an
attempt ends (or after HOLD_SECONDS).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import trio

from queued import lifecycle
from queued.lifecycle import Exit
from queued.processes import descriptors
from queued.processes.attempt import Attempt
from queued.processes.escapes import Escapes
from queued.processes.guardian_link import GuardianLink
from queued.processes.job_process import JobEnvironments, JobProcess, OutOfDescriptors, SpawnError
from queued.processes.log_folders import LogFolders, LogsUnusable
from queued.processes.young_attempts import YoungAttempts
from queued.protocol import QueueInfo, Slot
from queued.settings import Settings
from queued.store import Claimed, StorageError, Store
from queued.store.writer import Call, Writer

# Jobs read ahead beyond the slots: enough that a busy drain reads rarely, few
# enough that the read stays cheap.
AHEAD_EXTRA = 32
# Jobs due within this are read ahead too, so that their timers start them
# from memory rather than after a read queued behind whatever commits.
AHEAD_SECONDS = 1.0
# After a start's record was refused, claiming waits this long.
HOLD_SECONDS = 1.0
# A want of descriptors that lasts is logged at most this often.
SHORTAGE_LOG_SECONDS = 60.0

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
    ) -> None:
        self.db = db
        self.settings = settings
        self.log_folders = LogFolders(logs_dir)
        self.guardian = guardian
        self.instance = instance
        self.clock = clock
        self.running: dict[int, Attempt] = {}
        self.queues: dict[str, QueueInfo] = {}
        self.accepting = True
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._change = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._recording = 0  # attempts ended but not yet committed
        self._environments = JobEnvironments(instance)
        # Due jobs read ahead, in claim order, and what they are valid for.
        self._ahead: deque[Claimed] = deque()
        self._ahead_complete = False  # no due job beyond those in _ahead
        self._upcoming: list[Claimed] = []  # due later, by run_at (kept only when complete)
        self._ahead_until = -math.inf  # clock time of the first run_at not read: read again then
        self._ahead_marks = (-1, -1)  # (epoch, additions) of the read
        self._hold_until = -math.inf
        self._descriptor_hold = False  # the hold lasts until an attempt ends
        self._shortage_told = -math.inf  # when the want of descriptors was last logged
        self._shortage_held = 0  # starts it deferred since
        self._starting = False  # in _start_ahead (a failed spawn ends at once)
        self._young = YoungAttempts(on_exit=self._exited_young, on_grown=self._grown)
        self._escapes = Escapes(instance, running=self._running_keys, grace=lambda: self.settings.kill_grace)

    # -- commands from the handlers ---------------------------------------------

    def wake(self) -> None:
        self._wake.set()
        self._change.set()

    def next_change(self) -> trio.Event:
        """An event set at the next change of jobs, slots or queues (for status reports)."""
        if self._change.is_set():
            self._change = trio.Event()
        return self._change

    def set_queues(self, queues: list[QueueInfo]) -> None:
        self.queues = {q.name: q for q in queues}
        self._forget_ahead()
        self.wake()

    def set_concurrency(self, concurrency: int) -> None:
        self.settings.concurrency = concurrency
        self.wake()

    def stop_jobs(self, ids: list[int], reason: str) -> None:
        for job_id in ids:
            attempt = self.running.get(job_id)
            if attempt is not None:
                self._stop(attempt, reason)

    def signal_jobs(self, ids: list[int], sig: int) -> None:
        """Send `sig` to running jobs' process groups (SIGSTOP and SIGCONT pause
        and resume them: see `pause_jobs`)."""
        for job_id in ids:
            attempt = self.running.get(job_id)
            if attempt is not None:
                if sig in (signal.SIGSTOP, signal.SIGCONT):
                    self.pause_jobs([job_id], paused=sig == signal.SIGSTOP)
                else:
                    attempt.signal(sig)

    def pause_jobs(self, ids: list[int], *, paused: bool) -> list[int]:
        """Stop (SIGSTOP) or continue (SIGCONT) running jobs' process groups;
        the ids of those that changed. A paused job keeps its slot, and its
        timeout waits with it. A young attempt is handed to a task of its own,
        which keeps the timeout."""
        changed = []
        for job_id in ids:
            attempt = self.running.get(job_id)
            if attempt is None or attempt.process is None or attempt.paused == paused:
                continue
            if paused:
                self._young.let_go(attempt)
                attempt.pause()
            else:
                attempt.resume()
            changed.append(job_id)
        if changed:
            self._change.set()
        return changed

    def look_for_orphans(self) -> None:
        """Adopt, and stop, what another process of the daemon's left outside
        its group (an on-finish command): see `Escapes`."""
        self._escapes.look()

    def paused_ids(self) -> set[int]:
        return {job_id for job_id, attempt in self.running.items() if attempt.paused}

    def running_in(self, queue: str | None = None) -> list[int]:
        """The running jobs (of `queue`, if given)."""
        return sorted(
            job_id for job_id, a in self.running.items() if queue is None or a.claimed.queue == queue
        )

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
        return descriptors.shortfall(concurrency, descriptors.current_limit())

    def _stop(self, attempt: Attempt, reason: str) -> None:
        attempt.stop(reason)
        self._young.let_go(attempt)  # its own task stops it

    def stop_claiming(self) -> None:
        self.accepting = False
        self._check_drained()
        self.wake()

    async def drain(self, *, interrupt: bool) -> None:
        """Stop claiming and wait until no attempt runs; with `interrupt`, stop them."""
        self.stop_claiming()
        if interrupt:
            self.stop_jobs(list(self.running), "interrupt")
        await self._drained.wait()

    def slots(self) -> list[Slot]:
        return [
            Slot(
                job_id=a.claimed.id,
                attempt=a.claimed.run,
                queue=a.claimed.queue,
                pid=a.pid,
                started_at=a.started_at,
                command=a.claimed.command,
                paused=a.paused,
            )
            for a in sorted(self.running.values(), key=lambda a: a.claimed.id)
        ]

    # -- the loop -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._young.run)
            await nursery.start(self._escapes.run)
            task_status.started()
            while True:
                self._wake = trio.Event()
                deadline = math.inf
                if self.accepting:
                    deadline = await self._claim_due()
                with trio.move_on_at(deadline):
                    await self._wake.wait()

    async def _claim_due(self) -> float:
        """Start every job that is due and has room; return when to look again."""
        while self.accepting:  # a drain may begin while we wait for the store
            if self.db.lost is not None:
                return math.inf  # no start could be recorded: the database file is gone
            if not self.guardian.ready:
                return math.inf  # nothing starts unguarded; a new guardian wakes us
            now = self.clock()
            if now < self._hold_until:
                return self._deadline(self._hold_until)
            room = self._queue_room()
            if not any(room.values()):
                return math.inf  # an exit, a resume or more concurrency will wake us
            if not self._ahead_valid(now):
                try:
                    fresh = await self._look_ahead(now)
                    if not fresh:  # something that can unclaim jobs came in meanwhile
                        await self._claim_committed()
                        continue
                except StorageError as exc:
                    log.error("cannot claim jobs: %s; retrying in %.0f s", exc, HOLD_SECONDS)
                    self._hold_until = self.clock() + HOLD_SECONDS
                    continue
                now = self.clock()
                room = self._queue_room()
            if self._start_ahead(now, room) or self.clock() < self._hold_until:
                continue
            if self._ahead and not self._ahead_complete:
                # Those read ahead all wait for full queues, and others may be
                # due beyond them: look in the store, then sleep until its next
                # timer (any other change wakes us, and we read again).
                if await self._claim_committed():
                    continue
                return await self._next_timer()
            return self._next_wake()
        return math.inf

    async def _next_timer(self) -> float:
        """When the store's next job is due in a queue that has room."""
        open_queues = [name for name, n in self._queue_room().items() if n > 0]
        due = await self.db.read(Store.next_due, self.clock(), open_queues)
        return self._deadline(math.inf if due is None else due)

    def _deadline(self, when: float) -> float:
        """A clock time as a trio deadline."""
        if when == math.inf:
            return math.inf
        return trio.current_time() + max(0.0, when - self.clock())

    def _forget_ahead(self) -> None:
        """Drop what was read ahead: the next look reads the store again."""
        self._ahead.clear()
        self._upcoming = []
        self._ahead_until = -math.inf

    def _ahead_valid(self, now: float) -> bool:
        if not self._ahead and not self._ahead_complete:
            return False
        return now < self._ahead_until and self._ahead_marks == (self.db.epoch, self.db.additions)

    async def _look_ahead(self, now: float) -> bool:
        """Read the next due jobs; False if they may be stale already."""
        marks = (self.db.epoch, self.db.additions)
        queues = [name for name, queue in self.queues.items() if not queue.paused]
        limit = self.settings.concurrency + AHEAD_EXTRA
        ahead = await self.db.read(
            Store.lookahead,
            now=now,
            horizon=now + AHEAD_SECONDS,
            queues=queues,
            busy=list(self.running),
            limit=limit,
        )
        if self.db.epoch != marks[0] or not self.accepting:
            self._forget_ahead()
            return False
        self._ahead = deque(ahead.jobs)
        self._ahead_complete = ahead.complete
        self._ahead_until = math.inf if ahead.until is None else ahead.until
        self._upcoming = ahead.upcoming
        if not ahead.complete and self._upcoming:
            # Due jobs beyond those read may outrank the upcoming ones once they
            # are due: read again then instead.
            self._ahead_until = self._upcoming[0].run_at
            self._upcoming = []
        self._ahead_marks = marks
        return True

    def _start_ahead(self, now: float, room: dict[str, int]) -> int:
        """Start jobs read ahead while there is room; how many started."""
        if self._upcoming and self._upcoming[0].run_at <= now:
            due = [job for job in self._upcoming if job.run_at <= now]
            self._upcoming = self._upcoming[len(due) :]
            self._ahead = deque(sorted([*self._ahead, *due], key=lambda job: job.claim_key))
        started = 0
        waiting: list[Claimed] = []  # for a full queue: they keep their place
        free = self.settings.concurrency - len(self.running)
        self._starting = True
        try:
            while self._ahead and free > 0 and self.accepting and self.guardian.ready:
                job = self._ahead.popleft()
                if room.get(job.queue, 0) <= 0:
                    waiting.append(job)
                    continue
                if not self._start(job, now, committed=False):
                    waiting.append(job)  # no descriptor free: it keeps its place
                    break
                room[job.queue] -= 1
                free -= 1
                started += 1
        finally:
            self._starting = False
        self._ahead.extendleft(reversed(waiting))
        return started

    def _next_wake(self) -> float:
        """When the jobs read ahead next need a look: the next upcoming job, or
        the first job not read."""
        upcoming = self._upcoming[0].run_at if self._upcoming else math.inf
        return self._deadline(min(upcoming, self._ahead_until))

    async def _claim_committed(self) -> int:
        """Claim with a committed transaction before starting anything: always
        right, at the price of a commit between an exit and the next start."""
        self._forget_ahead()
        now = self.clock()
        room = self._queue_room()
        free = self.settings.concurrency - len(self.running)
        if free <= 0 or not any(room.values()):
            return 0
        busy = list(self.running)
        claimed = await self.db.record_now(Store.claim, now=now, slots=free, queue_room=room, busy=busy)
        for started, job in enumerate(claimed):
            if not self._start(job, now, committed=True):
                for unstarted in claimed[started:]:  # no descriptor free: they wait again
                    self.db.record(Store.unclaim, unstarted, now)
                self._forget_ahead()
                return started
        return len(claimed)

    def _queue_room(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for attempt in self.running.values():
            busy[attempt.claimed.queue] = busy.get(attempt.claimed.queue, 0) + 1
        free = max(0, self.settings.concurrency - len(self.running))
        room = {}
        for name, queue in self.queues.items():
            if not queue.paused:
                limit = free if queue.concurrency is None else queue.concurrency - busy.get(name, 0)
                room[name] = max(0, min(free, limit))
        return room

    def _start(self, claimed: Claimed, now: float, *, committed: bool) -> bool:
        """Spawn the attempt's process and, unless its claim committed already,
        queue its start's record behind it. False when no descriptor was free:
        then nothing started and nothing was recorded."""
        failure: Exit | None = None
        process: JobProcess | None = None
        try:
            self.log_folders.check(claimed.id)
            env = self._environments.for_attempt(claimed.env, job_id=claimed.id, run=claimed.run)
            process = JobProcess(claimed.command, cwd=claimed.cwd, env=env)
        except OutOfDescriptors as exc:
            self._hold_for_descriptors(claimed, str(exc))
            return False
        except SpawnError as exc:
            failure = lifecycle.spawn_failure(str(exc), lasting=exc.lasting)
        except LogsUnusable as exc:
            failure = lifecycle.spawn_failure(str(exc))
        except Exception as exc:
            failure = self._fault(claimed, exc)
        record = None if committed else self.db.record(Store.start, claimed, now)
        attempt = Attempt(claimed, now, self.log_folders.paths(claimed.id, claimed.run), record)
        self.running[claimed.id] = attempt
        if record is not None:
            # The process runs while its start's record commits; if that fails, it stops.
            record.on_done = lambda call: self._start_recorded(attempt, call)
        if process is None:
            self._ended(attempt, failure or lifecycle.spawn_failure("unknown"))
            return True
        try:
            attempt.spawned(process, self.settings.log_max_size)
            self.guardian.register(process.pid)
            self._young.add(attempt)
        except Exception as exc:
            self._ended(attempt, self._abandon(attempt, exc))
        return True

    def _hold_for_descriptors(self, job: Claimed, reason: str) -> None:
        """No descriptor free for a spawn: claiming waits for an attempt to end
        (its descriptors free up), or HOLD_SECONDS (a client's may)."""
        self._shortage_held += 1
        if self.clock() - self._shortage_told >= SHORTAGE_LOG_SECONDS:
            log.warning(
                "job %d not started: %s (%d attempts running; %d starts deferred so far); "
                "jobs stay due and start once descriptors are free (see the descriptor limit in README)",
                job.id,
                reason,
                len(self.running),
                self._shortage_held,
            )
            self._shortage_told = self.clock()
        self._descriptor_hold = True
        self._hold_until = self.clock() + HOLD_SECONDS
        self.wake()

    def _abandon(self, attempt: Attempt, exc: BaseException) -> Exit:
        """A fault in handling a started attempt: it fails (see `_fault`), its
        group is killed and its leader collected, whatever state the fault left
        them in, and what it left outside its group is stopped."""
        outcome = self._fault(attempt.claimed, exc)
        attempt.abandon()
        try:
            self._reaped(attempt)
        except Exception:
            log.exception("job %d: what it left outside its group was not stopped", attempt.claimed.id)
        return outcome

    def _fault(self, job: Claimed, exc: BaseException) -> Exit:
        """An unexpected error in handling one attempt: logged once, with its
        traceback; the attempt ends as failed with the error's text."""
        text = fault_text(exc)
        log.error("job %d attempt %d: %s; the attempt ends as failed", job.id, job.run, text, exc_info=exc)
        return lifecycle.internal_failure(text)

    def _check_drained(self) -> None:
        if not self.accepting and not self.running and not self._recording:
            self._drained.set()

    # -- one attempt ------------------------------------------------------------

    def _exited_young(self, attempt: Attempt) -> None:
        try:
            if not attempt.reap_young(self._reaped):
                # An escaped process holds a pipe: drain it a while in a task.
                assert self._nursery is not None
                self._nursery.start_soon(self._finish_draining, attempt)
                return
            outcome = attempt.young_outcome()
        except Exception as exc:
            outcome = self._abandon(attempt, exc)
        self._ended(attempt, outcome)

    async def _finish_draining(self, attempt: Attempt) -> None:
        try:
            outcome = await attempt.drain()
        except Exception as exc:
            outcome = self._abandon(attempt, exc)
        self._ended(attempt, outcome)

    def _grown(self, attempt: Attempt) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._watch_grown, attempt)

    async def _watch_grown(self, attempt: Attempt) -> None:
        try:
            with self._escapes.long_attempt():
                outcome = await attempt.watch(
                    grace=self.settings.kill_grace, reaped=self._reaped, signal_escapees=self._signal_escapees
                )
        except Exception as exc:
            outcome = self._abandon(attempt, exc)
        self._ended(attempt, outcome)

    def _reaped(self, attempt: Attempt) -> None:
        """Its leader is reaped: what it left outside its group is stopped."""
        self._escapes.ended(attempt.claimed.id, attempt.claimed.run)

    def _signal_escapees(self, attempt: Attempt, sig: int) -> None:
        if attempt.pid is not None:
            self._escapes.signal_attempt(attempt.claimed.id, attempt.claimed.run, attempt.pid, sig)

    def _running_keys(self) -> set[tuple[int, int]]:
        """The attempts whose leaders are not reaped yet."""
        return {
            (a.claimed.id, a.claimed.run)
            for a in self.running.values()
            if a.process is not None and a.process.returncode is None
        }

    def _ended(self, attempt: Attempt, outcome: Exit) -> None:
        """The attempt's process is gone: free its slot and record its end."""
        job = attempt.claimed
        if attempt.process is not None:
            try:
                self.guardian.unregister(attempt.process.pid)
            except OSError as exc:  # its group is dead already: at worst the guardian kills nothing
                log.error("job %d: the guardian was not told of its end: %s", job.id, exc)
            if attempt.logs and (attempt.logs[0].lost or attempt.logs[1].lost):
                self.log_folders.forget(job.id)
        del self.running[job.id]
        if self._descriptor_hold:  # its descriptors are free now
            self._descriptor_hold = False
            self._hold_until = -math.inf
        self._recording += 1
        # Queued before the read that the free slot leads to, so that the read
        # sees what this end released.
        finish = self._submit_finish(attempt, outcome)
        finish.on_done = lambda call: self._recorded(attempt, outcome, call)
        if (job.has_dependents and outcome.succeeded) or attempt.stop_reason is not None:
            # Jobs it released, or (stopped) its own job, retried while its
            # process lived: the reads ahead left that one out as busy.
            self._forget_ahead()
        if self._start_in_freed_slot():
            self._change.set()
        else:
            self.wake()

    def _start_in_freed_slot(self) -> bool:
        """Start the next job read ahead into the slot an end just freed, without
        a round of the loop; False when the loop must look (nothing valid read
        ahead, slots still free, or a start under way: a failed spawn ends there)."""
        now = self.clock()
        if (
            self._starting
            or not self.accepting
            or not self.guardian.ready
            or now < self._hold_until
            or self.db.lost is not None  # no start could be recorded
            or not self._ahead_valid(now)
        ):
            return False
        self._start_ahead(now, self._queue_room())
        return len(self.running) >= self.settings.concurrency

    def _start_recorded(self, attempt: Attempt, start: Call) -> None:
        """If the store refused an attempt's start (a failing disk, a job that
        changed since it was read), the process stops and the job, if still
        due, is read again after a pause that keeps a refusing disk (or a bug)
        from turning this into a spawn loop."""
        if start.error is None:
            return
        log.error("job %d: its start was not recorded (%s); stopped", attempt.claimed.id, start.error)
        self._stop(attempt, "unrecorded")
        self._forget_ahead()
        self._hold_until = self.clock() + HOLD_SECONDS
        self.wake()

    def _submit_finish(self, attempt: Attempt, outcome: Exit) -> Call:
        job, (out, err) = attempt.claimed, attempt.log_paths
        backoff_max, now = self.settings.backoff_max, self.clock()
        return self.db.record(
            Store.finish,
            job,
            outcome,
            backoff_max,
            now,
            pid=attempt.pid,
            stdout=out,
            stderr=err,
            log_incomplete=attempt.log_incomplete(),
        )

    def _recorded(self, attempt: Attempt, outcome: Exit, finish: Call) -> None:
        """The end's record committed, or failed: a failing disk only delays it,
        never drops it. (After a refused start there is nothing to store.)"""
        refused = attempt.record is not None and attempt.record.error is not None
        if (
            isinstance(finish.error, StorageError)
            and not refused
            and self.db.lost is None
            and self._nursery is not None
        ):
            self._nursery.start_soon(self._record_again, attempt, outcome, finish.error)
            return
        job = attempt.claimed
        if finish.error is not None and not refused:
            log.error("job %d attempt %d: its end was not recorded: %s", job.id, job.run, finish.error)
        elif finish.error is None and finish.result is None:
            # Removed (`rm`, `clean`) while its process lived: no row names its logs.
            log.debug("job %d attempt %d ended after its job was removed", job.id, job.run)
            _unlink(attempt.log_paths)
        elif finish.error is None and not refused:
            # Every attempt at debug level; failures at info, where people look.
            level = logging.DEBUG if outcome.succeeded else logging.INFO
            said = outcome.error or "exit 0"
            log.log(level, "job %d attempt %d: %s -> %s", job.id, job.run, said, finish.result)
        self._recording -= 1
        self._check_drained()

    async def _record_again(self, attempt: Attempt, outcome: Exit, error: StorageError) -> None:
        while True:
            log.error("cannot record the end of job %d: %s; retrying in 1 s", attempt.claimed.id, error)
            await trio.sleep(1)
            finish = self._submit_finish(attempt, outcome)
            await finish.done.wait()
            if not isinstance(finish.error, StorageError) or self.db.lost is not None:
                self._recorded(attempt, outcome, finish)
                return
            error = finish.error

    # -- when the supervisor itself fails ----------------------------------------

    async def abort(self) -> None:
        """After the loop failed (a broken invariant): claim nothing more, stop
        every running job in order (SIGTERM to its group, SIGKILL after the
        grace period) and record each as interrupted."""
        self.accepting = False
        self._nursery = None
        attempts = list(self.running.values())
        live = [a.process for a in attempts if a.process is not None and a.process.returncode is None]
        for process in live:
            process.signal_group(signal.SIGTERM)
            process.signal_group(signal.SIGCONT)  # a paused job must run to see it
        with trio.move_on_after(self.settings.kill_grace):
            for process in live:
                await process.wait_exit()
        for attempt in attempts:
            attempt.abandon()
            try:
                self._reaped(attempt)
            except Exception:
                log.exception("job %d: what it left outside its group was not stopped", attempt.claimed.id)
            if self.running.get(attempt.claimed.id) is attempt:
                self._ended(attempt, lifecycle.INTERRUPTED)
        self._check_drained()


def _unlink(paths: tuple[str, str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def fault_text(exc: BaseException) -> str:
    """An unexpected error in a few words: its first leaf, named."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
