"""The data dir's lock: a live daemon refuses a second at once; a lock that only
a dead daemon's guardian holds is waited for."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from queued import data_lock
from queued.data_lock import LockHolder, StartupError, lock_data_dir


def test_the_holder_line_of_older_versions_is_read() -> None:
    assert LockHolder.parse("1234\n") == LockHolder(1234, None, None)
    assert LockHolder.parse("1234\nstart 99\nguardian 77\n") == LockHolder(1234, 99, 77)
    assert LockHolder.parse("") == LockHolder(None, None, None)


def test_a_live_daemon_is_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_lock, "LOCK_WAIT_SECONDS", 60.0)
    held = lock_data_dir(tmp_path)  # this process is the live holder
    try:
        started = time.monotonic()
        with pytest.raises(StartupError, match=f"another queued \\(pid {os.getpid()}\\)"):
            lock_data_dir(tmp_path)
        assert time.monotonic() - started < 30
    finally:
        os.close(held)


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path: Path) -> None:
    me = os.getpid()
    assert LockHolder(me, data_lock.process_start_time(me), None).daemon_alive()
    assert not LockHolder(me, 1, None).daemon_alive()


def test_a_lock_left_to_a_dead_daemons_guardian_is_waited_for(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "queued.lock"
    path.write_text(LockHolder(dead.pid, 1, None).format())
    guardian = os.open(path, os.O_RDWR)
    fcntl.flock(guardian, fcntl.LOCK_EX)
    releaser = threading.Timer(0.3, os.close, [guardian])
    releaser.start()
    fd = lock_data_dir(tmp_path)
    releaser.join()
    assert LockHolder.parse(path.read_text()).pid == os.getpid()
    os.close(fd)


def test_a_guardian_that_never_lets_go_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_lock, "LOCK_WAIT_SECONDS", 0.2)
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "queued.lock"
    path.write_text(LockHolder(dead.pid, 1, 4242).format())
    guardian = os.open(path, os.O_RDWR)
    fcntl.flock(guardian, fcntl.LOCK_EX)
    try:
        with pytest.raises(StartupError, match=f"pid {dead.pid}\\) is gone, but its guardian \\(pid 4242\\)"):
            lock_data_dir(tmp_path)
    finally:
        os.close(guardian)
