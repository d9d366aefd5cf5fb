"""Scheduling as a user sees it through the real queuectl: backoff timing,
priorities, delays, dependencies, timeouts of process trees, garbage on the socket."""

from __future__ import annotations

import itertools
import json
import socket
import struct
import time
from datetime import datetime
from pathlib import Path

from .conftest import Daemon, pid_alive


def show(daemon: Daemon, job_id: int) -> dict:
    return json.loads(daemon.ok("show", "--json", str(job_id)))


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_backoff_timing_and_dead_letter(daemon: Daemon) -> None:
    job_id = daemon.add("--max-retries", "2", "--backoff-base", "1.5", "exit 3")
    assert daemon.ctl("wait", str(job_id)).returncode == 1
    job = show(daemon, job_id)
    assert job["state"] == "dead" and job["attempts"] == 3 and job["error"] == "exited with status 3"
    runs = job["runs"]
    gaps = [stamp(b["started_at"]) - stamp(a["ended_at"]) for a, b in itertools.pairwise(runs)]
    assert 1.5 <= gaps[0] < 2.3 and 2.25 <= gaps[1] < 3.1, gaps
    assert [j["id"] for j in json.loads(daemon.ok("dlq", "ls", "--json"))] == [job_id]


def test_priorities_and_delays(daemon: Daemon) -> None:
    # The queue is paused while the jobs are added, so that how long each
    # `queuectl` takes to start (slow on a busy machine) decides nothing.
    daemon.ok("workers", "scale", "1")
    daemon.ok("queue", "pause", "default")
    low = daemon.add("--priority", "9", "true")
    high = daemon.add("--priority", "-9", "true")
    delayed = daemon.add("--delay", "1s", "--priority", "-99", "true")
    at_time = time.time() + 1.5
    at = daemon.add("--at", datetime.fromtimestamp(at_time).isoformat(), "true")
    daemon.ok("queue", "resume", "default")
    daemon.ok("wait", str(low), str(high), str(delayed), str(at))
    started = {j: stamp(show(daemon, j)["runs"][0]["started_at"]) for j in (low, high, delayed, at)}
    assert started[high] < started[low]  # lower number first
    created = stamp(show(daemon, delayed)["created_at"])
    assert started[delayed] - created >= 1.0
    assert started[at] >= at_time - 0.01  # --at is read to the second's fraction given


def test_dependencies(daemon: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "built"
    build = daemon.add(f"sleep 0.3; touch {marker}")
    deploy = daemon.add("--after", str(build), f"test -e {marker}")
    broken = daemon.add("--max-retries", "0", "--delay", "1", "false")  # dead after `never` is added
    never = daemon.add("--after", str(broken), "--after", str(build), "true")
    assert daemon.ctl("wait", str(deploy)).returncode == 0
    daemon.ctl("wait", str(never))
    job = show(daemon, never)
    assert job["state"] == "canceled" and job["error"] == f"canceled: dependency {broken} is dead"
    assert job["depends_on"] == [build, broken]


def test_timeout_kills_the_process_tree(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("config", "set", "kill-grace", "1s")
    pidfile = tmp_path / "pid"
    job_id = daemon.add(
        "--timeout",
        "1",
        "--max-retries",
        "0",
        f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 60' & wait",
    )
    assert daemon.ctl("wait", str(job_id)).returncode == 1
    assert show(daemon, job_id)["error"] == "timed out after 1s"
    assert not pid_alive(int(pidfile.read_text()))


def test_garbage_on_the_socket(daemon: Daemon) -> None:
    before = daemon.ok("ls", "--json")
    for payload in (
        b"\xff" * 64,
        struct.pack(">I", 2**31),
        b"\x00\x00\x00\x02\x81\xa1",
        b"GET / HTTP/1.0\r\n\r\n",
    ):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket))
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(65536):
                pass
    assert daemon.ok("ls", "--json") == before
    assert daemon.ctl("status").returncode == 0
    assert daemon.ok("queue", "add", "tmp") and daemon.ok("queue", "rm", "tmp")
