"""The PostgreSQL benchmarks of issue #12: nodes of one database on this
machine, on a throwaway server (tests/postgres.py, fsync off as in the tests).

B8: a drain of `true` jobs through PostgreSQL by one node, then by three
(2 slots each, as B1), from the resume to the last recorded end; where the
time goes is told by the CPU seconds of the nodes and of the server.
B9: cross-node dispatch: a job added on node A (which runs nothing) started
on node B, the add's acknowledgement to the job's own first instruction.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import REPO, Daemon, children, cpu_seconds, read_stamp, reaped_cpu_seconds

from queued.protocol import JobSpec

sys.path.insert(0, str(REPO))
from tests.postgres import PostgresServer, binaries

WARMUP = 5


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


def server_cpu(pg: PostgresServer) -> float:
    """CPU seconds of the server's processes alive now (backends, writer, WAL)."""
    assert pg.process is not None
    total = 0.0
    for pid in [pg.process.pid, *children(pg.process.pid)]:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


@contextmanager
def nodes(roots: list[Path], url: str, concurrency: list[int]) -> Iterator[list[Daemon]]:
    with ExitStack() as stack:
        started = []
        for name, root, slots in zip("abcdefgh", roots, concurrency, strict=False):
            started.append(
                stack.enter_context(Daemon(root, concurrency=slots, extra=["--store", url, "--node", name]))
            )
        yield started


def b8_drain(pg: PostgresServer, roots: list[Path], jobs: int) -> dict[str, float]:
    """`jobs` x `true` added to the paused default queue through the first
    node, resumed, and drained by every node of `roots` (2 slots each)."""
    import psycopg

    url = pg.url(pg.create_database())
    commits0 = _commits(url)
    with nodes(roots, url, [2] * len(roots)) as daemons, daemons[0].client(timeout=None) as client:
        client.pause("default")
        ids = client.add_many([JobSpec(command="true")] * jobs)
        time.sleep(0.5)  # every node has heard of the pause and read the queues
        node_cpu0 = sum(cpu_seconds(d.pid) for d in daemons)
        jobs_cpu0 = sum(reaped_cpu_seconds(d.pid) for d in daemons)
        pg_cpu0 = server_cpu(pg)
        t0 = time.time()
        client.resume("default")
        waited = client.wait(*ids)
        t1 = time.time()
        node_cpu = sum(cpu_seconds(d.pid) for d in daemons) - node_cpu0
        jobs_cpu = sum(reaped_cpu_seconds(d.pid) for d in daemons) - jobs_cpu0
        pg_cpu = server_cpu(pg) - pg_cpu0
        states = {job.state for job in waited.jobs}
        if len(waited.jobs) != jobs or states != {"completed"}:
            raise RuntimeError(f"B8: {len(waited.jobs)} jobs waited for, states {states}")
    time.sleep(1.5)  # the backends' statistics reach the server's
    commits = _commits(url) - commits0
    with psycopg.connect(url) as conn:
        first, last, attempts = conn.execute(
            "SELECT min(started_at), max(ended_at), count(*) FROM queued.attempts"
        ).fetchone()
    if attempts != jobs:
        raise RuntimeError(f"B8: {attempts} attempts recorded for {jobs} jobs")
    return {
        "store_rate": jobs / (last - first),
        "wall_rate": jobs / (t1 - t0),
        "nodes_cpu_ms_per_job": node_cpu / jobs * 1e3,
        "server_cpu_ms_per_job": pg_cpu / jobs * 1e3,
        # The jobs' own (the node reaps them; their part before exec included).
        "jobs_cpu_ms_per_job": jobs_cpu / jobs * 1e3,
        # Transactions committed per job, start and stop included: below 2 (a
        # claim and an end each) when the ends and claims are grouped.
        "commits_per_job": commits / jobs,
    }


def _commits(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(row.fetchone()[0])


def b9_dispatch(pg: PostgresServer, roots: list[Path], stamp: Path, adds: int) -> list[float]:
    """Seconds from each add's acknowledgement by node A (concurrency 0) to its
    job's process, started by node B, stamping the time; one add at a time."""
    url = pg.url(pg.create_database())
    stamps = roots[0] / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    latencies = []
    with nodes(roots, url, [0, 2]) as (a, _b), a.client() as client:
        for i in range(adds + WARMUP):
            path = stamps / str(i)
            job_id = client.add(f"{stamp} {path}")
            acked = time.time()
            [job] = client.wait(job_id).jobs
            started = read_stamp(path)
            if job.state != "completed" or started is None:
                raise RuntimeError(f"B9: job {job_id} {job.state}, stamp {started}")
            if i >= WARMUP:
                latencies.append(started - acked)
            time.sleep(0.005)
    return latencies
