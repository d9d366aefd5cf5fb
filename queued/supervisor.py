"""The supervisor: claims due jobs into free slots and sees each attempt through.

Theory of operation: one loop task owns the slots. It claims as many due jobs
as there is room for (globally and per queue), starts one task per attempt in
its nursery, then sleeps until something could change the answer: `wake()`
(a new job, an exit, a queue or concurrency change) or the earliest future
run_at. Nothing polls; an idle daemon sleeps in the kernel. Each attempt task
spawns the process, copies its output, enforces its timeout, reaps it and
records the outcome, deciding nothing itself: `Store.finish` asks `lifecycle`.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import trio

from . import lifecycle
from .database import Database, StorageError
from .guardian import GuardianLink
from .lifecycle import Exit, Settings
from .process import CappedLog, JobProcess, SpawnError, job_environment
from .protocol import QueueInfo, Slot
from .store import Store
from .store_attempts import Claimed

log = logging.getLogger(__name__)
# After the leader exits, output still buffered in the pipes is drained for at
# most this long: a process that escaped the group may hold a pipe open forever.
DRAIN_SECONDS = 2.0
QUICK_EXIT_SECONDS = 0.05


class Attempt:
    """A running attempt and how to stop it."""

    def __init__(self, claimed: Claimed, started_at: float) -> None:
        self.claimed = claimed
        self.started_at = started_at
        self.pid: int | None = None
        self.scope = trio.CancelScope()
        self.stop_reason: str | None = None  # "cancel" or "interrupt"

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.scope.cancel()


class Supervisor:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        logs_dir: Path,
        guardian: GuardianLink,
        instance: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.settings = settings
        self.logs_dir = logs_dir
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
        self._log_folders: set[Path] = set()

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
        self.wake()

    def set_concurrency(self, concurrency: int) -> None:
        self.settings.concurrency = concurrency
        self.wake()

    def stop_jobs(self, ids: list[int], reason: str) -> None:
        for job_id in ids:
            attempt = self.running.get(job_id)
            if attempt is not None:
                attempt.stop(reason)

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
            )
            for a in sorted(self.running.values(), key=lambda a: a.claimed.id)
        ]

    # -- the loop -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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
        now = self.clock()
        room = self._queue_room()
        free = self.settings.concurrency - len(self.running)
        if free > 0 and any(room.values()):
            try:
                claimed = await self.db.run(
                    Store.claim, now=now, slots=free, queue_room=room, busy=list(self.running)
                )
            except StorageError as exc:
                log.error("cannot claim jobs: %s; retrying in 1 s", exc)
                return trio.current_time() + 1
            for job in claimed:
                self._start(job, now)
            room = self._queue_room()
            free = self.settings.concurrency - len(self.running)
        if free <= 0:
            return math.inf  # an exit will wake us
        open_queues = [name for name, n in room.items() if n > 0]
        due = await self.db.run(Store.next_due, now, open_queues)
        if due is None:
            return math.inf
        return trio.current_time() + max(0.0, due - self.clock())

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

    def _start(self, claimed: Claimed, now: float) -> None:
        assert self._nursery is not None
        attempt = Attempt(claimed, now)
        self.running[claimed.id] = attempt
        self._nursery.start_soon(self._run_attempt, attempt)

    def _check_drained(self) -> None:
        if not self.accepting and not self.running and not self._recording:
            self._drained.set()

    # -- one attempt ------------------------------------------------------------

    async def _run_attempt(self, attempt: Attempt) -> None:
        job = attempt.claimed
        out_path, err_path = self._log_paths(job)
        try:
            process = JobProcess(
                job.command,
                cwd=job.cwd,
                env=job_environment(job.env, job_id=job.id, run=job.run, instance=self.instance),
            )
        except SpawnError as exc:
            outcome = lifecycle.spawn_failure(str(exc))
        else:
            self.guardian.register(process.pid)
            attempt.pid = process.pid
            outcome = await self._supervise(attempt, process, out_path, err_path)
            self.guardian.unregister(process.pid)
        # The slot is free now: the claim it allows joins this finish's transaction.
        del self.running[job.id]
        self._recording += 1
        self.wake()
        try:
            await self._record(job, outcome, attempt.pid, out_path, err_path)
        finally:
            self._recording -= 1
            self._check_drained()

    async def _supervise(self, attempt: Attempt, process: JobProcess, out: Path, err: Path) -> Exit:
        timeout = attempt.claimed.timeout
        cap = self.settings.log_max_size
        logs = [CappedLog(process.stdout, out, cap), CappedLog(process.stderr, err, cap)]
        copying = False
        async with trio.open_nursery() as copies:
            if timeout is not None:
                attempt.scope.deadline = trio.current_time() + timeout
            with attempt.scope:
                # Most jobs of a busy queue end at once, their output still in the
                # pipes: no reader tasks for them. A pipe holds 64 KiB, so a job
                # that prints more waits at most QUICK_EXIT_SECONDS for a reader.
                with trio.move_on_after(QUICK_EXIT_SECONDS) as quick:
                    await process.wait_exit()
                if quick.cancelled_caught:
                    copying = True
                    for log_ in logs:
                        copies.start_soon(log_.copy)
                    await process.wait_exit()
            if attempt.scope.cancelled_caught:
                if not copying:
                    copying = True
                    for log_ in logs:
                        copies.start_soon(log_.copy)
                await self._terminate(process)
            returncode = process.reap()
            if not copying:
                for log_ in logs:
                    if not log_.drain_now():  # an escaped process holds the pipe
                        copies.start_soon(log_.copy)
            copies.cancel_scope.deadline = trio.current_time() + DRAIN_SECONDS
        if attempt.stop_reason == "cancel":
            return Exit(False, None, -returncode if returncode < 0 else None, "canceled by user")
        if attempt.stop_reason == "interrupt":
            return lifecycle.INTERRUPTED
        if attempt.scope.cancelled_caught:
            return lifecycle.classify_exit(returncode, timed_out_after=timeout)
        return lifecycle.classify_exit(returncode)

    async def _terminate(self, process: JobProcess) -> None:
        """SIGTERM the job's group, then SIGKILL it after the grace period."""
        with trio.CancelScope(shield=True):
            process.signal_group(signal.SIGTERM)
            with trio.move_on_after(self.settings.kill_grace):
                await process.wait_exit()
                return
            process.signal_group(signal.SIGKILL)
            await process.wait_exit()

    async def _record(self, job: Claimed, outcome: Exit, pid: int | None, out: Path, err: Path) -> None:
        """Store the attempt's end; a failing disk only delays it, never drops it."""
        while True:
            try:
                state = await self.db.run(
                    Store.finish,
                    job,
                    outcome,
                    self.settings.backoff_max,
                    self.clock(),
                    pid=pid,
                    stdout=str(out),
                    stderr=str(err),
                )
            except StorageError as exc:
                log.error("cannot record the end of job %d: %s; retrying in 1 s", job.id, exc)
                await trio.sleep(1)
                continue
            # Every attempt at debug level; failures at info, where people look.
            level = logging.DEBUG if outcome.succeeded else logging.INFO
            log.log(level, "job %d attempt %d: %s -> %s", job.id, job.run, outcome.error or "exit 0", state)
            return

    def log_paths(self, job_id: int, run: int) -> tuple[Path, Path]:
        """Where an attempt's stdout and stderr go: a folder per thousand jobs."""
        folder = self.logs_dir / str(job_id // 1000)
        stem = f"{job_id}.{run}"
        return folder / f"{stem}.out", folder / f"{stem}.err"

    def _log_paths(self, job: Claimed) -> tuple[Path, Path]:
        paths = self.log_paths(job.id, job.run)
        folder = paths[0].parent
        if folder not in self._log_folders:
            folder.mkdir(mode=0o700, exist_ok=True)
            self._log_folders.add(folder)
        return paths
