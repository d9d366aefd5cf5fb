"""The guardian from outside: killed alone, stopped, or killed with its daemon,
the jobs of a dead daemon never run on beside a new one; and the data dir's
lock names who holds it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path

from .conftest import Daemon, pid_alive
from .test_crash import wait_for

F_SETPIPE_SZ = 1031


def guardian_pid(daemon: Daemon) -> int:
    def named() -> int | None:
        text = (daemon.data_dir / "queued.lock").read_text()
        lines = [line for line in text.splitlines() if line.startswith("guardian ")]
        return int(lines[0].split()[1]) if lines and lines[0].split()[1].isdigit() else None

    return wait_for(named)


def job_pid(daemon: Daemon, job_id: int) -> int:
    def pid() -> int | None:
        runs = json.loads(daemon.ok("show", "--json", str(job_id)))["runs"]
        return runs[-1]["pid"] if runs else None

    return wait_for(pid)


def read_pids(path: Path, count: int) -> list[int]:
    wait_for(lambda: path.exists() and len(path.read_text().split()) >= count)
    return [int(word) for word in path.read_text().split()]


def test_a_guardian_killed_alone_is_replaced_before_the_next_job(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        first = daemon.add("sleep 300")
        first_pid = job_pid(daemon, first)
        old = guardian_pid(daemon)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: guardian_pid(daemon) != old)
        pids = tmp_path / "pids"
        daemon.add(f"echo $$ >> {pids}; sleep 300")
        [second_pid] = read_pids(pids, 1)
        assert daemon.ctl("status").returncode == 0
        assert f"the guardian (pid {old}) died" in daemon.log.read_text()

        # The new guardian holds both jobs: a kill -9 of the daemon ends them.
        daemon.kill9()
        wait_for(lambda: not pid_alive(first_pid) and not pid_alive(second_pid), timeout=5)
    finally:
        daemon.stop()


def test_a_guardian_that_stops_reading_never_blocks_the_daemon(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        old = guardian_pid(daemon)
        # Its pipe shrunk to a page, so that a few hundred jobs fill it.
        pipe = os.open(f"/proc/{old}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(pipe, F_SETPIPE_SZ, 4096)
        os.close(pipe)
        os.kill(old, signal.SIGSTOP)
        daemon.ok("add", "--quiet", "--from", "-", input="true\n" * 1000)
        assert daemon.ctl("status").returncode == 0  # the loop never blocked on the pipe
        wait_for(lambda: guardian_pid(daemon) != old, timeout=30)
        wait_for(lambda: not pid_alive(old))
        assert f"the guardian (pid {old}) read nothing" in daemon.log.read_text()
        wait_for(lambda: json.loads(daemon.ok("status", "--json"))["counts"]["completed"] == 1000, timeout=60)

        job = daemon.add("sleep 300")
        pid = job_pid(daemon, job)
        daemon.kill9()
        wait_for(lambda: not pid_alive(pid), timeout=5)
    finally:
        daemon.stop()


def test_jobs_left_by_a_daemon_killed_with_its_guardian_are_stopped_before_a_restart_claims(
    tmp_path: Path,
) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        pids = tmp_path / "pids"
        # A grandchild in a session of its own, too: the marker finds it.
        job = daemon.add(
            "--max-retries", "3", f"echo $$ >> {pids}; setsid sleep 4747.{os.getpid()} & sleep 300"
        )
        [first_run] = read_pids(pids, 1)
        guardian = guardian_pid(daemon)
        os.kill(guardian, signal.SIGSTOP)  # so that it cannot sweep: both die at once
        daemon.kill9()
        os.kill(guardian, signal.SIGKILL)
        wait_for(lambda: not pid_alive(guardian))
        assert pid_alive(first_run)
        escaped = [pid for pid in all_pids() if cmdline(pid) == ["sleep", f"4747.{os.getpid()}"]]
        assert escaped

        daemon.start()
        assert not pid_alive(first_run) and not any(pid_alive(pid) for pid in escaped)
        assert "left running by the previous queued" in daemon.log.read_text()
        [_, second_run] = read_pids(pids, 2)  # the retry runs alone
        assert pid_alive(second_run)
        daemon.ok("cancel", str(job))
    finally:
        daemon.stop()
        # Whatever a failed assertion above left running must not outlive the test:
        # each job shell leads its own group; the escaped sleep has a name of ours.
        for leader in pids.read_text().split() if pids.exists() else []:
            try:
                os.killpg(int(leader), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in all_pids():
            if cmdline(pid) == ["sleep", f"4747.{os.getpid()}"]:
                os.kill(pid, signal.SIGKILL)


def test_a_second_daemon_names_the_live_holder(daemon: Daemon, tmp_path: Path) -> None:
    holder = (daemon.data_dir / "queued.lock").read_text()
    assert holder.splitlines()[0] == str(daemon.process.pid if daemon.process else None)
    assert f"guardian {guardian_pid(daemon)}" in holder
    second = Daemon(tmp_path)
    second.socket = tmp_path / "other" / "queued.sock"
    started = time.monotonic()
    second.start(wait=False)
    assert second.process is not None and second.process.wait(timeout=15) == 1
    assert f"another queued (pid {daemon.process.pid if daemon.process else 0})" in second.log.read_text()
    assert time.monotonic() - started < 4.5  # refused at once, not after the 5 s wait for a guardian


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []
