"""Faults around the real queued, done for real: a full disk while a job
writes, too few descriptors for the slots and clients, the logs folder
turning read-only or vanishing. The daemon survives each, the other jobs
complete, and it recovers by itself once the fault is gone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from queuectl import Client
from tests.e2e.conftest import Daemon

from .test_survival import daemon_on_a_small_disk, daemon_pid, figure, integrity


def wait_for(predicate, timeout: float = 20, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_job_filling_the_disk_costs_its_own_output_only(tmp_path: Path) -> None:
    """The issue's reproduction: data dir on a 6 MB tmpfs, a job writing 20 MB."""
    go, wrote = tmp_path / "go", tmp_path / "wrote"
    with daemon_on_a_small_disk(tmp_path, "--concurrency", "4", size="6m") as (daemon, disk):
        ballast = disk / "ballast"  # what the user frees once the disk is full
        ballast.write_bytes(b"\0" * 1024 * 1024)
        pid = daemon_pid(daemon)
        daemon.ok("config", "set", "log-max-size", "50M")  # the disk, not the cap, stops the output
        with Client(daemon.socket) as client:
            noisy = client.add(
                f"head -c 20000000 /dev/zero | tr '\\0' x; touch {wrote}; "
                f"while [ ! -e {go} ]; do sleep 0.05; done; echo after"
            )
            others = [client.add("sleep 0.5; echo other $QUEUED_JOB_ID") for _ in range(3)]
            wait_for(wrote.exists, what="the 20 MB")  # read in full, though the disk took few
            assert "cannot write its log" in daemon.log.read_text()
            assert client.status().pid == pid  # still serving
            ballast.unlink()  # space is back: the output resumes, the records commit
            go.touch()
            waited = client.wait(noisy, *others, timeout=60)
            assert not waited.timed_out
            assert {job.id: job.state for job in waited.jobs} == dict.fromkeys([noisy, *others], "completed")
            [run] = client.get(noisy).runs
            assert run.log_incomplete is not None
            assert (
                run.log_incomplete.startswith("stdout: ")
                and "bytes lost: No space left on device" in run.log_incomplete
            )
            log = Path(run.stdout_path or "").read_bytes()
            assert log.endswith(b" bytes lost: No space left on device]\nafter\n"), log[-200:]
            lost = int(log[log.rindex(b"[queued: ") + 9 :].split(b" ")[0].replace(b",", b""))
            shown = daemon.ok("show", str(noisy))
            assert "run 1's log is incomplete: stdout: " in shown
            logs = daemon.ctl("logs", "--stderr", str(noisy))
            assert logs.returncode == 0 and "attempt 1's log is incomplete: stdout: " in logs.stderr
            fine = client.add("echo fine")  # a new job logs normally
            assert client.wait(fine, timeout=30).jobs[0].state == "completed"
            [run] = client.get(fine).runs
            assert run.log_incomplete is None and Path(run.stdout_path or "").read_bytes() == b"fine\n"
        assert daemon.log.read_text().count("cannot write its log") <= 4  # once per attempt
        assert daemon.process is not None and daemon.process.poll() is None
        figure("disk_full_output", written=20_000_000, lost=lost, log_bytes=len(log), daemon_survived=True)
        daemon.stop()
        assert integrity(daemon.data_dir / "queue.db") == "ok"
        assert "Traceback" not in daemon.log.read_text()


@pytest.mark.skipif(not shutil.which("prlimit"), reason="prlimit (util-linux) is not installed")
def test_too_few_descriptors_for_the_slots_delays_jobs_and_fails_none(tmp_path: Path) -> None:
    """The issue's reproduction: `ulimit -n 40; queued --concurrency 30` and 30 jobs."""
    daemon = Daemon(tmp_path, "--concurrency", "30").start(wrap=("prlimit", "--nofile=40:40", "--"))
    try:
        with Client(daemon.socket) as client:
            started = time.monotonic()
            ids = [client.add("sleep 1") for _ in range(30)]
            waited = client.wait(*ids, timeout=60)
            elapsed = time.monotonic() - started
            assert not waited.timed_out
            assert {job.state for job in waited.jobs} == {"completed"}
            assert all(len(client.get(job_id).runs) == 1 for job_id in ids)  # none started twice
        text = daemon.log.read_text()
        assert "concurrency 30 needs up to" in text  # said at start
        assert 1 <= text.count("Too many open files") <= 3, text  # not once per job
        assert daemon.process is not None and daemon.process.poll() is None
        figure("nofile_40_concurrency_30", jobs=30, completed=30, seconds=round(elapsed, 1))
    finally:
        daemon.stop()


@pytest.mark.skipif(not shutil.which("prlimit"), reason="prlimit (util-linux) is not installed")
def test_many_clients_and_slots_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    """Connections beyond the limit wait in the backlog while those connected
    are served; jobs wait for descriptors; all is well once they are free."""
    daemon = Daemon(tmp_path, "--concurrency", "20").start(wrap=("prlimit", "--nofile=64:64", "--"))
    held: list[socket.socket] = []
    try:
        with Client(daemon.socket) as client:
            ids = [client.add("sleep 0.3; echo $QUEUED_JOB_ID") for _ in range(40)]
            for _ in range(80):  # more than the daemon has descriptors for
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(str(daemon.socket))
                held.append(sock)
            wait_for(lambda: "cannot accept connections" in daemon.log.read_text(), what="accept to fail")
            assert client.status().pid == daemon_pid(daemon)  # a connected client is served
            for sock in held:
                sock.close()
            held.clear()
            waited = client.wait(*ids, timeout=60)
            assert not waited.timed_out and {job.state for job in waited.jobs} == {"completed"}
        assert daemon.ctl("status").returncode == 0  # new connections accepted again
        assert daemon.ok("add", "--quiet", "true")
        assert daemon.log.read_text().count("cannot accept connections") == 1
        refused = daemon.ctl("workers", "scale", "500")
        assert refused.returncode == 1 and "needs up to" in refused.stderr and "at most" in refused.stderr
    finally:
        for sock in held:
            sock.close()
        daemon.stop()


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("mount"), reason="a read-only bind mount needs root")
def test_a_logs_folder_made_read_only_fails_attempts_until_it_is_writable(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    logs = daemon.data_dir / "logs"
    mounted = False
    try:
        with Client(daemon.socket) as client:
            first = client.add("echo before")
            assert client.wait(first, timeout=30).jobs[0].state == "completed"
            bind = subprocess.run(["mount", "--bind", str(logs), str(logs)], capture_output=True)
            if bind.returncode != 0:
                pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
            mounted = True
            subprocess.run(["mount", "-o", "remount,bind,ro", str(logs)], check=True)
            # The first to write finds out (its output is lost, and said so);
            # later starts in that folder fail with the reason, and retry.
            finder = client.add("echo lost")
            [job] = client.wait(finder, timeout=30).jobs
            assert job.state == "completed"
            assert "bytes lost: Read-only file system" in (client.get(finder).runs[0].log_incomplete or "")
            failing = client.add("echo later", max_retries=5, backoff_base=1)
            wait_for(
                lambda: client.get(failing).runs and client.get(failing).runs[0].ended_at, what="a failure"
            )
            error = client.get(failing).runs[0].error or ""
            assert "could not start: its logs folder" in error and "read-only file system" in error, error
            assert client.status().pid == daemon_pid(daemon)
            subprocess.run(["umount", str(logs)], check=True)
            mounted = False
            [job] = client.wait(failing, timeout=30).jobs  # its retry finds the folder usable
            assert job.state == "completed"
            run = client.get(failing).runs[-1]
            assert Path(run.stdout_path or "").read_bytes() == b"later\n"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(logs)], check=False)
        daemon.stop()


def test_a_removed_logs_folder_is_made_again(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        with Client(daemon.socket) as client:
            first = client.add("echo one")
            assert client.wait(first, timeout=30).jobs[0].state == "completed"
            shutil.rmtree(daemon.data_dir / "logs")
            second = client.add("echo two")
            assert client.wait(second, timeout=30).jobs[0].state == "completed"
            run = client.get(second).runs[0]
            assert run.log_incomplete is None
            assert Path(run.stdout_path or "").read_bytes() == b"two\n"
            assert (daemon.data_dir / "logs").stat().st_mode & 0o777 == 0o700
    finally:
        daemon.stop()
