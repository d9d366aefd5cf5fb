"""The store contract's methods that every engine answers alike: each hands
the call to the part that keeps its rules (jobs, user changes, queues,
schedules, attempts). An engine composes its parts (in its __init__, or again
when it reconnects) and adds what truly differs: its transactions, attempts'
output, its nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from queued.lifecycle import Exit, JobState
from queued.protocol import Job, QueueInfo, Run
from queued.resources import Fit
from queued.schedules import NewSchedule
from queued.store.contract import (
    AddedIds,
    Ahead,
    AttemptEnd,
    Claimed,
    Fired,
    NodeIdentity,
    Recovered,
    Refused,
    StoredSchedule,
    Written,
)
from queued.store.dialect import Connection, Dialect
from queued.store.environments import Environments
from queued.store.job_changes import JobChanges
from queued.store.job_table import JobTable
from queued.store.queue_table import QueueTable
from queued.store.schedule_table import ScheduleTable
from queued.store.transitions import Transitions
from queued.validation import NewJob


class ComposedStore:
    """The parts an engine composes; the contract's methods they answer."""

    _environments: Environments
    _jobs: JobTable
    _changes: JobChanges
    _queues: QueueTable
    _schedules: ScheduleTable
    _attempts: Any  # the engine's own: its claims differ in shape (SKIP LOCKED, read-ahead)
    _node: NodeIdentity

    def _compose_parts(
        self,
        conn: Connection,
        dialect: Dialect,
        transitions: Transitions,
        jobs: Callable[[Any, Environments], JobTable],
        attempts: Callable[[Any, Environments, Transitions, NodeIdentity], Any],
    ) -> None:
        """The parts over `conn`: the engine's own `jobs` (their add) and
        `attempts` (claims and ends), and the shared ones in its `dialect`."""
        self._environments = Environments(conn, dialect)
        self._jobs = jobs(conn, self._environments)
        self._changes = JobChanges(conn, self._jobs, self._environments, transitions)
        self._attempts = attempts(conn, self._environments, transitions, self._node)
        self._queues = QueueTable(conn, dialect)
        self._schedules = ScheduleTable(conn, dialect, self._jobs, self._environments)

    # -- jobs -------------------------------------------------------------------

    def states(self, ids: Iterable[int]) -> dict[int, JobState]:
        return self._jobs.states(ids)

    def jobs_by_id(self, ids: Sequence[int]) -> list[Job]:
        return self._jobs.jobs_by_id(ids)

    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        return self._jobs.get_job(job_id)

    def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queue: str | None = None,
        label: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
        before: int | None = None,
        command: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[Job]:
        return self._jobs.list_jobs(
            states=states,
            queue=queue,
            label=label,
            ids=ids,
            limit=limit,
            before=before,
            command=command,
            created_after=created_after,
            created_before=created_before,
        )

    def unfinished_ids(self) -> list[int]:
        return self._jobs.unfinished_ids()

    def counts(self) -> dict[str, int]:
        return self._queues.counts_by_state()

    def add_jobs(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        return self._jobs.add(jobs, now)

    def remove(self, ids: Sequence[int]) -> Written[list[str]]:
        return self._jobs.remove(ids)

    def clean(self, states: Sequence[str], older_than: float | None) -> Written[tuple[int, list[str]]]:
        return self._jobs.clean(states, older_than)

    # -- what users change ------------------------------------------------------

    def cancel(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        return self._changes.cancel(ids, now)

    def cancel_what_can(
        self, ids: Sequence[int], now: float
    ) -> Written[tuple[list[int], list[int], dict[int, str]]]:
        return self._changes.cancel_what_can(ids, now)

    def retry(self, ids: Sequence[int], all_dead: bool, now: float) -> Written[list[int]]:
        return self._changes.retry(ids, all_dead, now)

    def hold(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        return self._changes.hold(ids, now)

    def release(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        return self._changes.release(ids, now)

    def edit(self, job_id: int, fields: Mapping[str, Any], now: float) -> Written[None]:
        return self._changes.edit(job_id, fields, now)

    def restart(self, job_id: int, fields: Mapping[str, Any], hold: bool, now: float) -> Written[int]:
        return self._changes.restart(job_id, fields, hold, now)

    # -- queues and settings ----------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        return self._queues.queues()

    def waits_here(self, queues: Sequence[str] | None) -> bool:
        return self._queues.waits_here(self._node.name, queues)

    def add_queue(self, name: str, concurrency: int | None, now: float) -> Written[None]:
        return self._queues.add_queue(name, concurrency, now)

    def remove_queue(self, name: str) -> Written[None]:
        return self._queues.remove_queue(name)

    def set_paused(self, name: str, paused: bool) -> Written[None]:
        return self._queues.set_paused(name, paused)

    def set_queue_concurrency(self, name: str, concurrency: int | None) -> Written[None]:
        return self._queues.set_queue_concurrency(name, concurrency)

    def set_all_paused(self, paused: bool) -> Written[None]:
        return self._queues.set_all_paused(paused)

    def config(self) -> dict[str, str]:
        return self._queues.config()

    def set_config(self, key: str, value: str) -> Written[None]:
        return self._queues.set_config(key, value)

    # -- schedules ----------------------------------------------------------------

    def schedules(self) -> list[StoredSchedule]:
        return self._schedules.schedules()

    def add_schedule(self, schedule: NewSchedule, now: float) -> Written[None]:
        return self._schedules.add(schedule, now)

    def remove_schedule(self, name: str) -> Written[None]:
        return self._schedules.remove(name)

    def pause_schedule(self, name: str, paused: bool, now: float) -> Written[None]:
        return self._schedules.pause(name, paused, now)

    def fire_schedule(self, name: str, firing: float | None, now: float) -> Written[Fired]:
        return self._schedules.fire(name, firing, now)

    # -- the supervisor's side --------------------------------------------------

    def lookahead(
        self, *, now: float, horizon: float, queues: Sequence[str], busy: Sequence[int], limit: int
    ) -> Ahead:
        return self._attempts.lookahead(now=now, horizon=horizon, queues=queues, busy=busy, limit=limit)

    def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        return self._attempts.next_due(now, queues)

    def start(self, job: Claimed, now: float, gpus: Sequence[int] = ()) -> Written[None]:
        return self._attempts.start(job, now, gpus)

    def claim(
        self,
        *,
        now: float,
        slots: int,
        queue_room: dict[str, int],
        busy: Sequence[int] = (),
        gpus: Mapping[int, Sequence[int]] | None = None,
        fit: Fit | None = None,
        started: bool = True,
    ) -> Written[list[Claimed]]:
        return self._attempts.claim(
            now=now, slots=slots, queue_room=queue_room, busy=busy, gpus=gpus, fit=fit, started=started
        )

    def mark_started(self, attempts: Sequence[tuple[int, int, int | None, float]]) -> Written[list[int]]:
        return self._attempts.mark_started(attempts)

    def unclaim(self, job: Claimed, now: float) -> Written[None]:
        return self._attempts.unclaim(job, now)

    def finish(
        self,
        claimed: Claimed,
        exit: Exit,
        backoff_max: float,
        now: float,
        *,
        pid: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
        log_incomplete: str | None = None,
    ) -> Written[JobState | None]:
        return self._attempts.finish(
            claimed,
            exit,
            backoff_max,
            now,
            pid=pid,
            stdout=stdout,
            stderr=stderr,
            log_incomplete=log_incomplete,
        )

    def finish_many(
        self, ends: Sequence[AttemptEnd], backoff_max: float
    ) -> Written[list[JobState | Refused | None]]:
        return self._attempts.finish_many(ends, backoff_max)

    def recover(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        self._queues.ensure_default(now)
        return self._attempts.recover(backoff_max, now)

    # -- this node, and the writer's caches -----------------------------------

    def identify(self, node: NodeIdentity) -> None:
        self._node = self._attempts.node = node

    def forget_caches(self) -> None:
        """Drop what may name rows a rollback removed."""
        self._environments.forget()
