"""The guardian: one small process per daemon that kills the daemon's jobs when
the daemon dies, however it dies (kill -9 included).

Theory of operation: the daemon starts `python -m queued.guardian TOKEN` with
the read end of a pipe as stdin and keeps the write end. For every job it
writes "+PGID" after the spawn and "-PGID" after the reap. When the daemon
dies, the kernel closes the write end; the guardian reads EOF, SIGKILLs every
process group still registered, then every process whose environment carries
QUEUED_INSTANCE=TOKEN (a job spawned in the instant before its registration,
or a grandchild that left the group), and exits. The guardian also inherits
the daemon's lock on the data dir, so a restarted daemon cannot take the lock,
and run anything, until the old jobs are gone.

PR_SET_PDEATHSIG would reach only each job's direct child, and a wrapper per
job would cost an interpreter start per job; this costs two pipe writes.
"""

from __future__ import annotations

import os
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


def _kill_marked(token: str) -> int:
    marker = f"{INSTANCE_VAR}={token}".encode() + b"\0"
    killed = 0
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read() + b"\0"
        except OSError:
            continue
        if b"\0" + marker in b"\0" + environ:
            try:
                os.kill(int(name), signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def guard(token: str, commands: int = 0) -> None:
    groups: set[int] = set()
    buffer = b""
    while True:
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
    for pgid in groups:
        _kill_group(pgid)
    # Until a scan finds none: a job may fork between our reading /proc and the kill.
    while _kill_marked(token):
        pass


def main() -> None:
    # Terminal signals are for the daemon; the guardian leaves only at EOF.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    guard(sys.argv[1])


class GuardianLink:
    """The daemon's end: starts the guardian and tells it about each job's group."""

    def __init__(self, token: str, keep_fds: tuple[int, ...] = ()) -> None:
        import subprocess

        read_end, self._write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "queued.guardian", token],
                stdin=read_end,
                pass_fds=keep_fds,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != INSTANCE_VAR},
            )
        finally:
            os.close(read_end)

    def register(self, pgid: int) -> None:
        os.write(self._write_end, b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        os.write(self._write_end, b"-%d\n" % pgid)

    def close(self) -> None:
        """Let the guardian sweep (nothing, after a graceful stop) and exit."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
            self.process.wait()


if __name__ == "__main__":
    main()
