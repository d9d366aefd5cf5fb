"""B10: rescue after a node's `kill -9` (issue #12). Two real nodes on a
throwaway PostgreSQL (tests/postgres.py): node A runs `jobs` long jobs, node
B idles beside it; A is killed with SIGKILL at t0, and each job's rescue time
is from t0 to the start of its next attempt on B (read from the store's
attempt rows: their started_at, B's clock, which is this machine's). Target:
every job running on B within the lease plus 2 s.

    python tests/bench/rescue.py [--lease 3] [--jobs 4] [--runs 3]
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

import harness
from harness import QUEUED, child_env, median

from queuectl.client import Client, QueuectlError


class Node:
    def __init__(self, root: Path, url: str, name: str, lease: float, concurrency: int) -> None:
        self.root = root
        self.socket = root / "q.sock"
        root.mkdir(parents=True, exist_ok=True)
        command = [
            QUEUED,
            *("--data-dir", str(root / "data"), "--socket", str(self.socket)),
            *("--store", url, "--node", name, "--node-lease", f"{lease:g}"),
            *("--concurrency", str(concurrency), "--log-level", "warning"),
        ]
        with open(root / "queued.log", "ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=log, env=child_env(QUEUED_KILL_GRACE="0.5")
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"queued {name} exited: {(root / 'queued.log').read_text()[-2000:]}")
            try:
                with self.client() as client:
                    client.status()
                return
            except QueuectlError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"queued {name} did not answer") from None
                time.sleep(0.02)

    def client(self) -> Client:
        return Client(self.socket, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                with self.client() as client:
                    client.shutdown("now")
                self.proc.wait(timeout=30)
            except (QueuectlError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def one_run(root: Path, url: str, lease: float, jobs: int) -> dict[str, float]:
    a = Node(root / "a", url, "a", lease, jobs)
    b = None
    try:
        with a.client() as client:
            ids = [client.add("sleep 600", max_retries=3) for _ in range(jobs)]
            deadline = time.monotonic() + 60
            while sum(client.get(i).job.state == "running" for i in ids) < jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError("B10: the jobs never all ran on node a")
                time.sleep(0.02)
        b = Node(root / "b", url, "b", lease, jobs)
        t0 = time.time()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        rescued: dict[int, float] = {}
        with b.client() as client:
            deadline = time.monotonic() + lease + 60
            while len(rescued) < jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"B10: {jobs - len(rescued)} jobs never ran again on node b")
                for job_id in ids:
                    if job_id not in rescued:
                        runs = client.get(job_id).runs
                        if len(runs) >= 2 and runs[-1].node == "b":
                            rescued[job_id] = runs[-1].started_at - t0
                time.sleep(0.02)
            client.cancel(*ids)
        return {"max": max(rescued.values()), "median": median(list(rescued.values()))}
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        if b is not None:
            b.stop()


def measure(tmp: Path, lease: float, jobs: int, runs: int) -> list[dict[str, float]] | str:
    """`runs` runs on a throwaway server; a string saying why not where PostgreSQL is missing."""
    from tests.postgres import PostgresServer, binaries

    bin_dir = binaries()
    if bin_dir is None:
        return "B10 needs PostgreSQL (initdb, pg_ctl, postgres) installed"
    server = PostgresServer(bin_dir)
    try:
        server.start()
        results = []
        for n in range(runs):
            url = server.url(server.create_database())
            results.append(one_run(tmp / f"b10-{n}", url, lease, jobs))
        return results
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease", type=float, default=3.0, help="the nodes' --node-lease (s)")
    parser.add_argument("--jobs", type=int, default=4, help="long jobs node a runs when killed")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="qb10-"))
    try:
        results = measure(tmp, args.lease, args.jobs, args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(results, str):
        print(results, file=sys.stderr)
        return 1
    worst = max(r["max"] for r in results)
    for n, r in enumerate(results, 1):
        print(f"run {n}: rescue median {r['median']:.2f} s, slowest {r['max']:.2f} s")
    target = args.lease + 2
    print(
        f"B10 rescue after kill -9 (lease {args.lease:g} s, {args.jobs} jobs): slowest {worst:.2f} s,"
        f" target <= {target:g} s: {'pass' if worst <= target else 'MISS'}"
    )
    print(f"({harness.machine()['cpu_model']})")
    return 0 if worst <= target else 1


if __name__ == "__main__":
    sys.exit(main())
