"""One attempt's process from its spawn to its end: its output copied into
capped log files, its timeout kept, a stop honoured (SIGTERM, then SIGKILL
after a grace period), and the `Exit` that results. Deciding what the exit
means for the job is `lifecycle`'s; recording it is the supervisor's.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Callable
from functools import partial

import trio

from queued import lifecycle
from queued.lifecycle import Exit
from queued.processes.job_process import CappedLog, JobProcess
from queued.processes.output_copies import OutputCopies, StreamCopy
from queued.store import Claimed
from queued.store.writer import Call

# After the leader exits, output still buffered in the pipes is drained for at
# most this long: a process that escaped the group may hold a pipe open forever.
DRAIN_SECONDS = 2.0

log = logging.getLogger(__name__)


class Attempt:
    """A running attempt and how to stop it. Young, it is watched with others
    (`YoungAttempts`); grown, by a task of its own (`watch`)."""

    def __init__(
        self, claimed: Claimed, started_at: float, log_paths: tuple[str, str], record: Call | None = None
    ) -> None:
        self.claimed = claimed
        self.started_at = started_at  # clock time, as recorded
        self.log_paths = log_paths  # (stdout, stderr), as recorded
        self.spawned_at = trio.current_time()
        self.record = record  # its start's queued record (None once claimed by a commit)
        self.process: JobProcess | None = None
        self.logs: list[CappedLog] = []
        self.copies: tuple[StreamCopy, ...] = ()  # its streams' copies in the store, if it keeps output
        self.scope = trio.CancelScope()
        self.stop_reason: str | None = None  # "cancel", "interrupt" or "unrecorded"
        # Paused (its group stopped) since this trio time; its timeout does not
        # run meanwhile: the time spent paused is added to its deadline.
        self.paused_since: float | None = None
        self.paused_for = 0.0
        self._returncode = 0
        self._loss_told = False
        self._unfinished: list[CappedLog] = []

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def spawned(self, process: JobProcess, log_cap: int, copies: OutputCopies | None = None) -> None:
        """Its process started: its output goes into its log paths, at most
        `log_cap` bytes each, and into the store too when it keeps output (`copies`)."""
        out, err = self.log_paths
        self.process = process
        report = self._output_lost
        copy_out = copy_err = None
        if copies is not None:
            self.copies = copy_out, copy_err = copies.streams(self.claimed.id, self.claimed.run)
        self.logs = [
            CappedLog(process.stdout, out, log_cap, report, copy_out),
            CappedLog(process.stderr, err, log_cap, report, copy_err),
        ]

    def _output_lost(self, capped: CappedLog, exc: OSError) -> None:
        """Said once per attempt: the rest is counted in its record (`log_incomplete`)."""
        if not self._loss_told:
            self._loss_told = True
            job = self.claimed
            log.warning(
                "job %d attempt %d: cannot write its log %s (%s): output is dropped, and counted, "
                "until it can be written",
                job.id,
                job.run,
                capped.path,
                exc.strerror or exc,
            )

    def log_incomplete(self) -> str | None:
        """What its logs miss because the disk refused it, for its record; None if nothing."""
        logs = self.logs
        if not logs or not (logs[0].lost or logs[1].lost):
            return None
        where = " from its log file (the store has them)" if self.copies else ""
        missing = [
            f"{name}: {log_.lost:,} bytes lost{where}: {log_.loss_reason}"
            for name, log_ in zip(("stdout", "stderr"), self.logs, strict=False)
            if log_.lost
        ]
        return "; ".join(missing)

    def abandon(self) -> None:
        """After a fault in its handling: its process group killed and collected,
        its pipes and logs closed, whatever state the fault left them in."""
        if self.process is not None:
            self.process.abandon()
        for log_ in self.logs:
            try:
                log_.close()
            except OSError:
                pass

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def signal(self, sig: int) -> None:
        """Send `sig` to the attempt's process group; SIGSTOP and SIGCONT pause
        and resume it (and its timeout) as `pause` and `resume` do."""
        if sig == signal.SIGSTOP:
            self.pause()
        elif sig == signal.SIGCONT:
            self.resume()
        elif self.process is not None:
            self.process.signal_group(sig)

    def pause(self) -> None:
        if self.process is None or self.paused:
            return
        self.process.signal_group(signal.SIGSTOP)
        self.paused_since = trio.current_time()
        self.scope.deadline = self._deadline()

    def resume(self) -> None:
        if self.process is None:
            return
        self.process.signal_group(signal.SIGCONT)  # also when stopped by someone else
        if self.paused_since is not None:
            self.paused_for += trio.current_time() - self.paused_since
            self.paused_since = None
            self.scope.deadline = self._deadline()

    def _deadline(self) -> float:
        """When its timeout ends it (trio time): never while paused."""
        timeout = self.claimed.timeout
        if timeout is None or self.paused:
            return math.inf
        return self.spawned_at + timeout + self.paused_for

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.scope.cancel()

    def _new_scope(self, deadline: float) -> trio.CancelScope:
        """The scope that stop() cancels from now on (cancelled already if stopped)."""
        self.scope = trio.CancelScope(deadline=deadline)
        if self.stop_reason is not None:
            self.scope.cancel()
        return self.scope

    def reap_young(self, reaped: Callable[[Attempt], None] | None = None) -> bool:
        """Its leader exited while young: collect it (then tell `reaped`) and
        the output in the pipes. False if a process that escaped the group
        still holds a pipe open: then `drain()` before the outcome."""
        assert self.process is not None
        self._returncode = self.process.reap()
        if reaped is not None:
            reaped(self)
        self._unfinished = [log_ for log_ in self.logs if not log_.drain_now()]
        return not self._unfinished

    async def drain(self) -> Exit:
        """After `reap_young` returned False: what is left in the pipes, for at most DRAIN_SECONDS."""
        await _drain(self._unfinished)
        return self.young_outcome()

    def young_outcome(self) -> Exit:
        return self._outcome(self._returncode, timed_out=False)

    async def watch(
        self,
        *,
        grace: float,
        reaped: Callable[[Attempt], None] | None = None,
        signal_escapees: Callable[[Attempt, int], None] | None = None,
    ) -> Exit:
        """A grown attempt, until its process has ended and its output is in its
        logs; stop() or the timeout ends it with SIGTERM, then SIGKILL after
        `grace` seconds (its group, and through `signal_escapees` what left
        the group). `reaped` is told once its leader is reaped."""
        process = self.process
        assert process is not None
        async with trio.open_nursery() as copies:
            for log_ in self.logs:
                copies.start_soon(log_.copy)
            with self._new_scope(self._deadline()) as scope:
                await process.wait_exit()
            if scope.cancelled_caught:
                await _terminate(process, grace, partial(signal_escapees, self) if signal_escapees else None)
            returncode = process.reap()
            if reaped is not None:
                reaped(self)
            copies.cancel_scope.deadline = trio.current_time() + DRAIN_SECONDS
        return self._outcome(returncode, timed_out=scope.cancelled_caught)

    def _outcome(self, returncode: int, *, timed_out: bool) -> Exit:
        if self.stop_reason == "cancel":
            return lifecycle.canceled_exit(returncode)
        if self.stop_reason == "interrupt":
            return lifecycle.INTERRUPTED
        if timed_out:
            return lifecycle.classify_exit(returncode, timed_out_after=self.claimed.timeout)
        return lifecycle.classify_exit(returncode)


async def _drain(logs: list[CappedLog]) -> None:
    async with trio.open_nursery() as copies:
        for log_ in logs:
            copies.start_soon(log_.copy)
        copies.cancel_scope.deadline = trio.current_time() + DRAIN_SECONDS


async def _terminate(process: JobProcess, grace: float, others: Callable[[int], None] | None) -> None:
    """SIGTERM the job's group (and `others`), then SIGKILL it after the grace period."""
    with trio.CancelScope(shield=True):
        process.signal_group(signal.SIGTERM)
        process.signal_group(signal.SIGCONT)  # a paused (stopped) job must run to see its SIGTERM
        if others is not None:
            others(signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait_exit()
            return
        process.signal_group(signal.SIGKILL)
        if others is not None:
            others(signal.SIGKILL)
        await process.wait_exit()
