"""sd_notify datagrams and socket activation, against sockets of our own."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from queued.systemd import Notifier, inherited_listener


def receiver(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock, path


def test_notify_sends_ready_status_stopping(tmp_path: Path) -> None:
    sock, path = receiver(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("0 running")
    notifier.status("1 running")
    notifier.stopping()
    assert sock.recv(4096).decode().split("\n")[:2] == ["READY=1", "STATUS=0 running"]
    assert sock.recv(4096) == b"STATUS=1 running"
    assert sock.recv(4096).startswith(b"STOPPING=1")


def test_notify_abstract_namespace() -> None:
    name = f"queued-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_is_silent_without_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("x")  # no error, nothing sent


def test_watchdog_interval_is_half_the_timeout() -> None:
    notifier = Notifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert notifier.watchdog_interval == 15
    assert (
        Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval
        is None
    )


def test_listen_fds_ignored_for_another_pid() -> None:
    assert inherited_listener({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) is None
    assert inherited_listener({}) is None


def test_listen_fds_rejects_a_non_socket(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    saved = os.dup(3) if _fd_open(3) else None
    try:
        os.dup2(fd, 3)
        with pytest.raises(ValueError, match="not a socket"):
            inherited_listener({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        os.close(fd)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
