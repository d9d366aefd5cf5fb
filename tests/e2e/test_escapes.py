"""The issue's own session: a job whose child called setsid, timed out and
retried, leaves nothing running (checked in /proc, as a user would with ps)."""

from __future__ import annotations

import json
import os

from .conftest import Daemon
from .test_crash import wait_for
from .test_guardian import cmdline

# Sleeps named by this run only: other test runs on the machine use the same numbers.
RUN = f".{os.getpid()}"


def sleeps(seconds: str) -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and cmdline(int(n)) == ["sleep", seconds]]


def test_what_a_timed_out_job_started_in_its_own_session_dies_with_each_attempt(daemon: Daemon) -> None:
    job = daemon.add(
        "--timeout",
        "1",
        "--max-retries",
        "1",
        "--backoff-base",
        "1",
        "--",
        f"setsid sleep 4545{RUN} & sleep 300",
    )
    daemon.ctl("wait", "--timeout", "30", str(job))
    detail = json.loads(daemon.ok("show", "--json", str(job)))
    assert detail["state"] == "dead" and len(detail["runs"]) == 2
    wait_for(lambda: not sleeps(f"4545{RUN}"), timeout=5)


def test_what_a_completed_job_started_in_its_own_session_is_stopped(daemon: Daemon) -> None:
    job = daemon.add("--", f"setsid sleep 4646{RUN} & sleep 0.5")
    daemon.ok("wait", "--timeout", "30", str(job))
    wait_for(lambda: not sleeps(f"4646{RUN}"), timeout=5)
