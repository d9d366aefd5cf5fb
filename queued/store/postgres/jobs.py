"""Jobs as rows in PostgreSQL: what differs from queued/store/job_table.py
(which has the reads and deletes of both engines) is storing new ones, with
their ids taken ahead and one statement (COPY for many), and the queues'
and unique keys' locks that stand for checks across nodes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import Connection
from psycopg.types.json import Jsonb

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.contract import AddedIds, Written
from queued.store.environments import Environments
from queued.store.job_table import JobTable, unknown_queue, unmet_dependencies
from queued.store.postgres.dialect import POSTGRES, path_bytes, path_read
from queued.store.postgres.unique import UniqueKeys
from queued.store.sqlite import rows
from queued.validation import NewJob

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
    """`row` with its cwd at `at` read back (attempts.py's claims)."""
    return (*row[:at], path_read(row[at]), *row[at + 1 :])


class Jobs(JobTable):
    def __init__(self, conn: Connection, environments: Environments) -> None:
        self.unique: UniqueKeys  # the engine's own: `add` asks it more than the shared reads do
        super().__init__(conn, POSTGRES, environments, UniqueKeys(conn))

    def _dependencies_held(self, ids: set[int]) -> dict[int, JobState]:
        """The states of the jobs new ones wait for, their rows held (FOR
        SHARE) until the add commits: an end, cancel or rm of one of them on
        another node waits for the new dependents to exist, and its recount
        or cascade then reaches them; one that committed first is read as it
        left the job. Read unlocked, an end committed between this read and
        the add's commit left a new dependent waiting for ever."""
        rows = self.conn.execute(
            "SELECT id, state FROM jobs WHERE id = ANY(%s::bigint[]) ORDER BY id FOR SHARE", (sorted(ids),)
        )
        return dict(rows.fetchall())

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
        known: dict[int, JobState] = self._dependencies_held(outside) if outside else {}
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
                unmet = unmet_dependencies(job.depends_on, dep_states)
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
