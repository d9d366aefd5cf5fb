"""Recording what lifecycle answers, for every engine: a job's new state, and
what that state change does to the jobs that wait for it (lifecycle.CASCADES).
Nothing here decides: the next state comes from `lifecycle.next_state`, the
rule for the dependents from `lifecycle.cascade`. An engine supplies only the
statements (`TransitionSql`)."""

from __future__ import annotations

from typing import Protocol

from queued import lifecycle
from queued.lifecycle import Cascade, Event, JobState
from queued.store.contract import Changes


class TransitionSql(Protocol):
    """The statements a state change needs, in an engine's SQL."""

    def set_state(self, job_id: int, state: JobState, now: float, columns: dict[str, object]) -> None: ...

    def recount_dependents(self, job_id: int) -> tuple[bool, list[int]]:
        """Recount the dependencies not completed of `job_id`'s unstarted
        dependents: (whether any was recounted, those left with none)."""
        ...

    def doomed_dependents(self, job_id: int) -> list[tuple[int, int, JobState]]:
        """Every unstarted job that depends on `job_id`, directly or through
        others: (its id, the lowest dependency that dooms it, its state), by id."""
        ...

    def set_states(self, moves: list[tuple[int, JobState, str]], now: float) -> None:
        """(id, state, error) for each of several jobs, in one statement."""
        ...


class Transitions:
    def __init__(self, sql: TransitionSql) -> None:
        self.sql = sql

    def move(
        self, job_id: int, old: JobState, event: Event, now: float, changes: Changes, **columns: object
    ) -> JobState:
        """Move job `job_id` from `old` by `event`, setting `columns` too, and
        carry out the cascade the change triggers; its new state."""
        new = lifecycle.next_state(old, event)
        self.sql.set_state(job_id, new, now, columns)
        if lifecycle.is_terminal(new):
            changes.finished.append(job_id)
        rule = lifecycle.cascade(old, new)
        if rule is Cascade.CANCEL:
            self._cancel_dependents(job_id, new, now, changes)
        elif rule is Cascade.RECOUNT:
            recounted, released = self.sql.recount_dependents(job_id)
            if recounted:
                changes.reordered = True
                changes.released += released
        return new

    def _cancel_dependents(self, job_id: int, state: JobState, now: float, changes: Changes) -> None:
        """Cancel every unstarted job that depends on `job_id`, in one pass;
        each names the dependency that doomed it (the lowest, when several did)."""
        doomed = self.sql.doomed_dependents(job_id)
        if not doomed:
            return
        event = lifecycle.DEPENDENT_CANCEL_EVENT
        moves = []
        for dependent, blocker, dependent_state in doomed:
            new = lifecycle.next_state(dependent_state, event)
            # A dependent doomed through another names that one, canceled too.
            reason = lifecycle.dependency_cancel_reason(blocker, state if blocker == job_id else new)
            moves.append((dependent, new, reason))
        self.sql.set_states(moves, now)
        changes.finished += [dependent for dependent, _, _ in doomed]
