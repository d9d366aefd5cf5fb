"""The two small systemd protocols, without libsystemd: readiness notification
(sd_notify: datagrams to $NOTIFY_SOCKET) and socket activation (sd_listen_fds:
sockets inherited from fd 3 when $LISTEN_PID is us)."""

from __future__ import annotations

import logging
import os
import socket
import stat

log = logging.getLogger(__name__)
LISTEN_FDS_START = 3


class Notifier:
    """Sends READY=1, STATUS=…, STOPPING=1 and WATCHDOG=1 when run by systemd;
    does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address if address.startswith(("/", "\0")) else None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %r: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def inherited_listener(environ: dict[str, str] | None = None) -> socket.socket | None:
    """The listening Unix stream socket systemd passed us, if any."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(env.get("LISTEN_FDS", "0") or 0)
    if count < 1:
        return None
    if count > 2:
        log.warning("systemd passed %d sockets; serving the first two only", count)
    fd = LISTEN_FDS_START
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise ValueError(f"fd {fd} from systemd is not a socket")
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError("the socket from systemd must be a Unix stream socket (ListenStream=PATH)")
    os.set_inheritable(fd, False)  # jobs must not inherit the daemon's socket
    return sock


def inherited_web_listener(environ: dict[str, str] | None = None) -> socket.socket | None:
    """The second socket systemd passed us, if any: a TCP one for the web page
    (a second ListenStream=127.0.0.1:8080 in the socket unit)."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()) or int(env.get("LISTEN_FDS", "0") or 0) < 2:
        return None
    fd = LISTEN_FDS_START + 1
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise ValueError(f"fd {fd} from systemd is not a socket")
    sock = socket.socket(fileno=fd)
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        raise ValueError(
            "the second socket from systemd must be a TCP one for the web page (ListenStream=HOST:PORT)"
        )
    os.set_inheritable(fd, False)  # jobs must not inherit it
    return sock
