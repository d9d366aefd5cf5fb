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


def test_the_database_stopped_and_started_mid_drain_of_three_nodes_loses_nothing_and_runs_each_once(
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
    # Each job stamps its start and its end, living a moment between: some are running at the stop.
    commands.write_text(
        f'echo "start $QUEUED_JOB_ID" >> {ran}; sleep 0.05; echo "end $QUEUED_JOB_ID" >> {ran}\n'
        * (JOBS // 3)
    )
    nodes = []
    for name in "abc":
        node = Daemon(tmp_path / name, "--store", url, "--node", name)
        node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "2"]
        nodes.append(node)
    try:
        for node in nodes:
            node.start()
        for node in nodes:  # every node adds a third of the jobs
            node.ok("add", "--quiet", "--from", str(commands))
        wait_for(lambda: len(lines(ran)) >= JOBS // 2, 60, "a quarter of the jobs to run")

        postgres_server.stop("immediate")  # as `pg_ctl stop -m immediate`: a crash
        try:
            where = re.escape(f"127.0.0.1:{postgres_server.port}/")
            unreachable = rf"queuectl: the job store at {where}\w+ is unreachable; retrying\n"
            for node in nodes:
                # Reads too, even the first request after the crash: if a COMMIT was on
                # its way, only that batch's callers are told it may have been kept.
                listed = node.ctl("ls")
                assert listed.returncode == 1
                assert re.fullmatch(unreachable, listed.stderr), listed.stderr
            refused = nodes[1].ctl("add", "true")
            assert refused.returncode == 1
            assert re.fullmatch(unreachable, refused.stderr), refused.stderr
            for node in nodes:
                status = json.loads(node.ok("status", "--json"))
                assert status["store_unreachable_since"] is not None
                assert any("is unreachable since" in problem for problem in status["problems"])
            assert "jobs:    unknown while the job store is unreachable" in nodes[2].ok("status")
            time.sleep(2)  # the running jobs end meanwhile: their ends are kept
            for node in nodes:
                assert node.process is not None and node.process.poll() is None  # the nodes stay up
        finally:
            postgres_server.restart()

        def all_completed() -> bool:
            result = nodes[0].ctl("status", "--json")
            return result.returncode == 0 and json.loads(result.stdout)["counts"].get("completed") == JOBS

        wait_for(all_completed, 120, "every job to complete after the restart")
        for node in nodes:
            log = node.log.read_text()
            assert re.search(rf"the job store at {where}\w+ is unreachable \(.*\); reconnecting", log), log
            assert re.search(
                rf"reconnected to the job store at {where}\w+ after [\d.]+ s unreachable", log
            ), log
            assert "ERROR" not in log, log
        with psycopg.connect(url) as conn:
            attempts = conn.execute(
                "SELECT job_id, count(*), bool_and(exit_code = 0 AND ended_at IS NOT NULL), min(node)"
                " FROM queued.attempts GROUP BY job_id"
            ).fetchall()
        assert len(attempts) == JOBS and {(n, ok) for _, n, ok, _ in attempts} == {
            (1, True)
        }  # each ended once
        assert {node for *_, node in attempts} == {"a", "b", "c"}
        # Claims commit before their jobs start: each ran exactly once, start to end.
        stamps = Counter(tuple(line.split()) for line in ran.read_text().splitlines())
        assert set(stamps.values()) == {1}, [stamp for stamp, n in stamps.items() if n > 1]
        assert {int(job) for kind, job in stamps if kind == "start"} == {row[0] for row in attempts}
        assert {int(job) for kind, job in stamps if kind == "end"} == {row[0] for row in attempts}
        for node in nodes:  # reconnected: status says nothing is wrong, and every node is alive
            # A lease stays in doubt (status says so) until the node's next renewal
            # succeeds: a failed one is tried again lease/10 later, after a try that
            # may have waited up to lease/3 for the stopped server.
            def clean(node: Daemon = node) -> bool:
                status = json.loads(node.ok("status", "--json"))
                return status["store_unreachable_since"] is None and not status["problems"]

            wait_for(clean, 30, "each node to renew its lease after the restart")
            status = json.loads(node.ok("status", "--json"))
            assert status["store_unreachable_since"] is None and not status["problems"], status
            assert {n["name"]: n["state"] for n in status["nodes"]} == {
                "a": "alive",
                "b": "alive",
                "c": "alive",
            }
    finally:
        for node in nodes:
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


def test_a_frozen_database_server_fails_requests_in_bounded_time_and_the_node_recovers(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Every process of the server SIGSTOPped: connections stay up and nothing
    answers (keepalives do not notice: the kernel answers them). With the
    defaults, a request waits about 10 s for the one line (5 s without an
    answer, 3 s for the server to answer a new connection, 2 s to reconnect
    at once), within the client's 30 s; the running job goes on; the node
    recovers once thawed."""
    database = postgres_server.create_database(with_schema=True)
    url = postgres_server.tcp_url(database)
    marks = tmp_path / "marks"
    # A lease long enough that the node keeps its job through the freeze (no renewal meanwhile).
    node = Daemon(tmp_path, "--store", url, "--node-lease", "120")
    node.start()
    try:
        job_id = node.add(f"echo start >> {marks}; sleep 12; echo end >> {marks}")
        wait_for(lambda: lines(marks) == ["start"], 30, "the job to start")
        unreachable = (
            rf"queuectl: the job store at 127\.0\.0\.1:{postgres_server.port}/\w+ is unreachable; retrying\n"
        )
        frozen = postgres_server.freeze()
        try:
            began = time.monotonic()
            listed = node.ctl("ls", timeout=60)
            waited = time.monotonic() - began
            assert listed.returncode == 1 and re.fullmatch(unreachable, listed.stderr), listed.stderr
            assert waited < 20, f"the request waited {waited:.1f} s"
            print(f"the first request waited {waited:.1f} s")
            began = time.monotonic()
            refused = node.ctl("add", "true", timeout=60)
            assert refused.returncode == 1 and re.fullmatch(unreachable, refused.stderr), refused.stderr
            assert time.monotonic() - began < 5  # the outage is known: at once
            assert json.loads(node.ok("status", "--json"))["store_unreachable_since"] is not None
            wait_for(lambda: lines(marks) == ["start", "end"], 30, "the running job to go on to its end")
        finally:
            postgres_server.thaw(frozen)
        wait_for(
            lambda: (
                (shown := node.ctl("show", "--json", str(job_id))).returncode == 0
                and json.loads(shown.stdout)["state"] == "completed"
            ),
            60,
            "the job's end to be recorded once the server answers",
        )
        log = node.log.read_text()
        assert "the job store has not answered for" in log, log
        assert re.search(r"reconnected to the job store at \S+ after [\d.]+ s unreachable", log), log
        assert not json.loads(node.ok("status", "--json"))["problems"]
    finally:
        node.stop()
