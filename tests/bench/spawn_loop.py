"""The B1 baseline in plain Python: run `/bin/sh -c true` N times with K in
flight through `subprocess.Popen`, reaping with os.wait(), no bookkeeping.

Usage: python spawn_loop.py JOBS IN_FLIGHT; prints "jobs seconds" like spawn_loop.c.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def spawn_loop(jobs: int, in_flight: int) -> float:
    """Seconds from the first spawn to the last reap."""
    running: dict[int, subprocess.Popen[bytes]] = {}
    started = done = 0
    t0 = time.monotonic()
    while done < jobs:
        while len(running) < in_flight and started < jobs:
            proc = subprocess.Popen(["/bin/sh", "-c", "true"])
            running[proc.pid] = proc
            started += 1
        pid, status = os.wait()
        proc = running.pop(pid, None)
        if proc is not None:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        done += 1
    return time.monotonic() - t0


def main() -> None:
    jobs, in_flight = int(sys.argv[1]), int(sys.argv[2])
    print(f"{jobs} {spawn_loop(jobs, in_flight):.6f}")


if __name__ == "__main__":
    main()
