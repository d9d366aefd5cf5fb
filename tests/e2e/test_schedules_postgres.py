"""Schedules with several nodes on one PostgreSQL store: every node runs the
scheduler, and the database makes sure each firing adds one job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon

psycopg = pytest.importorskip("psycopg")


def test_three_nodes_add_each_firing_once(tmp_path: Path, postgres_empty_url: str) -> None:
    nodes = [
        Daemon(tmp_path / f"node{n}", "--store", postgres_empty_url, "--node", f"node{n}") for n in range(3)
    ]
    try:
        first = nodes[0].start()
        # The jobs wait in a paused queue: this test is about adding them.
        first.ok("queue", "add", "sched")
        first.ok("queue", "pause", "sched")
        first.ok("schedule", "add", "tick", "--every", "1s", "-q", "sched", "--", "true")
        for node in nodes[1:]:
            node.start()  # each reads the schedule at its start
        time.sleep(4.5)
        nodes[1].ok("schedule", "pause", "tick")  # no firing after this commit, on any node
        jobs = json.loads(nodes[2].ok("ls", "--all", "--label", "tick", "--json"))
        [info] = json.loads(nodes[1].ok("schedule", "ls", "--json"))
        assert len(jobs) >= 3, jobs
        with psycopg.connect(postgres_empty_url) as conn:
            firings = conn.execute(
                "SELECT fired_at, job_id FROM queued.firings WHERE schedule = 'tick' ORDER BY fired_at"
            ).fetchall()
            anchor = conn.execute("SELECT created_at FROM queued.schedules WHERE name = 'tick'").fetchone()[0]
        # The latest firings (a few are kept), each on the schedule's grid with a job of its own.
        ids = sorted(job["id"] for job in jobs)
        assert [job_id for _, job_id in firings] == ids[-len(firings) :]
        assert all((fired - anchor) == round(fired - anchor) for fired, _ in firings)
        # One job per firing since the schedule was added (node 0 ran throughout):
        # never more, however many nodes fired.
        assert len(jobs) == round(firings[-1][0] - anchor)
        assert info["last_job_id"] == ids[-1]
    finally:
        for node in nodes:
            if node.process and node.process.poll() is None:
                node.ok("shutdown", "--now")
            node.stop()


def test_a_schedule_added_or_paused_on_one_node_reaches_the_other_at_once(
    tmp_path: Path, postgres_empty_url: str
) -> None:
    """Other nodes' schedulers hear a change of schedules at once (news sent
    with its commit), not at their next periodic read: a schedule added on a
    fires on time on b while a is frozen, and once paused it fires nowhere."""
    import os
    import signal

    a, b = (Daemon(tmp_path / name, "--store", postgres_empty_url, "--node", name) for name in "ab")

    def added() -> list[tuple[float, float]]:
        """Each firing's time and its job's creation, in order."""
        with psycopg.connect(postgres_empty_url) as conn:
            return conn.execute(
                "SELECT f.fired_at, j.created_at FROM queued.firings f JOIN queued.jobs j ON j.id = f.job_id"
                " WHERE f.schedule = 'tick' ORDER BY f.fired_at"
            ).fetchall()

    try:
        a.start()
        b.start()
        a.ok("queue", "add", "sched")
        a.ok("queue", "pause", "sched")  # the jobs wait: this test is about adding them
        assert a.process is not None
        a.ok("schedule", "add", "tick", "--every", "1s", "-q", "sched", "--", "true")
        os.kill(a.process.pid, signal.SIGSTOP)  # only b can fire it now
        try:
            time.sleep(3.5)
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        fired = added()
        assert len(fired) >= 2, fired
        assert all(created - firing < 1 for firing, created in fired), fired  # each on time
        a.ok("schedule", "pause", "tick")
        paused_at = time.time()
        time.sleep(3)
        late = [(firing, created) for firing, created in added() if created > paused_at + 1]
        assert late == [], f"a paused schedule fired on: {late}"
    finally:
        for node in (a, b):
            if node.process and node.process.poll() is None:
                node.ok("shutdown", "--now")
            node.stop()
