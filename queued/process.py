"""One job attempt as an operating-system process: spawn, capture, stop, reap.

Each attempt runs `/bin/sh -c COMMAND` as the leader of a new session (so of a
new process group), with stdin from /dev/null and stdout/stderr into pipes that
the daemon copies to the attempt's log files up to a size cap: the job never
blocks on a full pipe, and a job that writes a gigabyte costs a gigabyte of
reads, not of disk. Exit is awaited on a pidfd, so no thread per child; the
group is swept with SIGKILL while the leader is still an unreaped zombie,
which keeps the group id from being reused under us.
"""

from __future__ import annotations

import errno
import os
import signal

import trio

from .escapes import LEADERS
from .guardian import INSTANCE_VAR
from .protocol import readable

SHELL = "/bin/sh"
_READ_SIZE = 256 * 1024
# Variables that belong to the daemon's service manager, not to its jobs.
_PRIVATE_VARS = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    INSTANCE_VAR,
)


class SpawnError(Exception):
    """The attempt could not start; the message is for the user. `lasting`
    when another attempt would fail the same way (see `_LASTING`)."""

    def __init__(self, reason: str, *, lasting: bool = False) -> None:
        super().__init__(reason)
        self.lasting = lasting


# Failures to start that only a change to the job itself can cure.
_LASTING = frozenset({errno.E2BIG, errno.ENAMETOOLONG})


class JobEnvironments:
    """Each attempt's environment: the one captured at `add`, without the
    daemon's own variables, plus the job's id, attempt and the daemon's
    instance token. The filtering is done once per captured environment (the
    store hands out one dict per distinct environment; most jobs share a few)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._bases: dict[int, tuple[dict[str, str], dict[str, str]]] = {}

    def for_attempt(self, captured: dict[str, str], *, job_id: int, run: int) -> dict[str, str]:
        entry = self._bases.get(id(captured))
        if entry is None or entry[0] is not captured:
            if len(self._bases) >= 64:
                self._bases.clear()
            base = {k: v for k, v in captured.items() if k not in _PRIVATE_VARS}
            base[INSTANCE_VAR] = self.instance
            entry = self._bases[id(captured)] = (captured, base)
        env = entry[1].copy()
        env["QUEUED_JOB_ID"] = str(job_id)
        env["QUEUED_ATTEMPT"] = str(run)
        return env


class JobProcess:
    """A started attempt: the leader's pid, a pidfd, and the read ends of its pipes."""

    def __init__(self, command: str, *, cwd: str | bytes, env: dict[str, str]) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.pid = _spawn([SHELL, "-c", command], cwd, env, out_w, err_w)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
            for fd in (out_r, err_r):
                os.close(fd)
            if isinstance(exc, ValueError):
                raise SpawnError(f"invalid job: {exc}", lasting=True) from None
            raise SpawnError(_spawn_reason(exc, cwd), lasting=exc.errno in _LASTING) from None
        finally:
            os.close(out_w)
            os.close(err_w)
        LEADERS.add(self.pid)
        self.pidfd = os.pidfd_open(self.pid)
        self.stdout = out_r
        self.stderr = err_r
        self.returncode: int | None = None

    async def wait_exit(self) -> None:
        """Until the leader has exited (it stays a zombie until reap())."""
        await trio.lowlevel.wait_readable(self.pidfd)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> int:
        """Kill whatever the job left in its group, then collect the leader's
        status: its exit code, or minus the signal that ended it."""
        self.signal_group(signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        LEADERS.discard(self.pid)
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self.pidfd)
        return self.returncode


def _spawn(argv: list[str], cwd: str | bytes, env: dict[str, str], stdout: int, stderr: int) -> int:
    """posix_spawn (a vfork and an exec, no Python in between) in a new session.
    Every descriptor the daemon holds is close-on-exec (Python's default, and
    `queued` marks those it inherited at start), so the job gets exactly 0, 1
    and 2. posix_spawn cannot change directory here (Python 3.11), so the
    daemon steps into `cwd` for the spawn and back: nothing else runs on this
    thread meanwhile, and every path the daemon uses is absolute."""
    home = os.open(".", os.O_PATH | os.O_DIRECTORY)  # O_PATH: fine in an unreadable directory
    try:
        try:
            os.chdir(cwd)
        except OSError as exc:
            exc.filename = cwd
            raise
        try:
            return os.posix_spawn(
                SHELL,
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, stdout, 1),
                    (os.POSIX_SPAWN_DUP2, stderr, 2),
                ],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        finally:
            os.fchdir(home)
    finally:
        os.close(home)


# Python ignores these; a job starts with them at their defaults, as with Popen.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def _spawn_reason(exc: OSError, cwd: str | bytes) -> str:
    if exc.filename == cwd and exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"working directory {readable(cwd)} does not exist"
    if exc.errno == errno.ENOENT:
        return f"{SHELL} not found"
    if exc.errno == errno.E2BIG:
        return "the command and its environment are more than the kernel accepts (Argument list too long)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({readable(exc.filename or cwd)})"
    return exc.strerror or str(exc)


class CappedLog:
    """One output stream of an attempt, kept up to `cap` bytes in `path`. The
    rest is read and dropped so the job never blocks on a full pipe, and a
    marker line says so. The file is created at the first byte: most jobs of a
    busy queue print nothing."""

    def __init__(self, read_fd: int, path: str, cap: int) -> None:
        self.read_fd = read_fd
        self.path = path
        self.cap = cap
        self.written = self.dropped = 0
        self._out = -1

    def write(self, data: bytes) -> None:
        if self._out < 0:
            self._out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        kept = min(max(self.cap - self.written, 0), len(data))
        if kept:
            os.write(self._out, data[:kept])  # into the page cache: does not stall the loop
            self.written += kept
        self.dropped += len(data) - kept

    def drain_now(self) -> bool:
        """Read what the pipe holds without waiting; True at end of file. After
        the job's group is dead this is everything, unless a process escaped
        the group with the pipe still open."""
        os.set_blocking(self.read_fd, False)
        try:
            while data := os.read(self.read_fd, _READ_SIZE):
                self.write(data)
        except BlockingIOError:
            return False
        self.close()
        return True

    async def copy(self) -> None:
        """Copy until end of file (or until cancelled), then close."""
        try:
            while True:
                await trio.lowlevel.wait_readable(self.read_fd)
                if self.drain_now():
                    return
        finally:
            self.close()

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
        if self._out >= 0:
            if self.dropped:
                marker = f"\n[queued: output truncated at {self.cap} bytes; {self.dropped} more dropped]\n"
                os.write(self._out, marker.encode())
            os.close(self._out)
            self._out = -1
