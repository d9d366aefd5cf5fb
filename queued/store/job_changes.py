"""What users change about jobs: cancel, retry, hold, release, edit, and
restart (a copy of any job). Each asks lifecycle what the change means
(`Jobs.require` refuses what the table does not allow) and records it through
`Transitions`, which carries out the dependents cascade. The same for every
engine: each spells the statements (queued/store/dialect.py) and locks unique
keys its way (`JobTable.unique`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from queued import lifecycle
from queued.lifecycle import Event, JobState
from queued.store.contract import Changes, Refused, Written
from queued.store.dialect import Connection
from queued.store.environments import Environments
from queued.store.job_table import JobTable, unknown_queue
from queued.store.sqlite import rows
from queued.store.transitions import Transitions
from queued.validation import NewJob


class JobChanges:
    def __init__(
        self, conn: Connection, jobs: JobTable, environments: Environments, transitions: Transitions
    ) -> None:
        self.conn = conn
        self.dialect = jobs.dialect
        self.jobs = jobs
        self.environments = environments
        self.transitions = transitions

    def _apply(self, ids: Sequence[int], event: Event, now: float, **columns: object) -> Written[list[int]]:
        """`event` for every one of `ids` (Refused unless each allows it); the ids, sorted."""
        return self._move(self.jobs.require(ids, event), event, now, **columns)

    def _move(
        self, states: Mapping[int, JobState], event: Event, now: float, **columns: object
    ) -> Written[list[int]]:
        changes = Changes()
        self.transitions.move_many(states, event, now, changes, **columns)
        return Written(sorted(states), changes)

    def cancel(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        """Cancel jobs; returns those that were running (their processes must be stopped)."""
        states = self.jobs.require(ids, Event.CANCEL)
        written = self._move(states, Event.CANCEL, now, error=lifecycle.CANCELED_BY_USER)
        running = sorted(job_id for job_id, state in states.items() if state == lifecycle.RUNNING)
        return Written(running, written.changes)

    def cancel_what_can(
        self, ids: Sequence[int], now: float
    ) -> Written[tuple[list[int], list[int], dict[int, str]]]:
        """Cancel those of `ids` that can be: (the running ones, whose processes
        must be stopped; every one canceled; why each other one was not).
        Their states read locked: one another node finished or canceled
        meanwhile is refused alone, after its commit, not the whole call."""
        states = self.jobs.states(ids, lock=True)
        refused = {job_id: f"no job {job_id}" for job_id in lifecycle.unknown_ids(ids, states)}
        for job_id, state in states.items():
            if not lifecycle.can(state, Event.CANCEL):
                refused[job_id] = lifecycle.refusal(job_id, state, Event.CANCEL)
        cancelable = sorted(job_id for job_id in states if job_id not in refused)
        if not cancelable:
            return Written(([], [], refused))
        written = self.cancel(cancelable, now)
        return Written((written.value, cancelable, refused), written.changes)

    def retry(self, ids: Sequence[int], all_dead: bool, now: float) -> Written[list[int]]:
        ids = list(ids)
        if all_dead:
            dead = self.dialect.sql("SELECT id FROM jobs WHERE state = ?")
            ids += [r[0] for r in self.conn.execute(dead, (lifecycle.DEAD,))]
        ids = sorted(set(ids))
        states = self.jobs.require(ids, Event.RETRY)
        keys = self.jobs.unique_keys(ids)  # held by nobody else, or the retry is refused
        self.jobs.unique.lock(keys.values())  # as an add of them does, before looking
        # One by one in ascending order, as if each were retried before the
        # next were looked at: a dependency retried before its dependents
        # (always newer jobs), a key taken by the first of two that have it.
        retried = {job_id: lifecycle.next_state(states[job_id], Event.RETRY) for job_id in ids}
        dependencies = self.jobs.dependencies_of(ids)
        taken: dict[str, int] = {}
        unmet = []
        for job_id in ids:
            deps = {
                dep: retried[dep] if dep in retried and dep < job_id else dep_state
                for dep, dep_state in dependencies.get(job_id, {}).items()
            }
            verdict = lifecycle.dependency_verdict(deps)
            if verdict.blocker is not None:
                raise Refused(
                    "invalid",
                    f"job {job_id} depends on job {verdict.blocker}, which is "
                    f"{verdict.blocker_state}: retry that one too",
                )
            key = keys.get(job_id)
            if key is not None:
                holder = (
                    (taken[key], retried[taken[key]]) if key in taken else self.jobs.unique.holder(key, None)
                )
                if holder is not None:
                    raise Refused("invalid", lifecycle.unique_refusal(job_id, "retry", key, *holder))
                taken[key] = job_id
            unmet.append(lifecycle.unmet_count(deps))
        changes = Changes()
        self.transitions.move_many(
            states, Event.RETRY, now, changes, unmet=unmet, attempts=0, exit_code=None, error=None, run_at=now
        )
        return Written(ids, changes)

    def hold(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        """Keep waiting jobs from being claimed until they are released."""
        return self._apply(ids, Event.HOLD, now)

    def release(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        """Held jobs wait to be claimed again, at their own run_at (now, if it passed)."""
        written = self._apply(ids, Event.RELEASE, now)
        written.changes.reordered = True  # a released job may outrank those read ahead
        return written

    def edit(self, job_id: int, fields: Mapping[str, Any], now: float) -> Written[None]:
        """Change a job that has not started yet; `fields` come from `validation.job_changes`."""
        row = self.conn.execute(
            self.dialect.sql("SELECT state, queue FROM jobs WHERE id = ?"), (job_id,)
        ).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        state, queue = row
        if state not in lifecycle.EDITABLE_STATES:
            raise Refused(
                "invalid",
                f"job {job_id} is {state}: only a job that has not started (pending, held, or failed"
                f" and waiting for its retry) can be edited; `queuectl restart {job_id}` adds a changed copy",
            )
        if not fields:
            raise Refused("invalid", "nothing to change")
        new_queue = fields.get("queue", queue)
        if new_queue != queue:
            # Locked as a foreign key check would (PostgreSQL): `queue rm` waits for the commit.
            exists = self.dialect.sql(f"SELECT 1 FROM queues WHERE name = ?{self.dialect.key_share}")
            if not self.conn.execute(exists, (new_queue,)).fetchone():
                raise unknown_queue(new_queue)
            self.dialect.counts.job_moved(self.conn, state, queue, new_queue)
        sets = ", ".join(f"{name} = ?" for name in fields)
        values = [self._stored(name, value) for name, value in fields.items()]
        self.conn.execute(
            self.dialect.sql(f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ?"), (*values, now, job_id)
        )
        return Written(None)

    def _stored(self, name: str, value: Any) -> Any:
        """An edited field as its column takes it."""
        if name == "cwd":
            return self.dialect.path_in(value)
        if name == "needs":
            return self.dialect.json_in(value) if value else None
        return value

    def restart(self, job_id: int, fields: Mapping[str, Any], hold: bool, now: float) -> Written[int]:
        """Add a copy of any job, with `fields` changed: same command, queue,
        settings, label, cwd, environment, unique key and pinned node; no dependencies; due now."""
        copied = self.dialect.sql(
            "SELECT command, queue, priority, label, max_retries, backoff_base, timeout, cwd, env_id,"
            " unique_key, node, slots, needs FROM jobs WHERE id = ?"
        )
        row = self.conn.execute(copied, (job_id,)).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        command, queue, priority, label, max_retries, backoff_base, timeout, cwd, env_id, key, node = row[:11]
        copy = NewJob(
            command=command,
            queue=queue,
            priority=priority,
            label=label,
            max_retries=max_retries,
            backoff_base=backoff_base,
            timeout=timeout,
            cwd=self.dialect.read_path(cwd),
            env=self.environments.get(env_id),
            run_at=now,
            depends_on=[],
            hold=hold,
            unique_key=key,
            node=node,  # pinned where its files are, as the original
            slots=row[11],
            needs=rows.needs(row[12]),
        )
        written = self.jobs.add([msgspec.structs.replace(copy, **fields)], now)
        if written.value.existing[0]:  # the copy's key is held: no second job of it
            holder = written.value[0]
            state = self.jobs.states([holder])[holder]
            raise Refused("invalid", lifecycle.unique_refusal(job_id, "restart", key or "", holder, state))
        return Written(written.value[0], written.changes)
