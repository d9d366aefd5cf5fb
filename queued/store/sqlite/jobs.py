"""Jobs as rows: storing new ones, reading them back, deleting finished ones."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from queued import lifecycle
from queued.lifecycle import JobState
from queued.protocol import Job, Run, readable
from queued.store.contract import AddedIds, Refused, Written
from queued.store.sqlite import rows
from queued.store.sqlite.environments import Environments, stored_path
from queued.store.sqlite.rows import UNFINISHED, UNIQUE, UNIQUE_WINDOW, chunks
from queued.validation import NewJob


def unknown_queue(name: str) -> Refused:
    return Refused("not_found", f"unknown queue {name!r} (create it with `queuectl queue add {name}`)")


class Jobs:
    def __init__(self, conn: sqlite3.Connection, environments: Environments) -> None:
        self.conn = conn
        self.environments = environments

    # -- reads ------------------------------------------------------------------

    def states(self, ids: Iterable[int]) -> dict[int, JobState]:
        """The state of each of `ids` that exists."""
        found: dict[int, JobState] = {}
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", chunk))
        return found

    def require(self, ids: Sequence[int], event: lifecycle.Event) -> dict[int, JobState]:
        """The states of `ids`, refusing unknown ids and any job `event` does not apply to."""
        states = self.states(ids)
        missing = lifecycle.unknown_ids(ids, states)
        if missing:
            raise Refused("not_found", f"no job {missing[0]}")
        for job_id in sorted(states):
            if not lifecycle.can(states[job_id], event):
                raise Refused("invalid", lifecycle.refusal(job_id, states[job_id], event))
        return states

    def jobs_by_id(self, ids: Sequence[int]) -> list[Job]:
        found: list[tuple] = []
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            found += self.conn.execute(f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", chunk)
        found.sort()
        return self._jobs(found)

    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        row = self.conn.execute(
            f"SELECT {rows.JOB_COLUMNS}, env_id FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        [job] = self._jobs([row[:-1]])
        runs = [
            rows.run(r)
            for r in self.conn.execute(
                f"SELECT {rows.RUN_COLUMNS} FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,)
            )
        ]
        env = self.environments.read(row[-1])
        return job, runs, {readable(k): readable(v) for k, v in env.items()}

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
        where: list[str] = []
        args: list[object] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if command is not None:
            where.append("instr(command, ?) > 0")
            args.append(command)
        if created_after is not None:
            where.append("created_at >= ?")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at < ?")
            args.append(created_before)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if label is not None:
            where.append("label = ?")
            args.append(label)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        sql = f"SELECT {rows.JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        found = self.conn.execute(sql, args).fetchall()
        found.reverse()
        return self._jobs(found)

    def _jobs(self, found: list[tuple]) -> list[Job]:
        """Jobs from their rows, with what a reader asks next: their dependencies
        (and which of them are not completed yet) and their latest attempt's times."""
        deps: dict[int, list[int]] = {}
        unmet: dict[int, list[int]] = {}
        latest: dict[int, rows.Latest] = {}
        for chunk in chunks([row[0] for row in found]):
            marks = ",".join("?" * len(chunk))
            for job_id, dep, dep_state in self.conn.execute(
                "SELECT d.job_id, d.depends_on, j.state FROM dependencies d LEFT JOIN jobs j"
                f" ON j.id = d.depends_on WHERE d.job_id IN ({marks}) ORDER BY d.depends_on",
                chunk,
            ):
                deps.setdefault(job_id, []).append(dep)
                if dep_state is not None and dep_state != lifecycle.COMPLETED:  # removed: not waited for
                    unmet.setdefault(job_id, []).append(dep)
            for job_id, started_at, ended_at, node, held in self.conn.execute(
                "SELECT a.job_id, a.started_at, a.ended_at, a.node, a.gpus FROM attempts a"
                f" WHERE a.job_id IN ({marks}) AND a.attempt ="
                " (SELECT max(attempt) FROM attempts WHERE job_id = a.job_id)",
                chunk,
            ):
                latest[job_id] = (started_at, ended_at, node, held)
        return [
            rows.job(row, deps.get(row[0], []), unmet.get(row[0], []), latest.get(row[0], rows.NO_ATTEMPT))
            for row in found
        ]

    def unfinished_ids(self) -> list[int]:
        return [
            r[0] for r in self.conn.execute(f"SELECT id FROM jobs WHERE state IN ({UNFINISHED}) ORDER BY id")
        ]

    def dependencies(self, job_id: int) -> dict[int, JobState]:
        """The states of the jobs `job_id` waits for."""
        return self.states(
            r[0] for r in self.conn.execute("SELECT depends_on FROM dependencies WHERE job_id = ?", (job_id,))
        )

    def key_holder(self, key: str, window_start: float | None) -> tuple[int, JobState] | None:
        """The job an add of `key` returns (`lifecycle.holds_key`): the unfinished
        one, else, with a window, the one that completed last within it."""
        row = self.conn.execute(
            f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN ({UNIQUE})", (key,)
        ).fetchone()
        if row is None and window_start is not None:
            row = self.conn.execute(
                f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN ({UNIQUE_WINDOW})"
                " AND updated_at > ? ORDER BY updated_at DESC, id DESC LIMIT 1",
                (key, window_start),
            ).fetchone()
        return row

    def unique_keys(self, ids: Sequence[int]) -> dict[int, str]:
        """The unique key of each of `ids` that has one."""
        found: dict[int, str] = {}
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            found.update(
                self.conn.execute(
                    f"SELECT id, unique_key FROM jobs WHERE id IN ({marks}) AND unique_key IS NOT NULL", chunk
                )
            )
        return found

    # -- changes ----------------------------------------------------------------

    def add(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        """Store new jobs; their ids, in order. Jobs without dependencies go in
        with one executemany per run of them: a bulk add is a bulk insert. A
        unique key is looked up and inserted under the one writer's
        transaction, so nothing comes between (the partial unique index
        jobs_unique would refuse a second unfinished job of the key anyway)."""
        queues = {row[0] for row in self.conn.execute("SELECT name FROM queues")}
        ids = AddedIds()
        env_ids: dict[int, int] = {}  # id(env) -> row: the jobs of one request share their env
        added: dict[tuple[str, str], int] = {}  # (queue, state) -> jobs, for the counts table
        plain: list[tuple] = []  # rows waiting for one executemany

        def flush() -> None:
            if plain:
                self.conn.executemany(rows.INSERT_JOB, plain)
                # One writer inside one transaction: AUTOINCREMENT ids are consecutive.
                last = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()[0]
                ids.extend(range(last - len(plain) + 1, last + 1))
                ids.existing.extend([False] * len(plain))
                plain.clear()

        for job in jobs:
            if job.queue not in queues:
                raise unknown_queue(job.queue)
            if job.unique_key is not None:
                flush()  # the key may be one of this request's
                holder = self.key_holder(job.unique_key, lifecycle.unique_window_start(now, job.unique_for))
                if holder is not None:
                    ids.append(holder[0])
                    ids.existing.append(True)
                    continue
            env_id = env_ids.get(id(job.env))
            if env_id is None:
                env_id = env_ids[id(job.env)] = self.environments.store(job.env)
            state = lifecycle.initial_state(hold=job.hold)
            unmet = 0
            if job.depends_on:
                flush()  # a dependency may be a job of this very request
                dep_states = self.states(job.depends_on)
                missing = lifecycle.unknown_ids(job.depends_on, dep_states)
                if missing:
                    raise Refused("not_found", f"--after names unknown job {missing[0]}")
                verdict = lifecycle.dependency_verdict(dep_states)
                if verdict.blocker is not None:
                    raise Refused(
                        "invalid", lifecycle.dependency_refusal(verdict.blocker, verdict.blocker_state or "")
                    )
                unmet = lifecycle.unmet_count(dep_states)
            row = (
                job.command,
                state,
                job.queue,
                job.priority,
                job.label,
                job.max_retries,
                job.backoff_base,
                job.timeout,
                job.run_at,
                now,
                now,
                stored_path(job.cwd),
                env_id,
                unmet,
                None,
                job.unique_key,
                job.node,
                job.slots,
                rows.stored_json(job.needs) if job.needs else None,
            )
            added[(job.queue, state)] = added.get((job.queue, state), 0) + 1
            if not job.depends_on:
                plain.append(row)
                continue
            job_id = self.conn.execute(rows.INSERT_JOB, row).lastrowid
            assert job_id is not None
            self.conn.executemany(
                "INSERT INTO dependencies (job_id, depends_on) VALUES (?, ?)",
                [(job_id, dep) for dep in job.depends_on],
            )
            ids.append(job_id)
            ids.existing.append(False)
        flush()
        self.conn.executemany(
            "INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            [(queue, state, n) for (queue, state), n in added.items()],
        )
        return Written(ids)

    def remove(self, ids: Sequence[int]) -> Written[list[str]]:
        """Delete finished jobs; returns their log paths for the caller to unlink."""
        states = self.states(ids)
        missing = lifecycle.unknown_ids(ids, states)
        if missing:
            raise Refused("not_found", f"no job {missing[0]}")
        for job_id in sorted(states):
            if not lifecycle.is_terminal(states[job_id]):
                raise Refused("invalid", f"job {job_id} is {states[job_id]}: cancel it first")
        return Written(self._delete(sorted(states)))

    def clean(self, states: Sequence[str], older_than: float | None) -> Written[tuple[int, list[str]]]:
        marks = ",".join("?" * len(states))
        sql, args = f"SELECT id FROM jobs WHERE state IN ({marks})", list(states)
        if older_than is not None:
            sql += " AND updated_at < ?"
            args.append(older_than)
        ids = [r[0] for r in self.conn.execute(sql, args)]
        return Written((len(ids), self._delete(ids)))

    def _delete(self, ids: Sequence[int]) -> list[str]:
        paths: list[str] = []
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for out, err in self.conn.execute(
                f"SELECT stdout_path, stderr_path FROM attempts WHERE job_id IN ({marks})", chunk
            ):
                paths += [p for p in (out, err) if p]
            self.conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
        return paths
