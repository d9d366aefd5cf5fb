"""A PostgreSQL node's jobs claimed ahead of its free slots, in process: a
cancel reaches one at once (it never runs), a paused queue's go back to
waiting, and the others start as slots free up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from queued import protocol as p
from queued.daemon import Runner
from queued.processes import claimed_ahead
from tests.integration.conftest import AsyncClient, DaemonHandle, make_config

pytest.importorskip("psycopg")


@pytest.fixture
async def node(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DaemonHandle]:
    """One slot; once an attempt ended quickly, claims go ahead and hold what they take."""
    monkeypatch.setattr(claimed_ahead, "QUICK_SECONDS", 3600.0)
    monkeypatch.setattr(claimed_ahead, "HOLD_SECONDS", 3600.0)
    config = make_config(tmp_path, concurrency=1)
    config.store = request.getfixturevalue("postgres_url")
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        yield DaemonHandle(runner, config)
        runner.request_shutdown("now")


async def until(check: Callable[[], object], timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)


async def hold_two(node: DaemonHandle, client: AsyncClient, tmp_path: Path) -> tuple[int, list[int]]:
    """A quick job, then one that fills the slot, then two held ahead of it."""
    supervisor = node.runner.supervisor
    await client.wait(await client.add("true"))
    blocker = await client.add("sleep 30")
    await until(lambda: blocker in supervisor.running)
    held = [await client.add(f"touch {tmp_path / 'ran'}-$QUEUED_JOB_ID") for _ in range(2)]
    await until(lambda: sorted(supervisor._ahead.ids()) == held)
    return blocker, held


async def test_a_job_claimed_ahead_is_canceled_at_once_and_never_runs(
    node: DaemonHandle, tmp_path: Path
) -> None:
    client = await node.client()
    try:
        blocker, held = await hold_two(node, client, tmp_path)
        await client.ok(p.CancelJobs(ids=[held[0]]))
        assert node.runner.supervisor._ahead.ids() == [held[1]]
        detail = await client.job(held[0])
        assert detail.job.state == "canceled"
        with trio.fail_after(10):
            while (await client.job(held[0])).runs:  # its claim given back: no attempt
                await trio.sleep(0.01)
        await client.ok(p.CancelJobs(ids=[blocker]))
        [done] = await client.wait(held[1])
        assert done.state == "completed"
        assert not (tmp_path / f"ran-{held[0]}").exists()
        assert (tmp_path / f"ran-{held[1]}").exists()
        assert [run.attempt for run in (await client.job(held[1])).runs] == [1]
    finally:
        await client.aclose()


async def test_a_paused_queue_takes_back_what_was_claimed_ahead(node: DaemonHandle, tmp_path: Path) -> None:
    client = await node.client()
    try:
        blocker, held = await hold_two(node, client, tmp_path)
        await client.ok(p.PauseQueue(name="default", paused=True))
        await until(lambda: not node.runner.supervisor._ahead.ids())
        for job_id in held:
            with trio.fail_after(10):
                while (detail := await client.job(job_id)).job.state != "pending" or detail.runs:
                    await trio.sleep(0.01)
            assert detail.job.attempts == 0
        await client.ok(p.CancelJobs(ids=[blocker]))
    finally:
        await client.aclose()


async def test_a_give_back_that_failed_is_tried_again(
    node: DaemonHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing store must not leave a job claimed ahead running with no
    process while this node's lease holds (no rescue would take it)."""
    client = await node.client()
    try:
        blocker, held = await hold_two(node, client, tmp_path)
        attempts = node.runner.supervisor.db.engine._attempts
        real, failed = attempts.unclaim, []

        def unclaim_failing_once(job: object, now: float) -> object:
            if not failed:
                failed.append(job)
                raise RuntimeError("the disk hiccuped")
            return real(job, now)

        monkeypatch.setattr(attempts, "unclaim", unclaim_failing_once)
        # Its answer may fail with the batch the failing give back was in.
        await client.request(p.PauseQueue(name="default", paused=True))
        for job_id in held:
            with trio.fail_after(10):
                while True:  # a read in the failing batch fails too
                    detail = await client.request(p.GetJob(id=job_id))
                    if isinstance(detail, p.JobDetail) and detail.job.state == "pending" and not detail.runs:
                        break
                    await trio.sleep(0.01)
        assert len(failed) == 1
        await client.ok(p.CancelJobs(ids=[blocker]))
    finally:
        await client.aclose()
