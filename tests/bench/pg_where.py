"""Where a job's time goes on the PostgreSQL path (B8's drain, one node):

    python tests/bench/pg_where.py [--jobs N] [--slots N] [--top N]

A throwaway server (tests/postgres.py) with pg_stat_statements, one node
draining `jobs` x `true`; then, per job: the statements the server ran (by
kind, with their server time), the transactions committed, the CPU of the
node (its trio thread and its other threads, each by name: the store's
worker thread is "Trio thread 0") and of the server, and the time a slot stood empty between an
attempt's end and the next start in it (the supervisor's wait).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import CLK_TCK, REPO, Daemon, cpu_seconds
from pg_benches import server_cpu

from queued.protocol import JobSpec

sys.path.insert(0, str(REPO))
from tests.postgres import PostgresServer, binaries


def threads_by_name(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread of `pid`, by its name and id."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[f"{name}[{task.name}]"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return found


def thread_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the main thread, of every other live thread) of `pid`."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


def sampled(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid`'s threads (native frames too) into `out` until SIGINT."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        sys.exit("--profile needs py-spy (pip install py-spy)")
    fmt = "speedscope" if out.suffix == ".json" else "raw" if out.suffix == ".txt" else "flamegraph"
    args = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--threads",
        "--gil",
        "--nonblocking",
        "--rate",
        "250",
        "-f",
        fmt,
        "-o",
        str(out),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    return process


def idle_jiffies() -> tuple[int, int]:
    """(idle, all) jiffies of every CPU of the machine so far (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def kind(query: str) -> str:
    """A statement's kind, in a few words."""
    text = " ".join(query.split())
    if text.startswith("WITH asked"):
        return "claim (CTE)"
    return text[:90]


def measure(jobs: int, slots: int, top: int, profile: Path | None = None) -> None:
    import psycopg

    bin_dir = binaries()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed")
    pg = PostgresServer(bin_dir)
    pg.options = [
        *("-c", "shared_preload_libraries=pg_stat_statements"),
        *("-c", "pg_stat_statements.track_utility=on"),
    ]
    root = Path(tempfile.mkdtemp(prefix="qwhere"))
    try:
        pg.start()
        url = pg.url(pg.create_database())
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        daemon = Daemon(root / "a", concurrency=slots, extra=["--store", url, "--node", "a"])
        with daemon as node, node.client(timeout=None) as client:
            client.pause("default")
            ids = client.add_many([JobSpec(command="true")] * jobs)
            time.sleep(0.5)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
                conn.execute("SELECT pg_stat_reset()")
            main0, other0 = thread_cpu(node.pid)
            named0 = threads_by_name(node.pid)
            node0, pg0 = cpu_seconds(node.pid), server_cpu(pg)
            spy = sampled(node.pid, profile) if profile else None
            idle0 = idle_jiffies()
            t0 = time.time()
            client.resume("default")
            client.wait(*ids)
            wall = time.time() - t0
            idle1 = idle_jiffies()
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
            main1, other1 = thread_cpu(node.pid)
            named1 = threads_by_name(node.pid)
            node_cpu, pg_cpu = cpu_seconds(node.pid) - node0, server_cpu(pg) - pg0
        time.sleep(1.0)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            dbid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[
                0
            ]
            commits = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()[0]
            statements = conn.execute(
                "SELECT query, calls, total_exec_time, rows FROM pg_stat_statements"
                " WHERE dbid = %s AND query NOT LIKE '%%pg_stat%%' ORDER BY calls DESC",
                (dbid,),
            ).fetchall()
            first, last, durations = conn.execute(
                "SELECT min(started_at), max(ended_at), sum(ended_at - started_at) FROM queued.attempts"
            ).fetchone()
    finally:
        pg.close()
        shutil.rmtree(root, ignore_errors=True)
    span = last - first
    by_kind: dict[str, list[float]] = {}
    for query, calls, total_ms, _rows in statements:
        entry = by_kind.setdefault(kind(query), [0, 0.0])
        entry[0] += calls
        entry[1] += total_ms
    calls_total = sum(c for c, _ in by_kind.values())
    exec_total = sum(t for _, t in by_kind.values())
    print(f"{jobs:,} x true, one node, {slots} slots: {jobs / span:.0f} jobs/s (first start to last end)")
    idle = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    print(
        f"  wall {wall:.2f} s; commits per job {commits / jobs:.2f}; the machine's CPUs idle {idle:.0%} of it"
    )
    print(
        f"  node CPU per job {node_cpu / jobs * 1e3:.2f} ms (trio thread {(main1 - main0) / jobs * 1e3:.2f},"
        f" other threads {(other1 - other0) / jobs * 1e3:.2f}); server CPU per job {pg_cpu / jobs * 1e3:.2f} ms"
    )
    print(
        f"  statements per job {calls_total / jobs:.2f}, their server time {exec_total / jobs:.3f} ms per job"
    )
    idle = slots * span - durations
    print(
        f"  a slot stood empty {idle / jobs * 1e3:.2f} ms per job; an attempt lasted"
        f" {durations / jobs * 1e3:.2f} ms (start to end as recorded)"
    )
    for name, seconds in sorted(named1.items(), key=lambda kv: -kv[1]):
        used = seconds - named0.get(name, 0.0)
        if used > 0:
            print(f"    thread {name}: {used / jobs * 1e3:.3f} ms per job")
    print(f"  {'calls/job':>9}  {'ms/call':>8}  statement")
    for name, (calls, total_ms) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {calls / jobs:9.2f}  {total_ms / max(calls, 1):8.3f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="how many kinds of statement to list")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy samples of the node during the drain: .txt (collapsed stacks), .json (speedscope), .svg",
    )
    args = parser.parse_args()
    measure(args.jobs, args.slots, args.top, args.profile)


if __name__ == "__main__":
    main()
