"""A B1 baseline: what every queued attempt must do, in a trio loop, with no
bookkeeping at all. Each job is `/bin/sh -c true` spawned with posix_spawn in a
new session and in its working directory, stdin from /dev/null, stdout and
stderr into pipes that are drained at its end, its exit awaited on a pidfd and
its group swept; K in flight, one task per attempt. No database, no records,
no logs written. The gap between this and the C loop is the cost of the
architecture (Python, trio, capture, pidfds); the gap between this and queued
is the cost of queued's bookkeeping.

Usage: python spawn_loop_trio.py JOBS IN_FLIGHT; prints "jobs seconds" like spawn_loop.c.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import trio

ENV = dict(os.environ)
ACTIONS = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)


def spawn(cwd: str) -> tuple[int, int, int, int]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    os.chdir(cwd)
    try:
        pid = os.posix_spawn(
            "/bin/sh",
            ["/bin/sh", "-c", "true"],
            ENV,
            file_actions=[ACTIONS, (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    finally:
        os.fchdir(home)
        os.close(home)
        os.close(out_w)
        os.close(err_w)
    return pid, os.pidfd_open(pid), out_r, err_r


def reap(pid: int, pidfd: int, *pipes: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(pidfd)
    for fd in pipes:
        os.set_blocking(fd, False)
        try:
            os.read(fd, 65536)
        except BlockingIOError:
            pass
        os.close(fd)


async def spawn_loop(jobs: int, in_flight: int) -> float:
    started = 0
    cwd = os.getcwd()

    async def attempt(nursery: trio.Nursery) -> None:
        nonlocal started
        pid, pidfd, out_r, err_r = spawn(cwd)
        with trio.move_on_after(0.05):
            await trio.lowlevel.wait_readable(pidfd)
        await trio.lowlevel.wait_readable(pidfd)
        reap(pid, pidfd, out_r, err_r)
        if started < jobs:
            started += 1
            nursery.start_soon(attempt, nursery)

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(min(in_flight, jobs)):
            started += 1
            nursery.start_soon(attempt, nursery)
    return time.monotonic() - t0


def main() -> None:
    jobs, in_flight = int(sys.argv[1]), int(sys.argv[2])
    print(f"{jobs} {trio.run(spawn_loop, jobs, in_flight):.6f}")


if __name__ == "__main__":
    main()
