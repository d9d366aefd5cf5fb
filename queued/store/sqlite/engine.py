"""Durable state: every query and mutation of the SQLite database.

Theory of operation: `Store` is synchronous and owns one connection; it is only
ever called from the database thread (see `database.py`), which wraps each
batch of calls in one transaction and each call in a savepoint. A method that
refuses raises `Refused`; its savepoint is rolled back, so a rejected request
changes nothing. State changes are decided by `lifecycle`, never here. SQL
stays behind this module (and `store_attempts.py`, the supervisor's side of
it) so that another backend can take its place.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from queued import lifecycle
from queued.lifecycle import STATES, Event, JobState
from queued.protocol import Job, QueueInfo, Run, is_utf8, readable
from queued.store.sqlite.attempts import ADDS, READ, AttemptRecords, Refused, effect
from queued.store.sqlite.changes import JobChanging
from queued.validation import NewJob

__all__ = ["Refused", "Store"]

_JOB_COLUMNS = (
    "id, command, state, queue, priority, label, attempts, max_retries, backoff_base,"
    " timeout, exit_code, run_at, created_at, updated_at, cwd, error"
)
_INSERT_JOB = (
    "INSERT INTO jobs (command, state, queue, priority, label, max_retries, backoff_base,"
    " timeout, run_at, created_at, updated_at, cwd, env_id, unmet, error)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_UNSTARTED = ",".join(f"'{state}'" for state in lifecycle.UNSTARTED_STATES)
_UNFINISHED = ",".join(f"'{state}'" for state in lifecycle.UNFINISHED_STATES)
_env_encoder = msgspec.msgpack.Encoder(order="deterministic")
_env_decoder = msgspec.msgpack.Decoder(dict[str, str])


# Bytes that are not UTF-8 (held as os.fsdecode's lone surrogates) cannot be
# SQLite text or msgpack strings: such a cwd is stored as a BLOB, and such an
# environment as sorted (name, value) pairs of bytes. Both are read back into
# the very same str. Every other job pays one isascii() or one failed decode.


def _env_blob(env: Mapping[str, str]) -> bytes:
    try:
        return _env_encoder.encode(env)
    except UnicodeEncodeError:
        return _env_encoder.encode(sorted((os.fsencode(k), os.fsencode(v)) for k, v in env.items()))


def _env_from_blob(data: bytes) -> dict[str, str]:
    try:
        return _env_decoder.decode(data)
    except msgspec.ValidationError:
        return {os.fsdecode(k): os.fsdecode(v) for k, v in msgspec.msgpack.decode(data)}


def _stored_path(path: str | bytes) -> str | bytes:
    return path if isinstance(path, bytes) or is_utf8(path) else os.fsencode(path)


class Store(AttemptRecords, JobChanging):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._env_ids: dict[bytes, int] = {}
        self._envs: dict[int, dict[str, str]] = {}  # decoded, for claims: most jobs share a few
        # Jobs that reached a terminal state in the current batch, for waiters.
        self.finished: list[int] = []
        self.reordered = False

    def forget_caches(self) -> None:
        """Drop what may name rows a rollback removed."""
        self._env_ids.clear()
        self._envs.clear()

    def _environment(self, env_id: int) -> dict[str, str]:
        env = self._envs.get(env_id)
        if env is None:
            if len(self._envs) > 256:
                self._envs.clear()
            data = self.conn.execute("SELECT data FROM environments WHERE id = ?", (env_id,)).fetchone()[0]
            env = self._envs[env_id] = _env_from_blob(data)
        return env

    # -- jobs -----------------------------------------------------------------

    @effect(ADDS)
    def add_jobs(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        """Store new jobs; their ids, in order. Jobs without dependencies go in
        with one executemany per run of them: a bulk add is a bulk insert."""
        queues = {row[0] for row in self.conn.execute("SELECT name FROM queues")}
        ids: list[int] = []
        env_ids: dict[int, int] = {}  # id(env) -> row: the jobs of one request share their env
        added: dict[tuple[str, str], int] = {}  # (queue, state) -> jobs, for the counts table
        plain: list[tuple] = []  # rows waiting for one executemany

        def flush() -> None:
            if plain:
                self.conn.executemany(_INSERT_JOB, plain)
                # One writer inside one transaction: AUTOINCREMENT ids are consecutive.
                last = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()[0]
                ids.extend(range(last - len(plain) + 1, last + 1))
                plain.clear()

        for job in jobs:
            if job.queue not in queues:
                raise Refused(
                    "not_found",
                    f"unknown queue {job.queue!r} (create it with `queuectl queue add {job.queue}`)",
                )
            env_id = env_ids.get(id(job.env))
            if env_id is None:
                env_id = env_ids[id(job.env)] = self._env_id(job.env)
            state: JobState = lifecycle.initial_state(hold=job.hold)
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
                unmet = sum(1 for s in dep_states.values() if s != "completed")
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
                _stored_path(job.cwd),
                env_id,
                unmet,
                None,
            )
            added[(job.queue, state)] = added.get((job.queue, state), 0) + 1
            if not job.depends_on:
                plain.append(row)
                continue
            job_id = self.conn.execute(_INSERT_JOB, row).lastrowid
            assert job_id is not None
            self.conn.executemany(
                "INSERT INTO dependencies (job_id, depends_on) VALUES (?, ?)",
                [(job_id, dep) for dep in job.depends_on],
            )
            ids.append(job_id)
        flush()
        self.conn.executemany(
            "INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            [(queue, state, n) for (queue, state), n in added.items()],
        )
        return ids

    def _env_id(self, env: Mapping[str, str]) -> int:
        data = _env_blob(env)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        env_id = self._env_ids.get(digest)
        if env_id is None:
            self.conn.execute(
                "INSERT OR IGNORE INTO environments (digest, data) VALUES (?, ?)", (digest, data)
            )
            env_id = self.conn.execute("SELECT id FROM environments WHERE digest = ?", (digest,)).fetchone()[
                0
            ]
            self._env_ids[digest] = env_id
        return env_id

    @effect(READ)
    def states(self, ids: Iterable[int]) -> dict[int, str]:
        """The state of each of `ids` that exists."""
        found: dict[int, str] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", chunk))
        return found

    @effect(READ)
    def jobs_by_id(self, ids: Sequence[int]) -> list[Job]:
        rows: list[tuple] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            rows += self.conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", chunk)
        rows.sort()
        return self._jobs(rows)

    @effect(READ)
    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        row = self.conn.execute(f"SELECT {_JOB_COLUMNS}, env_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        [job] = self._jobs([row[:-1]])
        env_data = self.conn.execute("SELECT data FROM environments WHERE id = ?", (row[-1],)).fetchone()
        runs = [
            Run(
                attempt=r[0],
                pid=r[1],
                started_at=r[2],
                ended_at=r[3],
                exit_code=r[4],
                signal=r[5],
                error=r[6],
                stdout_path=r[7],
                stderr_path=r[8],
                log_incomplete=r[9],
            )
            for r in self.conn.execute(
                "SELECT attempt, pid, started_at, ended_at, exit_code, signal, error,"
                " stdout_path, stderr_path, log_incomplete FROM attempts WHERE job_id = ? ORDER BY attempt",
                (job_id,),
            )
        ]
        env = _env_from_blob(env_data[0]) if env_data else {}
        return job, runs, {readable(k): readable(v) for k, v in env.items()}

    @effect(READ)
    def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queue: str | None = None,
        label: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
    ) -> list[Job]:
        where, args = [], []
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
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self.conn.execute(sql, args).fetchall()
        rows.reverse()
        return self._jobs(rows)

    def _jobs(self, rows: list[tuple]) -> list[Job]:
        """Jobs from their rows, with what a reader asks next: their dependencies
        (and which of them are not completed yet) and their latest attempt's times."""
        deps: dict[int, list[int]] = {}
        unmet: dict[int, list[int]] = {}
        latest: dict[int, tuple[float, float | None]] = {}
        for chunk in _chunks([row[0] for row in rows]):
            marks = ",".join("?" * len(chunk))
            for job_id, dep, dep_state in self.conn.execute(
                "SELECT d.job_id, d.depends_on, j.state FROM dependencies d LEFT JOIN jobs j"
                f" ON j.id = d.depends_on WHERE d.job_id IN ({marks}) ORDER BY d.depends_on",
                chunk,
            ):
                deps.setdefault(job_id, []).append(dep)
                if dep_state != "completed":
                    unmet.setdefault(job_id, []).append(dep)
            for job_id, started_at, ended_at in self.conn.execute(
                "SELECT a.job_id, a.started_at, a.ended_at FROM attempts a"
                f" WHERE a.job_id IN ({marks}) AND a.attempt ="
                " (SELECT max(attempt) FROM attempts WHERE job_id = a.job_id)",
                chunk,
            ):
                latest[job_id] = (started_at, ended_at)
        return [
            self._job(row, deps.get(row[0], []), unmet.get(row[0], []), latest.get(row[0], (None, None)))
            for row in rows
        ]

    def _job(
        self,
        row: tuple,
        depends_on: list[int],
        unmet: list[int],
        latest: tuple[float | None, float | None],
    ) -> Job:
        return Job(
            id=row[0],
            command=row[1],
            state=row[2],
            queue=row[3],
            priority=row[4],
            label=row[5],
            attempts=row[6],
            max_retries=row[7],
            backoff_base=row[8],
            timeout=row[9],
            exit_code=row[10],
            run_at=row[11],
            created_at=row[12],
            updated_at=row[13],
            cwd=row[14] if isinstance(row[14], str) else readable(row[14]),
            error=row[15],
            depends_on=depends_on,
            waiting_on=unmet if row[2] in ("pending", "held", "failed") else [],
            started_at=latest[0],
            ended_at=latest[1],
        )

    @effect(READ)
    def unfinished_ids(self) -> list[int]:
        return [
            r[0] for r in self.conn.execute(f"SELECT id FROM jobs WHERE state IN ({_UNFINISHED}) ORDER BY id")
        ]

    def _require(self, ids: Sequence[int], event: Event) -> dict[int, str]:
        """The states of `ids`, refusing unknown ids and any job `event` does not apply to."""
        states = self.states(ids)
        missing = lifecycle.unknown_ids(ids, states)
        if missing:
            raise Refused("not_found", f"no job {missing[0]}")
        for job_id in sorted(states):
            if not lifecycle.can(states[job_id], event):  # type: ignore[arg-type]
                raise Refused("invalid", f"job {job_id} is {states[job_id]}: {_cannot(event)}")
        return states

    def _set_state(self, job_id: int, old: str, event: Event, now: float, **columns: object) -> None:
        new = lifecycle.next_state(old, event)  # type: ignore[arg-type]
        sets = ", ".join(f"{name} = ?" for name in columns)
        self.conn.execute(
            f"UPDATE jobs SET state = ?, updated_at = ?{', ' + sets if sets else ''} WHERE id = ?",
            (new, now, *columns.values(), job_id),
        )
        if lifecycle.is_terminal(new):
            self.finished.append(job_id)
            if new in ("dead", "canceled"):
                self._cancel_dependents(job_id, new, now)
            else:
                self._recount_unmet(job_id)
        elif old == "completed":  # retried: its waiting dependents must wait again
            self._recount_unmet(job_id)

    def _recount_unmet(self, job_id: int) -> None:
        """Recount the unfinished dependencies of `job_id`'s pending dependents.
        A count, not a decrement: a dependency may complete, be retried and complete again."""
        if self.conn.execute(
            "UPDATE jobs SET unmet = (SELECT count(*) FROM dependencies d JOIN jobs dep"
            " ON dep.id = d.depends_on WHERE d.job_id = jobs.id AND dep.state != 'completed')"
            f" WHERE state IN ({_UNSTARTED})"
            " AND id IN (SELECT job_id FROM dependencies WHERE depends_on = ?)",
            (job_id,),
        ).rowcount:
            self.reordered = True

    def _cancel_dependents(self, job_id: int, state: str, now: float) -> None:
        """Cancel every waiting job that depends on `job_id`, directly or through
        others, in one pass: a recursive query, not a recursion per link, so a
        chain of any length costs one statement and no stack. Each names the
        dependency that doomed it (the lowest, when several did)."""
        rows = self.conn.execute(
            "WITH RECURSIVE doomed(id, blocker) AS ("
            " SELECT d.job_id, d.depends_on FROM dependencies d JOIN jobs j ON j.id = d.job_id"
            f" WHERE d.depends_on = ? AND j.state IN ({_UNSTARTED})"
            " UNION SELECT d.job_id, d.depends_on FROM doomed"
            " JOIN dependencies d ON d.depends_on = doomed.id JOIN jobs j ON j.id = d.job_id"
            f" WHERE j.state IN ({_UNSTARTED}))"
            " SELECT doomed.id, min(blocker), jobs.state FROM doomed JOIN jobs ON jobs.id = doomed.id"
            " GROUP BY doomed.id ORDER BY doomed.id",
            (job_id,),
        ).fetchall()
        canceled = lifecycle.next_state("pending", Event.CANCEL)
        self.conn.executemany(
            "UPDATE jobs SET state = ?, updated_at = ?, error = ? WHERE id = ?",
            [
                (
                    lifecycle.next_state(dependent_state, Event.CANCEL),
                    now,
                    lifecycle.dependency_cancel_reason(blocker, state if blocker == job_id else canceled),
                    dependent,
                )
                for dependent, blocker, dependent_state in rows
            ],
        )
        self.finished.extend(dependent for dependent, _, _ in rows)

    def cancel(self, ids: Sequence[int], now: float) -> list[int]:
        """Cancel jobs; returns those that were running (their processes must be stopped)."""
        states = self._require(ids, Event.CANCEL)
        for job_id in sorted(states):
            self._set_state(job_id, states[job_id], Event.CANCEL, now, error="canceled by user")
        return [job_id for job_id, state in states.items() if state == "running"]

    def cancel_what_can(self, ids: Sequence[int], now: float) -> tuple[list[int], list[int], dict[int, str]]:
        """Cancel those of `ids` that can be: (the running ones, whose processes
        must be stopped; every one canceled; why each other one was not)."""
        states = self.states(ids)
        refused = {job_id: f"no job {job_id}" for job_id in lifecycle.unknown_ids(ids, states)}
        for job_id, state in states.items():
            if not lifecycle.can(state, Event.CANCEL):  # type: ignore[arg-type]
                refused[job_id] = f"job {job_id} is {state}: {_cannot(Event.CANCEL)}"
        cancelable = sorted(job_id for job_id in states if job_id not in refused)
        running = self.cancel(cancelable, now) if cancelable else []
        return running, cancelable, refused

    @effect(ADDS)
    def retry(self, ids: Sequence[int], all_dead: bool, now: float) -> list[int]:
        ids = list(ids)
        if all_dead:
            ids += [r[0] for r in self.conn.execute("SELECT id FROM jobs WHERE state = 'dead'")]
        ids = sorted(set(ids))
        states = self._require(ids, Event.RETRY)
        for job_id in ids:  # ascending: a dependency is retried before its dependents
            deps = self.states(
                r[0]
                for r in self.conn.execute("SELECT depends_on FROM dependencies WHERE job_id = ?", (job_id,))
            )
            verdict = lifecycle.dependency_verdict(deps)
            if verdict.blocker is not None:
                raise Refused(
                    "invalid",
                    f"job {job_id} depends on job {verdict.blocker}, which is "
                    f"{verdict.blocker_state}: retry that one too",
                )
            unmet = sum(1 for s in deps.values() if s != "completed")
            self._set_state(
                job_id,
                states[job_id],
                Event.RETRY,
                now,
                attempts=0,
                exit_code=None,
                error=None,
                run_at=now,
                unmet=unmet,
            )
        return ids

    def remove(self, ids: Sequence[int]) -> list[str]:
        """Delete finished jobs; returns their log paths for the caller to unlink."""
        states = self.states(ids)
        missing = lifecycle.unknown_ids(ids, states)
        if missing:
            raise Refused("not_found", f"no job {missing[0]}")
        for job_id in sorted(states):
            if not lifecycle.is_terminal(states[job_id]):
                raise Refused("invalid", f"job {job_id} is {states[job_id]}: cancel it first")
        return self._delete(sorted(states))

    def clean(self, states: Sequence[str], older_than: float | None) -> tuple[int, list[str]]:
        marks = ",".join("?" * len(states))
        sql, args = f"SELECT id FROM jobs WHERE state IN ({marks})", list(states)
        if older_than is not None:
            sql += " AND updated_at < ?"
            args.append(older_than)
        ids = [r[0] for r in self.conn.execute(sql, args)]
        return len(ids), self._delete(ids)

    def _delete(self, ids: Sequence[int]) -> list[str]:
        paths: list[str] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for out, err in self.conn.execute(
                f"SELECT stdout_path, stderr_path FROM attempts WHERE job_id IN ({marks})", chunk
            ):
                paths += [p for p in (out, err) if p]
            self.conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
        return paths

    # -- queues, config, counts -------------------------------------------------

    @effect(READ)
    def queues(self) -> list[QueueInfo]:
        counts: dict[tuple[str, str], int] = {
            (q, s): n for q, s, n in self.conn.execute("SELECT queue, state, n FROM counts")
        }
        return [
            QueueInfo(
                name=name,
                concurrency=conc,
                paused=bool(paused),
                running=counts.get((name, "running"), 0),
                pending=counts.get((name, "pending"), 0),
                held=counts.get((name, "held"), 0),
                failed=counts.get((name, "failed"), 0),
            )
            for name, conc, paused in self.conn.execute(
                "SELECT name, concurrency, paused FROM queues ORDER BY name"
            )
        ]

    def ensure_queue(self, name: str, now: float) -> None:
        self.conn.execute("INSERT OR IGNORE INTO queues (name, created_at) VALUES (?, ?)", (name, now))

    @effect(ADDS)
    def add_queue(self, name: str, concurrency: int | None, now: float) -> None:
        if self.conn.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchone():
            raise Refused("invalid", f"queue {name!r} already exists")
        self.conn.execute(
            "INSERT INTO queues (name, concurrency, created_at) VALUES (?, ?, ?)", (name, concurrency, now)
        )

    def remove_queue(self, name: str) -> None:
        if name == "default":
            raise Refused("invalid", "the default queue cannot be removed")
        self._require_queue(name)
        busy = self.conn.execute(
            f"SELECT count(*) FROM jobs WHERE queue = ? AND state IN ({_UNFINISHED})", (name,)
        ).fetchone()[0]
        if busy:
            raise Refused("invalid", f"queue {name!r} still has {busy} unfinished job(s)")
        if self.conn.execute("SELECT 1 FROM jobs WHERE queue = ? LIMIT 1", (name,)).fetchone():
            raise Refused("invalid", f"queue {name!r} still holds finished jobs: `queuectl clean` them first")
        self.conn.execute("DELETE FROM counts WHERE queue = ?", (name,))
        self.conn.execute("DELETE FROM queues WHERE name = ?", (name,))

    def set_paused(self, name: str, paused: bool) -> None:
        self._require_queue(name)
        self.conn.execute("UPDATE queues SET paused = ? WHERE name = ?", (int(paused), name))

    def set_all_paused(self, paused: bool) -> None:
        self.conn.execute("UPDATE queues SET paused = ?", (int(paused),))

    def _require_queue(self, name: str) -> None:
        if not self.conn.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchone():
            raise Refused("not_found", f"no queue {name!r}")

    @effect(READ)
    def counts(self) -> dict[str, int]:
        totals = dict.fromkeys(STATES, 0)
        for state, n in self.conn.execute("SELECT state, sum(n) FROM counts GROUP BY state"):
            totals[state] = n
        return totals

    @effect(READ)
    def config(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM config"))

    def set_config(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _chunks(ids: list[int], size: int = 900) -> list[list[int]]:
    """Pieces small enough for SQLite's limit on bound parameters."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _cannot(event: Event) -> str:
    return {
        Event.CANCEL: "only pending, held, failed or running jobs can be canceled",
        Event.RETRY: "only completed, dead or canceled jobs can be retried",
        Event.HOLD: "only pending or failed jobs can be held",
        Event.RELEASE: "only held jobs can be released",
    }.get(event, f"cannot {event.value}")
