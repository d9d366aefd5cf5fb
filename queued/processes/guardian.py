"""The guardian: one small process per daemon that kills the daemon's jobs when
the daemon dies, however it dies (kill -9 included).

Theory of operation: the daemon starts `python -m queued.processes.guardian TOKEN` with
the read end of a pipe as stdin and keeps the write end. For every job it
writes "+PGID" after the spawn and "-PGID" after the reap. When the daemon
dies, the kernel closes the write end; the guardian reads EOF, SIGKILLs every
process group still registered, then every process whose environment carries
QUEUED_INSTANCE=TOKEN (a job spawned in the instant before its registration,
or a grandchild that left the group), and exits. The guardian also inherits
the daemon's lock on the data dir, so a restarted daemon cannot take the lock,
and run anything, until the old jobs are gone. The daemon's end of the pipe
is `guardian_link`: it never blocks on the pipe, and replaces a guardian that
dies or stops reading.

On a shared PostgreSQL store the daemon also writes "@STOP DEAD" after each
renewal of its lease (CLOCK_MONOTONIC seconds, which both processes read
alike; "@" alone clears it). Should the daemon be unable to stop its jobs
itself in time (frozen by SIGSTOP, starved), the guardian does: SIGTERM to
every group at STOP, SIGKILL at DEAD, before the lease can run out and
another node runs them again (see queued/lease.py).

PR_SET_PDEATHSIG would reach only each job's direct child, and a wrapper per
job would cost an interpreter start per job; this costs two pipe writes.
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import time

INSTANCE_VAR = "QUEUED_INSTANCE"
BATCH_SECONDS = 0.02


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_marked(token: str, spare: set[int] | frozenset[int] = frozenset()) -> set[int]:
    """SIGKILL every process whose environment carries QUEUED_INSTANCE=token
    (but those in `spare`); the pids signalled."""
    marker = f"{INSTANCE_VAR}={token}".encode() + b"\0"
    killed = set()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me or int(name) in spare:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read() + b"\0"
        except OSError:
            continue
        if b"\0" + marker in b"\0" + environ:
            try:
                os.kill(int(name), signal.SIGKILL)
                killed.add(int(name))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def _signal_groups(groups: set[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            if sig == signal.SIGTERM:
                os.killpg(pgid, signal.SIGCONT)  # a paused job must run to see it
        except (ProcessLookupError, PermissionError):
            pass


def guard(token: str, commands: int = 0) -> None:
    groups: set[int] = set()
    buffer = b""
    stop_at = dead_by = math.inf  # the lease's deadlines, when the daemon set them
    while True:
        now = time.monotonic()
        if now >= dead_by:
            _signal_groups(groups, signal.SIGKILL)
            stop_at = dead_by = math.inf
        elif now >= stop_at:
            _signal_groups(groups, signal.SIGTERM)
            stop_at = math.inf
        wait = min(stop_at, dead_by) - now
        if wait != math.inf and not select.select([commands], [], [], max(0.0, wait))[0]:
            continue
        data = os.read(commands, 1 << 20)
        if not data:
            break
        # While we sleep, the daemon's writes fill the pipe without waking us:
        # one wake-up per batch of jobs instead of two per job. Idle, we block.
        time.sleep(BATCH_SECONDS)
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"+"):
                groups.add(int(line[1:]))
            elif line.startswith(b"-"):
                groups.discard(int(line[1:]))
            elif line.startswith(b"@"):
                times = [float(part) for part in line[1:].split()] or [math.inf, math.inf]
                stop_at, dead_by = times[0], times[1]
    for pgid in groups:
        _kill_group(pgid)
    # Until a scan finds no new one: a job may fork between our reading /proc and the kill.
    killed: set[int] = set()
    while found := kill_marked(token) - killed:
        killed |= found


def main() -> None:
    # Terminal signals are for the daemon; the guardian leaves only at EOF.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    guard(sys.argv[1])


if __name__ == "__main__":
    main()
