"""One job attempt as an operating-system process: spawn, capture, stop, reap.

Each attempt runs `/bin/sh -c COMMAND` as the leader of a new session (so of a
new process group), with stdin from /dev/null and stdout/stderr into pipes that
the daemon copies to the attempt's log files up to a size cap: the job never
blocks on a full pipe, and a job that writes a gigabyte costs a gigabyte of
reads, not of disk. Exit is awaited on a pidfd, so no thread per child; the
group is swept with SIGKILL while the leader is still an unreaped zombie,
which keeps the group id from being reused under us.

Faults around a job are the job's, never the daemon's: a spawn that finds no
free descriptor raises `OutOfDescriptors` (the job waits), any other failure
to start raises `SpawnError` (the attempt fails), and a log the disk will not
take (full, over quota, failing, over the file-size limit, its folder gone)
drops what it cannot write, counts it and says so in the log once it can.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
from typing import Protocol

import trio

from queued.processes.escapes import LEADERS
from queued.processes.job_environment import AttemptEnvironment, entries
from queued.processes.libc_spawn import LibcSpawn
from queued.protocol import readable

SHELL = "/bin/sh"
# A spawn that fails with these is the daemon's shortage, not the job's fault.
_SHORTAGE = (errno.EMFILE, errno.ENFILE)
_READ_SIZE = 256 * 1024


class SpawnError(Exception):
    """The attempt could not start; the message is for the user. `lasting`
    when another attempt would fail the same way (see `_LASTING`)."""

    def __init__(self, reason: str, *, lasting: bool = False) -> None:
        super().__init__(reason)
        self.lasting = lasting


# Failures to start that only a change to the job itself can cure.
_LASTING = frozenset({errno.E2BIG, errno.ENAMETOOLONG})


class OutOfDescriptors(Exception):
    """The daemon has no descriptor free to start an attempt: the job is not
    started and waits until some are released (an attempt ends)."""


class JobProcess:
    """A started attempt: the leader's pid, a pidfd, and the read ends of its pipes."""

    def __init__(self, command: str, *, cwd: str | bytes, env: AttemptEnvironment | dict[str, str]) -> None:
        opened: list[int] = []
        try:
            out_r, out_w = os.pipe()
            opened += (out_r, out_w)
            err_r, err_w = os.pipe()
            opened += (err_r, err_w)
            self.pid = _spawn([SHELL, "-c", command], cwd, env, out_w, err_w)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
            _close_all(opened)
            if isinstance(exc, ValueError):
                raise SpawnError(f"invalid job: {exc}", lasting=True) from None
            if exc.errno in _SHORTAGE:
                raise OutOfDescriptors(exc.strerror or str(exc)) from None
            raise SpawnError(_spawn_reason(exc, cwd), lasting=exc.errno in _LASTING) from None
        _close_all((out_w, err_w))
        LEADERS.add(self.pid)
        self.stdout = out_r
        self.stderr = err_r
        self.returncode: int | None = None
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError as exc:
            # It runs, but it cannot be watched: it must not run unseen.
            self.pidfd = -1
            self.abandon()
            _close_all((out_r, err_r))
            if exc.errno in _SHORTAGE:
                raise OutOfDescriptors(exc.strerror or str(exc)) from None
            raise SpawnError(f"its process could not be watched: {exc.strerror or exc}") from None

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

    def abandon(self) -> None:
        """After a fault in the daemon's handling of it: kill the job's group and
        collect the leader, whatever state that handling left them in."""
        if self.returncode is not None:
            return
        self.signal_group(signal.SIGKILL)
        try:
            os.waitpid(self.pid, 0)  # SIGKILLed: no wait to speak of
        except ChildProcessError:
            pass  # collected already
        LEADERS.discard(self.pid)
        self.returncode = -signal.SIGKILL
        if self.pidfd >= 0:
            _close_all((self.pidfd,))


def _close_all(fds: tuple[int, ...] | list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# Python ignores these; a job starts with them at their defaults, as with Popen.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
# None where libc lacks what it needs: then os.posix_spawn, holding the GIL.
_LIBC_SPAWN = LibcSpawn.load(_DEFAULT_SIGNALS)


def _spawn(
    argv: list[str], cwd: str | bytes, env: AttemptEnvironment | dict[str, str], stdout: int, stderr: int
) -> int:
    """posix_spawn (a vfork and an exec, no Python in between) in a new session.
    Every descriptor the daemon holds is close-on-exec (Python's default, and
    `queued` marks those it inherited at start), so the job gets exactly 0, 1
    and 2. Through libc where it can (libc_spawn.py): the GIL is let go while
    the child execs."""
    if _LIBC_SPAWN is not None:
        variables = env.entries() if isinstance(env, AttemptEnvironment) else entries(env)
        return _LIBC_SPAWN.spawn(SHELL, argv, variables, cwd=cwd, stdout=stdout, stderr=stderr)
    return _spawn_holding_the_gil(
        argv, cwd, env.as_dict() if isinstance(env, AttemptEnvironment) else env, stdout, stderr
    )


def _spawn_holding_the_gil(
    argv: list[str], cwd: str | bytes, env: dict[str, str], stdout: int, stderr: int
) -> int:
    """`_spawn` with os.posix_spawn, which cannot change directory (Python
    3.11): the daemon steps into `cwd` for the spawn and back. Nothing else
    runs meanwhile (the GIL is held throughout), and every path the daemon
    uses is absolute."""
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


def _spawn_reason(exc: OSError, cwd: str | bytes) -> str:
    if exc.filename == cwd and exc.errno == errno.ENOENT:
        return f"working directory {readable(cwd)} does not exist"
    if exc.filename == cwd and exc.errno == errno.ENOTDIR:
        return f"working directory {readable(cwd)} is not a directory"
    if exc.errno == errno.ENOENT:
        return f"{SHELL} not found"
    if exc.errno == errno.E2BIG:
        return "the command and its environment are more than the kernel accepts (Argument list too long)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({readable(exc.filename or cwd)})"
    return exc.strerror or str(exc)


def _open_log(path: str) -> int:
    """The log file, created 0600; its folder again if it was removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        folder = os.path.dirname(path)
        os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)  # logs/, private too
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return os.open(path, flags, 0o600)


LossReport = Callable[["CappedLog", OSError], None]


class OutputCopy(Protocol):
    """Where a log's kept bytes are copied as well (the store's copy, see output_copies.py)."""

    def write(self, data: bytes) -> None: ...


class CappedLog:
    """One output stream of an attempt, kept up to `cap` bytes in `path`. The
    rest is read and dropped so the job never blocks on a full pipe, and a
    marker line says so. The file is created at the first byte: most jobs of a
    busy queue print nothing.

    What the disk refuses (see the module's doc) is dropped and counted in
    `lost`, and the job's output keeps being read. Every write tries again;
    the first that succeeds puts a marker line where the gap is, then the
    output. `on_loss` is told of each refusal (the attempt reports the first).

    `copy`, when given, gets every byte kept under the cap and the truncation
    marker, as the file does; not the marker of a gap the disk made, since
    the copy lost nothing."""

    def __init__(
        self,
        read_fd: int,
        path: str,
        cap: int,
        on_loss: LossReport | None = None,
        copy: OutputCopy | None = None,
    ) -> None:
        self.read_fd = read_fd
        self.path = path
        self.cap = cap
        self.written = self.dropped = 0
        self.lost = 0  # bytes under the cap the disk refused
        self.loss_reason: str | None = None  # why the first of them was lost
        self._gap = 0  # lost since the last byte that reached the file
        self._gap_reason = ""
        self._on_loss = on_loss
        self._copy = copy
        self._out = -1

    def write(self, data: bytes) -> None:
        kept = min(max(self.cap - self.written, 0), len(data))
        self.dropped += len(data) - kept
        if not kept:
            return
        self.written += kept  # lost bytes count too: the cap bounds the file either way
        chunk = data if kept == len(data) else data[:kept]
        if self._copy is not None:
            self._copy.write(chunk)  # the store's copy has what the disk refuses too
        done = 0
        try:
            if self._out < 0:
                self._out = _open_log(self.path)
            if self._gap:
                self._mark_gap()
            done = os.write(self._out, chunk)  # into the page cache: does not stall the loop
            while done < kept:  # a short write: the disk filled up in between
                done += os.write(self._out, memoryview(chunk)[done:])
        except OSError as exc:
            self._lose(kept - done, exc)

    def _mark_gap(self) -> None:
        marker = f"\n[queued: {self._gap:,} bytes lost: {self._gap_reason}]\n"
        os.write(self._out, marker.encode())
        self._gap = 0

    def _lose(self, count: int, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        if not self._gap:
            self._gap_reason = reason
        if self.loss_reason is None:
            self.loss_reason = reason
        self.lost += count
        self._gap += count
        if self._on_loss is not None:
            self._on_loss(self, exc)

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
        if self.read_fd < 0:
            return  # closed already
        _close_all((self.read_fd,))
        self.read_fd = -1
        cut = b""
        if self.dropped:
            cut = f"\n[queued: output truncated at {self.cap} bytes; {self.dropped} more dropped]\n".encode()
            if self._copy is not None:
                self._copy.write(cut)
        if self._gap or cut:
            try:  # the last chance to say what is missing
                if self._out < 0:
                    self._out = _open_log(self.path)
                if self._gap:
                    self._mark_gap()
                if cut:
                    os.write(self._out, cut)
            except OSError:
                pass  # the record says the log is incomplete
        if self._out >= 0:
            _close_all((self._out,))
            self._out = -1
