"""The store's side of changing waiting jobs: hold, release, edit, and restart
(a copy of any job). A mixin of `Store`, which provides `conn`, `_require`,
`_set_state`, `_environment` and `add_jobs`; like the rest of the store, it
asks `lifecycle` what each change means and never decides a state itself.

Hold and edit are left unmarked (see `store_attempts.effect`): they may make a
job the supervisor has read ahead unclaimable, or change what it would run, so
queueing one makes the supervisor read again before it starts anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from queued import lifecycle
from queued.lifecycle import Event
from queued.store.sqlite.attempts import ADDS, Refused, effect
from queued.validation import NewJob


class JobChanging:
    conn: sqlite3.Connection
    reordered: bool

    def _require(self, ids: Sequence[int], event: Event) -> dict[int, str]:
        raise NotImplementedError  # provided by Store

    def _set_state(self, job_id: int, old: str, event: Event, now: float, **columns: object) -> None:
        raise NotImplementedError  # provided by Store

    def _environment(self, env_id: int) -> dict[str, str]:
        raise NotImplementedError  # provided by Store

    def add_jobs(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        raise NotImplementedError  # provided by Store

    def hold(self, ids: Sequence[int], now: float) -> list[int]:
        """Keep waiting jobs from being claimed until they are released."""
        states = self._require(ids, Event.HOLD)
        for job_id in sorted(states):
            self._set_state(job_id, states[job_id], Event.HOLD, now)
        return sorted(states)

    @effect(ADDS)
    def release(self, ids: Sequence[int], now: float) -> list[int]:
        """Held jobs wait to be claimed again, at their own run_at (now, if it passed)."""
        states = self._require(ids, Event.RELEASE)
        for job_id in sorted(states):
            self._set_state(job_id, states[job_id], Event.RELEASE, now)
        self.reordered = True  # a released job may outrank those read ahead
        return sorted(states)

    def edit(self, job_id: int, fields: Mapping[str, Any], now: float) -> None:
        """Change a job that has not started yet; `fields` come from `validation.job_changes`."""
        row = self.conn.execute("SELECT state, queue FROM jobs WHERE id = ?", (job_id,)).fetchone()
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
            self._require_queue_for(new_queue)
            # The counts table follows state changes by trigger; a move between queues is ours.
            self.conn.execute("UPDATE counts SET n = n - 1 WHERE queue = ? AND state = ?", (queue, state))
            self.conn.execute(
                "INSERT INTO counts VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (new_queue, state)
            )
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.conn.execute(
            f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ?", (*fields.values(), now, job_id)
        )

    @effect(ADDS)
    def restart(self, job_id: int, fields: Mapping[str, Any], hold: bool, now: float) -> int:
        """Add a copy of any job, with `fields` changed: same command, queue,
        settings, label, cwd and environment; no dependencies; due now."""
        row = self.conn.execute(
            "SELECT command, queue, priority, label, max_retries, backoff_base, timeout, cwd, env_id"
            " FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        copy = NewJob(
            command=row[0],
            queue=row[1],
            priority=row[2],
            label=row[3],
            max_retries=row[4],
            backoff_base=row[5],
            timeout=row[6],
            cwd=row[7],
            env=self._environment(row[8]),
            run_at=now,
            depends_on=[],
            hold=hold,
        )
        return self.add_jobs([msgspec.structs.replace(copy, **fields)], now)[0]

    def _require_queue_for(self, name: str) -> None:
        if not self.conn.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchone():
            raise Refused("not_found", f"unknown queue {name!r} (create it with `queuectl queue add {name}`)")
