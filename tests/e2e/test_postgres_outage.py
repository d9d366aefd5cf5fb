"""A node on PostgreSQL while the database goes away and comes back: the
node stays up, its running jobs go on, requests that must reach the store
fail in one line, ends are kept and recorded once it is back, and nothing is
lost or run twice."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon, tool
from tests.postgres import PostgresServer

pytest.importorskip("psycopg")

JOBS = 300


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_the_database_stopped_and_started_mid_drain_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    import psycopg

    database = postgres_server.create_database(with_schema=True)
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        # The test server trades durability for speed (synchronous_commit=off):
        # a crash would lose commits it acknowledged. Not in this database.
        admin.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = on')
    url = postgres_server.tcp_url(database)
    ran = tmp_path / "ran"
    commands = tmp_path / "jobs.txt"
    # Each job appends its id at its start, then lives a moment: some are running at the stop.
    commands.write_text(f'echo "$QUEUED_JOB_ID" >> {ran}; sleep 0.05\n' * JOBS)
    node = Daemon(tmp_path, "--store", url)
    node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "4"]
    node.start()
    try:
        node.ok("add", "--quiet", "--from", str(commands))
        wait_for(lambda: len(lines(ran)) >= JOBS // 4, 60, "a quarter of the jobs to run")

        postgres_server.stop("immediate")  # as `pg_ctl stop -m immediate`: a crash
        try:
            where = re.escape(f"127.0.0.1:{postgres_server.port}/")
            # Reads too. (The first request after the crash may find its COMMIT
            # on the way: a read is told the store is unreachable all the same.)
            listed = node.ctl("ls")
            assert listed.returncode == 1
            assert re.fullmatch(
                rf"queuectl: the job store at {where}\w+ is unreachable; retrying\n", listed.stderr
            )
            refused = node.ctl("add", "true")
            assert refused.returncode == 1
            assert re.fullmatch(
                rf"queuectl: the job store at {where}\w+ is unreachable; retrying\n", refused.stderr
            ), refused.stderr
            status = json.loads(node.ok("status", "--json"))
            assert status["store_unreachable_since"] is not None
            assert any("is unreachable since" in problem for problem in status["problems"])
            assert "jobs:    unknown while the job store is unreachable" in node.ok("status")
            time.sleep(2)  # the running jobs end meanwhile: their ends are kept
            assert node.process is not None and node.process.poll() is None  # the node stays up
        finally:
            postgres_server.restart()

        def all_completed() -> bool:
            result = node.ctl("status", "--json")
            return result.returncode == 0 and json.loads(result.stdout)["counts"].get("completed") == JOBS

        wait_for(all_completed, 120, "every job to complete after the restart")
        log = node.log.read_text()
        assert re.search(rf"the job store at {where}\w+ is unreachable \(.*\); reconnecting", log), log
        assert re.search(rf"reconnected to the job store at {where}\w+ after [\d.]+ s unreachable", log), log
        with psycopg.connect(url) as conn:
            attempts = conn.execute(
                "SELECT job_id, count(*), bool_and(exit_code = 0 AND ended_at IS NOT NULL)"
                " FROM queued.attempts GROUP BY job_id"
            ).fetchall()
        assert len(attempts) == JOBS and {(n, ok) for _, n, ok in attempts} == {(1, True)}  # each ended once
        ran_count = Counter(int(job_id) for job_id in lines(ran))
        assert len(ran_count) == JOBS and max(ran_count.values()) <= 2
        # A job started from memory whose start could not be recorded is stopped
        # and runs again (its start was never acknowledged): only those ran twice.
        unrecorded = {int(n) for n in re.findall(r"job (\d+): its start was not recorded", log)}
        assert {job_id for job_id, n in ran_count.items() if n == 2} <= unrecorded
        log = re.sub(r".* ERROR .*: job \d+: its start was not recorded .*\n", "", log)
        assert "ERROR" not in log, log
        assert not json.loads(node.ok("status", "--json"))["problems"]
    finally:
        node.stop()


def test_a_wrong_password_is_one_line_at_start(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """A user who must give a password (scram) and gives a wrong one."""
    import psycopg

    hba = postgres_server.data / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS with_password")
        admin.execute("CREATE ROLE with_password LOGIN PASSWORD 'right'")
        try:
            hba.write_text("host all with_password 127.0.0.1/32 scram-sha-256\n" + original)
            admin.execute("SELECT pg_reload_conf()")
            url = f"postgresql://with_password:wrong@127.0.0.1:{postgres_server.port}/postgres"
            result = subprocess.run(
                [
                    tool("queued"),
                    "--data-dir",
                    str(tmp_path / "d"),
                    "--socket",
                    str(tmp_path / "s"),
                    "--store",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            hba.write_text(original)
            admin.execute("SELECT pg_reload_conf()")
    assert result.returncode == 1
    assert "wrong" not in result.stderr.replace("with_password", "") + result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"queued: cannot connect to the job store at 127.0.0.1:{postgres_server.port}/postgres: "
    )
    assert "password authentication failed" in line
