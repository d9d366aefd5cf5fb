"""Faults injected into the calls an attempt makes (pipes, spawns, pidfds,
log files and their writes): whichever call fails, and however, the daemon
keeps serving, every job ends or stays due, nothing acknowledged is lost and
the store stays sound. Only the attempt the fault hit may fail."""

from __future__ import annotations

import errno
import sqlite3
import tempfile
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from queued import protocol as p
from queued.daemon import Runner
from queued.processes import supervisor
from tests.faults import TARGETS, inject
from tests.reliability.test_survival import integrity

from .conftest import AsyncClient, make_config

JOBS = [
    "echo out $QUEUED_JOB_ID; echo err >&2",
    "true",
    "sleep 0.08; echo grown $QUEUED_JOB_ID",  # watched by a task of its own
    "head -c 100000 /dev/zero",  # more than a pipe holds
]
ROUNDS = 8  # of the jobs above: 32 jobs a run
# How many calls of each kind a run makes at least: the sweep's range.
CALLS = {"write": 32, "open": 32, "pipe": 64, "posix_spawn": 32, "pidfd_open": 32, "log_open": 32}


async def run_with_fault(root: Path, target: str, nth: int, error: int) -> None:
    config = make_config(root, concurrency=3, kill_grace=0.5)
    with inject(target, nth, error) as fault:
        async with trio.open_nursery() as nursery:
            runner: Runner = await nursery.start(Runner(config).run)
            client = await AsyncClient.connect(config.socket_path)
            ids = [await client.add(command, max_retries=0) for _ in range(ROUNDS) for command in JOBS]
            response = await client.ok(p.WaitJobs(ids=ids, timeout=20))
            assert isinstance(response, p.Waited) and not response.timed_out, (fault.fired, response)
            assert isinstance(await client.ok(p.GetStatus()), p.Status)  # still serving
            listed = await client.ok(p.ListJobs())
            assert isinstance(listed, p.JobList)
            assert {job.id for job in listed.jobs} == set(ids)  # nothing acknowledged lost
            states = {job.id: job.state for job in listed.jobs}
            dead = [job for job in listed.jobs if job.state != "completed"]
            assert set(states.values()) <= {"completed", "dead"}
            # Only the attempt the fault hit may fail; a want of descriptors fails none.
            assert len(dead) <= (0 if error == errno.EMFILE or not fault.fired else 1), dead
            incomplete = []
            for job_id in ids:
                [run] = (await client.job(job_id)).runs
                if run.log_incomplete:
                    incomplete.append(run.log_incomplete)
            if incomplete:
                assert target in ("write", "open", "log_open") and len(incomplete) == 1, incomplete
                assert f"bytes lost: {fault.strerror}" in incomplete[0]
            await client.aclose()
            runner.request_shutdown("graceful")
    assert integrity(config.data_dir / "queue.db") == "ok"
    assert fault.fired, (target, nth, fault.calls)


@pytest.fixture(autouse=True)
def short_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "HOLD_SECONDS", 0.05)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    call=st.sampled_from(TARGETS).flatmap(lambda t: st.tuples(st.just(t), st.integers(1, CALLS[t]))),
    error=st.sampled_from([errno.ENOSPC, errno.EIO, errno.EMFILE]),
)
def test_a_failing_call_ends_at_most_its_attempt(call: tuple[str, int], error: int) -> None:
    target, nth = call
    with tempfile.TemporaryDirectory(prefix="faults-") as root:
        trio.run(run_with_fault, Path(root), target, nth, error)


@pytest.mark.parametrize("target", TARGETS)
def test_each_call_failing_early_is_survived(target: str) -> None:
    """The sweep's corners, always run: the first call of each kind fails."""
    with tempfile.TemporaryDirectory(prefix="faults-") as root:
        trio.run(run_with_fault, Path(root), target, 1, errno.EIO)


async def test_a_broken_supervisor_stops_the_jobs_in_order_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's own invariants breaking is the one fault that may stop it:
    deliberately, its running jobs stopped (SIGTERM first) and recorded."""
    config = make_config(tmp_path, concurrency=2, kill_grace=5.0)
    pidfile, termed = tmp_path / "pid", tmp_path / "termed"
    async with trio.open_nursery() as nursery:
        runner: Runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        job_id = await client.add(
            f"trap 'touch {termed}; exit 143' TERM; echo $$ > {pidfile}; sleep 30 & wait"
        )
        with trio.fail_after(10):
            while not pidfile.exists() or not pidfile.read_text().strip():
                await trio.sleep(0.02)

        def broken(*args: object) -> dict[str, int]:
            raise RuntimeError("an invariant broke")

        monkeypatch.setattr(supervisor, "queue_room", broken)
        await client.add("true")  # wakes the loop, which fails
    assert runner.failure == "its supervisor failed: RuntimeError: an invariant broke"
    assert termed.exists()  # SIGTERM first, as a stop in order does
    conn = sqlite3.connect(config.data_dir / "queue.db")
    error = conn.execute("SELECT error FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]
    conn.close()
    assert error is not None and error.startswith("interrupted")
