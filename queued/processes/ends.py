"""An attempt's end, recorded: the guardian told, its record queued
(`Store.finish_many`, which asks `lifecycle` what each end means; the ends
of one batch share one call), and what came of
it logged.

A failing store only delays a record, never drops it: an end whose record
failed is kept in memory, with every end after it, in the order they came,
and queued again, in that order, once the store answers (a PostgreSQL server
back: the writer's `reconnected`) or after a backoff (a full disk: 1 s
doubling to KEPT_RETRY_MAX_SECONDS), until it commits or the database is
gone. Each end keeps the time it happened. A record that was kept already
(its COMMIT lost on the way back) changes nothing the second time: the store
moves a job on only for the attempt it is running."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from queued import lifecycle
from queued.lifecycle import Exit, JobState
from queued.processes.attempt import Attempt
from queued.processes.guardian_link import GuardianLink
from queued.processes.log_folders import LogFolders
from queued.processes.output_copies import OutputCopies
from queued.processes.store_calls import StoreCalls
from queued.settings import Settings
from queued.store import AttemptEnd, Claimed, Refused, StorageError, StoreUnreachable
from queued.store.writer import Call

log = logging.getLogger("queued.processes.supervisor")
# A record refused by a failing disk is tried again after 1 s, doubling up to this.
KEPT_RETRY_MAX_SECONDS = 30.0


@dataclass(slots=True)
class _End:
    attempt: Attempt
    outcome: Exit
    ended_at: float


@dataclass(slots=True)
class _Group:
    """Ends recorded by one `finish_many` call; more join until its batch is taken."""

    ends: list[_End]
    records: list[AttemptEnd]
    call: Call


class Ends:
    def __init__(
        self,
        store: StoreCalls,
        settings: Settings,
        guardian: GuardianLink,
        log_folders: LogFolders,
        clock: Callable[[], float],
        on_recorded: Callable[[int], None],
        output: OutputCopies | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.guardian = guardian
        self.log_folders = log_folders
        self.clock = clock
        self.output = output  # attempts' output copied into the store, when it keeps output
        self._on_recorded = on_recorded  # told the job after each end's record committed, or failed for good
        self.on_kept: Callable[[], None] | None = None  # told when an end is kept in memory
        self.recording = 0  # ends queued but not yet committed
        self.nursery: trio.Nursery | None = None  # where a record is tried again (None: it is not)
        self._kept: deque[_End] = deque()  # ends whose record waits for the store, in order
        self._retrying = False  # a task of the nursery sends the kept ones again
        self._group: _Group | None = None  # the record queued last, while its batch is not taken

    @property
    def kept(self) -> int:
        """Ends kept in memory until the store takes them."""
        return len(self._kept)

    def record(self, attempt: Attempt, outcome: Exit) -> None:
        """The attempt's process is gone: tell the guardian and queue its end's record."""
        job = attempt.claimed
        if attempt.process is not None:
            try:
                self.guardian.unregister(attempt.process.pid)
            except OSError as exc:  # its group is dead already: at worst the guardian kills nothing
                log.error("job %d: the guardian was not told of its end: %s", job.id, exc)
            if attempt.logs and (attempt.logs[0].lost or attempt.logs[1].lost):
                self.log_folders.forget(job.id)
        self.recording += 1
        end = _End(attempt, outcome, self.clock())
        if self._kept:  # ends before it wait for the store: it waits behind them
            self._kept.append(end)
        else:
            self._send(end)

    def _send(self, end: _End) -> None:
        """Queue the end's record: it joins the group of ends queued last
        while that waits for its batch with nothing queued after it (one
        `finish_many` for the ends of a batch)."""
        attempt = end.attempt
        incomplete = attempt.log_incomplete()
        if attempt.copies and self.output is not None:
            self.output.send(attempt.copies)  # its last output commits with its end, or before
            missing = self.output.missing(attempt.claimed.id, attempt.claimed.run)
            if missing is not None:
                incomplete = missing if incomplete is None else f"{incomplete}; {missing}"
        out, err = attempt.log_paths
        group = self._group
        # Only while nothing was queued after it: a start or output queued
        # since then (of this very attempt, perhaps) must stay before this end.
        if group is None or not self.store.queued_last(group.call):
            group = self._open_group()
        group.ends.append(end)
        group.records.append(
            AttemptEnd(
                attempt.claimed,
                end.outcome,
                end.ended_at,
                pid=attempt.pid,
                stdout=out,
                stderr=err,
                log_incomplete=incomplete,
            )
        )

    def _open_group(self) -> _Group:
        records: list[AttemptEnd] = []
        group = self._group = _Group([], records, self.store.finish_many(records, self.settings.backoff_max))

        def taken() -> None:
            if self._group is group:
                self._group = None

        group.call.on_taken = taken
        group.call.on_done = lambda call: self._group_recorded(group, call)
        return group

    def _group_recorded(self, group: _Group, finish: Call) -> None:
        """The records of a group of ends committed (each its result, or the
        Refused it met), or all failed."""
        for i, end in enumerate(group.ends):
            if finish.error is not None:
                self._recorded(end, None, finish.error)
            elif isinstance(result := finish.result[i], Refused):
                self._recorded(end, None, result)
            else:
                self._recorded(end, result, None)

    def _recorded(self, end: _End, result: JobState | None, error: BaseException | None) -> None:
        """The end's record committed, or failed. (After a refused start there is nothing to store.)"""
        attempt, outcome = end.attempt, end.outcome
        refused = attempt.record is not None and attempt.record.error is not None
        kept = self.store.lost is None and self.nursery is not None
        if isinstance(error, StorageError) and not refused and kept:
            self._keep(end, error)
            return
        job = attempt.claimed
        if attempt.copies and self.output is not None:
            self.output.forget(job.id, job.run)
        if error is not None and not refused:
            log.error("job %d attempt %d: its end was not recorded: %s", job.id, job.run, error)
        elif error is None and result is None:
            # Removed (`rm`, `clean`) while its process lived: no row names its logs.
            log.debug("job %d attempt %d ended after its job was removed", job.id, job.run)
            _unlink(attempt.log_paths)
        elif error is None and not refused:
            # Every attempt at debug level; failures at info, where people look.
            level = logging.DEBUG if outcome.succeeded else logging.INFO
            said = outcome.error or "exit 0"
            log.log(level, "job %d attempt %d: %s -> %s", job.id, job.run, said, result)
        self.recording -= 1
        self._on_recorded(job.id)

    def _keep(self, end: _End, error: StorageError) -> None:
        """Keep an end whose record failed, behind those kept before it."""
        job = end.attempt.claimed
        if isinstance(error, StoreUnreachable):
            log.warning("job %d attempt %d: its end is kept until %s answers", job.id, job.run, error.store)
        else:
            log.error("cannot record the end of job %d: %s; kept to try again", job.id, error)
        self._kept.append(end)
        if self.on_kept is not None:  # a drain told to stop now need not wait for it (see Supervisor)
            self.on_kept()
        if not self._retrying:
            assert self.nursery is not None
            self._retrying = True
            self.nursery.start_soon(self._send_kept)

    async def _send_kept(self) -> None:
        """Send the kept ends again, in order, when the store may take them:
        once it answers again (unreachable), else after a backoff."""
        delay = 1.0
        try:
            while self._kept:
                if self.store.unreachable:
                    await self.store.reconnected().wait()
                    delay = 1.0
                else:
                    await trio.sleep(delay)
                    delay = min(delay * 2, KEPT_RETRY_MAX_SECONDS)
                kept = list(self._kept)
                self._kept.clear()
                log.info("recording the end of %d attempts kept in memory", len(kept))
                # In order, behind nothing else of ours: a failure keeps them again, in order.
                for end in kept:
                    self._send(end)
                assert self._group is not None
                await self._group.call.done.wait()
        finally:
            self._retrying = False


def abandon(attempt: Attempt, reaped: Callable[[Attempt], None]) -> None:
    """After a fault in an attempt's handling (or the supervisor's): its group
    killed and its leader collected, its pipes and logs closed, whatever state
    the fault left them in, and (`reaped`) what it left outside its group stopped."""
    attempt.abandon()
    try:
        reaped(attempt)
    except Exception:
        log.exception("job %d: what it left outside its group was not stopped", attempt.claimed.id)


def fault_outcome(job: Claimed, exc: BaseException) -> Exit:
    """An unexpected error in handling one attempt: logged once, with its
    traceback; the attempt ends as failed with the error's text (retried
    under its policy)."""
    text = fault_text(exc)
    log.error("job %d attempt %d: %s; the attempt ends as failed", job.id, job.run, text, exc_info=exc)
    return lifecycle.internal_failure(text)


def fault_text(exc: BaseException) -> str:
    """An unexpected error in a few words: its first leaf, named."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _unlink(paths: tuple[str, str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
