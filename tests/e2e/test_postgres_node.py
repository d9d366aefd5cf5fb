"""A node on PostgreSQL: the real `queued --store postgresql://...` and the
real `queuectl`, on the tests' throwaway server (tests/postgres.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon, pid_alive, tool
from tests.postgres import PostgresServer

pytest.importorskip("psycopg")


@pytest.fixture
def node(tmp_path: Path, postgres_empty_url: str) -> Iterator[Daemon]:
    d = Daemon(tmp_path, "--store", postgres_empty_url).start()
    try:
        yield d
    finally:
        d.ok("shutdown", "--now") if d.process and d.process.poll() is None else None
        d.stop()


def show(node: Daemon, job_id: int) -> dict:
    return json.loads(node.ok("show", "--json", str(job_id)))


def test_add_wait_cancel_retry_and_dependencies_on_postgres(node: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    first = node.add("--cwd", str(tmp_path), f"echo first >> {marker}; pwd")
    assert node.ctl("wait", str(first)).returncode == 0
    assert node.ok("logs", str(first)) == f"{tmp_path}\n"
    assert show(node, first)["state"] == "completed"

    # A dependency chain: the dependent runs after, a failure's dependents are canceled.
    a = node.add(f"echo a >> {marker}")
    b = node.add("--after", str(a), f"echo b >> {marker}")
    failing = node.add("--hold", "--max-retries", "0", "exit 3")
    doomed = node.add("--after", str(failing), "echo never")
    node.ok("release", str(failing))
    assert node.ctl("wait", str(b)).returncode == 0
    assert marker.read_text().splitlines() == ["first", "a", "b"]
    assert node.ctl("wait", str(failing)).returncode != 0
    assert show(node, failing)["state"] == "dead"
    assert show(node, doomed)["state"] == "canceled"

    # Retry of a dead job: it runs again (and fails again).
    node.ok("retry", str(failing))
    node.ctl("wait", str(failing))
    assert [run["exit_code"] for run in show(node, failing)["runs"]] == [3, 3]

    # Cancel of a running job stops its process.
    sleeper = node.add("sleep 300")
    deadline = time.monotonic() + 20
    while show(node, sleeper)["state"] != "running":
        assert time.monotonic() < deadline, "the sleep never started"
        time.sleep(0.05)
    pid = show(node, sleeper)["runs"][0]["pid"]
    node.ok("cancel", str(sleeper))
    assert show(node, sleeper)["state"] == "canceled"
    deadline = time.monotonic() + 20
    while pid and pid_alive(pid):
        assert time.monotonic() < deadline, "the canceled job's process lives on"
        time.sleep(0.05)

    # What the node keeps outlives it: a new node on the same database sees it all.
    node.ok("shutdown")
    assert node.process is not None and node.process.wait(timeout=30) == 0
    node.start()
    assert show(node, b)["state"] == "completed"
    assert json.loads(node.ok("status", "--json"))["counts"]["completed"] >= 3


def test_a_node_killed_mid_job_recovers_it_at_its_next_start(node: Daemon) -> None:
    job_id = node.add("--max-retries", "1", "sleep 300")
    deadline = time.monotonic() + 20
    while show(node, job_id)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node.kill9()
    node.start()
    runs = show(node, job_id)["runs"]
    assert runs[0]["error"] and "interrupt" in runs[0]["error"]
    node.ok("cancel", str(job_id))


def test_a_wrong_store_is_one_line_at_start(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{postgres_server.port}/no_such_database"
    result = subprocess.run(
        [tool("queued"), "--data-dir", str(tmp_path / "d"), "--socket", str(tmp_path / "s"), "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "hunter2" not in result.stderr + result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("queued: cannot connect to the job store at 127.0.0.1:")
    assert "no_such_database" in line


def test_the_web_page_is_refused_with_a_postgres_store_for_now(tmp_path: Path, postgres_url: str) -> None:
    flags = ["--data-dir", str(tmp_path / "d"), "--socket", str(tmp_path / "s"), "--store", postgres_url]
    result = subprocess.run(
        [tool("queued"), *flags, "--http", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "queued: the web page (--http) needs the SQLite store for now: leave out --http or --store"
    )


def test_migrate_creates_the_schema_without_starting_a_node(tmp_path: Path, postgres_empty_url: str) -> None:
    import psycopg

    result = subprocess.run(
        [tool("queued"), "migrate", "--store", postgres_empty_url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "schema version" in result.stdout
    with psycopg.connect(postgres_empty_url) as conn:
        assert conn.execute("SELECT version FROM queued.schema_version").fetchone() is not None
    again = subprocess.run(
        [tool("queued"), "migrate", "--store", postgres_empty_url], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
