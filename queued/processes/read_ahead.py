"""The due jobs the supervisor read from the store before it had room for
them, and when they may still be started from memory. Pure: no I/O and no
clock; `now` and the writer's marks are passed in.

A read (`Store.lookahead`) holds the next due jobs in claim order and, when
it holds every due job, those due before a horizon ("upcoming"). It stays
valid while the writer's marks are those taken before the read: `epoch`
counts the calls queued that could make a job unclaimable (a cancel, an
edit), `additions` those that could add one that outranks them (an add, a
released dependent); and until `now` reaches the first run_at the read did
not see. A read whose epoch moved while it ran is stale at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping

from queued.resources import Allocator
from queued.store import Ahead, Claimed

Marks = tuple[int, int]  # the writer's (epoch, additions) when a read was queued


def _claim_key(job: Claimed) -> tuple[int, float, int]:
    return job.claim_key


class ReadAhead:
    __slots__ = ("_complete", "_due", "_marks", "_until", "_upcoming")

    def __init__(self) -> None:
        self._due: deque[Claimed] = deque()  # due now, in claim order
        self._complete = False  # no due job beyond those in _due
        self._upcoming: list[Claimed] = []  # due later, by run_at (kept only when complete)
        self._until = -math.inf  # clock time of the first run_at not read: read again then
        self._marks: Marks = (-1, -1)

    def load(self, ahead: Ahead, read_at: Marks, marks: Marks) -> bool:
        """Hold what a read queued at marks `read_at` returned, now that the
        marks are `marks`; False (and nothing held) if a call that could make
        a job unclaimable was queued meanwhile."""
        if marks[0] != read_at[0]:
            self.forget()
            return False
        self._due = deque(ahead.jobs)
        self._complete = ahead.complete
        self._until = math.inf if ahead.until is None else ahead.until
        self._upcoming = ahead.upcoming
        if not ahead.complete and self._upcoming:
            # Due jobs beyond those read may outrank the upcoming ones once
            # they are due: read again then instead.
            self._until = self._upcoming[0].run_at
            self._upcoming = []
        self._marks = read_at
        return True

    def forget(self) -> None:
        """Drop what was read: the next look reads the store again."""
        self._due.clear()
        self._upcoming = []
        self._until = -math.inf

    def valid_for(self, now: float, marks: Marks) -> bool:
        """Whether jobs may be taken at `now`, the writer's marks being `marks`."""
        if not self._due and not self._complete:
            return False
        return now < self._until and self._marks == marks

    def take(
        self,
        now: float,
        room: Mapping[str, int],
        free: int,
        fit: Callable[[int], Allocator] | None = None,
    ) -> list[Claimed]:
        """Remove and return the jobs to start now, in claim order: at most
        `free`, and in each queue at most its `room` (a queue missing from it
        has none). A job whose queue is full keeps its place. Jobs taking one
        slot and needing nothing else are taken while slots are free; from
        the first job that needs more on, `fit` (given the slots taken so
        far) walks the rest: what fits starts with the GPUs it gives it
        (`Claimed.gpus`), the rest keeps its place (queued.resources' rule)."""
        if self._upcoming and self._upcoming[0].run_at <= now:
            self._upcoming_due(now)
        due = self._due
        taken: list[Claimed] = []
        if free <= 0 or not due:
            return taken
        left = dict(room)
        waiting: list[Claimed] = []
        allocator: Allocator | None = None
        while due and len(taken) < free:
            job = due.popleft()
            if left.get(job.queue, 0) <= 0:
                waiting.append(job)
                continue
            if allocator is None and (job.slots != 1 or job.needs):
                if fit is None:
                    waiting.append(job)  # a caller that allocates nothing starts only plain jobs
                    continue
                allocator = fit(len(taken))
            if allocator is not None:
                if allocator.full:
                    due.appendleft(job)
                    break
                gpus = allocator.offer(job.slots, job.needs, job.run_at)
                if gpus is None:
                    waiting.append(job)
                    continue
                job.gpus = gpus
            left[job.queue] -= 1
            taken.append(job)
        if waiting:
            due.extendleft(reversed(waiting))
        return taken

    def give_back(self, jobs: list[Claimed]) -> None:
        """Jobs taken but not started (no descriptor was free): they keep their place."""
        if jobs:
            self._due = deque(sorted([*jobs, *self._due], key=_claim_key))

    def _upcoming_due(self, now: float) -> None:
        due = [job for job in self._upcoming if job.run_at <= now]
        self._upcoming = self._upcoming[len(due) :]
        self._due = deque(sorted([*self._due, *due], key=_claim_key))

    def more_may_be_due(self) -> bool:
        """Jobs are held, and due jobs the read did not reach may be waiting
        too: when the held ones all wait for full queues, look in the store."""
        return bool(self._due) and not self._complete

    def next_look(self) -> float:
        """When what is held needs a look again (clock time): the next upcoming
        job due, or the first run_at not read."""
        upcoming = self._upcoming[0].run_at if self._upcoming else math.inf
        return min(upcoming, self._until)

    def due_jobs(self) -> list[Claimed]:
        """The jobs held that are due, in claim order."""
        return list(self._due)

    def upcoming_jobs(self) -> list[Claimed]:
        """The jobs held that are due later, by run_at."""
        return list(self._upcoming)
