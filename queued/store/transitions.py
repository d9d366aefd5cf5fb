"""Recording what lifecycle answers, for every engine: a job's new state, and
what that state change does to the jobs that wait for it (lifecycle.CASCADES).
Nothing here decides: the next state comes from `lifecycle.next_state`, the
rule for the dependents from `lifecycle.cascade`. An engine supplies only the
statements (`TransitionSql`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    def doomed_links(self, roots: list[int]) -> list[tuple[int, int, JobState]]:
        """Every link by which a cancel of `roots` reaches the unstarted jobs
        that depend on them, directly or through unstarted others: (such a
        job, one of its dependencies that is a root or such a job, the job's
        state), in a bounded number of statements whatever their number or
        depth; where other writers may change them, the jobs locked until the
        end of the transaction (the states are those `set_states` moves from)."""
        ...

    def set_states(self, moves: list[tuple[int, JobState, JobState, str]], now: float) -> None:
        """(id, old state, new state, error) for each of several jobs, in a
        bounded number of statements; what keeps count of states kept right."""
        ...

    def set_states_to(
        self,
        moves: list[tuple[int, JobState, JobState]],
        now: float,
        columns: Mapping[str, object],
        unmet: Sequence[int] | None,
    ) -> None:
        """(id, old state, new state) for each of several jobs, each also given
        the same `columns` (and its own count of `unmet` dependencies, in the
        order of `moves`, where given), in a bounded number of statements;
        what keeps count of states kept right."""
        ...

    def recount_dependents_of(
        self, job_ids: list[int], sparing: Sequence[int] = ()
    ) -> tuple[bool, list[int]]:
        """`recount_dependents` for the dependents of several jobs at once,
        but those of `sparing` (each given its own count meanwhile)."""
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
        doomed = doomed_by([job_id], self.sql.doomed_links([job_id]))
        if doomed:
            moves = [
                _doomed_move(dependent, *doomed[dependent], {job_id: state}) for dependent in sorted(doomed)
            ]
            self.sql.set_states(moves, now)
            changes.finished += sorted(doomed)

    def move_many(
        self,
        states: Mapping[int, JobState],
        event: Event,
        now: float,
        changes: Changes,
        unmet: Sequence[int] | None = None,
        **columns: object,
    ) -> None:
        """`move` for each job of `states` (its old state) by `event`, in
        ascending order, setting `columns` too (and each its count of `unmet`
        dependencies, in that order, where given), in a few statements
        whatever their number: the same states, errors, counts and `changes`
        as moving them one by one, but that a job finished twice (named, and
        doomed by a named one before it) is reported once."""
        ids = sorted(states)
        if not ids:
            return
        new = {job_id: lifecycle.next_state(states[job_id], event) for job_id in ids}
        rules = {job_id: lifecycle.cascade(states[job_id], new[job_id]) for job_id in ids}
        roots = [job_id for job_id in ids if rules[job_id] is Cascade.CANCEL]
        # Found before the moves: a named job still unstarted is a link, as it
        # was when one named before it was canceled one by one.
        doomed = doomed_by(roots, self.sql.doomed_links(roots)) if roots else {}
        self.sql.set_states_to([(job_id, states[job_id], new[job_id]) for job_id in ids], now, columns, unmet)
        cascaded: dict[int, list[int]] = {}  # by the root whose cascade reached them
        for dependent in sorted(doomed):
            cascaded.setdefault(doomed[dependent][1], []).append(dependent)
        moves = [
            _doomed_move(dependent, *doomed[dependent], new)
            for dependent in sorted(doomed.keys() - states.keys())
        ]
        if moves:  # a named one keeps its own move
            self.sql.set_states(moves, now)
        told: set[int] = set()  # a named one reached by one before it: told there, as it was
        for job_id in ids:
            if lifecycle.is_terminal(new[job_id]) and job_id not in told:
                changes.finished.append(job_id)
            changes.finished += cascaded.get(job_id, [])
            told.update(cascaded.get(job_id, []))
        recount = [job_id for job_id in ids if rules[job_id] is Cascade.RECOUNT]
        if recount:
            # The named jobs are left out: each got its own count, as each
            # named one came after its dependencies' recounts one by one.
            recounted, released = self.sql.recount_dependents_of(recount, sparing=ids)
            if recounted:
                changes.reordered = True
                changes.released += released


def doomed_by(
    roots: Sequence[int], links: Sequence[tuple[int, int, JobState]]
) -> dict[int, tuple[JobState, int, int]]:
    """For each job a cancel of `roots` (in ascending order, one by one)
    reaches through `links` (`TransitionSql.doomed_links`): (its state, the
    root whose cascade reaches it first, the lowest of its dependencies that
    this cascade reached). A root reached by a root before it is one of those:
    canceled one by one, it was. Pure; a dependency is always an older job
    (a lower id), so one pass in ascending order sees each job's
    dependencies before it."""
    deps: dict[int, list[int]] = {}
    state: dict[int, JobState] = {}
    for dependent, dependency, dependent_state in links:
        deps.setdefault(dependent, []).append(dependency)
        state[dependent] = dependent_state
    origin = {root: root for root in roots}
    found: dict[int, tuple[JobState, int, int]] = {}
    for job_id in sorted(deps.keys() | origin.keys()):
        reached = [dep for dep in deps.get(job_id, ()) if dep in origin]
        if not reached:
            continue
        first = min(origin[dep] for dep in reached)
        if job_id in origin and origin[job_id] < first:
            continue  # a root no root before it reaches
        origin[job_id] = first
        found[job_id] = (state[job_id], first, min(dep for dep in reached if origin[dep] == first))
    return found


def _doomed_move(
    dependent: int, state: JobState, root: int, blocker: int, root_states: Mapping[int, JobState]
) -> tuple[int, JobState, JobState, str]:
    """A cascade's move of `dependent` (in `state`), doomed by `root`'s cascade
    through `blocker`: named with the root's new state where it is the
    blocker, else its own (the blocker was canceled by the cascade too)."""
    new = lifecycle.next_state(state, lifecycle.DEPENDENT_CANCEL_EVENT)
    reason = lifecycle.dependency_cancel_reason(blocker, root_states[root] if blocker == root else new)
    return dependent, state, new, reason


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
