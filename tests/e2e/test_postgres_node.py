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


def test_the_web_page_of_a_node_shows_and_acts_on_the_whole_cluster(
    tmp_path: Path, postgres_url: str
) -> None:
    """`--http` on a PostgreSQL node: its page reads through the store every
    node shares (jobs run on another node included) and acts through it."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.e2e.test_web import fetch, web_url

    a = Daemon(tmp_path / "a", "--store", postgres_url, "--node", "a", "--http", "127.0.0.1:0")
    a.flags = ["--data-dir", str(a.data_dir), "--concurrency", "0"]  # b runs everything
    b = Daemon(tmp_path / "b", "--store", postgres_url, "--node", "b")
    try:
        a.start()
        b.start()
        url = web_url(a)
        first = b.add("--label", "web", "echo one")
        second = b.add("--label", "web", "--max-retries", "0", "--after", str(first), "exit 3")
        assert b.ctl("wait", str(first), str(second)).returncode != 0
        held = b.add("--hold", "--label", "web", "true")
        code, body = fetch(url + "api/jobs?label=web")
        assert code == 200, body
        assert [(job["id"], job["state"]) for job in json.loads(body)["jobs"]] == [
            (held, "held"),
            (second, "dead"),
            (first, "completed"),
        ]
        assert json.loads(fetch(url + "api/jobs/count?label=web&state=dead")[1]) == {"count": 1}
        code, body = fetch(url + f"api/jobs/{first}")
        assert code == 200 and json.loads(body)["dependents"] == [second]
        assert json.loads(body)["runs"][0]["node"] == "b"
        code, body = fetch(url + f"api/jobs/{first}/log")
        assert code == 200 and b"one" in body
        code, text = fetch(url + "metrics")
        assert code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }
        assert samples[("queued_jobs", (("queue", "default"), ("state", "completed")))] == 1
        assert samples[("queued_jobs", (("queue", "default"), ("state", "dead")))] == 1
        assert samples[("queued_attempts_ended_total", (("outcome", "failed"), ("queue", "default")))] == 1
        code, svg = fetch(url + "charts/throughput.svg")
        assert code == 200 and svg.startswith(b"<svg")
        token = a.ok("web", "token").strip()
        request = urllib.request.Request(
            url + "api/actions/cancel",
            data=json.dumps({"ids": [held]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200 and json.loads(answer.read())["ids"] == [held]
        assert show(b, held)["state"] == "canceled"
    finally:
        for node in (a, b):
            if node.process and node.process.poll() is None:
                node.ok("shutdown", "--now")
            node.stop()


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
