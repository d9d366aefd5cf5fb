"""What a job started outside its process group: found, stopped with the job,
and reaped.

Theory of operation: the daemon is a child subreaper (PR_SET_CHILD_SUBREAPER),
so whatever a job starts that outlives its parent is re-parented to the
daemon rather than to init, whichever group or session it moved to (setsid,
setpgid as coreutils `timeout` does, a double fork). Every job's environment
carries its marker (QUEUED_INSTANCE, QUEUED_JOB_ID, QUEUED_ATTEMPT).

At each attempt's end, once its leader is reaped, the daemon reads its own
children list (one pread of /proc/self/task/TID/children). When it holds only
the job leaders (LEADERS) and the children the daemon waits for itself (OWNED:
the guardian), that is all: the common case costs that read. Otherwise each
unknown child is adopted: its marker read from /proc/PID/environ, a pidfd
opened, and a task reaps it as soon as it exits (orphans never linger as
zombies) and looks again (its own children are the daemon's now). While an
attempt runs long, each SIGCHLD is a reason to look too: an orphan that came
and went meanwhile is reaped at once, not at the next attempt's end. An orphan
belongs to the attempt its marker names; one without a marker (it cleared its
environment) but in a session other than the daemon's, to whichever attempts
ran when it was found. Once none of its attempts runs, it is stopped: SIGTERM
(to the group it leads too), SIGKILL after the kill grace. A timeout or a
cancel also signals, with the job's group, its descendants that left the
group while their parents still live (found by walking the leader's tree).

Not caught: a process that leaves the subreaper's reach (a new PID namespace,
or re-parented elsewhere because the daemon had already exited), and an orphan
found only as a zombie is reaped but was never stopped by us (it had ended).
A child in the daemon's own session without our marker is never touched: any
other code that spawns children from the daemon and waits for them must add
their pids to OWNED, or keep them in the daemon's session.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator

import trio

log = logging.getLogger(__name__)

# Children of this process: job leaders not yet reaped, and those the daemon
# waits for itself. Process-wide, as the kernel's list of children is.
LEADERS: set[int] = set()
OWNED: set[int] = set()

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

Key = tuple[int, int]  # (job id, attempt)


def set_subreaper(on: bool) -> bool:
    """Make this process a child subreaper (or not); the previous setting."""
    libc = ctypes.CDLL(None, use_errno=True)
    previous = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    return bool(previous.value)


class Orphan:
    """A process of a job re-parented to the daemon."""

    def __init__(self, pid: int, pidfd: int, owners: set[Key], leads_group: bool) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.owners = owners  # the attempts it may belong to, among those running
        self.leads_group = leads_group
        self.gone = trio.Event()
        self.stopping = False

    def signal(self, sig: int) -> None:
        if self.gone.is_set():
            return
        try:
            if self.leads_group:
                os.killpg(self.pid, sig)  # unreaped, its pid and group cannot be reused
            signal.pidfd_send_signal(self.pidfd, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Escapes:
    """The daemon's orphans, by the attempts they may belong to.
    `running()` returns the keys of the attempts whose leaders are not reaped;
    `grace()` the current kill grace."""

    def __init__(self, instance: str, running: Callable[[], set[Key]], grace: Callable[[], float]) -> None:
        self._instance = instance.encode()
        self._running = running
        self._grace = grace
        self._orphans: dict[int, Orphan] = {}
        self._by_attempt: dict[Key, list[Orphan]] = {}
        self._foreign: set[int] = set()  # children not ours: never touched
        self._session = os.getsid(0)
        self._nursery: trio.Nursery | None = None
        self._long = 0  # attempts watched by a task of their own
        self._long_begun = trio.Event()
        leader = os.getpid()
        loop_thread = threading.get_native_id()
        # Orphans go to the thread-group leader; our own spawns to the loop's thread.
        paths = {f"/proc/self/task/{tid}/children" for tid in (leader, loop_thread)}
        try:
            self._children_fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in sorted(paths)]
        except OSError as exc:  # a kernel without CONFIG_PROC_CHILDREN
            log.warning(
                "cannot read the daemon's children (%s): processes that leave a job's group survive it", exc
            )
            self._children_fds = []

    @contextlib.contextmanager
    def long_attempt(self) -> Iterator[None]:
        """While an attempt runs long, orphans may be re-parented and die between
        attempts' ends: SIGCHLD is watched then, so they are reaped at once."""
        self._long += 1
        self._long_begun.set()
        try:
            yield
        finally:
            self._long -= 1

    async def _reap_on_sigchld(self) -> None:
        """While any attempt runs long, look at each SIGCHLD (a batch at a time).
        Only then: a quick job's end would pay a signal and a wake-up."""
        while True:
            if not self._long:
                self._long_begun = trio.Event()
                await self._long_begun.wait()
            with trio.open_signal_receiver(signal.SIGCHLD) as batches:
                async for _ in batches:
                    self.look()
                    if not self._long:
                        break

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Be the subreaper while running; its nursery holds the orphans' tasks."""
        try:
            previous: bool | None = set_subreaper(True)
        except OSError as exc:
            log.warning("cannot become a child subreaper (%s): orphans of jobs go to init", exc)
            previous = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._children_fds and threading.current_thread() is threading.main_thread():
                    nursery.start_soon(self._reap_on_sigchld)  # signals reach the main thread only
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for orphan in self._orphans.values():
                orphan.signal(signal.SIGKILL)  # the daemon stops: what its jobs left goes too
            if previous is not None:
                set_subreaper(previous)
            for fd in self._children_fds:
                os.close(fd)
            self._children_fds = []

    # -- at an attempt's end (the hot path) --------------------------------------

    def ended(self, job_id: int, run: int) -> None:
        """An attempt's leader was reaped: stop what it left outside its group."""
        self.look()
        key = (job_id, run)
        for orphan in self._by_attempt.pop(key, ()):
            orphan.owners.discard(key)
            if not orphan.owners:
                self._stop(orphan)

    def look(self) -> None:
        """Adopt children we do not know yet."""
        if not self._children_fds or self._nursery is None:
            return
        known = len(LEADERS) + len(OWNED) + len(self._orphans) + len(self._foreign)
        listed = b""
        for fd in self._children_fds:
            size = 4096
            while len(data := os.pread(fd, size, 0)) == size:  # more children than that holds
                size *= 4
            listed += data
        if listed.count(b" ") == known:  # one trailing space per child
            return
        children = set(map(int, listed.split()))
        self._foreign &= children
        unknown = children - LEADERS - OWNED - self._orphans.keys() - self._foreign
        if unknown:
            running = self._running()
            for pid in unknown:
                self._adopt(pid, running)

    def _adopt(self, pid: int, running: set[Key]) -> None:
        state, group, session = _stat(pid)
        if state is None:
            return  # reaped meanwhile by whoever spawned it
        marker = None if state == "Z" else _marker(pid)
        ours = marker is not None and marker[0] == self._instance
        if not ours and (session == self._session or marker is not None):
            self._foreign.add(pid)  # the daemon's own, or another daemon's
            return
        if state == "Z":
            _reap(pid)  # an orphan that ended before we saw it
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        if ours:
            assert marker is not None
            owners = {marker[1]} & running
        else:
            owners = set(running)
        orphan = Orphan(pid, pidfd, owners, leads_group=group == pid)
        self._orphans[pid] = orphan
        for key in owners:
            self._by_attempt.setdefault(key, []).append(orphan)
        assert self._nursery is not None
        self._nursery.start_soon(self._reap_when_gone, orphan)
        if not owners:
            self._stop(orphan)

    def _stop(self, orphan: Orphan) -> None:
        if not orphan.stopping and self._nursery is not None:
            orphan.stopping = True
            self._nursery.start_soon(self._terminate, orphan)

    async def _terminate(self, orphan: Orphan) -> None:
        orphan.signal(signal.SIGTERM)
        with trio.move_on_after(self._grace()):
            await orphan.gone.wait()
            return
        orphan.signal(signal.SIGKILL)

    async def _reap_when_gone(self, orphan: Orphan) -> None:
        try:
            await trio.lowlevel.wait_readable(orphan.pidfd)
        finally:
            _reap(orphan.pid)
            orphan.gone.set()
            os.close(orphan.pidfd)
            del self._orphans[orphan.pid]
            for key in orphan.owners:
                orphans = self._by_attempt.get(key)
                if orphans is not None and orphan in orphans:
                    orphans.remove(orphan)
        self.look()  # its children are ours now

    # -- at a timeout or a cancel ------------------------------------------------

    def signal_attempt(self, job_id: int, run: int, leader: int, sig: int) -> None:
        """Signal an attempt's processes outside its group: its orphans, and
        the descendants of its leader that left the group."""
        for orphan in self._by_attempt.get((job_id, run), ()):
            if orphan.owners == {(job_id, run)}:
                orphan.signal(sig)
        for pid in _descendants(leader):
            state, group, _ = _stat(pid)
            if state is not None and group != leader:
                try:
                    if group == pid:
                        os.killpg(pid, sig)
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass


def _stat(pid: int) -> tuple[str | None, int, int]:
    """(state, process group, session) of a process; state None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b") ", 1)[1].split()
    except (OSError, IndexError):
        return None, 0, 0
    return fields[0].decode(), int(fields[2]), int(fields[3])


def _marker(pid: int) -> tuple[bytes, Key] | None:
    """(instance, (job id, attempt)) from a process's environment, if it has them."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    found: dict[bytes, bytes] = {}
    for entry in environ.split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name in (b"QUEUED_INSTANCE", b"QUEUED_JOB_ID", b"QUEUED_ATTEMPT"):
            found[name] = value
    try:
        return found[b"QUEUED_INSTANCE"], (int(found[b"QUEUED_JOB_ID"]), int(found[b"QUEUED_ATTEMPT"]))
    except (KeyError, ValueError):
        return None


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _descendants(pid: int) -> list[int]:
    """Every descendant of a process, by walking its threads' children lists."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    children = [int(word) for word in f.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found
