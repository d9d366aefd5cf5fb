"""What a pueue or task-spooler user reaches for every day, as a session with
the real queuectl and queued: the latest job by default, several logs, the
last lines."""

from __future__ import annotations

import json

from .conftest import Daemon


def test_latest_job_by_default(daemon: Daemon) -> None:
    assert daemon.ctl("show").stderr == "queuectl: there are no jobs yet\n"
    first = daemon.add("--", "sh", "-c", "echo first")
    second = daemon.add("--after", "last", "--", "sh", "-c", "echo second")
    assert json.loads(daemon.ok("show", "--json"))["depends_on"] == [first]
    assert daemon.ok("wait") == ""  # the latest job, and its dependency before it
    assert json.loads(daemon.ok("show", "last", "--json"))["id"] == second
    assert daemon.ok("logs") == "second\n"
    assert daemon.ok("wait", "--all") == ""


def test_logs_of_several_jobs_and_their_last_lines(daemon: Daemon) -> None:
    a = daemon.add("seq 1 5")
    b = daemon.add("seq 10 12; echo oops >&2")
    daemon.ok("wait", "--all")
    assert daemon.ok("logs", "--tail", "2", str(a)) == "4\n5\n"
    both = daemon.ctl("logs", "-n", "1", str(a), str(b))
    assert both.returncode == 0
    assert both.stdout == f"==> job {a} <==\n5\n\n==> job {b} <==\n12\n"
    assert both.stderr == "oops\n"
    assert daemon.ok("logs", "--tail", "0", str(a)) == ""
    missing = daemon.ctl("logs", str(a), "999")
    assert missing.returncode == 1 and missing.stderr == "queuectl: no job 999\n"
    assert missing.stdout.startswith(f"==> job {a} <==\n1\n2\n")
