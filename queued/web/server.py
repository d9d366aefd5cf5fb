"""The web page's server, from inside the daemon: hypercorn's trio worker
serving queued.web.app in the daemon's nursery.

`WebServer.prepare` runs before anything is served and refuses what must not
start (a non-loopback address without a token, an address in use): the
daemon then stops with that one line. `serve` opens the web's own read
connection, starts the live snapshot task and hypercorn, and reports the
URL (the port the kernel picked for port 0).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from queued.web import security
from queued.web.app import WebApp
from queued.web.reader import ReadConnection, WebDaemon, WebDatabase, WriterReads

log = logging.getLogger(__name__)
# Open HTTP connections at once, live streams included (app.MAX_STREAMS of
# them at most): beyond it no connection is accepted until one closes, so
# the kernel's backlog holds the next ones (and refuses them once full) and
# no flood of connections takes the descriptors the daemon's jobs need.
MAX_CONNECTIONS = 64
# What the page may hold at once: its connections, an inotify watch per
# output stream, its read connection's files and a log being read.
DESCRIPTORS = MAX_CONNECTIONS + 32 + 8


class WebStartError(Exception):
    """Why the page cannot start; the daemon does not start either."""


class WebServer:
    def __init__(
        self, bind: security.BindAddress, sock: socket.socket, names: frozenset[str], token: str
    ) -> None:
        self.bind = bind
        self.sock = sock
        self.names = names
        self.token = token
        self.url: str | None = None
        self.app: WebApp | None = None
        self.descriptors = DESCRIPTORS  # what it may hold at once, beside the daemon's own

    @classmethod
    def prepare(
        cls, address: str | None, names: str | None, data_dir: Path, inherited: socket.socket | None = None
    ) -> WebServer:
        """Check the address and the token, and bind (or take systemd's socket,
        whose own address then decides, whatever `address` says)."""
        try:
            if inherited is not None:
                host, port = inherited.getsockname()[:2]
                bind = security.BindAddress(host, port)
                address = f"{bind.url_host}:{port}"
            else:
                assert address is not None
                bind = security.parse_bind(address)
            loopback = security.is_loopback(bind.host)
            token = security.ensure_token(data_dir) if loopback else security.read_token(data_dir)
        except ValueError as exc:
            raise WebStartError(str(exc)) from None
        if token is None:
            raise WebStartError(
                f"--http {address} is not a loopback address: it serves only with a web token, "
                "which every read and action then needs. Create it with `queuectl web token` "
                f"(or bind to 127.0.0.1 and reach it through an SSH tunnel)"
            )
        if inherited is not None:
            sock = inherited
        else:
            try:
                family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
                infos = socket.getaddrinfo(bind.host, bind.port, family, socket.SOCK_STREAM)
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(infos[0][4])
                except OSError:
                    sock.close()
                    raise
            except OSError as exc:
                raise WebStartError(
                    f"cannot serve the web page on {address}: {exc.strerror or exc}"
                ) from None
        sock.set_inheritable(False)  # jobs must not inherit it
        return cls(bind, sock, security.parse_names(names), token)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()

    async def serve(
        self,
        daemon: Any,
        handlers: dict[type, Any],
        dispatch: Any,
        db_path: Path | None,
        next_change: Callable[[], trio.Event],
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; started once the page answers, with its URL.
        `db_path`: the SQLite file the page reads on a connection of its own;
        None for a store shared by nodes, read through the writer."""
        reader: ReadConnection | WriterReads
        if db_path is None:
            reader = WriterReads(daemon.db)
        else:
            reader = ReadConnection(db_path, type(daemon.db.engine))
        try:
            web_daemon = WebDaemon(daemon, WebDatabase(daemon.db, reader))
            self.app = app = WebApp(
                dispatch=functools.partial(dispatch, handlers, web_daemon),
                next_change=next_change,
                writer=daemon.db,
                reader=reader,
                bind=self.bind,
                names=self.names,
                token=self.token,
                started_at=daemon.started_at,
                problems=daemon.problems,
            )
            port = self.sock.getsockname()[1]
            config = hypercorn_config()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app.live.run)
                nursery.start_soon(app.count_changes)
                await nursery.start(serve_http, app, config, self.sock, MAX_CONNECTIONS)
                self.url = daemon.web_url = self.bind.url(port)
                log.info("web page at %s", self.url)
                task_status.started(self.url)
        finally:
            reader.close()


class CappedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts only while fewer than `limit` of its
    connections are open (each handler calls `release` once its connection
    is closed): the connections waiting beyond it stay in the kernel's
    backlog, and take none of the daemon's descriptors."""

    def __init__(self, listener: trio.SocketListener, limit: int) -> None:
        self.listener = listener
        self.limit = limit
        self._free = trio.Semaphore(limit)

    @property
    def open(self) -> int:
        return self.limit - self._free.value

    async def accept(self) -> trio.SocketStream:
        await self._free.acquire()
        try:
            return await self.listener.accept()
        except BaseException:
            self._free.release()
            raise

    def release(self) -> None:
        self._free.release()

    async def aclose(self) -> None:
        await self.listener.aclose()


async def serve_http(
    app: WebApp,
    config: Config,
    sock: socket.socket,
    limit: int,
    *,
    task_status: trio.TaskStatus[list[CappedListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hypercorn's HTTP (its connection handler, `TCPServer`) on `sock`,
    at most `limit` connections at once. Hypercorn's own `serve` makes its
    listeners itself, with no cap; this is its trio worker's loop without the
    parts the page does not use (lifespan events, TLS, QUIC, max_requests)."""
    sock.listen(config.backlog)
    listener = CappedListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), limit)
    app.connections = listener
    wrapped = ASGIWrapper(app)
    context = WorkerContext(None)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await TCPServer(wrapped, config, context, ConnectionState({}), stream).run()
        finally:
            listener.release()

    await trio.serve_listeners(handle, [listener], task_status=task_status)


def hypercorn_config() -> Config:
    config = Config()
    config.accesslog = None
    quiet = logging.getLogger("queued.web.http")
    quiet.setLevel(logging.WARNING)  # hypercorn's "Running on" line: ours names the URL
    config.errorlog = quiet
    config.include_server_header = False
    config.keep_alive_timeout = 5
    config.read_timeout = 30  # a request's headers and body arrive within this
    config.h11_max_incomplete_size = 16 * 1024
    config.graceful_timeout = 1
    config.backlog = 64
    return config
