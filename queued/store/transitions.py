"""Recording what lifecycle answers, for every engine: a job's new state, and
what that state change does to the jobs that wait for it (lifecycle.CASCADES).
Nothing here decides: the next state comes from `lifecycle.next_state`, the
rule for the dependents from `lifecycle.cascade`. An engine supplies only the
statements (`TransitionSql`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

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
        unstarted others: (its id, the lowest dependency that dooms it, its
        state), by id, in a bounded number of statements whatever their number
        or depth; where other writers may change them, locked until the end of
        the transaction (the states are those `set_states` moves from)."""
        ...

    def set_states(self, moves: list[tuple[int, JobState, JobState, str]], now: float) -> None:
        """(id, old state, new state, error) for each of several jobs, in a
        bounded number of statements; what keeps count of states kept right."""
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
        """Cancel every unstarted job that depends on `job_id`, in one pass
        (a handful of statements for a chain or a fan-out of any size); each
        names the dependency that doomed it (the lowest, when several did)."""
        doomed = self.sql.doomed_dependents(job_id)
        if not doomed:
            return
        event = lifecycle.DEPENDENT_CANCEL_EVENT
        moves = []
        for dependent, blocker, dependent_state in doomed:
            new = lifecycle.next_state(dependent_state, event)
            # A dependent doomed through another names that one, canceled too.
            reason = lifecycle.dependency_cancel_reason(blocker, state if blocker == job_id else new)
            moves.append((dependent, dependent_state, new, reason))
        self.sql.set_states(moves, now)
        changes.finished += [dependent for dependent, _, _ in doomed]


class EndedMove(NamedTuple):
    """A job moved on by its attempt's end (see `GroupTransitions.move_ended`)."""

    job_id: int
    old: JobState
    event: Event
    at: float  # the end's time: the job's updated_at
    exit_code: int | None
    error: str | None
    run_at: float | None  # its retry's time; None: unchanged


class GroupTransitionSql(TransitionSql, Protocol):
    """The statements of an engine that records several ends at once."""

    def set_ended_states(
        self, rows: list[tuple[int, JobState, JobState, float, int | None, str | None, float | None]]
    ) -> None:
        """(id, state now, new state, updated_at, exit_code, error, run_at or
        None to keep it) for each of several jobs, in one statement; their
        rows are locked (their states cannot change meanwhile)."""
        ...

    def recount_dependents_of(self, job_ids: list[int]) -> tuple[bool, list[int]]:
        """`recount_dependents` for the dependents of several jobs at once."""
        ...


class GroupTransitions(Transitions):
    sql: GroupTransitionSql

    def __init__(self, sql: GroupTransitionSql) -> None:
        super().__init__(sql)

    def move_ended(self, moves: Sequence[EndedMove], changes: Changes) -> list[JobState]:
        """`move` for each job of `moves` (each a different job), in a few
        statements for all: their new states, then the cascades they trigger
        (the dependents' recounts in one statement; cancels, rarer, one by one)."""
        new_states = [lifecycle.next_state(move.old, move.event) for move in moves]
        self.sql.set_ended_states(
            [
                (move.job_id, move.old, new, move.at, move.exit_code, move.error, move.run_at)
                for move, new in zip(moves, new_states, strict=True)
            ]
        )
        recount = []
        for move, new in zip(moves, new_states, strict=True):
            if lifecycle.is_terminal(new):
                changes.finished.append(move.job_id)
            rule = lifecycle.cascade(move.old, new)
            if rule is Cascade.CANCEL:
                self._cancel_dependents(move.job_id, new, move.at, changes)
            elif rule is Cascade.RECOUNT:
                recount.append(move.job_id)
        if recount:
            recounted, released = self.sql.recount_dependents_of(recount)
            if recounted:
                changes.reordered = True
                changes.released += released
        return new_states
