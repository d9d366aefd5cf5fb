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
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from queued.web import security
from queued.web.app import WebApp
from queued.web.reader import ReadConnection, WebDaemon, WebDatabase

log = logging.getLogger(__name__)


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
        db_path: Path,
        next_change: Callable[[], trio.Event],
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; started once the page answers, with its URL."""
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
            config = hypercorn_config(self.sock)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app.live.run)
                nursery.start_soon(app.count_changes)
                await nursery.start(functools.partial(hypercorn_serve, app, config))
                self.url = daemon.web_url = self.bind.url(port)
                log.info("web page at %s", self.url)
                task_status.started(self.url)
        finally:
            reader.close()


def hypercorn_config(sock: socket.socket) -> Config:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns it from here
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
