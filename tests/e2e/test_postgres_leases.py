"""Several nodes on one PostgreSQL: real `queued --store ... --node NAME`
processes in their own data dirs, one database (tests/postgres.py). Names,
leases, rescue, self-stop, served queues, pinning, and the nodes in `status`.
Leases are short here (3 s, kill grace 0.5 s) so that a lost node is
rescued in seconds."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon, pid_alive, tool

pytest.importorskip("psycopg")

LEASE = "3"


class Cluster:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.nodes: list[Daemon] = []

    def node(self, name: str, *flags: str, start: bool = True, home: str | None = None) -> Daemon:
        d = Daemon(
            self.root / (home or name), "--store", self.url, "--node", name, "--node-lease", LEASE, *flags
        )
        d.env["QUEUED_KILL_GRACE"] = "0.5"
        self.nodes.append(d)
        return d.start() if start else d

    def close(self) -> None:
        for d in self.nodes:
            if d.process is not None and d.process.poll() is None:
                try:
                    os.kill(d.process.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                d.ctl("shutdown", "--now", timeout=20)
            d.stop()


@pytest.fixture
def cluster(tmp_path: Path, postgres_empty_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, postgres_empty_url)
    try:
        yield c
    finally:
        c.close()


def show(node: Daemon, job_id: int) -> dict:
    return json.loads(node.ok("show", "--json", str(job_id)))


def until(what: Callable[[], object], timeout: float = 30, why: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, why or "timed out"
        time.sleep(0.05)


def running_on(node: Daemon, job_id: int, name: str, run: int = 1) -> bool:
    runs = show(node, job_id)["runs"]
    return len(runs) >= run and runs[run - 1]["node"] == name and runs[run - 1]["ended_at"] is None


def stamped_job(marks: Path) -> str:
    """A long job that stamps its start and its end (on SIGTERM) in `marks`."""
    return (
        f"trap 'echo end $(date +%s.%N) >> {marks}; exit 143' TERM;"
        f" echo start $(date +%s.%N) $$ >> {marks}; sleep 120 & wait"
    )


def never_overlapping(marks: Path) -> None:
    """Each start comes after the previous attempt's end (or its kill)."""
    lines = [line.split() for line in marks.read_text().splitlines()]
    kinds = [line[0] for line in lines]
    times = [float(line[1]) for line in lines]
    assert times == sorted(times), lines
    assert kinds[0] == "start" and all(kinds[i] != kinds[i + 1] for i in range(len(kinds) - 1)), lines


def test_two_live_nodes_cannot_share_a_name(cluster: Cluster) -> None:
    first = cluster.node("same")
    second = cluster.node("same", start=False, home="elsewhere")
    result = subprocess.run(
        [tool("queued"), *second._flags(), *second.extra],
        env=second.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("queued: another node named 'same' is alive (queued pid ")
    assert first.ctl("status").returncode == 0


def test_a_lease_shorter_than_the_kill_grace_allows_is_refused_at_start(cluster: Cluster) -> None:
    d = cluster.node("short", start=False)
    d.env["QUEUED_KILL_GRACE"] = "10"
    result = subprocess.run(
        [tool("queued"), *d._flags(), *d.extra], env=d.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("queued: node-lease 3s is too short for kill-grace 10s")


def test_a_node_killed_mid_drain_is_rescued_and_none_of_its_jobs_ran_twice_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    marks = tmp_path / "marks"
    # Each attempt stamps its start and, if it gets there, its end.
    job = (
        f"echo start $QUEUED_JOB_ID $(date +%s.%N) >> {marks}; sleep 3;"
        f" echo end $QUEUED_JOB_ID $(date +%s.%N) >> {marks}"
    )
    ids = [a.add("--max-retries", "1", job) for _ in range(6)]
    busy = until(lambda: len(slots := json.loads(a.ok("workers", "ls", "--json"))["slots"]) == 2 and slots)
    pids = {slot["job_id"]: slot["pid"] for slot in busy}  # type: ignore[union-attr]
    a.kill9()  # its guardian kills its jobs at once; its lease runs out in 3 s
    killed = time.time()
    dead_at: dict[int, float] = {}  # when each of a's jobs was seen gone (after it died)
    while len(dead_at) < len(pids):
        dead_at |= {i: time.time() for i, pid in pids.items() if i not in dead_at and not pid_alive(pid)}
        assert time.time() < killed + 10, "a's jobs outlived it"
        time.sleep(0.02)
    assert b.ctl("wait", *map(str, ids), timeout=120).returncode == 0
    rescued = {i for i in ids if len(show(b, i)["runs"]) == 2}
    assert rescued == set(pids)
    for i in rescued:
        first, second = show(b, i)["runs"]
        assert first["node"] == "a" and first["error"].startswith("interrupted: its node a stopped renewing")
        assert second["node"] == "b" and second["exit_code"] == 0
        rescued_at = datetime.fromisoformat(first["ended_at"].replace("Z", "+00:00")).timestamp()
        assert rescued_at - killed < 3 + 10  # within the lease and a few seconds
    status = json.loads(b.ok("status", "--json"))
    assert {n["name"]: n["state"] for n in status["nodes"]} == {"a": "lost", "b": "alive"}
    # Never two attempts of one job at once: each start after the previous one's end or death.
    spans: dict[int, list[tuple[float, float]]] = {}
    begun: dict[int, float] = {}
    for kind, job_id, at, *_ in (line.split() for line in marks.read_text().splitlines()):
        if kind == "start":
            if int(job_id) in begun:  # the previous attempt never reached its end: it died
                spans.setdefault(int(job_id), []).append((begun[int(job_id)], dead_at[int(job_id)]))
            begun[int(job_id)] = float(at)
        else:
            spans.setdefault(int(job_id), []).append((begun.pop(int(job_id)), float(at)))
    assert not begun and sorted(spans) == ids
    for job_id, runs in spans.items():
        assert all(earlier[1] < later[0] for earlier, later in itertools.pairwise(runs)), (job_id, runs)
        assert len(runs) == (2 if job_id in rescued else 1)


def test_a_node_frozen_past_its_lease_has_its_jobs_stopped_and_records_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    marks = tmp_path / "marks"
    job_id = a.add("--max-retries", "2", stamped_job(marks))
    until(lambda: running_on(a, job_id, "a"), why="the job never started on a")
    b = cluster.node("b")
    assert a.process is not None
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        until(lambda: running_on(b, job_id, "b", run=2), timeout=3 + 20, why="the job was not rescued")
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    # Node a wakes: its lease is gone, it records nothing for the rescued attempt and registers anew.
    until(lambda: "not recorded" in a.log.read_text(), timeout=20, why="a never refused its late end")
    until(
        lambda: (
            {n["name"]: n["state"] for n in json.loads(a.ok("status", "--json"))["nodes"]}
            == {"a": "alive", "b": "alive"}
        ),
        timeout=20,
        why="a never registered anew",
    )
    runs = show(b, job_id)["runs"]
    assert runs[0]["error"].startswith("interrupted: its node a stopped renewing")
    assert runs[0]["exit_code"] is None and runs[0]["signal"] is None  # nothing of a's own end
    assert runs[1]["node"] == "b" and runs[1]["ended_at"] is None
    # The guardian stopped a's job before its lease ran out: the stamps never overlap.
    kinds = [line.split()[0] for line in marks.read_text().splitlines()]
    assert kinds == ["start", "end", "start"]
    never_overlapping(marks)
    b.ok("cancel", str(job_id))


def test_a_node_takes_only_the_queues_it_serves_and_pinned_jobs_run_where_pinned(cluster: Cluster) -> None:
    gpu = cluster.node("gpu", "--queues", "gpu,default")
    cpu = cluster.node("cpu", "--queues", "default")
    gpu.ok("queue", "add", "gpu")
    where = {
        cpu.add("--queue", "gpu", "echo gpu work"): "gpu",
        cpu.add("--node", "gpu", "echo there"): "gpu",
        gpu.add("--here", "echo here"): "gpu",
        gpu.add("--node", "cpu", "echo there"): "cpu",
        cpu.add("--here", "echo here"): "cpu",
    }
    for job_id in where:
        assert cpu.ctl("wait", str(job_id)).returncode == 0
    assert {job_id: show(cpu, job_id)["runs"][0]["node"] for job_id in where} == where
    pinned = list(where)[1]
    assert show(cpu, pinned)["pinned"] == "gpu" and "pinned to:   node gpu" in cpu.ok("show", str(pinned))
    refused = cpu.ctl("add", "--node", "nope", "true")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "queuectl: unknown node 'nope' (the nodes are: cpu, gpu)"
    status = json.loads(cpu.ok("status", "--json"))
    assert status["node"] == "cpu"
    listed = {n["name"]: n for n in status["nodes"]}
    assert listed["gpu"]["queues"] == ["gpu", "default"] and listed["cpu"]["queues"] == ["default"]
    assert listed["cpu"]["this"] and listed["gpu"]["state"] == "alive"
    text = cpu.ok("status")
    assert "HEARTBEAT" in text and "gpu,default" in text
    assert "NODE" in cpu.ok("ls")  # jobs ran on two nodes: the listing says where
