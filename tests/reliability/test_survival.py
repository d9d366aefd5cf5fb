"""The fast half of the reliability suite: things going wrong for real, to the
real queued, checked in the process table, /proc and the database itself."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl import Client, DaemonError, DaemonUnreachable, QueuectlError
from tests.e2e.conftest import Daemon, pid_alive

# `QUEUED_SOAK=1 pytest -s tests/reliability` runs the full sizes and
# prints the figures; the normal test run uses small ones.
SOAK = os.environ.get("QUEUED_SOAK") == "1"
KILLS, CRASH_JOBS = (20, 5000) if SOAK else (6, 240)
CLIENTS, JOBS_PER_CLIENT = (50, 1000) if SOAK else (10, 200)
HALF_FRAME_CLIENTS = 10_000 if SOAK else 1000
BIG_OUTPUT = 1_000_000_000 if SOAK else 200_000_000


def figure(name: str, **values: object) -> None:
    print(f"FIGURE {name}: " + " ".join(f"{k}={v}" for k, v in values.items()))


def daemon_pid(daemon: Daemon) -> int:
    assert daemon.process is not None
    return daemon.process.pid


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_crash_run_with_repeated_kill_9(tmp_path: Path) -> None:
    """Jobs that append their id to a file; the daemon is killed -9 again and
    again while a client keeps adding. Nothing acknowledged is lost, nothing
    seen completed runs again, the database stays sound, everything finishes."""
    ran = tmp_path / "ran.log"
    daemon = Daemon(tmp_path).start()
    rng = random.Random(7)
    acknowledged: list[int] = []
    completed_counts: dict[int, int] = {}

    def add_some(count: int) -> None:
        try:
            with Client(daemon.socket) as client:
                for _ in range(count):
                    kind = rng.random()
                    extra: dict = {}
                    command = f"echo $QUEUED_JOB_ID >> {ran}"
                    if kind < 0.2:
                        command += "; [ $QUEUED_ATTEMPT -ge 2 ] || exit 1"
                        extra = {"max_retries": 2, "backoff_base": 1.0}
                    elif kind < 0.3:
                        extra = {"delay": rng.uniform(0.2, 1.5)}
                    acknowledged.append(client.add(command, **extra))
        except (DaemonUnreachable, QueuectlError):
            pass  # killed under us: what was acknowledged is in `acknowledged`

    def lines_per_job() -> dict[int, int]:
        counts: dict[int, int] = {}
        if ran.exists():
            for line in ran.read_text().split():
                counts[int(line)] = counts.get(int(line), 0) + 1
        return counts

    try:
        checks = []
        for _ in range(KILLS):
            adder = threading.Thread(target=add_some, args=(CRASH_JOBS // KILLS,))
            adder.start()
            time.sleep(rng.uniform(0.05, 0.4))
            daemon.kill9()
            adder.join()
            checks.append(integrity(daemon.data_dir / "queue.db"))
            assert checks[-1] == "ok"
            daemon.start()
            with Client(daemon.socket) as client:
                completed = client.list(states=["completed"])
            runs = lines_per_job()  # after the listing: a completed job wrote its line before
            for job in completed:
                completed_counts.setdefault(job.id, runs.get(job.id, 0))
        add_some(CRASH_JOBS - len(acknowledged))  # what the kills cut short, with the daemon up
        with Client(daemon.socket) as client:
            waited = client.wait(*acknowledged, timeout=300 if SOAK else 60)
            assert not waited.timed_out
            states = {job.id: job.state for job in waited.jobs}
        assert set(states) == set(acknowledged)  # every acknowledged job exists
        assert set(states.values()) <= {"completed", "dead"}
        runs = lines_per_job()
        again = [j for j, seen in completed_counts.items() if runs.get(j, 0) != seen]
        figure(
            "crash",
            kills=KILLS,
            acknowledged=len(acknowledged),
            all_terminal=True,
            completed_then_ran_again=len(again),
            integrity_ok=f"{checks.count('ok')}/{len(checks)}",
            repeat_runs=sum(n - 1 for n in runs.values() if n > 1),
        )
        assert not again, f"jobs {again[:5]} ran again after they completed"
    finally:
        daemon.stop()


def test_load_many_clients_and_ls_latency(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    clients, per_client = CLIENTS, JOBS_PER_CLIENT
    ids: list[list[int]] = [[] for _ in range(clients)]
    latencies: list[float] = []
    try:

        def add(index: int) -> None:
            with Client(daemon.socket) as client:
                for _ in range(per_client):
                    ids[index].append(client.add("true"))

        threads = [threading.Thread(target=add, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        with Client(daemon.socket) as probe:
            while any(t.is_alive() for t in threads):
                start = time.perf_counter()
                probe.list(limit=20)
                latencies.append(time.perf_counter() - start)
                time.sleep(0.01)
        for thread in threads:
            thread.join()
        every = [job_id for chunk in ids for job_id in chunk]
        assert len(every) == len(set(every)) == clients * per_client
        with Client(daemon.socket) as client:
            assert not client.wait(*every, timeout=120).timed_out
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        figure(
            "load",
            clients=clients,
            jobs=len(every),
            unique_ids=len(set(every)),
            ls_p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
            ls_p99_ms=round(p99 * 1000, 1),
        )
        assert p99 < 0.1, latencies[-5:]
    finally:
        daemon.stop()


def test_half_frames_leak_no_descriptors(daemon: Daemon) -> None:
    pid = daemon_pid(daemon)
    daemon.ok("status")
    before = open_fds(pid)
    for _ in range(HALF_FRAME_CLIENTS):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket))
            sock.sendall(struct.pack(">I", 100) + b"\x85\xa2op")  # half a frame, then gone
    deadline = time.monotonic() + 10
    while open_fds(pid) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    figure("half_frames", clients=HALF_FRAME_CLIENTS, fds_before=before, fds_after=open_fds(pid))
    assert open_fds(pid) <= before
    assert daemon.ctl("status").returncode == 0


def test_cancel_reaps_a_job_that_forked_200_children(daemon: Daemon, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # Each child records its pid, ignores SIGTERM and becomes `sleep` (same pid).
    child = f"sh -c 'echo $$ >> {pids}; trap \"\" TERM; exec sleep 300'"
    job_id = daemon.add(f"for i in $(seq 200); do {child} & done; wait")
    deadline = time.monotonic() + 20
    while (not pids.exists() or len(pids.read_text().split()) < 200) and time.monotonic() < deadline:
        time.sleep(0.05)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 200
    daemon.ok("cancel", str(job_id))
    daemon.ctl("wait", str(job_id))
    deadline = time.monotonic() + 20
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if pid_alive(p)]


def test_huge_output_is_capped_and_memory_stays_flat(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        daemon.ok("config", "set", "log-max-size", "1M")
        pid = daemon_pid(daemon)
        before = rss_kib(pid)
        big = daemon.add(f"head -c {BIG_OUTPUT} /dev/zero")
        small = [daemon.add("echo fine") for _ in range(5)]
        assert daemon.ctl("wait", *map(str, small)).returncode == 0  # others keep running
        assert daemon.ctl("wait", str(big)).returncode == 0
        after = rss_kib(pid)
        log = Path(__import__("json").loads(daemon.ok("show", "--json", str(big)))["runs"][0]["stdout_path"])
        figure(
            "big_output",
            bytes=BIG_OUTPUT,
            log_bytes=log.stat().st_size,
            rss_before_kib=before,
            rss_after_kib=after,
        )
        assert log.stat().st_size < 1024 * 1024 + 200
        assert after - before < 20 * 1024, (before, after)
    finally:
        daemon.stop()


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def fill(path: Path) -> Path:
    """A file that takes every free byte of `path`'s file system."""
    filler = path / "filler"
    # Unbuffered: a buffered file keeps what the full disk refused and fails
    # again on close, after the refusal was caught (how much depends on the room left).
    with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    return filler


@contextlib.contextmanager
def daemon_on_a_small_disk(tmp_path: Path, *extra: str, size: str = "4m") -> Iterator[tuple[Daemon, Path]]:
    """A real queued whose data dir is on a small tmpfs (skipped where none can be mounted)."""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        daemon = Daemon(tmp_path, *extra)
        daemon.data_dir = disk / "data"
        daemon.start()
        try:
            yield daemon, disk
        finally:
            daemon.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_refuses_adds_and_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    with daemon_on_a_small_disk(tmp_path) as (daemon, disk), Client(daemon.socket) as client:
        daemon.ok("queue", "pause", "default")
        kept = [client.add("true", label="before") for _ in range(20)]
        filler = fill(disk)
        with pytest.raises(DaemonError) as refused:
            for _ in range(200):
                client.add("true" + " " * 4000, label="x" * 200)
        assert refused.value.code == "storage" and "full" in refused.value.message
        assert client.status().pid == daemon_pid(daemon)  # still serving
        filler.unlink()
        assert [j.id for j in client.list(label="before")] == kept
        client.add("true")  # space is back: adds work again


def test_a_bulk_add_bigger_than_the_disk_is_refused_and_the_daemon_serves_on(tmp_path: Path) -> None:
    """SQLite rolls the whole transaction back on SQLITE_FULL mid-batch: the add
    is refused with the disk-full sentence, nothing of it is kept, and the
    daemon answers the next request."""
    with daemon_on_a_small_disk(tmp_path) as (daemon, _disk):
        daemon.ok("queue", "pause", "default")
        kept = daemon.add("true")
        # queuectl sends 10,000 lines per request, each all-or-nothing.
        lines = "".join(f"echo {n:09d} {'x' * 30}\n" for n in range(100_000))
        refused = daemon.ctl("add", "--from", "-", input=lines)
        assert refused.returncode == 1, (refused.stdout[-300:], refused.stderr)
        assert "disk is full" in refused.stderr
        assert daemon.process is not None and daemon.process.poll() is None
        with Client(daemon.socket) as client:
            pending = client.status().counts["pending"]  # the daemon answers
            assert pending < 100_001 and (pending - 1) % 10_000 == 0  # whole requests only
            assert client.get(kept).job.state == "pending"


def test_jobs_due_while_the_disk_is_full_run_once_there_is_space(tmp_path: Path) -> None:
    """A start the disk refuses to record is stopped and the job stays due; once
    space is back every job runs to completion with one recorded attempt."""
    with daemon_on_a_small_disk(tmp_path) as (daemon, disk):
        with Client(daemon.socket) as client:
            ids = [client.add("sleep 0.2", delay=1.0) for _ in range(4)]
            filler = fill(disk)
            time.sleep(2.5)  # due, started, refused, stopped, held, again
            assert {j.state for j in client.list(ids=ids)} == {"pending"}
            filler.unlink()
            jobs = client.wait(*ids, timeout=30).jobs
            assert {(j.state, j.attempts) for j in jobs} == {("completed", 1)}
            for job_id in ids:
                assert len(client.get(job_id).runs) == 1
        refusals = daemon.log.read_text().count("its start was not recorded")
        assert 1 <= refusals <= 12, refusals  # held a second after each: no spawn loop


def test_daemon_killed_mid_bulk_add_keeps_whole_batches(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    acknowledged: list[int] = []
    try:
        daemon.ok("queue", "pause", "default")

        def bulk() -> None:
            from queued.protocol import JobSpec

            try:
                with Client(daemon.socket) as client:
                    for _ in range(50):
                        acknowledged.extend(client.add_many([JobSpec(command="true")] * 2000, batch=2000))
            except QueuectlError:
                pass

        thread = threading.Thread(target=bulk)
        thread.start()
        time.sleep(0.5)
        os.kill(daemon_pid(daemon), signal.SIGKILL)
        daemon.process.wait()  # type: ignore[union-attr]
        thread.join()
        daemon.start()
        with Client(daemon.socket) as client:
            stored = [job.id for job in client.list()]
            assert set(acknowledged) <= set(stored)
            assert len(stored) % 2000 == 0  # whole batches or nothing
    finally:
        daemon.stop()
