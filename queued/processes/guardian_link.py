"""The daemon's end of the guardian (see `guardian`): start it, tell it about
each job's group without ever blocking the loop, and replace it when it dies
or stops reading.

The link keeps the set of groups it was told about. Writes go straight into a
non-blocking pipe; what the pipe cannot take waits in a buffer that `watch`
flushes as the guardian reads. A guardian that takes nothing for
STALL_SECONDS (stopped, or stuck), or that dies (its pidfd says so at once, a
write says so with EPIPE), is killed and reaped, and a new one is started with
every group of the set already in its pipe before it runs: from its start it
holds every running job's group. The old guardian is killed before its pipe is
closed, so it never takes the close for the daemon's death. While no guardian
runs (one could not be started), `ready` is False and the supervisor starts
nothing; `watch` tries again every RETRY_SECONDS.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import trio

from queued.processes.escapes import OWNED
from queued.processes.guardian import INSTANCE_VAR

log = logging.getLogger(__name__)
STALL_SECONDS = 2.0
RETRY_SECONDS = 1.0
CLOSE_WAIT_SECONDS = 10.0


class GuardianLink:
    """Starts the guardian and tells it about each job's group.
    `on_started(pid)` is called after each start of a guardian."""

    def __init__(
        self, token: str, keep_fds: tuple[int, ...] = (), on_started: Callable[[int], None] | None = None
    ) -> None:
        self.token = token
        self.keep_fds = keep_fds
        self.on_started = on_started
        self.groups: set[int] = set()
        self.deadlines = b""  # the lease's, as last sent (see guardian.py)
        self.ready = False
        self.replacements = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._write_end = -1
        self._pidfd = -1
        self._pending = bytearray()
        self._kick = trio.Event()
        self._closed = False
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _start(self) -> None:
        read_end, write_end = os.pipe()
        try:
            os.set_blocking(write_end, False)
            # In the pipe before the guardian runs: it holds them from its first read.
            initial = b"".join(b"+%d\n" % pgid for pgid in self.groups) + self.deadlines
            written = _write(write_end, initial)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "queued.processes.guardian", self.token],
                stdin=read_end,
                pass_fds=self.keep_fds,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != INSTANCE_VAR},
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        OWNED.add(self.process.pid)  # the daemon reaps it itself
        self._pidfd = os.pidfd_open(self.process.pid)
        self._write_end = write_end
        self._pending = bytearray(initial[written:])
        self.ready = True
        if self._pending:
            self._kick.set()
        if self.on_started is not None:
            self.on_started(self.process.pid)

    def register(self, pgid: int) -> None:
        self.groups.add(pgid)
        self._send(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        self.groups.discard(pgid)
        self._send(b"-%d\n" % pgid)

    def set_deadlines(self, stop_at: float | None, dead_by: float | None) -> None:
        """Have the guardian stop every job at `stop_at` and kill it at `dead_by`
        (time.monotonic()) unless told again before; None: never."""
        if stop_at is None or dead_by is None:
            self.deadlines = b"@\n"
        else:
            self.deadlines = b"@%.6f %.6f\n" % (stop_at, dead_by)
        self._send(self.deadlines)

    def _send(self, data: bytes) -> None:
        if not self.ready:
            return  # the next guardian is given the whole set
        if self._pending:
            self._pending += data
            return
        try:
            written = os.write(self._write_end, data)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            self._replace("the guardian died")
            return
        if written < len(data):
            self._pending += data[written:]
            self._kick.set()

    def _flush_some(self) -> bool:
        """Write what the pipe takes now; False when it took nothing."""
        try:
            written = os.write(self._write_end, self._pending)
        except BlockingIOError:
            return False
        except BrokenPipeError:
            self._replace("the guardian died")
            return True
        del self._pending[:written]
        return written > 0

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the guardian for its death, feed it what its pipe could not
        take, and replace it when it dies or stops reading (runs until cancelled)."""
        task_status.started()
        while True:
            if not self.ready:
                await trio.sleep(RETRY_SECONDS)
                self._replace(None)
                continue
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._await_death, nursery.cancel_scope)
                nursery.start_soon(self._feed, nursery.cancel_scope)

    async def _await_death(self, done: trio.CancelScope) -> None:
        process = self.process
        try:
            await trio.lowlevel.wait_readable(self._pidfd)
        except trio.ClosedResourceError:
            pass  # replaced meanwhile
        else:
            if process is self.process:
                assert process is not None
                self._replace(f"the guardian (pid {process.pid}) died")
        done.cancel()

    async def _feed(self, done: trio.CancelScope) -> None:
        process = self.process
        try:
            while process is self.process:
                await self._kick.wait()
                self._kick = trio.Event()
                deadline = trio.current_time() + STALL_SECONDS
                while self._pending and process is self.process:
                    with trio.move_on_at(deadline):
                        await trio.lowlevel.wait_writable(self._write_end)
                        if self._flush_some():
                            deadline = trio.current_time() + STALL_SECONDS
                        continue
                    assert process is not None
                    self._replace(
                        f"the guardian (pid {process.pid}) read nothing for {STALL_SECONDS:.0f} s "
                        f"({len(self._pending)} bytes waiting)"
                    )
        except trio.ClosedResourceError:
            pass  # replaced meanwhile
        done.cancel()

    def _replace(self, reason: str | None) -> None:
        """Kill and reap the current guardian (if any), start another."""
        if self._closed:
            return
        if reason is not None:
            log.error("%s; starting another, which is told about %d running job(s)", reason, len(self.groups))
        self._retire()
        self.replacements += 1
        try:
            self._start()
        except OSError as exc:
            log.error("cannot start a guardian (%s): no job starts until one runs; trying again", exc)

    def _retire(self) -> None:
        """Kill the guardian before closing its pipe: it must not take the
        close for the daemon's death and kill the jobs."""
        self.ready = False
        self._pending = bytearray()
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            OWNED.discard(self.process.pid)
        for fd in (self._write_end, self._pidfd):
            if fd >= 0:
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
        self._write_end = self._pidfd = -1

    def close(self) -> None:
        """Let the guardian sweep (nothing, after a graceful stop) and exit."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped guardian would never read the end
        for fd in (self._write_end, self._pidfd):
            if fd >= 0:
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
        self._write_end = self._pidfd = -1
        if process is not None:
            try:
                process.wait(timeout=CLOSE_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("the guardian (pid %d) did not exit; killed", process.pid)
                process.kill()
                process.wait()
            OWNED.discard(process.pid)


def _write(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data) if data else 0
    except BlockingIOError:
        return 0
