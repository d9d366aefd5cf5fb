"""The control socket: bind it safely, admit only our user, speak the protocol.

Each connection is a task in the server's nursery; anything that goes wrong in
one (bad bytes, a vanished client, a bug in a handler) ends that connection
with a logged reason and never the daemon.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket as stdsocket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from queued import __version__, paths
from queued import protocol as p
from queued.processes.descriptors import MAX_CLIENTS
from queued.store import StorageError

log = logging.getLogger(__name__)
Handler = Callable[[p.Request], Awaitable[p.Response]]
ACCEPT_BACKOFF = 0.1  # seconds between accepts while out of descriptors
ACCEPT_LOG_SECONDS = 60.0  # a lasting want of descriptors is logged at most this often


# Requests that change nothing and may wait indefinitely: answered only while
# the client is still there (see Server._answer_unless_hung_up).
_UNTIL_HANGUP = (p.WaitJobs,)


class SocketInUse(Exception):
    pass


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's directory, and any missing parent, 0700; an existing
    one is left as it is, and refused if another user could put a socket of
    their own in our socket's place (see paths.socket_dir_risk)."""
    folder = path.parent
    missing = [d for d in (folder, *folder.parents) if not d.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: checked below like any other
        os.chmod(directory, 0o700)  # whatever the umask
    if folder == paths.fallback_socket_dir():
        _keep_fallback_dir_private(folder)
        return
    info = folder.stat()
    risk = paths.socket_dir_risk(info.st_mode, info.st_uid, os.getuid())
    if risk is not None:
        raise SocketInUse(f"{folder} is not safe for queued's socket: {risk}; choose another --socket")


def _keep_fallback_dir_private(folder: Path) -> None:
    """/tmp/queued-UID is queued's own by its name, but anyone may create it
    first: it must be a directory of ours (or a link of ours to one), and it is
    kept 0700, which queuectl checks before it connects (queuectl/trust.py)."""
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid():
        info = folder.stat()  # our own link: what it names counts
    if stat.S_ISLNK(info.st_mode):
        raise SocketInUse(f"{folder} is a symbolic link of uid {info.st_uid}; choose another --socket")
    if not stat.S_ISDIR(info.st_mode):
        raise SocketInUse(f"{folder} is not a directory; remove it or choose another --socket")
    if info.st_uid != os.getuid():
        raise SocketInUse(f"{folder} belongs to uid {info.st_uid}, not to us; choose another --socket")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)


def bind_unix(path: Path) -> trio.socket.SocketType:
    """A listening socket at `path`, 0600 from its first instant; a stale socket
    file left by a crashed daemon is replaced, a live one refused."""
    prepare_socket_dir(path)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SocketInUse(f"{path} exists and is not a socket")
        probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # stale: nobody is listening
        else:
            raise SocketInUse(f"another queued is already serving {path}")
        finally:
            probe.close()
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(512)
    return trio.socket.from_stdlib_socket(sock)


class Peer:
    """Who is at the other end of a connection, as the kernel says (SO_PEERCRED)."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        creds = sock.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i"))
        self.pid, self.uid, self.gid = struct.unpack("3i", creds)

    def groups(self) -> set[int]:
        """Primary and supplementary groups (the latter from /proc: SO_PEERCRED has one gid)."""
        groups = {self.gid}
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        groups.update(int(g) for g in line.split()[1:])
        except OSError:
            pass
        return groups


class AccessPolicy:
    """Our own uid and root; with `group`, that group's members too (a system daemon)."""

    def __init__(self, uids: frozenset[int], group: int | None = None) -> None:
        self.uids = uids
        self.group = group

    def admits(self, peer: Peer) -> bool:
        if peer.uid in self.uids:
            return True
        return self.group is not None and self.group in peer.groups()


class Server:
    def __init__(
        self, handler: Handler, access: AccessPolicy, room: Callable[[], int] = lambda: MAX_CLIENTS
    ) -> None:
        self.handler = handler
        self.access = access
        self.room = room  # how many clients may be connected at once (descriptors.client_room)
        self.connections = 0
        self._told_full = -math.inf
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until no request is being answered (a shutdown lets answers go out)."""
        await self._idle.wait()

    async def serve(
        self,
        listener: trio.SocketListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            told = -math.inf  # when a failing accept was last logged
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # EMFILE and friends: new connections wait in the backlog while
                    # those connected are served; an ending one (or job) frees a descriptor.
                    if trio.current_time() - told >= ACCEPT_LOG_SECONDS:
                        told = trio.current_time()
                        log.error("cannot accept connections: %s; retrying every %.1f s", exc, ACCEPT_BACKOFF)
                    await trio.sleep(ACCEPT_BACKOFF if exc.errno in (errno.EMFILE, errno.ENFILE) else 0)
                    continue
                if self.connections >= self.room():
                    await self._turn_away(stream)
                    continue
                self.connections += 1  # here, not in the task: the next accept may come before it runs
                nursery.start_soon(self._connection, stream)

    async def _turn_away(self, stream: trio.SocketStream) -> None:
        """A client over the cap gets its reason at once (its socket's buffer
        is empty: the send does not wait on it) and the descriptor back."""
        if trio.current_time() - self._told_full >= ACCEPT_LOG_SECONDS:
            self._told_full = trio.current_time()
            log.warning(
                "%d clients are connected, as many as queued takes: turning new ones away", self.connections
            )
        message = (
            f"queued is busy: {self.connections} clients are connected, as many as it takes "
            "(the rest of its open files are its jobs'); try again shortly"
        )
        with trio.move_on_after(1):
            try:
                await _send(stream, p.Error(code="busy", message=message))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the client went away
        except Exception:
            log.exception("connection failed")
        finally:
            self.connections -= 1

    async def _converse(self, stream: trio.SocketStream) -> None:
        peer = Peer(stream.socket)
        if not self.access.admits(peer):
            log.warning("refused a connection from uid %d (pid %d)", peer.uid, peer.pid)
            message = f"uid {peer.uid} may not use this queued (it runs as uid {os.getuid()})"
            await _send(stream, p.Error(code="forbidden", message=message))
            return
        frames = _Frames(stream)
        try:
            hello = await frames.next_request()
        except p.UndecodableFrame as exc:
            await _refuse_undecodable(stream, exc)
            return
        if not isinstance(hello, p.Hello):
            await _send(stream, p.Error(code="bad_request", message="expected a hello first"))
            return
        if hello.protocol != p.PROTOCOL_VERSION:
            await _send(
                stream,
                p.Error(
                    code="version",
                    message=(
                        f"protocol version mismatch: client speaks {hello.protocol}, queued {__version__} "
                        f"speaks {p.PROTOCOL_VERSION}; use matching versions of queuectl and queued"
                    ),
                ),
            )
            return
        await _send(stream, p.Welcome(protocol=p.PROTOCOL_VERSION, version=__version__, pid=os.getpid()))
        while True:
            try:
                request = await frames.next_request()
            except p.UndecodableFrame as exc:
                await _refuse_undecodable(stream, exc)
                return
            except p.ProtocolError as exc:
                await _send(stream, p.error_from(exc))
                if exc.code == "too_large":
                    return  # the body is still on the wire: no way back into sync
                continue
            if request is None:
                return
            self.in_flight += 1
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            try:
                if isinstance(request, _UNTIL_HANGUP):
                    answer = await self._answer_unless_hung_up(request, frames)
                    if answer is None:
                        log.debug("a client hung up while waiting for %s", type(request).__name__)
                        return
                else:
                    answer = await self._answer(request)
                try:
                    frame = p.encode_frame(answer)
                except p.ProtocolError as exc:  # e.g. `ls --all` over a million jobs
                    frame = p.encode_frame(
                        p.Error(code="too_large", message=f"{exc.message}: ask for less (--limit)")
                    )
                await stream.send_all(frame)
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()

    async def _answer_unless_hung_up(self, request: p.Request, frames: _Frames) -> p.Response | None:
        """Answer a request that may wait long, watching the connection meanwhile:
        None as soon as the client hung up, so that an abandoned `wait` holds
        neither its descriptor nor its place among the waiters."""
        answer: p.Response | None = None
        async with trio.open_nursery() as nursery:

            async def answer_it() -> None:
                nonlocal answer
                answer = await self._answer(request)
                nursery.cancel_scope.cancel()

            nursery.start_soon(answer_it)
            await frames.until_hangup()
            nursery.cancel_scope.cancel()
        return answer

    async def _answer(self, request: p.Request) -> p.Response:
        try:
            return await self.handler(request)
        except StorageError as exc:
            return p.Error(code="storage", message=str(exc))
        except Exception:
            log.exception("handler for %s failed", type(request).__name__)
            return p.Error(code="internal", message="internal error: see queued's log")


async def _refuse_undecodable(stream: trio.SocketStream, exc: p.UndecodableFrame) -> None:
    """A frame that is not msgpack (or holds text that is not UTF-8) gets its
    reason, then the connection closes: what the client sends next may be more
    of the same, and no answer could be matched to it."""
    log.info("closing a connection that sent undecodable bytes: %s", exc)
    message = f"the request is not valid msgpack: {exc} (text must be UTF-8; send other bytes as bytes)"
    await _send(stream, p.Error(code="bad_request", message=message))


class _Frames:
    """Reads frames off a stream; None at a clean end of stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = p.FrameBuffer()

    async def next_request(self) -> p.Request | None:
        while True:
            body = self.buffer.next_frame()  # raises ProtocolError("too_large")
            if body is not None:
                return p.decode_request(body)  # raises UndecodableFrame
            data = await self.stream.receive_some(256 * 1024)
            if not data:
                return None
            self.buffer.feed(data)

    async def until_hangup(self) -> None:
        """Return when the client closes or resets the connection. Bytes it sends
        meanwhile (a request sent ahead) are kept for `next_request`, up to one
        frame's worth; beyond that, stop looking."""
        try:
            while data := await self.stream.receive_some(256 * 1024):
                self.buffer.feed(data)
                if self.buffer.pending > p.HEADER_SIZE + p.MAX_FRAME:
                    await trio.sleep_forever()
        except (trio.BrokenResourceError, ConnectionError):
            pass


async def _send(stream: trio.SocketStream, message: p.Response) -> None:
    await stream.send_all(p.encode_frame(message))
