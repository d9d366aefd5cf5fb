"""The `on-finish` callback: a command of the user's run when a job ends.

Theory of operation: the database tells `notify` which jobs reached a final
state (completed, dead, canceled) in each commit, as it tells waiters. With no
`on-finish` set that is one attribute read per commit and nothing more. With
one set, the ids queue up; one task under the daemon's nursery reads those
jobs (one read per batch) and runs the command for each as a child process:
`/bin/sh -c CMD`, spawned as a job's attempt is (a session of its own), with
the job's id, state, exit code, command, queue, label and error in its
environment, and the daemon's marker with attempt 0: what it leaves outside
its group is stopped at once, as what a job leaves is, and the guardian stops
it with the daemon's jobs. At most
MAX_RUNNING run at once; each is given TIMEOUT_SECONDS, then its group gets
SIGTERM and, after `kill-grace`, SIGKILL; when it exits, what it left in its
group is killed, as after a job. Its output is dropped, but for the end of its
stderr, logged when it fails. Nothing it does reaches the job.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from collections.abc import Callable

import trio

from queued.processes.guardian_link import GuardianLink
from queued.processes.job_environment import JobEnvironments
from queued.processes.job_process import JobProcess, OutOfDescriptors, SpawnError
from queued.protocol import Job
from queued.settings import Settings
from queued.store import Store
from queued.store.writer import Writer

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 60.0
MAX_RUNNING = 4
STDERR_KEPT = 2048  # bytes of a failing callback's stderr that reach the log
BATCH = 256  # finished jobs read at once
READ_GRACE_SECONDS = 1.0  # for a pipe an escaped process still holds


class Callbacks:
    def __init__(
        self,
        db: Writer,
        settings: Settings,
        guardian: GuardianLink,
        environments: JobEnvironments,
        look_for_orphans: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.look_for_orphans = look_for_orphans
        self.settings = settings
        self.guardian = guardian
        self.environments = environments
        self._finished: deque[int] = deque()
        self._arrival = trio.Event()
        self._limiter = trio.CapacityLimiter(MAX_RUNNING)
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()

    def notify(self, finished: list[int]) -> None:
        """Jobs that just reached a final state (called after their commit)."""
        if self.settings.on_finish is None:
            return
        self._finished.extend(finished)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._arrival.set()

    async def idle(self) -> None:
        """Until every callback queued so far has run."""
        await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                if not self._finished:
                    if not self._running:
                        self._idle.set()
                    self._arrival = trio.Event()
                    await self._arrival.wait()
                ids = [self._finished.popleft() for _ in range(min(BATCH, len(self._finished)))]
                command = self.settings.on_finish
                if command is None:  # unset meanwhile
                    continue
                for job in await self.db.read(Store.jobs_by_id, ids):
                    slot = object()  # borrowed here, given back by the callback's task
                    await self._limiter.acquire_on_behalf_of(slot)
                    self._running += 1
                    nursery.start_soon(self._run_one, command, job, slot)

    async def _run_one(self, command: str, job: Job, slot: object) -> None:
        try:
            await self._call(command, job)
        except Exception:  # a callback never takes the daemon down
            log.exception("on-finish for job %d failed", job.id)
        finally:
            self._running -= 1
            self._limiter.release_on_behalf_of(slot)
            if not self._running and not self._finished:
                self._idle.set()

    async def _call(self, command: str, job: Job) -> None:
        # Attempt 0 names no attempt: what it leaves outside its group is stopped at once.
        env = self.environments.for_attempt(dict(os.environ), job_id=job.id, run=0)
        env.update(
            QUEUED_JOB_STATE=job.state,
            QUEUED_JOB_EXIT_CODE="" if job.exit_code is None else str(job.exit_code),
            QUEUED_JOB_COMMAND=job.command,
            QUEUED_JOB_QUEUE=job.queue,
            QUEUED_JOB_LABEL=job.label or "",
            QUEUED_JOB_ERROR=job.error or "",
        )
        try:
            process = JobProcess(command, cwd=os.getcwd(), env=env)  # spawned as a job is
        except (SpawnError, OutOfDescriptors, OSError) as exc:
            log.warning("on-finish for job %d could not start: %s", job.id, exc)
            return
        self.guardian.register(process.pid)
        stderr = bytearray()
        try:
            async with trio.open_nursery() as readers:
                readers.start_soon(_read, process.stdout, None)
                readers.start_soon(_read, process.stderr, stderr)
                with trio.move_on_after(TIMEOUT_SECONDS) as scope:
                    await process.wait_exit()
                if scope.cancelled_caught:
                    log.warning("on-finish for job %d ran over %.0f s: stopped", job.id, TIMEOUT_SECONDS)
                    await _stop(process, self.settings.kill_grace)
                process.reap()  # and whatever it left in its group
                readers.cancel_scope.deadline = trio.current_time() + READ_GRACE_SECONDS
        finally:
            if process.returncode is None:  # cancelled: the daemon is stopping
                process.reap()
            self.guardian.unregister(process.pid)
            self.look_for_orphans()  # what it started outside its group, as after a job
        if process.returncode != 0:
            tail = bytes(stderr[-STDERR_KEPT:]).decode(errors="replace").strip()
            log.warning(
                "on-finish for job %d exited with status %d%s",
                job.id,
                process.returncode,
                f": {tail}" if tail else "",
            )


async def _read(fd: int, kept: bytearray | None) -> None:
    """Read a pipe to its end, keeping the last STDERR_KEPT bytes in `kept`."""
    os.set_blocking(fd, False)
    try:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                return
            if kept is not None:
                kept += data
                del kept[:-STDERR_KEPT]
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


async def _stop(process: JobProcess, grace: float) -> None:
    process.signal_group(signal.SIGTERM)
    process.signal_group(signal.SIGCONT)
    with trio.move_on_after(grace):
        await process.wait_exit()
        return
    process.signal_group(signal.SIGKILL)
    await process.wait_exit()
