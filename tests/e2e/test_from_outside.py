"""What users and their tools do to a running daemon from outside: delete its
database, hang up while waiting, send it signals, give it a socket directory
they share with others. Each ends the way its README section says."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

from .conftest import Daemon, tool


def daemon_pid(daemon: Daemon) -> int:
    assert daemon.process is not None
    return daemon.process.pid


def test_a_deleted_database_refuses_changes_instead_of_acknowledging_them(daemon: Daemon) -> None:
    kept = daemon.add("true")
    for path in daemon.data_dir.glob("queue.db*"):
        path.unlink()
    refused = daemon.ctl("add", "echo lost")
    assert refused.returncode == 1, refused
    assert "queue.db was deleted" in refused.stderr and "restart queued" in refused.stderr
    assert daemon.ctl("cancel", str(kept)).returncode == 1
    status = daemon.ok("status")  # reads still answer, and say what is wrong
    assert "problem: the database file" in status
    assert "queue.db was deleted" in daemon.log.read_text()
    assert daemon.process is not None and daemon.process.poll() is None


def test_a_replaced_database_refuses_changes(daemon: Daemon) -> None:
    daemon.add("true")
    other = daemon.data_dir / "other.db"
    other.write_bytes((daemon.data_dir / "queue.db").read_bytes())
    other.rename(daemon.data_dir / "queue.db")
    refused = daemon.ctl("add", "true")
    assert refused.returncode == 1 and "was replaced" in refused.stderr, refused


def test_with_its_database_gone_the_daemon_starts_nothing_and_lets_running_jobs_end(daemon: Daemon) -> None:
    running = daemon.add("sleep 2")
    due_at = time.monotonic() + 3
    daemon.add("--delay", "3", "true")
    assert until(lambda: "running" in daemon.ok("show", str(running)))
    for path in daemon.data_dir.glob("queue.db*"):
        path.unlink()
    assert daemon.ctl("add", "true").returncode == 1  # the daemon learns it here
    assert logged(daemon, "its end was not recorded")  # the running job ended
    time.sleep(max(0.0, due_at + 1 - time.monotonic()))  # the delayed job came due
    log = daemon.log.read_text()
    assert log.count("its end was not recorded") == 1, log
    assert "its start was not recorded" not in log and "cannot record the end" not in log, log
    assert "slots:   0 of 2 in use" in daemon.ok("status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def until(condition: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_waiters_that_hang_up_are_dropped_at_once(daemon: Daemon) -> None:
    job_id = daemon.add("--delay", "1h", "true")
    pid = daemon_pid(daemon)
    before = open_fds(pid)
    waiters = [
        subprocess.Popen([tool("queuectl"), "wait", str(job_id)], env=daemon.env, stdout=subprocess.DEVNULL)
        for _ in range(30)
    ]
    try:
        # 30 Python clients starting at once: on a loaded machine, many seconds.
        assert until(lambda: open_fds(pid) >= before + 30, timeout=60), open_fds(pid)
    finally:
        for waiter in waiters:
            waiter.kill()
            waiter.wait()
    assert until(lambda: open_fds(pid) == before), (before, open_fds(pid))
    assert daemon.ok("show", str(job_id))  # still serving


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_socket_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /var/tmp
    daemon = Daemon(tmp_path)
    daemon.socket = shared / "q.sock"
    daemon.env["QUEUED_SOCKET"] = str(daemon.socket)
    daemon.start()
    try:
        assert mode(shared) == 0o1777
    finally:
        daemon.stop()


def test_socket_directories_queued_creates_are_private(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.socket = tmp_path / "new" / "deeper" / "q.sock"
    daemon.env["QUEUED_SOCKET"] = str(daemon.socket)
    daemon.start()
    try:
        assert mode(tmp_path / "new") == 0o700 and mode(tmp_path / "new" / "deeper") == 0o700
    finally:
        daemon.stop()


def test_a_socket_directory_others_may_write_to_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    result = subprocess.run(
        [tool("queued"), "--data-dir", str(tmp_path / "data"), "--socket", str(loose / "q.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"{loose} is not safe for queued's socket: others may write to it" in result.stderr
    assert mode(loose) == 0o777 and not (loose / "q.sock").exists()


def config_values(daemon: Daemon) -> dict[str, object]:
    return json.loads(daemon.ok("config", "get", "--json"))


def logged(daemon: Daemon, text: str, timeout: float = 10) -> bool:
    return until(lambda: text in daemon.log.read_text(), timeout)


def test_sighup_reloads_the_config_file_and_says_what_changed(tmp_path: Path) -> None:
    config = tmp_path / "queued.toml"
    config.write_text('max-retries = 1\nbackoff-base = 2\nconcurrency = 5\nlog-level = "info"\n')
    daemon = Daemon(tmp_path, "--config", str(config)).start()  # and --concurrency 2
    try:
        daemon.ok("config", "set", "backoff-base", "7")
        config.write_text(
            'max-retries = 4\nbackoff-base = 3\nconcurrency = 6\ntimeout = "1h"\nlog-level = "debug"\n'
        )
        os.kill(daemon_pid(daemon), signal.SIGHUP)
        assert logged(daemon, "reloaded"), daemon.log.read_text()
        log = daemon.log.read_text()
        assert (
            "max-retries 1 -> 4" in log and "timeout none -> 1h" in log and "log-level info -> debug" in log
        )
        values = config_values(daemon)
        # Flags > `config set` > file > defaults, as at start.
        assert values["max-retries"] == 4 and values["timeout"] == 3600
        assert values["backoff-base"] == 7 and values["concurrency"] == 2
        assert daemon.socket.exists() and daemon.process is not None and daemon.process.poll() is None
        daemon.ok("workers", "scale", "3")  # asked of the running daemon: a reload keeps it
        os.kill(daemon_pid(daemon), signal.SIGHUP)
        assert logged(daemon, "nothing changed")
        assert config_values(daemon)["concurrency"] == 3

        config.unlink()  # named by --config, so it must exist: refused
        os.kill(daemon_pid(daemon), signal.SIGHUP)
        assert logged(daemon, "reload refused")
        assert "the config file was not reloaded" in daemon.ok("status")
        assert config_values(daemon)["max-retries"] == 4  # kept
        config.write_text("max-retries = 2\n")
        os.kill(daemon_pid(daemon), signal.SIGHUP)
        assert logged(daemon, "max-retries 4 -> 2")
        assert "problem" not in daemon.ok("status")
    finally:
        daemon.stop()


def caught_signals(pid: int) -> int:
    """The signals a process catches (its SigCgt mask: bit n-1 for signal n)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def test_a_sighup_sent_while_it_starts_is_a_reload_not_its_death(tmp_path: Path) -> None:
    """`kill -HUP` from a logrotate hook, or `systemctl kill -s HUP` right
    after a restart, came before the daemon listened for it (its default
    action kills: exit 129, about the first half second); now it is caught
    first thing and acted on once the daemon listens."""
    daemon = Daemon(tmp_path).start(wait=False)
    pid = daemon_pid(daemon)
    hup = 1 << (signal.SIGHUP - 1)
    try:
        while not caught_signals(pid) & hup:
            assert not daemon.socket.exists(), "it served before it caught SIGHUP"
            assert daemon.process is not None and daemon.process.poll() is None, daemon.log.read_text()
            time.sleep(0.002)
        os.kill(pid, signal.SIGHUP)
        daemon.wait_ready()
        assert logged(daemon, "acting on SIGHUP, received during the start"), daemon.log.read_text()
        assert daemon.process.poll() is None
        daemon.ok("status")
    finally:
        daemon.stop()


def test_a_config_file_with_a_bad_value_changes_nothing_on_reload(tmp_path: Path) -> None:
    config = tmp_path / "queued.toml"
    config.write_text("max-retries = 1\n")
    daemon = Daemon(tmp_path, "--config", str(config)).start()
    try:
        config.write_text("max-retries = 2\nbackoff-base = 0\n")
        os.kill(daemon_pid(daemon), signal.SIGHUP)
        assert logged(daemon, "reload refused")
        assert "backoff-base" in daemon.ok("status")
        assert config_values(daemon)["max-retries"] == 1
    finally:
        daemon.stop()


def test_sigusr1_logs_the_state_and_sigusr2_is_ignored(daemon: Daemon) -> None:
    job_id = daemon.add("grep SigIgn /proc/$$/status; sleep 30")
    assert until(lambda: "running" in daemon.ok("show", str(job_id)))
    os.kill(daemon_pid(daemon), signal.SIGUSR1)
    assert logged(daemon, f"state: job {job_id} attempt 1 in queue default")
    assert "1 of 2 slots in use" in daemon.log.read_text()
    os.kill(daemon_pid(daemon), signal.SIGUSR2)
    assert logged(daemon, "SIGUSR2 ignored")
    assert daemon.process is not None and daemon.process.poll() is None
    assert "running" in daemon.ok("show", str(job_id))  # the job was not touched
    # The daemon catches these signals, never ignores them: its jobs get them at their default.
    assert until(lambda: "SigIgn" in daemon.ok("logs", str(job_id)))
    ignored = int(daemon.ok("logs", str(job_id)).split()[1], 16)
    for number in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        assert not ignored & (1 << (number - 1))
