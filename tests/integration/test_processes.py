"""Timeouts and cancels stop whole process trees; output is capped; shutdown --now interrupts."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from queued import protocol as p
from queued.daemon import Runner

from .conftest import AsyncClient, DaemonHandle, make_config

# A shell whose child ignores SIGTERM and records its pid: only SIGKILL ends it.
STUBBORN_TREE = "sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 60' & wait"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def read_pid(path: Path) -> int:
    with trio.fail_after(5):
        while not path.exists() or not path.read_text().strip():
            await trio.sleep(0.02)
    return int(path.read_text())


async def test_timeout_kills_the_tree_after_the_grace_period(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(STUBBORN_TREE.format(pidfile=pidfile), timeout=0.5, max_retries=0)
    grandchild = await read_pid(pidfile)
    [job] = await client.wait(job_id)
    assert job.state == "dead" and job.error == "timed out after 500ms"
    assert not alive(grandchild)
    run = (await client.job(job_id)).runs[0]
    assert run.ended_at is not None and run.ended_at - run.started_at >= 0.5


async def test_cancel_kills_a_running_tree(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(STUBBORN_TREE.format(pidfile=pidfile))
    grandchild = await read_pid(pidfile)
    changed = await client.ok(p.CancelJobs(ids=[job_id]))
    assert isinstance(changed, p.Changed) and changed.ids == [job_id]
    [job] = await client.wait(job_id)
    assert job.state == "canceled" and job.error == "canceled by user"
    with trio.fail_after(5):  # the grace period is 1 s in these tests
        while (await client.job(job_id)).runs[0].ended_at is None:
            await trio.sleep(0.05)
    assert not alive(grandchild)
    assert (await client.job(job_id)).runs[0].error == "canceled by user"


async def test_a_job_retried_during_its_cancels_grace_starts_once_its_process_is_gone(
    client: AsyncClient, tmp_path: Path
) -> None:
    """Nothing else happens after the stubborn process dies: its end alone must
    start the retried job (the slots are all free)."""
    marker = tmp_path / "ran"
    job_id = await client.add(f"[ -e {marker} ] && exit 0; touch {marker}; trap '' TERM; sleep 60")
    with trio.fail_after(5):
        while not marker.exists():
            await trio.sleep(0.02)
    await client.ok(p.CancelJobs(ids=[job_id]))
    await client.ok(p.RetryJobs(ids=[job_id]))
    response = await client.ok(p.WaitJobs(ids=[job_id], timeout=5))  # the grace is 1 s
    assert isinstance(response, p.Waited) and not response.timed_out, response
    assert [job.state for job in response.jobs] == ["completed"]
    assert [run.error for run in (await client.job(job_id)).runs] == ["canceled by user", None]


async def test_a_job_removed_during_its_cancels_grace_loses_its_logs_once_its_process_is_gone(
    client: AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add("echo out; echo err >&2; " + STUBBORN_TREE.format(pidfile=pidfile))
    grandchild = await read_pid(pidfile)
    [run] = (await client.job(job_id)).runs
    logs = [Path(run.stdout_path or ""), Path(run.stderr_path or "")]
    with trio.fail_after(5):  # written once the attempt is watched on its own
        while not all(path.exists() for path in logs):
            await trio.sleep(0.02)
    await client.ok(p.CancelJobs(ids=[job_id]))
    await client.ok(p.RemoveJobs(ids=[job_id]))
    with trio.fail_after(5):  # the grace period is 1 s in these tests
        while any(path.exists() for path in logs):
            await trio.sleep(0.05)
    assert not alive(grandchild)


async def test_cancel_pending_and_refuse_finished(client: AsyncClient) -> None:
    later = await client.add("true", delay=60)
    changed = await client.ok(p.CancelJobs(ids=[later]))
    assert isinstance(changed, p.Changed) and changed.ids == [later] and not changed.refused
    # Issue #11: a cancel does what it can, and says why it did not do the rest.
    other = await client.add("true", delay=60)
    changed = await client.ok(p.CancelJobs(ids=[later, other, 999]))
    assert isinstance(changed, p.Changed) and changed.ids == [other]
    assert changed.refused == {
        later: f"job {later} is canceled: only pending, held, failed or running jobs can be canceled",
        999: "no job 999",
    }


async def test_leftover_background_processes_are_killed_when_the_job_ends(
    client: AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(f"sleep 60 & echo $! > {pidfile}")
    [job] = await client.wait(job_id)
    assert job.state == "completed"
    assert not alive(int(pidfile.read_text()))


async def test_output_is_capped(tmp_path: Path) -> None:
    config = make_config(tmp_path, log_max_size=64 * 1024)
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        job_id = await client.add("head -c 5000000 /dev/zero; echo done >&2")
        [job] = await client.wait(job_id)
        assert job.state == "completed"
        run = (await client.job(job_id)).runs[0]
        assert run.stdout_path and run.stderr_path
        size = os.path.getsize(run.stdout_path)
        assert 64 * 1024 <= size < 64 * 1024 + 200
        assert b"output truncated" in Path(run.stdout_path).read_bytes()[-200:]
        assert Path(run.stderr_path).read_bytes() == b"done\n"
        await client.aclose()
        runner.request_shutdown("graceful")


async def test_shutdown_now_records_running_jobs_as_interrupted(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with trio.open_nursery() as nursery:
        runner: Runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        job_id = await client.add("sleep 60", max_retries=1)
        with trio.fail_after(5):
            while not runner.supervisor.running:
                await trio.sleep(0.02)
        pid = runner.supervisor.running[job_id].pid
        await client.ok(p.Shutdown(mode="now"))
        await client.aclose()
    assert pid is not None and not alive(pid)
    # A second run sees the interrupted attempt and the job waiting for its retry.
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        detail = await client.job(job_id)
        assert detail.runs[0].error == "interrupted: the daemon stopped while the job ran"
        assert detail.job.state in ("failed", "running") and detail.job.attempts >= 1
        await client.ok(p.CancelJobs(ids=[job_id]))
        await client.aclose()
        runner.request_shutdown("now")


async def test_graceful_shutdown_lets_running_jobs_finish(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with trio.open_nursery() as nursery:
        runner: Runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        job_id = await client.add("sleep 0.5")
        with trio.fail_after(5):
            while not runner.supervisor.running:
                await trio.sleep(0.02)
        await client.ok(p.Shutdown())
        refused = await client.request(p.AddJobs(jobs=[p.JobSpec(command="true")], cwd="/", env={}))
        assert isinstance(refused, p.Error) and refused.code == "shutting_down"
        await client.aclose()
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        assert (await client.job(job_id)).job.state == "completed"
        await client.aclose()
        runner.request_shutdown("now")


async def test_a_shutdown_asked_before_the_daemon_runs_is_kept(tmp_path: Path) -> None:
    # Asking twice (graceful, then now) before the supervisor existed raised AttributeError.
    runner = Runner(make_config(tmp_path))
    runner.request_shutdown("graceful")
    runner.request_shutdown("now")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    assert runner.shutdown_mode == "now"


async def test_now_after_a_graceful_shutdown_interrupts_the_running_jobs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            runner: Runner = await nursery.start(Runner(config).run)
            client = await AsyncClient.connect(config.socket_path)
            job_id = await client.add("sleep 60")
            while job_id not in runner.supervisor.running:
                await trio.sleep(0.02)
            pid = runner.supervisor.running[job_id].pid
            runner.request_shutdown("graceful")
            await runner.supervisor.claiming_stopped.wait()
            assert alive(pid)  # type: ignore[arg-type]
            runner.request_shutdown("now")
            await client.aclose()
    assert pid is not None and not alive(pid)


async def test_sigterm_is_graceful(daemon: DaemonHandle, client: AsyncClient) -> None:
    job_id = await client.add("sleep 0.5")
    results: list[p.Job] = []

    async def wait_for_it() -> None:
        results.extend(await client.wait(job_id))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_it)
        with trio.fail_after(5):
            while not daemon.runner.supervisor.running:
                await trio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(5):
            await daemon.runner.supervisor.claiming_stopped.wait()
    assert [job.state for job in results] == ["completed"]
