"""kill -9 of the daemon: its jobs die with it, nothing acknowledged is lost,
and the restarted daemon records the interrupted attempt and retries it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import Daemon, pid_alive


def wait_for(predicate, timeout: float = 10, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def test_kill_9_kills_the_jobs_and_a_restart_retries_them(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        pidfile = tmp_path / "grandchild.pid"
        # A tree whose grandchild ignores SIGTERM: only the guardian's SIGKILL ends it.
        running = daemon.add(f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 300' & wait")
        finished = daemon.add("echo done")
        delayed = daemon.add("--delay", "1", "echo later")
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
        grandchild = int(pidfile.read_text())
        shell_pid = json.loads(daemon.ok("show", "--json", str(running)))["runs"][0]["pid"]
        daemon.ok("wait", str(finished))

        daemon.kill9()
        # Checked in the process table, not by asking anyone.
        wait_for(lambda: not pid_alive(grandchild) and not pid_alive(shell_pid), timeout=5)

        daemon.start()
        job = json.loads(daemon.ok("show", "--json", str(running)))
        assert job["runs"][0]["error"] == "interrupted: the daemon stopped while the job ran"
        assert job["state"] in ("failed", "running")  # retried under its policy
        assert json.loads(daemon.ok("show", "--json", str(finished)))["state"] == "completed"
        daemon.ok("wait", "--timeout", "10", str(delayed))
        assert len(json.loads(daemon.ok("show", "--json", str(finished)))["runs"]) == 1  # not run again
        daemon.ok("cancel", str(running))
    finally:
        daemon.stop()


def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    second = Daemon(tmp_path)
    second.socket = tmp_path / "other" / "queued.sock"
    second.start(wait=False)
    assert second.process is not None
    assert second.process.wait(timeout=15) == 1
    assert "already using" in second.log.read_text()
    assert daemon.ctl("status").returncode == 0


def test_a_stale_socket_does_not_block_a_restart(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        daemon.kill9()
        assert daemon.socket.exists()  # left behind by the dead daemon
        daemon.start()
        assert daemon.ctl("status").returncode == 0
    finally:
        daemon.stop()


def test_unreachable_daemon_exits_3_naming_the_socket(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)  # never started
    result = daemon.ctl("status")
    assert result.returncode == 3
    assert str(daemon.socket) in result.stderr and "queued" in result.stderr
    assert "Traceback" not in result.stderr
