"""The slots: the attempts running now, by job and counted by queue, and what
a request can do to them (stop, signal, pause, resume) and see of them."""

from __future__ import annotations

import signal

from queued.processes.attempt import Attempt
from queued.processes.young_attempts import YoungAttempts
from queued.protocol import Slot
from queued.resources import GPU


class RunningAttempts:
    __slots__ = ("_young", "by_job", "counts_held", "gpus_held", "per_queue", "slots_held")

    def __init__(self, young: YoungAttempts) -> None:
        self.by_job: dict[int, Attempt] = {}
        self.per_queue: dict[str, int] = {}  # running attempts by queue (see `queue_room`)
        # What they hold of the node (see queued.resources): its slots, and
        # of its counted resources and GPUs what jobs with needs hold.
        self.slots_held = 0
        self.counts_held: dict[str, int] = {}
        self.gpus_held: set[int] = set()
        self._young = young

    def __len__(self) -> int:
        return len(self.by_job)

    def add(self, attempt: Attempt) -> None:
        job = attempt.claimed
        self.by_job[job.id] = attempt
        self.per_queue[job.queue] = self.per_queue.get(job.queue, 0) + 1
        self.slots_held += job.slots
        if job.needs:
            self._hold(job.needs, 1)
            self.gpus_held.update(job.gpus)

    def remove(self, attempt: Attempt) -> None:
        job = attempt.claimed
        del self.by_job[job.id]
        self.per_queue[job.queue] -= 1
        self.slots_held -= job.slots
        if job.needs:
            self._hold(job.needs, -1)
            self.gpus_held.difference_update(job.gpus)

    def _hold(self, needs: dict[str, int], sign: int) -> None:
        held = self.counts_held
        for name, count in needs.items():
            if name != GPU:  # GPUs are held by index
                held[name] = held.get(name, 0) + sign * count

    def stop(self, attempt: Attempt, reason: str) -> None:
        attempt.stop(reason)
        self._young.let_go(attempt)  # its own task stops it

    def stop_jobs(self, ids: list[int], reason: str) -> None:
        for job_id in ids:
            attempt = self.by_job.get(job_id)
            if attempt is not None:
                self.stop(attempt, reason)

    def signal_jobs(self, ids: list[int], sig: int) -> bool:
        """Send `sig` to running jobs' process groups (SIGSTOP and SIGCONT pause
        and resume them: see `pause_jobs`); whether one was paused or resumed."""
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            return bool(self.pause_jobs(ids, paused=sig == signal.SIGSTOP))
        for job_id in ids:
            attempt = self.by_job.get(job_id)
            if attempt is not None:
                attempt.signal(sig)
        return False

    def pause_jobs(self, ids: list[int], *, paused: bool) -> list[int]:
        """Stop (SIGSTOP) or continue (SIGCONT) running jobs' process groups;
        the ids of those that changed. A paused job keeps its slot, and its
        timeout waits with it. A young attempt is handed to a task of its own,
        which keeps the timeout."""
        changed = []
        for job_id in ids:
            attempt = self.by_job.get(job_id)
            if attempt is None or attempt.process is None or attempt.paused == paused:
                continue
            if paused:
                self._young.let_go(attempt)
                attempt.pause()
            else:
                attempt.resume()
            changed.append(job_id)
        return changed

    def paused_ids(self) -> set[int]:
        return {job_id for job_id, attempt in self.by_job.items() if attempt.paused}

    def running_in(self, queue: str | None = None) -> list[int]:
        """The running jobs (of `queue`, if given)."""
        return sorted(
            job_id for job_id, a in self.by_job.items() if queue is None or a.claimed.queue == queue
        )

    def unreaped(self) -> set[tuple[int, int]]:
        """The attempts (job id, run) whose leaders are not reaped yet."""
        return {
            (a.claimed.id, a.claimed.run)
            for a in self.by_job.values()
            if a.process is not None and a.process.returncode is None
        }

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
            for a in sorted(self.by_job.values(), key=lambda a: a.claimed.id)
        ]
