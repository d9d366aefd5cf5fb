"""Schedules end to end: the real queued and queuectl. Counts are loose where
time decides them (a loaded machine must not make these fail); how late
firings are is measured in tests/bench (S1)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from queuectl import Client
from queued import schedules
from tests.e2e.conftest import Daemon


def labelled(d: Daemon, name: str) -> list[dict]:
    return json.loads(d.ok("ls", "--all", "--label", name, "--json"))


def wait_for(predicate, timeout: float = 20.0, step: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(step)


def test_a_schedule_every_second_adds_ordinary_jobs(daemon: Daemon) -> None:
    out = daemon.ok("schedule", "add", "tick", "--every", "1s", "--max-retries", "0", "--", "echo", "tick")
    assert out.startswith("added schedule tick (@every 1s, ")
    time.sleep(3.6)
    jobs = labelled(daemon, "tick")
    assert 2 <= len(jobs) <= 5, jobs  # three or four firings, give or take a loaded machine
    assert all(job["command"] == "echo tick" and job["max_retries"] == 0 for job in jobs)
    ids = [str(job["id"]) for job in jobs]
    daemon.ok("wait", *ids)  # an ordinary job: wait, logs, ...
    assert daemon.ok("logs", ids[0]) == "tick\n"
    listing = daemon.ok("schedule", "ls")
    assert listing.splitlines()[0].split() == [
        "NAME",
        "SCHEDULE",
        "ZONE",
        "NEXT",
        "LAST",
        "LAST",
        "JOB",
        "COMMAND",
    ]
    assert "tick" in listing and "@every 1s" in listing
    [info] = json.loads(daemon.ok("schedule", "ls", "--json"))
    assert info["name"] == "tick" and info["last_job_id"] >= int(ids[-1])
    assert info["next_run"] is not None and info["last_run"] is not None


def test_schedule_run_adds_one_job_now_with_retries_and_the_dead_letter_queue(daemon: Daemon) -> None:
    daemon.ok(
        "schedule", "add", "flaky", "@yearly", "--max-retries", "1", "--backoff-base", "1", "--", "exit 3"
    )
    job_id = int(daemon.ok("schedule", "run", "flaky", "--quiet"))
    daemon.ctl("wait", str(job_id))
    detail = json.loads(daemon.ok("show", str(job_id), "--json"))
    assert (detail["label"], detail["state"], len(detail["runs"])) == ("flaky", "dead", 2)
    assert daemon.ok("ls", "--state", "dead", "--json").count('"flaky"') == 1
    daemon.ok("schedule", "pause", "flaky")
    assert daemon.ok("schedule", "run", "flaky").startswith("added job ")  # paused or not
    [info] = json.loads(daemon.ok("schedule", "ls", "--json"))
    assert info["paused"] and info["next_run"] is None and info["last_job_id"] == job_id + 1


def test_no_overlap_skips_while_the_previous_job_runs(daemon: Daemon) -> None:
    daemon.ok("schedule", "add", "slow", "--every", "1s", "--no-overlap", "--", "sleep 60")
    first = wait_for(lambda: labelled(daemon, "slow"))
    time.sleep(2.5)  # two or three more firings: skipped
    assert [job["id"] for job in labelled(daemon, "slow")] == [first[0]["id"]]
    daemon.ok("cancel", str(first[0]["id"]))
    second = wait_for(lambda: len(labelled(daemon, "slow")) >= 2 and labelled(daemon, "slow"))
    assert second[-1]["state"] in ("pending", "running")
    daemon.ok("schedule", "rm", "slow")
    daemon.ok("cancel", str(second[-1]["id"]))


def test_the_command_runs_in_the_directory_and_environment_captured_at_creation(
    daemon: Daemon, tmp_path: Path
) -> None:
    where = tmp_path / "work dir"
    where.mkdir()
    daemon.env = {**daemon.env, "CAPTURED": "at creation"}
    daemon.ok(
        "schedule",
        "add",
        "env",
        "@yearly",
        "--cwd",
        str(where),
        "-e",
        "EXTRA=1",
        "--",
        'echo "$PWD $CAPTURED $EXTRA"',
    )
    daemon.env = {k: v for k, v in daemon.env.items() if k != "CAPTURED"}
    job_id = daemon.ok("schedule", "run", "env", "--quiet").strip()
    daemon.ok("wait", job_id)
    assert daemon.ok("logs", job_id) == f"{where} at creation 1\n"


@pytest.mark.parametrize("catch_up", ["none", "one", "all"])
def test_a_daemon_stopped_over_three_firings_catches_up_as_chosen(tmp_path: Path, catch_up: str) -> None:
    d = Daemon(tmp_path).start()
    try:
        d.ok("schedule", "add", "tick", "--every", "1s", "--catch-up", catch_up, "--", "true")
        wait_for(lambda: labelled(d, "tick"))
        d.ok("shutdown")
        d.process.wait(timeout=15)  # type: ignore[union-attr]
        time.sleep(3.5)  # three or four firings pass
        d.start()
        with Client(str(d.socket)) as client:
            started = client.status().started_at
            [info] = client.schedules()
            jobs = [job for job in client.list(label="tick") if job.created_at >= started]
            answered = time.time()
            earlier = [job for job in client.list(label="tick") if job.created_at < started]
        # The latest firing before the stop (a job is due at its firing's time).
        anchor, last_before = info.created_at, max(job.run_at for job in earlier)

        def grid(after: float, until: float) -> int:
            """Firings (anchor + k seconds) in (after, until]."""
            return max(0, math.floor(until - anchor) - math.floor(after - anchor))

        # Firings since the start, which may have added theirs (ahead of their time).
        regular = grid(started, answered + schedules.AHEAD_SECONDS)
        missed_low, missed_high = grid(last_before, started), grid(last_before, answered)
        assert missed_low >= 3
        caught_up = {"none": (0, 0), "one": (1, 1), "all": (min(missed_low, 10), min(missed_high, 10))}
        low, high = caught_up[catch_up]
        assert low <= len(jobs) <= high + regular, (len(jobs), low, high, regular)
    finally:
        if d.process and d.process.poll() is None:
            d.ok("shutdown", "--now")
        d.stop()


def test_schedules_survive_a_restart_and_removal_keeps_the_jobs(tmp_path: Path) -> None:
    d = Daemon(tmp_path).start()
    try:
        d.ok("schedule", "add", "nightly", "30 2 * * *", "--tz", "Europe/Berlin", "--", "true")
        d.ok("schedule", "pause", "nightly")
        job_id = d.ok("schedule", "run", "nightly", "--quiet").strip()
        d.ok("shutdown")
        d.process.wait(timeout=15)  # type: ignore[union-attr]
        d.start()
        [info] = json.loads(d.ok("schedule", "ls", "--json"))
        assert (info["name"], info["tz"], info["paused"], str(info["last_job_id"])) == (
            "nightly",
            "Europe/Berlin",
            True,
            job_id,
        )
        d.ok("schedule", "resume", "nightly")
        [info] = json.loads(d.ok("schedule", "ls", "--json"))
        assert info["next_run"].endswith(("T00:30:00.000Z", "T01:30:00.000Z"))  # 02:30 in Berlin
        d.ok("schedule", "rm", "nightly")
        assert d.ok("schedule", "ls", "--json").strip() == "[]"
        assert [str(job["id"]) for job in labelled(d, "nightly")] == [job_id]
    finally:
        if d.process and d.process.poll() is None:
            d.ok("shutdown", "--now")
        d.stop()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "x", "61 * * * *", "--", "true"], 2, "minute field '61': 61 is out of range"),
        (["add", "x", "@daily", "--tz", "Mars/Base", "--", "true"], 2, "unknown time zone 'Mars/Base'"),
        (["add", "x", "--every", "0s", "--", "true"], 2, "from 1s to 10 years"),
        (["add", "x", "@daily"], 2, "missing the command"),
        (["add", "x"], 2, "missing the cron expression"),
        (["add", "bad name", "@daily", "--", "true"], 2, "a schedule name must be"),
        (["add", "x", "@daily", "-q", "nope", "--", "true"], 1, "unknown queue 'nope'"),
        (["add", "x", "0 0 31 2 *", "--", "true"], 2, "never fires"),
        (["rm", "nope"], 1, "no schedule 'nope'"),
        (["pause", "nope"], 1, "no schedule 'nope'"),
        (["run", "nope"], 1, "no schedule 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    daemon: Daemon, args: list[str], code: int, message: str
) -> None:
    result = daemon.ctl("schedule", *args)
    assert result.returncode == code, result
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert daemon.ok("schedule", "ls", "--json").strip() == "[]"


def test_a_taken_name_is_refused(daemon: Daemon) -> None:
    daemon.ok("schedule", "add", "x", "@daily", "--", "true")
    result = daemon.ctl("schedule", "add", "x", "--every", "1m", "--", "false")
    assert result.returncode == 1 and "schedule 'x' already exists" in result.stderr
    [info] = json.loads(daemon.ok("schedule", "ls", "--json"))
    assert info["expression"] == "@daily"


def test_unreachable_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    result = d.ctl("schedule", "ls")
    assert result.returncode == 3


def test_completion_offers_schedule_names(daemon: Daemon) -> None:
    from .test_terminal import complete

    daemon.ok("schedule", "add", "backup", "@daily", "--", "true")
    daemon.ok("schedule", "add", "poll", "--every", "10m", "--", "true")
    assert "schedule" in complete(daemon, "queuectl ")
    assert set(complete(daemon, "queuectl schedule ")) >= {"add", "ls", "rm", "pause", "resume", "run"}
    for command in ("rm", "pause", "resume", "run"):
        assert complete(daemon, f"queuectl schedule {command} ") == ["backup", "poll"]
    assert complete(daemon, "queuectl schedule run p") == ["poll"]
