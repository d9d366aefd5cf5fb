"""The records that follow a committed claim (a node sharing its store):
the starts of attempts claimed not started (`mark_started`, one record for
the starts of a batch), claims given back unstarted (`unclaim`), and claims a
lost COMMIT may have kept, given back once the store answers. A record that
fails for an unreachable store is tried again once it answers, while the
node claims; once it stops, its lease ends and a rescue (or its next start's
recovery) gives the jobs back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import trio

from queued.processes.attempt import Attempt
from queued.processes.running import RunningAttempts
from queued.processes.store_calls import StoreCalls
from queued.store import Claimed, StorageError
from queued.store.writer import Call

log = logging.getLogger("queued.processes.supervisor")
# A give-back the store refused is tried again after this, doubling up to UNCLAIM_RETRY_MAX_SECONDS.
UNCLAIM_RETRY_SECONDS = 1.0
UNCLAIM_RETRY_MAX_SECONDS = 30.0

Mark = tuple[int, int, int | None, float]  # (job id, run, pid or None, start time)


class ClaimRecords:
    def __init__(
        self,
        store: StoreCalls,
        attempts: RunningAttempts,
        clock: Callable[[], float],
        claiming_stopped: trio.Event,
        on_given_back: Callable[[], None],
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._attempts = attempts
        self._clock = clock
        self._claiming_stopped = claiming_stopped
        self._on_given_back = on_given_back  # jobs wait again: what was read ahead may be stale
        self._wake = wake  # the claims loop
        self.nursery: trio.Nursery | None = None  # where give-backs are tried again (None: they are not)
        self._marks: list[Attempt] = []  # started, their record not taken yet
        self._marking: Call | None = None

    def give_back(self, jobs: list[Claimed]) -> Call | None:
        """Undo the claims of jobs claimed ahead and never started (they wait
        again, or stay canceled); the last record queued."""
        if not jobs:
            return None
        self._on_given_back()
        now = self._clock()
        last = None
        for job in jobs:
            last = self._store.unclaim(job, now)
            last.on_done = partial(self._given_back, job, now)
        return last

    def _given_back(self, job: Claimed, now: float, unclaim: Call) -> None:
        if (
            isinstance(unclaim.error, StorageError)
            and self._store.lost is None
            and not self._claiming_stopped.is_set()
            and self.nursery is not None
        ):
            self.nursery.start_soon(self._unclaim_kept, [job], now)

    def unclaim_when_back(self, jobs: list[Claimed], now: float) -> None:
        """A claim whose COMMIT was lost may have been kept: its jobs would
        stay running with no process. Once the store answers they are given
        back (an unclaim of a claim that was not kept changes nothing)."""
        if not jobs or self.nursery is None:
            return
        log.warning(
            "jobs %s may have been claimed by a lost commit: given back once the store answers",
            ", ".join(str(job.id) for job in jobs),
        )
        self.nursery.start_soon(self._unclaim_kept, jobs, now)

    async def _unclaim_kept(self, jobs: list[Claimed], now: float) -> None:
        delay = UNCLAIM_RETRY_SECONDS
        while True:
            if self._store.unreachable:
                await self._store.reconnected().wait()
            calls = [self._store.unclaim(job, now) for job in jobs]
            await calls[-1].done.wait()
            failed = [
                job for job, call in zip(jobs, calls, strict=True) if isinstance(call.error, StorageError)
            ]
            if not failed or self._store.lost is not None:
                self._wake()
                return
            jobs = failed
            await trio.sleep(delay)
            delay = min(delay * 2, UNCLAIM_RETRY_MAX_SECONDS)

    def mark_started(self, attempt: Attempt) -> None:
        """Queue the record that an attempt claimed not started has started
        (its pid once spawned); every start until the record's batch is taken
        joins it."""
        self._marks.append(attempt)
        if self._marking is not None:
            return
        marks: list[Mark] = []
        call = self._marking = self._store.mark_started(marks)

        def taken() -> None:
            marks.extend((a.claimed.id, a.claimed.run, a.pid, a.started_at) for a in self._marks)
            self._marks = []
            self._marking = None

        call.on_taken = taken
        call.on_done = lambda call: self._marked(call, marks)

    def _marked(self, call: Call, marks: list[Mark]) -> None:
        """Attempts whose claim was no longer this node's (rescued meanwhile,
        their job canceled) stop. A record that failed leaves them marked
        not started: their ends record them (or recovery gives them back)."""
        if call.error is not None:
            log.warning("the start of %d attempts was not recorded: %s", len(marks), call.error)
            return
        runs = {job_id: run for job_id, run, _, _ in marks}
        for job_id in call.result:
            attempt = self._attempts.by_job.get(job_id)
            if attempt is not None and attempt.claimed.run == runs.get(job_id):
                log.info(
                    "job %d: its attempt %d is no longer this node's to run; stopped",
                    job_id,
                    attempt.claimed.run,
                )
                self._attempts.stop(attempt, "cancel")
