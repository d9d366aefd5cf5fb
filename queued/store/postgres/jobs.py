"""Jobs as rows in PostgreSQL: storing new ones, reading them back, deleting
finished ones; and their environments, stored once each (see the SQLite
engine's environments.py: the same encoding, the same digest)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from psycopg import Connection
from psycopg.types.json import Jsonb

from queued import lifecycle
from queued.lifecycle import JobState
from queued.protocol import Job, Run, readable
from queued.store.contract import AddedIds, Refused, Written
from queued.store.postgres.dialect import path_bytes, path_read
from queued.store.postgres.unique import UniqueKeys
from queued.store.sqlite import rows
from queued.store.sqlite.environments import blob, from_blob
from queued.store.sqlite.rows import UNFINISHED
from queued.validation import NewJob

_DECODED_KEPT = 256
CWD = 14  # the cwd's place in rows.JOB_COLUMNS
INSERT_JOB = (
    rows.INSERT_JOB.replace("INSERT INTO jobs (", "INSERT INTO jobs (id, ")
    .replace("VALUES (", "VALUES (?,")
    .replace("?", "%s")
)

_COLUMN_TYPES = [
    "bigint",
    "text",
    "text",
    "text",
    "int",
    "text",
    "int",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "bytea",
    "bigint",
    "int",
    "text",  # error
    "text",  # unique_key
    "text",  # node
    "int",  # slots
    "jsonb",  # needs
]
INSERT_JOBS = (
    INSERT_JOB.split(" VALUES ")[0]
    + " SELECT * FROM unnest("
    + ", ".join(f"%b::{kind}[]" for kind in _COLUMN_TYPES)
    + ")"
)
# A bulk add goes in with COPY (binary): about twice the rows a second of one
# `unnest` insert on the server, for the same work here.
COPY_JOBS = (
    "COPY " + INSERT_JOB.split(" VALUES ")[0].removeprefix("INSERT INTO ") + " FROM STDIN (FORMAT BINARY)"
)
COPY_FROM = 64  # rows; fewer go in with one statement
_COPY_TYPES = [{"bigint": "int8", "int": "int4"}.get(kind, kind) for kind in _COLUMN_TYPES]


def unknown_queue(name: str) -> Refused:
    return Refused("not_found", f"unknown queue {name!r} (create it with `queuectl queue add {name}`)")


def lock_queues(conn: Connection, names: Iterable[str]) -> set[str]:
    """Those of `names` that are queues, their rows locked FOR KEY SHARE until
    the commit: what a foreign key did for each row, once (see
    schema.JOB_KEYS_CHECKED_ONCE); `queue rm` waits for it."""
    return {
        row[0]
        for row in conn.execute(
            "SELECT name FROM queues WHERE name = ANY(%s::text[]) FOR KEY SHARE", (list(names),)
        )
    }


def with_path(row: tuple, at: int) -> tuple:
    return (*row[:at], path_read(row[at]), *row[at + 1 :])


class Environments:
    """The environments table, with what was stored and read lately kept in memory."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._ids: dict[bytes, int] = {}  # digest -> row
        self._decoded: dict[int, dict[str, str]] = {}  # row -> env, for claims

    def forget(self) -> None:
        """Drop what may name rows a rollback removed."""
        self._ids.clear()
        self._decoded.clear()

    def store(self, env: Mapping[str, str]) -> int:
        data = blob(env)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        env_id = self._ids.get(digest)
        if env_id is None:
            self.conn.execute(
                "INSERT INTO environments (digest, data) VALUES (%s, %s) ON CONFLICT (digest) DO NOTHING",
                (digest, data),
            )
            env_id = self._ids[digest] = self.conn.execute(
                "SELECT id FROM environments WHERE digest = %s", (digest,)
            ).fetchone()[0]
        return env_id

    def get(self, env_id: int) -> dict[str, str]:
        """The environment of row `env_id` (shared: never change it)."""
        env = self._decoded.get(env_id)
        if env is None:
            if len(self._decoded) > _DECODED_KEPT:
                self._decoded.clear()
            data = self.conn.execute("SELECT data FROM environments WHERE id = %s", (env_id,)).fetchone()[0]
            env = self._decoded[env_id] = from_blob(bytes(data))
        return env

    def read(self, env_id: int) -> dict[str, str]:
        row = self.conn.execute("SELECT data FROM environments WHERE id = %s", (env_id,)).fetchone()
        return from_blob(bytes(row[0])) if row else {}


class Jobs:
    def __init__(self, conn: Connection, environments: Environments) -> None:
        self.conn = conn
        self.environments = environments
        self.unique = UniqueKeys(conn)

    # -- reads ------------------------------------------------------------------

    def states(self, ids: Iterable[int]) -> dict[int, JobState]:
        return dict(
            self.conn.execute("SELECT id, state FROM jobs WHERE id = ANY(%s::bigint[])", (list(ids),))
        )

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
        found = self.conn.execute(
            f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE id = ANY(%s::bigint[]) ORDER BY id", (list(ids),)
        ).fetchall()
        return self._jobs(found)

    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        row = self.conn.execute(
            f"SELECT {rows.JOB_COLUMNS}, env_id FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        [job] = self._jobs([row[:-1]])
        runs = [
            rows.run(r)
            for r in self.conn.execute(
                f"SELECT {rows.RUN_COLUMNS} FROM attempts WHERE job_id = %s ORDER BY attempt", (job_id,)
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
            where.append("id < %s")
            args.append(before)
        if command is not None:
            where.append("strpos(command, %s) > 0")
            args.append(command)
        if created_after is not None:
            where.append("created_at >= %s")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at < %s")
            args.append(created_before)
        if states:
            where.append("state = ANY(%s::text[])")
            args.append(list(states))
        if queue is not None:
            where.append("queue = %s")
            args.append(queue)
        if label is not None:
            where.append("label = %s")
            args.append(label)
        if ids:
            where.append("id = ANY(%s::bigint[])")
            args.append(list(ids))
        query = f"SELECT {rows.JOB_COLUMNS} FROM jobs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT %s"
            args.append(limit)
        found = self.conn.execute(query, args).fetchall()
        found.reverse()
        return self._jobs(found)

    def _jobs(self, found: list[tuple]) -> list[Job]:
        """Jobs from their rows, with their dependencies (and which are not
        completed yet) and their latest attempt's times."""
        ids = [row[0] for row in found]
        deps: dict[int, list[int]] = {}
        unmet: dict[int, list[int]] = {}
        latest: dict[int, rows.Latest] = {}
        if ids:
            for job_id, dep, dep_state in self.conn.execute(
                "SELECT d.job_id, d.depends_on, j.state FROM dependencies d LEFT JOIN jobs j"
                " ON j.id = d.depends_on WHERE d.job_id = ANY(%s::bigint[]) ORDER BY d.job_id, d.depends_on",
                (ids,),
            ):
                deps.setdefault(job_id, []).append(dep)
                if dep_state is not None and dep_state != lifecycle.COMPLETED:  # removed: not waited for
                    unmet.setdefault(job_id, []).append(dep)
            for job_id, started_at, ended_at, node, held in self.conn.execute(
                "SELECT DISTINCT ON (job_id) job_id, started_at, ended_at, node, gpus FROM attempts"
                " WHERE job_id = ANY(%s::bigint[]) ORDER BY job_id, attempt DESC",
                (ids,),
            ):
                latest[job_id] = (started_at, ended_at, node, held)
        return [
            rows.job(
                with_path(row, CWD),
                deps.get(row[0], []),
                unmet.get(row[0], []),
                latest.get(row[0], rows.NO_ATTEMPT),
            )
            for row in found
        ]

    def unfinished_ids(self) -> list[int]:
        return [
            r[0] for r in self.conn.execute(f"SELECT id FROM jobs WHERE state IN ({UNFINISHED}) ORDER BY id")
        ]

    def dependencies(self, job_id: int) -> dict[int, JobState]:
        """The states of the jobs `job_id` waits for."""
        return self.states(
            r[0]
            for r in self.conn.execute("SELECT depends_on FROM dependencies WHERE job_id = %s", (job_id,))
        )

    # -- changes ----------------------------------------------------------------

    def add(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        """Store new jobs; their ids, in order. The ids are taken from the
        sequence first, consecutive, so that a dependency on a job of the same
        request is checked in memory and every row goes in with one statement
        (COPY for many): a bulk add (a chain of 100,000 dependents included)
        is a bulk insert.
        Unique keys are locked and looked up before (see `UniqueKeys.found`)."""
        if not jobs:
            return Written(AddedIds())
        queues = lock_queues(self.conn, {job.queue for job in jobs})
        for job in jobs:
            if job.queue not in queues:
                raise unknown_queue(job.queue)
        found = self.unique.found(jobs, now)
        if found:
            everything = jobs
            jobs = [job for index, job in enumerate(jobs) if index not in found]
            if not jobs:
                return Written(AddedIds([found[i] for i in range(len(everything))], [True] * len(everything)))
        # Consecutive, whatever other nodes add meanwhile (see schema: take_job_ids).
        first = self.conn.execute("SELECT take_job_ids(%s)", (len(jobs),)).fetchone()[0]
        ids = list(range(first, first + len(jobs)))
        ours = set(ids)
        outside = {dep for job in jobs for dep in job.depends_on if dep not in ours}
        known: dict[int, JobState] = self.states(outside) if outside else {}
        env_ids: dict[int, int] = {}  # id(env) -> row: the jobs of one request share their env
        new_rows: list[tuple] = []
        links: list[tuple[int, int]] = []
        initial = {hold: lifecycle.initial_state(hold=hold) for hold in (False, True)}
        for job_id, job in zip(ids, jobs, strict=True):
            env_id = env_ids.get(id(job.env))
            if env_id is None:
                env_id = env_ids[id(job.env)] = self.environments.store(job.env)
            state = initial[job.hold]
            unmet = 0
            if job.depends_on:
                # `known` holds the jobs before this one only: a later job of
                # the request does not exist yet, as for the SQLite engine.
                dep_states = {dep: known[dep] for dep in job.depends_on if dep in known}
                missing = lifecycle.unknown_ids(job.depends_on, dep_states)
                if missing:
                    raise Refused("not_found", f"--after names unknown job {missing[0]}")
                verdict = lifecycle.dependency_verdict(dep_states)
                if verdict.blocker is not None:
                    raise Refused(
                        "invalid", lifecycle.dependency_refusal(verdict.blocker, verdict.blocker_state or "")
                    )
                unmet = lifecycle.unmet_count(dep_states)
                links += [(job_id, dep) for dep in dict.fromkeys(job.depends_on)]
            known[job_id] = state
            new_rows.append(
                (
                    job_id,
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
                    path_bytes(job.cwd),
                    env_id,
                    unmet,
                    None,
                    job.unique_key,
                    job.node,
                    job.slots,
                    Jsonb(job.needs) if job.needs else None,
                )
            )
        if len(new_rows) == 1:
            self.conn.execute(INSERT_JOB, new_rows[0])
        elif len(new_rows) < COPY_FROM:  # one statement for the lot: a column per array
            self.conn.execute(INSERT_JOBS, [list(column) for column in zip(*new_rows, strict=True)])
        else:
            with self.conn.cursor().copy(COPY_JOBS) as copy:
                copy.set_types(_COPY_TYPES)
                for row in new_rows:
                    copy.write_row(row)
        if links:
            self.conn.execute(
                "INSERT INTO dependencies (job_id, depends_on)"
                " SELECT * FROM unnest(%s::bigint[], %s::bigint[])",
                [list(column) for column in zip(*links, strict=True)],
            )
        if not found:
            return Written(AddedIds(ids))
        added = iter(ids)
        answer = [found.get(index) if index in found else next(added) for index in range(len(everything))]
        for index, holder in found.items():
            if holder < 0:  # a key given earlier in this call: that job's new id
                answer[index] = answer[-1 - holder]
        return Written(AddedIds(answer, [index in found for index in range(len(everything))]))

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
        query, args = "SELECT id FROM jobs WHERE state = ANY(%s::text[])", [list(states)]
        if older_than is not None:
            query += " AND updated_at < %s"
            args.append(older_than)
        ids = [r[0] for r in self.conn.execute(query, args)]
        return Written((len(ids), self._delete(ids)))

    def _delete(self, ids: Sequence[int]) -> list[str]:
        paths: list[str] = []
        if not ids:
            return paths
        for out, err in self.conn.execute(
            "SELECT stdout_path, stderr_path FROM attempts WHERE job_id = ANY(%s::bigint[])", (list(ids),)
        ):
            paths += [p for p in (out, err) if p]
        self.conn.execute("DELETE FROM jobs WHERE id = ANY(%s::bigint[])", (list(ids),))
        return paths
