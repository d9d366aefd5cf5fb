"""A node claiming ahead of its free slots (PostgreSQL): the jobs it holds
claimed and not started go back to waiting when it stops, and a node killed
with jobs held has them given back at its next start without counting an
attempt: only what ran is interrupted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon

psycopg = pytest.importorskip("psycopg")

JOBS = 400
SLOTS = 2


@pytest.fixture
def node(tmp_path: Path, postgres_url: str) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "a", "--store", postgres_url, "--node", "a")
    d.flags = ["--data-dir", str(d.data_dir), "--concurrency", str(SLOTS)]
    d.start(wait=True)
    try:
        yield d
    finally:
        if d.process is not None and d.process.poll() is None:
            d.ctl("shutdown", "--now")
        d.stop()


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def drain_until(node: Daemon, url: str, completed: int) -> list[int]:
    """JOBS quick jobs added, paused, then resumed; returns once `completed` ended."""
    node.ok("queue", "pause", "default")
    ids = [int(x) for x in node.ok("add", "--quiet", "--from", "-", input="true\n" * JOBS).split()]
    node.ok("queue", "resume", "default")
    deadline = time.monotonic() + 120
    while query(url, "SELECT count(*) FROM queued.jobs WHERE state = 'completed'")[0][0] < completed:
        assert time.monotonic() < deadline, "the drain did not get going"
        time.sleep(0.02)
    return ids


def uncounted(url: str) -> list[tuple]:
    """Jobs whose attempt count is not their attempts' rows (a claim counted that never ran)."""
    return query(
        url,
        "SELECT j.id, j.state, j.attempts, count(a.attempt) FROM queued.jobs j"
        " LEFT JOIN queued.attempts a ON a.job_id = j.id GROUP BY j.id HAVING j.attempts <> count(a.attempt)",
    )


def test_a_node_stopping_mid_drain_gives_back_what_it_claimed_ahead(node: Daemon, postgres_url: str) -> None:
    drain_until(node, postgres_url, 100)
    node.ok("shutdown")
    assert node.process is not None and node.process.wait(timeout=60) == 0
    assert query(postgres_url, "SELECT count(*) FROM queued.jobs WHERE state = 'running'") == [(0,)]
    assert query(postgres_url, "SELECT count(*) FROM queued.attempts WHERE ended_at IS NULL") == [(0,)]
    assert uncounted(postgres_url) == []
    pending = query(postgres_url, "SELECT count(*) FROM queued.jobs WHERE state = 'pending'")[0][0]
    assert pending > 0  # it stopped mid-drain


def test_a_node_killed_mid_drain_is_charged_only_the_attempts_that_ran(
    node: Daemon, postgres_url: str
) -> None:
    ids = drain_until(node, postgres_url, 100)
    node.kill9()
    node.start(wait=True)  # its recovery: running ones interrupted, held ones given back
    assert node.ctl("wait", *map(str, ids)).returncode == 0
    assert uncounted(postgres_url) == []
    interrupted = query(postgres_url, "SELECT count(*) FROM queued.attempts WHERE error LIKE 'interrupted%'")[
        0
    ][0]
    assert interrupted <= SLOTS  # what ran at the kill; not what it held ahead
    assert query(postgres_url, "SELECT count(*) FROM queued.attempts") == [(JOBS + interrupted,)]
