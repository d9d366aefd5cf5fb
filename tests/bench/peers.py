"""B1's peers: the same `sh -c true` jobs drained by task-spooler and by nq.

Like ours, each peer gets every job before its clock starts: the first jobs in
its queue are blockers that read a FIFO, the rest queue behind them, and the
clock starts when we close the FIFO's write end (the blockers exit) and stops
when the peer reports its last job done.

- task-spooler (`tsp -S 2`, own TS_SOCKET and TMPDIR in the temp dir) keeps one
  connection per queued job and refuses past ~1,000: the jobs go through in
  chunks of CHUNK (each chunk added behind blockers, then timed), and the rate
  is all jobs over the sum of the chunks' drain times. It captures output to
  a file per job, like queued, and keeps nothing across a crash.
- nq is strictly serial (one slot) and each job flocks every earlier job's
  file, so its cost per job grows with the queue: it gets NQ_JOBS jobs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 900
NQ_JOBS = 1_000
JOB = ["sh", "-c", "true"]


def ensure(binary: str, package: str) -> tuple[str | None, str]:
    """The path of `binary`, installing Debian's `package` when we are root;
    else None and why."""
    path = shutil.which(binary)
    if path:
        return path, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, f"{binary} not installed (apt-get install {package}, as root)"
    print(f"installing {package} with apt-get ...", file=sys.stderr)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, **quiet)
    path = shutil.which(binary)
    return (path, "") if path else (None, f"apt-get install {package} failed")


class Gate:
    """A FIFO that blockers read one line from. We hold it open read-write, so
    a blocker that opens it late still finds a writer and waits for its line;
    `release` writes one line per blocker (dash's `read` takes one byte at a
    time, so each blocker consumes exactly one line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDWR)  # O_CLOEXEC by default: jobs do not inherit it

    def blocker(self) -> list[str]:
        return ["sh", "-c", f"read x < {self.path}"]

    def release(self, blockers: int) -> float:
        """Let `blockers` blockers go; returns the time (monotonic) we did."""
        t0 = time.monotonic()
        os.write(self.fd, b"go\n" * blockers)
        return t0

    def close(self) -> None:
        os.close(self.fd)


def tsp_drain(tsp: str, root: Path, jobs: int) -> float:
    """Seconds task-spooler spends draining `jobs` jobs with 2 slots (summed over chunks)."""
    root.mkdir(parents=True)
    env = dict(os.environ, TS_SOCKET=str(root / "socket"), TMPDIR=str(root), TS_MAXFINISHED="1000")
    env.pop("TS_SLOTS", None)

    def tsp_(*args: str) -> str:
        return subprocess.run([tsp, *args], env=env, check=True, capture_output=True, text=True).stdout

    gate = Gate(root / "go")
    total = 0.0
    try:
        tsp_("-S", "2")
        left = jobs
        while left:
            chunk = min(CHUNK, left)
            tsp_(*gate.blocker())
            tsp_(*gate.blocker())
            ids = [int(tsp_(*JOB)) for _ in range(chunk)]
            t0 = gate.release(2)
            for job_id in ids[-2:]:  # two slots: the last two to start are the last to end
                subprocess.run([tsp, "-w", str(job_id)], env=env, check=False, capture_output=True)
            total += time.monotonic() - t0
            left -= chunk
    finally:
        gate.close()
        subprocess.run([tsp, "-K"], env=env, check=False, capture_output=True)
    return total


def nq_drain(nq: str, root: Path, jobs: int) -> float:
    """Seconds nq spends draining `jobs` jobs (one at a time: nq is serial)."""
    queue = root / "queue"
    queue.mkdir(parents=True)
    env = dict(os.environ, NQDIR=str(queue))
    gate = Gate(root / "go")
    try:
        subprocess.run([nq, "-q", *gate.blocker()], env=env, check=True)
        for _ in range(jobs):
            subprocess.run([nq, "-q", *JOB], env=env, check=True)
        t0 = gate.release(1)
        subprocess.run([nq, "-w"], env=env, check=True)
        return time.monotonic() - t0
    finally:
        gate.close()
