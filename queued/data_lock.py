"""Who owns a data dir: its lock, who holds it, and the previous owner's jobs.

The daemon holds an exclusive flock on DATA/queued.lock for its whole life; its
guardian inherits the descriptor, so after a `kill -9` of the daemon alone the
lock stays held until the guardian has killed the old jobs. The file names the
holders: the daemon's pid and start time, and its guardian's pid. A second
`queued` that finds the lock held by a live daemon is refused at once; a lock
held only by a guardian (its daemon gone) is waited for while the guardian
sweeps, up to LOCK_WAIT_SECONDS.

Each run's instance token (QUEUED_INSTANCE in every job's environment) is kept
in DATA/instance. A daemon that starts kills whatever still carries the
previous token before it claims anything: jobs left running when the daemon
and its guardian were killed together.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import time
from pathlib import Path
from typing import NamedTuple

from queued.processes.guardian import kill_marked

log = logging.getLogger(__name__)
LOCK_WAIT_SECONDS = 5.0
LOCK_FILE = "queued.lock"
INSTANCE_FILE = "instance"
# How long a start waits for the previous instance's killed jobs to be gone.
SWEEP_WAIT_SECONDS = 5.0


class StartupError(Exception):
    """queued cannot start; the message says why, for a human."""


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if gone):
    with the pid, it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return int(fields[19])


class LockHolder(NamedTuple):
    """What DATA/queued.lock says: the daemon, and its guardian."""

    pid: int | None
    start: int | None
    guardian: int | None

    @classmethod
    def parse(cls, text: str) -> LockHolder:
        # First line: the daemon's pid (all that older versions wrote).
        lines = text.splitlines()
        fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)

        def number(value: str | None) -> int | None:
            return int(value) if value is not None and value.strip().isdigit() else None

        return cls(
            number(lines[0] if lines else None), number(fields.get("start")), number(fields.get("guardian"))
        )

    def format(self) -> str:
        return f"{self.pid}\nstart {self.start}\nguardian {self.guardian}\n"

    def daemon_alive(self) -> bool:
        if self.pid is None:
            return True  # unknown: do not take it for dead
        start = process_start_time(self.pid)
        return start is not None and (self.start is None or start == self.start)


def lock_data_dir(data_dir: Path) -> int:
    """An fd holding an exclusive lock on the data dir, or StartupError naming
    the daemon that holds it."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
        holder = LockHolder.parse(os.pread(fd, 256, 0).decode(errors="replace"))
        # A live daemon: refused now. Its guardian alone: wait while it kills the old jobs.
        if holder.daemon_alive():
            os.close(fd)
            raise StartupError(
                f"another queued (pid {holder.pid or '?'}) is already using {data_dir}; "
                "stop it first (`queuectl shutdown`) or choose another --data-dir"
            ) from None
        if time.monotonic() > deadline:
            os.close(fd)
            raise StartupError(
                f"the queued that used {data_dir} (pid {holder.pid}) is gone, but its guardian "
                f"(pid {holder.guardian or '?'}) still holds the data dir's lock after "
                f"{LOCK_WAIT_SECONDS:.0f} s; if it does not exit, kill it"
            ) from None
        time.sleep(0.05)
    name_lock_holders(fd, guardian=None)
    return fd


def name_lock_holders(fd: int, *, guardian: int | None) -> None:
    """Write who holds the lock: this daemon and its current guardian."""
    me = os.getpid()
    text = LockHolder(me, process_start_time(me), guardian).format().encode()
    # Written over the old text, then cut to length: a reader never sees it empty.
    os.pwrite(fd, text, 0)
    os.ftruncate(fd, len(text))


def stop_previous_instance(data_dir: Path, token: str) -> int:
    """Kill what still carries the previous instance's token, wait until it is
    gone, then record `token` as this instance's; how many were killed."""
    path = data_dir / INSTANCE_FILE
    try:
        previous = path.read_text().strip()
    except FileNotFoundError:
        previous = ""
    killed: set[int] = set()
    if previous:
        spare = _ancestors()  # a daemon started from an old job must not kill itself
        while found := kill_marked(previous, spare) - killed:
            killed |= found
        _wait_gone(killed, SWEEP_WAIT_SECONDS)
        if killed:
            log.warning(
                "killed %d process(es) left running by the previous queued (instance %s)",
                len(killed),
                previous,
            )
    partial = path.with_name(INSTANCE_FILE + ".new")
    partial.write_text(token + "\n")
    os.chmod(partial, 0o600)
    partial.replace(path)
    return len(killed)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _wait_gone(pids: set[int], timeout: float) -> None:
    poller = select.poll()
    fds = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        fds.append(fd)
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        remaining = len(fds)
        while remaining and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                remaining -= 1
    finally:
        for fd in fds:
            os.close(fd)
