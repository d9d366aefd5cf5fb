"""An attempt's end, recorded: the guardian told, its record queued
(`Store.finish`, which asks `lifecycle` what the end means), and what came of
it logged. A failing disk only delays a record, never drops it: it is queued
again every second until it commits or the database is gone."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from queued import lifecycle
from queued.lifecycle import Exit
from queued.processes.attempt import Attempt
from queued.processes.guardian_link import GuardianLink
from queued.processes.log_folders import LogFolders
from queued.processes.output_copies import OutputCopies
from queued.processes.store_calls import StoreCalls
from queued.settings import Settings
from queued.store import Claimed, StorageError
from queued.store.writer import Call

log = logging.getLogger("queued.processes.supervisor")


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
        self.recording = 0  # ends queued but not yet committed
        self.nursery: trio.Nursery | None = None  # where a record is tried again (None: it is not)

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
        finish = self._queue(attempt, outcome)
        finish.on_done = lambda call: self._recorded(attempt, outcome, call)

    def _queue(self, attempt: Attempt, outcome: Exit) -> Call:
        if attempt.copies and self.output is not None:
            self.output.send(attempt.copies)  # its last output commits with its end, or before
        out, err = attempt.log_paths
        return self.store.finish(
            attempt.claimed,
            outcome,
            self.settings.backoff_max,
            self.clock(),
            pid=attempt.pid,
            stdout=out,
            stderr=err,
            log_incomplete=attempt.log_incomplete(),
        )

    def _recorded(self, attempt: Attempt, outcome: Exit, finish: Call) -> None:
        """The end's record committed, or failed. (After a refused start there is nothing to store.)"""
        refused = attempt.record is not None and attempt.record.error is not None
        if (
            isinstance(finish.error, StorageError)
            and not refused
            and self.store.lost is None
            and self.nursery is not None
        ):
            self.nursery.start_soon(self._record_again, attempt, outcome, finish.error)
            return
        job = attempt.claimed
        if attempt.copies and self.output is not None:
            self.output.forget(job.id, job.run)
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
        self.recording -= 1
        self._on_recorded(job.id)

    async def _record_again(self, attempt: Attempt, outcome: Exit, error: StorageError) -> None:
        while True:
            log.error("cannot record the end of job %d: %s; retrying in 1 s", attempt.claimed.id, error)
            await trio.sleep(1)
            finish = self._queue(attempt, outcome)
            await finish.done.wait()
            if not isinstance(finish.error, StorageError) or self.store.lost is not None:
                self._recorded(attempt, outcome, finish)
                return
            error = finish.error


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
