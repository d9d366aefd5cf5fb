"""Young attempts watched together: quick exits handed over as they come, the
others handed to a task of their own once they grow up or are to be stopped."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from queued import protocol as p
from queued.processes import young_attempts
from queued.processes.attempt import Attempt
from queued.processes.job_process import JobProcess
from queued.processes.young_attempts import QUICK_EXIT_SECONDS, YoungAttempts
from queued.store import Claimed

from .conftest import AsyncClient


class Seen:
    def __init__(self) -> None:
        self.exited: list[tuple[Attempt, float]] = []
        self.grown: list[tuple[Attempt, float]] = []
        self.changed = trio.Event()

    def exit(self, attempt: Attempt) -> None:
        attempt.reap_young()
        self.exited.append((attempt, trio.current_time()))
        self.changed.set()

    def grow(self, attempt: Attempt) -> None:
        self.grown.append((attempt, trio.current_time()))
        self.changed.set()

    async def until(self, exited: int = 0, grown: int = 0) -> None:
        with trio.fail_after(10):
            while len(self.exited) < exited or len(self.grown) < grown:
                self.changed = trio.Event()
                await self.changed.wait()


@pytest.fixture
async def young() -> AsyncIterator[tuple[YoungAttempts, Seen]]:
    seen = Seen()
    watcher = YoungAttempts(on_exit=seen.exit, on_grown=seen.grow)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        yield watcher, seen
        nursery.cancel_scope.cancel()


def start(
    young: YoungAttempts, tmp_path: Path, job_id: int, command: str, timeout: float | None = None
) -> Attempt:
    claimed = Claimed(
        id=job_id,
        run=1,
        attempts=1,
        command=command,
        queue="default",
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"]},
        timeout=timeout,
        max_retries=0,
        backoff_base=2.0,
    )
    attempt = Attempt(claimed, 0.0, (str(tmp_path / f"{job_id}.out"), str(tmp_path / f"{job_id}.err")))
    attempt.spawned(JobProcess(command, cwd=str(tmp_path), env=claimed.env), 1 << 20)
    young.add(attempt)
    return attempt


async def test_quick_exits_are_handed_over_each_once_with_their_output(young, tmp_path: Path) -> None:
    watcher, seen = young
    attempts = [start(watcher, tmp_path, n, f"echo job {n}; exit {n}") for n in range(1, 6)]
    await seen.until(exited=5)
    await trio.sleep(QUICK_EXIT_SECONDS * 2)  # none of them grows up later
    assert sorted(a.claimed.id for a, _ in seen.exited) == [1, 2, 3, 4, 5] and seen.grown == []
    assert len(watcher) == 0
    for attempt in attempts:
        outcome = attempt.young_outcome()
        assert outcome.exit_code == attempt.claimed.id and not outcome.succeeded
        assert (tmp_path / f"{attempt.claimed.id}.out").read_text() == f"job {attempt.claimed.id}\n"


async def test_a_longer_job_grows_up_after_the_quick_window(young, tmp_path: Path) -> None:
    watcher, seen = young
    attempt = start(watcher, tmp_path, 1, "sleep 5")
    await seen.until(grown=1)
    [(grown, when)] = seen.grown
    assert grown is attempt and seen.exited == []
    assert when - attempt.spawned_at >= QUICK_EXIT_SECONDS
    assert attempt.process is not None
    attempt.process.signal_group(9)
    attempt.process.reap()


async def test_a_timeout_shorter_than_the_window_grows_it_up_at_the_timeout(
    young, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(young_attempts, "QUICK_EXIT_SECONDS", 1.0)
    watcher, seen = young
    patient = start(watcher, tmp_path, 1, "sleep 5")  # the watcher sleeps until this one grows
    hasty = start(watcher, tmp_path, 2, "sleep 5", timeout=0.01)
    await seen.until(grown=1)
    [(grown, when)] = seen.grown
    assert grown is hasty and when - hasty.spawned_at < 0.5
    await seen.until(grown=2)
    for attempt in (patient, hasty):
        assert attempt.process is not None
        attempt.process.signal_group(9)
        attempt.process.reap()


async def test_let_go_hands_a_young_attempt_over_at_once_and_only_once(young, tmp_path: Path) -> None:
    watcher, seen = young
    attempt = start(watcher, tmp_path, 1, "sleep 5")
    watcher.let_go(attempt)
    watcher.let_go(attempt)
    assert [a for a, _ in seen.grown] == [attempt] and len(watcher) == 0
    assert attempt.process is not None
    attempt.process.signal_group(9)
    await trio.sleep(QUICK_EXIT_SECONDS * 2)  # its exit and its window pass unseen here
    assert seen.exited == [] and len(seen.grown) == 1
    attempt.process.reap()


async def test_a_reused_pidfd_number_is_not_mistaken_for_the_attempt_before(young, tmp_path: Path) -> None:
    watcher, seen = young
    first = start(watcher, tmp_path, 1, "true")
    await seen.until(exited=1)  # reaped: its pidfd number is free again
    second = start(watcher, tmp_path, 2, "sleep 5")
    assert first.process is not None and second.process is not None
    if second.process.pidfd != first.process.pidfd:
        pytest.skip("the kernel gave the second attempt another descriptor number")
    await seen.until(grown=1)
    [(grown, when)] = seen.grown
    assert grown is second and when - second.spawned_at >= QUICK_EXIT_SECONDS
    second.process.signal_group(9)
    second.process.reap()


# Through the daemon, with a window so long that every stop below reaches the
# attempt while it is young.


async def test_a_young_attempt_that_is_canceled_stops_at_once(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(young_attempts, "QUICK_EXIT_SECONDS", 60.0)
    job_id = await client.add("sleep 30")
    with trio.fail_after(5):
        while not (await client.job(job_id)).runs:
            await trio.sleep(0.01)
    await client.ok(p.CancelJobs(ids=[job_id]))
    with trio.fail_after(5):
        [job] = await client.wait(job_id)
    assert job.state == "canceled" and job.error == "canceled by user"


async def test_a_young_attempt_times_out_on_time(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(young_attempts, "QUICK_EXIT_SECONDS", 60.0)
    job_id = await client.add("sleep 30", timeout=0.3, max_retries=0)
    with trio.fail_after(5):
        [job] = await client.wait(job_id)
    assert job.state == "dead" and job.error == "timed out after 300ms"
    run = (await client.job(job_id)).runs[0]
    assert run.ended_at is not None and 0.3 <= run.ended_at - run.started_at < 3
