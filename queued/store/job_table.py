"""Jobs as rows, for every engine: reading them back (with what a reader asks
next: their dependencies and their latest attempt), looking up states and
unique keys, deleting finished ones. The statements are the same but for
their spelling (queued/store/dialect.py).

An engine's own `Jobs` adds to this what differs in shape: storing new jobs
(SQLite's executemany and AUTOINCREMENT ids, PostgreSQL's ids taken ahead and
COPY) and how a unique key's holder is looked up and locked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from queued import lifecycle
from queued.lifecycle import JobState
from queued.protocol import Job, Run, readable
from queued.store.contract import AddedIds, Refused, Written
from queued.store.dialect import Connection, Dialect
from queued.store.environments import Environments
from queued.store.sqlite import rows
from queued.store.sqlite.rows import TERMINAL, UNFINISHED
from queued.validation import NewJob

CWD = rows.JOB_COLUMNS.split(", ").index("cwd")  # the cwd's place in a row of JOB_COLUMNS


def unknown_queue(name: str) -> Refused:
    return Refused("not_found", f"unknown queue {name!r} (create it with `queuectl queue add {name}`)")


def job_filters(
    dialect: Dialect,
    *,
    states: Sequence[str] = (),
    queue: str | None = None,
    label: str | None = None,
    ids: Sequence[int] = (),
    before: int | None = None,
    command: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
) -> tuple[str, list[object]]:
    """The WHERE clause (empty, or with its leading space) of the filters of
    Store.list_jobs, in `dialect`'s spelling, and its parameters."""
    where: list[str] = []
    args: list[object] = []
    for clause, value in (
        ("id < ?", before),
        (f"{dialect.find}(command, ?) > 0", command),
        ("created_at >= ?", created_after),
        ("created_at < ?", created_before),
        ("queue = ?", queue),
        ("label = ?", label),
    ):
        if value is not None:
            where.append(dialect.sql(clause))
            args.append(value)
    for column, values, kind in (("state", states, "text"), ("id", ids, "bigint")):
        if values:
            clause, bound = dialect.one_of(column, values, kind)
            where.append(clause)
            args += bound
    return (" WHERE " + " AND ".join(where) if where else ""), args


def unmet_dependencies(depends_on: Sequence[int], states: Mapping[int, JobState]) -> int:
    """How many of `depends_on` a new job waits for (`states`: those that
    exist); Refused for one that does not exist or can never complete."""
    missing = lifecycle.unknown_ids(depends_on, states)
    if missing:
        raise Refused("not_found", f"--after names unknown job {missing[0]}")
    verdict = lifecycle.dependency_verdict(states)
    if verdict.blocker is not None:
        raise Refused("invalid", lifecycle.dependency_refusal(verdict.blocker, verdict.blocker_state or ""))
    return lifecycle.unmet_count(states)


class UniqueKeys(Protocol):
    """How an engine finds the job that holds a unique key (lifecycle.holds_key)."""

    def lock(self, keys: Iterable[str]) -> None:
        """Keep other writers from adding or retrying a job of `keys` until the commit."""
        ...

    def holder(self, key: str, window_start: float | None) -> tuple[int, JobState] | None:
        """The job an add of `key` returns; the caller holds the key's lock."""
        ...


class JobTable:
    def __init__(
        self, conn: Connection, dialect: Dialect, environments: Environments, unique: UniqueKeys
    ) -> None:
        self.conn = conn
        self.dialect = dialect
        self.environments = environments
        self.unique = unique
        self._get = dialect.sql(f"SELECT {rows.JOB_COLUMNS}, env_id FROM jobs WHERE id = ?")
        self._runs = dialect.sql(f"SELECT {rows.RUN_COLUMNS} FROM attempts WHERE job_id = ? ORDER BY attempt")
        self._dependencies = dialect.sql("SELECT depends_on FROM dependencies WHERE job_id = ?")

    def add(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        """Store new jobs; their ids, in order (each engine's own)."""
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------

    def states(self, ids: Iterable[int], *, lock: bool = False) -> dict[int, JobState]:
        """The state of each of `ids` that exists; with `lock`, each row
        locked until the end of the transaction where other writers could
        change it, its state read after any wait for them (a change of many
        counts its moves from these states: see `Transitions.move_many`)."""
        locked = f" ORDER BY id{self.dialect.lock}" if lock else ""
        found: dict[int, JobState] = {}
        for batch in self.dialect.batches(ids):
            clause, args = self.dialect.one_of("id", batch, "bigint")
            found.update(self.conn.execute(f"SELECT id, state FROM jobs WHERE {clause}{locked}", args))
        return found

    def require(self, ids: Sequence[int], event: lifecycle.Event) -> dict[int, JobState]:
        """The states of `ids`, locked (see `states`), refusing unknown ids and
        any job `event` does not apply to."""
        states = self.states(ids, lock=True)
        missing = lifecycle.unknown_ids(ids, states)
        if missing:
            raise Refused("not_found", f"no job {missing[0]}")
        for job_id in sorted(states):
            if not lifecycle.can(states[job_id], event):
                raise Refused("invalid", lifecycle.refusal(job_id, states[job_id], event))
        return states

    def jobs_by_id(self, ids: Sequence[int]) -> list[Job]:
        found: list[tuple] = []
        for batch in self.dialect.batches(ids):
            clause, args = self.dialect.one_of("id", batch, "bigint")
            found += self.conn.execute(f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE {clause}", args)
        found.sort()
        return self._jobs(found)

    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        row = self.conn.execute(self._get, (job_id,)).fetchone()
        if row is None:
            raise Refused("not_found", f"no job {job_id}")
        [job] = self._jobs([row[:-1]])
        runs = [rows.run(r) for r in self.conn.execute(self._runs, (job_id,))]
        env = self.environments.read(row[-1])
        return job, runs, {readable(k): readable(v) for k, v in env.items()}

    def list_jobs(self, *, limit: int | None = None, **filters: Any) -> list[Job]:
        """The newest `limit` jobs that match `filters` (job_filters'), oldest first."""
        where, args = job_filters(self.dialect, **filters)
        sql = f"SELECT {rows.JOB_COLUMNS} FROM jobs{where} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {self.dialect.mark}"
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
        for batch in self.dialect.batches([row[0] for row in found]):
            clause, args = self.dialect.one_of("d.job_id", batch, "bigint")
            for job_id, dep, dep_state in self.conn.execute(
                "SELECT d.job_id, d.depends_on, j.state FROM dependencies d LEFT JOIN jobs j"
                f" ON j.id = d.depends_on WHERE {clause} ORDER BY d.job_id, d.depends_on",
                args,
            ):
                deps.setdefault(job_id, []).append(dep)
                if dep_state is not None and dep_state != lifecycle.COMPLETED:  # removed: not waited for
                    unmet.setdefault(job_id, []).append(dep)
            clause, args = self.dialect.one_of("a.job_id", batch, "bigint")
            for job_id, started_at, ended_at, node, held in self.conn.execute(
                self.dialect.latest_attempts.format(jobs=clause), args
            ):
                latest[job_id] = (started_at, ended_at, node, held)
        path_out = self.dialect.path_out
        if path_out is not None:  # once per read, not per row, where rows come as Jobs take them
            found = [(*row[:CWD], path_out(row[CWD]), *row[CWD + 1 :]) for row in found]
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
        return self.states(r[0] for r in self.conn.execute(self._dependencies, (job_id,)))

    def dependencies_of(self, ids: Sequence[int]) -> dict[int, dict[int, JobState]]:
        """`dependencies` of each of `ids` that has any, in a statement per
        batch of ids. The dependencies' rows are held until the transaction
        ends (where rows lock): an end of one on another node waits for what
        is decided from its state here (a retry's count of what its job waits
        for), and its recount then reaches that job."""
        found: dict[int, dict[int, JobState]] = {}
        for batch in self.dialect.batches(ids):
            clause, args = self.dialect.one_of("d.job_id", batch, "bigint")
            for job_id, dep, dep_state in self.conn.execute(
                "SELECT d.job_id, d.depends_on, j.state FROM dependencies d"
                f" JOIN jobs j ON j.id = d.depends_on WHERE {clause}"
                f" ORDER BY j.id{self.dialect.share.format('j')}",
                args,
            ):
                found.setdefault(job_id, {})[dep] = dep_state
        return found

    def unique_keys(self, ids: Sequence[int]) -> dict[int, str]:
        """The unique key of each of `ids` that has one."""
        found: dict[int, str] = {}
        for batch in self.dialect.batches(ids):
            clause, args = self.dialect.one_of("id", batch, "bigint")
            keyed = f"SELECT id, unique_key FROM jobs WHERE {clause} AND unique_key IS NOT NULL"
            found.update(self.conn.execute(keyed, args))
        return found

    # -- deleting ---------------------------------------------------------------

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
        # The finished states written out as the partial index of them names
        # them (jobs_finished): a planner can use it only for a query that
        # implies its condition, and a bound value proves nothing to it.
        clause, args = self.dialect.one_of("state", states, "text")
        sql = f"SELECT id FROM jobs WHERE state IN ({TERMINAL}) AND {clause}"
        if older_than is not None:
            sql += f" AND updated_at < {self.dialect.mark}"
            args.append(older_than)
        ids = [r[0] for r in self.conn.execute(sql, args)]
        return Written((len(ids), self._delete(ids)))

    def _delete(self, ids: Sequence[int]) -> list[str]:
        paths: list[str] = []
        for batch in self.dialect.batches(ids):
            clause, args = self.dialect.one_of("job_id", batch, "bigint")
            logs = f"SELECT stdout_path, stderr_path FROM attempts WHERE {clause}"
            for out, err in self.conn.execute(logs, args):
                paths += [p for p in (out, err) if p]
            clause, args = self.dialect.one_of("id", batch, "bigint")
            self.conn.execute(f"DELETE FROM jobs WHERE {clause}", args)
        return paths
