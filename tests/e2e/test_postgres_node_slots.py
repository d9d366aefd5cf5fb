"""Two nodes on one PostgreSQL database: each node's slots are its own
(`--concurrency`, `workers scale N`, 0 included: it serves and runs
nothing), and a node used as a batch runner leaves by itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon

pytest.importorskip("psycopg")


def status(node: Daemon) -> dict:
    return json.loads(node.ok("status", "--json"))


def node_on(root: Path, url: str, concurrency: int, *extra: str) -> Daemon:
    node = Daemon(root, "--store", url, "--node", root.name, *extra)
    node.flags = ["--data-dir", str(node.data_dir), "--concurrency", str(concurrency)]
    return node


@pytest.fixture
def two_nodes(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Daemon, Daemon]]:
    a = node_on(tmp_path / "a", postgres_url, 2).start()
    b = node_on(tmp_path / "b", postgres_url, 1)
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_workers_scale_changes_only_the_node_it_is_sent_to(two_nodes: tuple[Daemon, Daemon]) -> None:
    a, b = two_nodes
    said = b.ok("workers", "scale", "0")
    assert said.startswith("concurrency is now 0 on this node until it stops")
    assert (status(a)["concurrency"], status(b)["concurrency"]) == (2, 0)
    a.ok("workers", "scale", "0")
    job_id = b.add("true")  # B serves at 0: it takes the job and starts nothing
    assert status(b)["counts"]["pending"] == 1 and status(b)["running"] == 0
    b.ok("workers", "scale", "1")
    assert b.ctl("wait", str(job_id)).returncode == 0
    assert (status(a)["concurrency"], status(b)["concurrency"]) == (0, 1)
    a.ok("workers", "scale", "2")

    refused = a.ctl("config", "set", "concurrency", "5")
    assert refused.returncode == 1
    assert refused.stderr == (
        "queuectl: concurrency is each node's own with a shared store: "
        "`queuectl workers scale N` on that node, or --concurrency at its start\n"
    )
    a.ok("config", "set", "max-retries", "7")  # a job default is the cluster's: B reads it at its start

    b.ok("shutdown")
    assert b.process is not None and b.process.wait(timeout=30) == 0
    b.start()
    assert status(b)["concurrency"] == 1  # its --concurrency again: nothing was saved for all
    assert status(a)["concurrency"] == 2
    assert "7" in b.ok("config", "get", "max-retries")


def test_a_batch_runner_on_postgres_runs_what_waits_and_leaves(tmp_path: Path, postgres_url: str) -> None:
    feeder = node_on(tmp_path / "feeder", postgres_url, 0).start()  # serves, runs nothing
    runner = node_on(tmp_path / "runner", postgres_url, 2, "--exit-when-idle")
    try:
        ids = [feeder.add("true") for _ in range(6)]
        ids.append(feeder.add("--delay", "1s", "true"))
        runner.start(wait=False)
        assert runner.process is not None
        assert runner.process.wait(timeout=60) == 0, runner.log.read_text()
        states = {job["id"]: job["state"] for job in json.loads(feeder.ok("ls", "--json"))}
        assert {states[job_id] for job_id in ids} == {"completed"}
        assert "nothing left to run here: leaving (--exit-when-idle)" in runner.log.read_text()
    finally:
        runner.stop()
        feeder.stop()


def test_a_batch_runner_leaves_despite_jobs_only_other_nodes_may_run(
    tmp_path: Path, postgres_url: str
) -> None:
    """A job pinned to another node (here the feeder, which runs nothing) or
    in a queue the runner does not serve would keep it for ever: they are
    other nodes' work, and it leaves once its own is done (it waited)."""
    feeder = node_on(tmp_path / "feeder", postgres_url, 0).start()
    runner = node_on(tmp_path / "runner", postgres_url, 2, "--exit-when-idle", "--queues", "default")
    try:
        feeder.ok("queue", "add", "other")
        others = [feeder.add("--here", "true"), feeder.add("--queue", "other", "true")]
        mine = [feeder.add("true") for _ in range(3)]
        runner.start(wait=False)
        assert runner.process is not None
        assert runner.process.wait(timeout=60) == 0, runner.log.read_text()
        states = {job["id"]: job["state"] for job in json.loads(feeder.ok("ls", "--json"))}
        assert [states[job_id] for job_id in mine] == ["completed"] * 3
        assert [states[job_id] for job_id in others] == ["pending"] * 2
        assert "nothing left to run here: leaving (--exit-when-idle)" in runner.log.read_text()
    finally:
        runner.stop()
        feeder.stop()
