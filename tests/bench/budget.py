"""What B1 allows a supervisor's own thread to spend per job.

Runs the least an attempt needs (as `spawn_loop_trio.py`: posix_spawn in a new
session and its cwd, pipes, a pidfd, the group swept at the end), driven by a
plain epoll loop with no trio, and after each start burns W microseconds of CPU
on the loop's thread: the stand-in for everything a real supervisor does per
job (its event loop, bookkeeping, records). Interleaved with the C loop, W
from 0 up; prints each rate and its ratio to the C loop. Where the ratio
crosses 0.70 is the CPU per job that B1's target leaves a supervisor on this
machine; compare with `B1 queued's own CPU per job` in the suite's table.

Usage: python tests/bench/budget.py [JOBS] [RUNS]  (defaults: 3000 jobs, 3 runs)
"""

from __future__ import annotations

import os
import select
import sys
import tempfile
import time
from pathlib import Path

from benches import b1_c
from harness import compile_c, median
from spawn_loop_trio import reap, spawn

WORK_US = (0, 50, 100, 150, 200, 250, 300)


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def loop_with_work(jobs: int, in_flight: int, work: float) -> float:
    """Jobs per second with `work` seconds of CPU spent after each start."""
    cwd = os.getcwd()
    poller = select.epoll()
    running: dict[int, tuple[int, int, int, int]] = {}
    started = 0

    def start() -> None:
        nonlocal started
        started += 1
        attempt = spawn(cwd)
        running[attempt[1]] = attempt
        poller.register(attempt[1], select.EPOLLIN)
        burn(work)

    t0 = time.perf_counter()
    for _ in range(min(in_flight, jobs)):
        start()
    while running:
        for pidfd, _ in poller.poll():
            poller.unregister(pidfd)
            reap(*running.pop(pidfd))
            if started < jobs:
                start()
    poller.close()
    return jobs / (time.perf_counter() - t0)


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory(prefix="qbudget-") as tmp:
        exe = compile_c("spawn_loop", Path(tmp))
        if exe is None:
            sys.exit("budget.py needs cc for the C loop")
        c_rates: list[float] = []
        rates: dict[int, list[float]] = {w: [] for w in WORK_US}
        for _ in range(runs):  # interleaved: every contender shares each stretch of noise
            c_rates.append(b1_c(exe, jobs))
            for w in WORK_US:
                rates[w].append(loop_with_work(jobs, 2, w / 1e6))
    c = median(c_rates)
    print(f"C posix_spawn loop: {c:,.0f} jobs/s ({jobs:,} jobs x {runs} runs, medians)")
    print(f"{'CPU per job on the loop thread':>32}  {'jobs/s':>8}  ratio to C")
    for w in WORK_US:
        rate = median(rates[w])
        print(f"{'+' + str(w) + ' us':>32}  {rate:>8,.0f}  {rate / c:.2f}x")


if __name__ == "__main__":
    main()
