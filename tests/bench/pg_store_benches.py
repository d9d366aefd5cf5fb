"""B3 and B5 through PostgreSQL (issue #12), on a throwaway server
(tests/postgres.py, fsync off as in the tests; the node's own commits are
synchronous as a user's server would have them).

B3pg: one `queuectl add --from -` of 100,000 lines into a node on
PostgreSQL, whole CLI process; its floor, a bare `unnest` insert of the same
rows in one transaction.
B5pg: `status` and `ls --limit 50` latencies of a node whose database holds
1,000,000 finished jobs (loaded with COPY), against the same at 1,000 jobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import QUEUECTL, REPO, Daemon, child_env

sys.path.insert(0, str(REPO))
from tests.postgres import PostgresServer, binaries


@contextmanager
def server() -> Iterator[PostgresServer | None]:
    """A throwaway PostgreSQL server, or None where it is not installed."""
    bin_dir = binaries()
    if bin_dir is None:
        yield None
        return
    pg = PostgresServer(bin_dir)
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def durable_database(pg: PostgresServer) -> str:
    """A fresh database whose commits wait for their WAL (synchronous_commit on)."""
    import psycopg

    name = pg.create_database()
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    return pg.url(name)


def b3_ours(pg: PostgresServer, root: Path, commands: int) -> float:
    """Jobs/s of one `queuectl add --from -` into a node on PostgreSQL."""
    root.mkdir(parents=True)
    lines = root / "jobs.txt"
    lines.write_text("".join(f"echo job {i}\n" for i in range(commands)))
    with Daemon(root, extra=["--store", durable_database(pg)]) as daemon:
        with daemon.client() as client:
            client.pause("default")
        env = child_env(QUEUED_SOCKET=str(daemon.socket))
        with open(lines, "rb") as stdin:
            t0 = time.monotonic()
            subprocess.run(
                [QUEUECTL, "add", "--from", "-"], stdin=stdin, env=env, check=True, capture_output=True
            )
            seconds = time.monotonic() - t0
        with daemon.client() as client:
            pending = client.status().counts["pending"]
        if pending != commands:
            raise RuntimeError(f"B3pg: {pending} pending after adding {commands}")
    return commands / seconds


def b3_floor(pg: PostgresServer, commands: int) -> float:
    """Rows/s of a bare `unnest` insert of the same jobs into the same schema,
    one transaction: the storage floor of a bulk add through PostgreSQL."""
    import psycopg

    from queued.store.postgres import PostgresStore

    url = durable_database(pg)
    PostgresStore.open(url).close()  # the schema
    now = time.time()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path TO queued")
        conn.execute(
            "INSERT INTO queues (name, created_at) VALUES ('default', %s) ON CONFLICT DO NOTHING", (now,)
        )
        env_id = conn.execute(
            "INSERT INTO environments (digest, data) VALUES ('\\x00', '\\x00') RETURNING id"
        ).fetchone()[0]
        cwd = os.getcwd().encode()
        t0 = time.monotonic()
        with conn.transaction():
            conn.execute(
                "INSERT INTO jobs (command, state, queue, priority, max_retries, backoff_base, run_at,"
                " created_at, updated_at, cwd, env_id)"
                " SELECT c, 'pending', 'default', 0, 3, 2.0, %s, %s, %s, %s, %s FROM unnest(%s::text[]) c",
                (now, now, now, cwd, env_id, [f"echo job {i}" for i in range(commands)]),
            )
        return commands / (time.monotonic() - t0)


def load_finished(url: str, jobs: int) -> float:
    """Append `jobs` completed jobs, each with one attempt, with COPY (the
    node must not be running); the seconds it took."""
    import psycopg

    t0 = time.monotonic()
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path TO queued")
        # No triggers while loading (a row trigger per finished job would take
        # minutes): the finished counts are kept by hand, once, below.
        conn.execute("SET session_replication_role = replica")
        now = time.time()
        conn.execute(
            "INSERT INTO queues (name, created_at) VALUES ('default', %s) ON CONFLICT DO NOTHING", (now,)
        )
        env_id = conn.execute(
            "INSERT INTO environments (digest, data) VALUES (%s, '\\x00')"
            " ON CONFLICT (digest) DO UPDATE SET data = excluded.data RETURNING id",
            (os.urandom(16),),
        ).fetchone()[0]
        first = conn.execute("SELECT nextval(pg_get_serial_sequence('jobs', 'id'))").fetchone()[0]
        conn.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), %s)", (first + jobs,))
        span = 30 * 86400
        cwd = os.getcwd().encode()

        def when(i: int) -> float:
            return now - span + span * i / max(jobs, 1)

        with conn.cursor().copy(
            "COPY jobs (id, command, state, queue, priority, label, attempts, max_retries, backoff_base,"
            " exit_code, run_at, created_at, updated_at, cwd, env_id) FROM STDIN"
        ) as copy:
            for i in range(jobs):
                t = when(i)
                copy.write_row(
                    (
                        first + i,
                        f"./task.sh --item {i}",
                        "completed",
                        "default",
                        0,
                        "nightly" if i % 10 == 0 else None,
                        1,
                        3,
                        2.0,
                        0,
                        t,
                        t,
                        t + 1,
                        cwd,
                        env_id,
                    )
                )
        with conn.cursor().copy(
            "COPY attempts (job_id, attempt, pid, started_at, ended_at, exit_code) FROM STDIN"
        ) as copy:
            for i in range(jobs):
                t = when(i)
                copy.write_row((first + i, 1, 1000 + i % 30000, t, t + 1, 0))
        conn.execute(
            "INSERT INTO finished_counts AS c (shard, completed) VALUES (0, %s)"
            " ON CONFLICT (shard) DO UPDATE SET completed = c.completed + excluded.completed",
            (jobs,),
        )
        conn.execute("ANALYZE jobs")
        conn.execute("ANALYZE attempts")
    return time.monotonic() - t0
