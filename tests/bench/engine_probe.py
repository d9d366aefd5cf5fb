"""What a compiled spawner would buy B1: a measured answer, not a guess.

`engine_probe.c` (built here with cc as a shared library) keeps 2 jobs of
`/bin/sh -c true` running from a C thread: spawned, watched, reaped and
drained as a queued attempt is, the next one started at once, with no Python
and no GIL anywhere on that path. The trio thread only takes the reported ends
in batches and feeds more tokens; with `records` it also queues each
attempt's start and end through queued's own `Writer` and `Store` (the
daemon's statements, 5 ms group commits, synchronous=FULL), as the supervisor
does. Interleaved with the C loop; prints each rate and its ratio to it.

Usage: python tests/bench/engine_probe.py [JOBS] [RUNS]  (defaults: 5000 jobs, 3 runs)
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from benches import b1_c
from harness import compile_c, median

from queued import lifecycle, validation
from queued.protocol import JobSpec
from queued.settings import Settings
from queued.store import Claimed, Store
from queued.store.sqlite import SqliteStore
from queued.store.writer import Kind, Writer

AHEAD = 34  # tokens fed ahead, as the supervisor reads 2 slots + 32 ahead


class End(ctypes.Structure):
    _fields_ = [
        ("token", ctypes.c_int64),
        ("pid", ctypes.c_int32),
        ("status", ctypes.c_int32),
        ("start", ctypes.c_double),
        ("end", ctypes.c_double),
    ]


def build(out_dir: Path) -> ctypes.CDLL:
    lib = compile_c("engine_probe", out_dir, shared=True)
    if lib is None:
        sys.exit("engine_probe.py needs cc")
    return ctypes.CDLL(str(lib))


def due_jobs(data: Path, jobs: int) -> tuple[Writer, list[Claimed]]:
    """A store with `jobs` due jobs of `true`, read as the supervisor reads them."""
    db = Writer(SqliteStore.open(data / "queue.db"))
    now = time.time()
    db.run_now(Kind.RECORD, Store.recover, 60.0, now)
    spec = validation.new_job(JobSpec(command="true"), cwd="/", env={}, settings=Settings(), now=now)
    db.run_now(Kind.ADD, Store.add_jobs, [spec] * jobs, now)
    ahead: list[Claimed] = []
    while len(ahead) < jobs:
        busy = [job.id for job in ahead]
        ahead += db.run_now(
            Kind.READ, Store.lookahead, now=now, horizon=now, queues=["default"], busy=busy, limit=1000
        ).jobs
    return db, ahead


async def drain(lib: ctypes.CDLL, db: Writer, ahead: list[Claimed], records: bool) -> float:
    reported = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    ends = (End * 256)()
    fed = done = 0
    succeeded = lifecycle.classify_exit(0)

    def feed(n: int) -> None:
        nonlocal fed
        n = min(n, len(ahead) - fed)
        if n > 0:
            lib.probe_feed((ctypes.c_int64 * n)(*range(fed, fed + n)), n)
            fed += n

    async with trio.open_nursery() as nursery:
        await nursery.start(db.serve)
        lib.probe_start(2, reported)
        t0 = time.monotonic()
        feed(AHEAD)
        while done < len(ahead):
            await trio.lowlevel.wait_readable(reported)
            os.eventfd_read(reported)
            while n := lib.probe_take(ends, len(ends)):
                for end in ends[:n]:
                    if records:
                        job = ahead[end.token]
                        out, err = f"/logs/{job.id}.1.out", f"/logs/{job.id}.1.err"
                        db.record(Store.start, job, end.start)
                        db.record(
                            Store.finish, job, succeeded, 60, end.end, pid=end.pid, stdout=out, stderr=err
                        )
                feed(n)
                done += n
        elapsed = time.monotonic() - t0
        await db.read(Store.counts)  # the last records committed
        nursery.cancel_scope.cancel()
    return elapsed


def one_run(jobs: int, records: bool) -> float:
    """In a child process: the engine's thread lives as long as its process."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(jobs), "records" if records else "bare"],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        jobs, records = int(sys.argv[2]), sys.argv[3] == "records"
        with tempfile.TemporaryDirectory(prefix="qprobe-") as tmp:
            lib = build(Path(tmp))
            db, ahead = due_jobs(Path(tmp), jobs)
            print(jobs / trio.run(drain, lib, db, ahead, records))
            sys.stdout.flush()
            os._exit(0)  # the engine's thread never returns
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rates: dict[str, list[float]] = {"C loop": [], "engine, no records": [], "engine + queued's records": []}
    with tempfile.TemporaryDirectory(prefix="qprobe-") as tmp:
        exe = compile_c("spawn_loop", Path(tmp))
        if exe is None:
            sys.exit("engine_probe.py needs cc")
        for _ in range(runs):  # interleaved: every contender shares each stretch of noise
            rates["C loop"].append(b1_c(exe, jobs))
            rates["engine, no records"].append(one_run(jobs, records=False))
            rates["engine + queued's records"].append(one_run(jobs, records=True))
    c = median(rates["C loop"])
    print(f"{jobs:,} jobs of `true`, 2 slots, medians of {runs}")
    for name, values in rates.items():
        print(f"{name:>28}  {median(values):>7,.0f} jobs/s  {median(values) / c:.2f}x")


if __name__ == "__main__":
    main()
