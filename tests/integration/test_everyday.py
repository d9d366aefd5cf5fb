"""The daemon's side of what pueue and tsp users reach for: holding and
releasing, editing and restarting waiting jobs, pausing, resuming and
signalling running ones."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from queued import protocol as p

from .conftest import AsyncClient, DaemonHandle
from .test_lookahead import appends, behind_a_blocker


async def state(client: AsyncClient, job_id: int) -> str:
    return (await client.job(job_id)).job.state


async def not_finished_within(client: AsyncClient, job_id: int, seconds: float) -> p.Job:
    response = await client.ok(p.WaitJobs(ids=[job_id], timeout=seconds))
    assert isinstance(response, p.Waited) and response.timed_out
    return response.jobs[0]


async def running(daemon: DaemonHandle, job_id: int) -> int:
    """The pid of the job's process group leader, once it runs."""
    supervisor = daemon.runner.supervisor
    with trio.fail_after(10):
        while job_id not in supervisor.running or supervisor.running[job_id].pid is None:
            await trio.sleep(0.01)
    pid = supervisor.running[job_id].pid
    assert pid is not None
    return pid


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1][0]


async def until_stopped(pid: int, stopped: bool = True) -> None:
    with trio.fail_after(5):
        while (process_state(pid) == "T") != stopped:
            await trio.sleep(0.01)


# -- hold and release ---------------------------------------------------------------------


async def test_a_held_job_waits_until_released(client: AsyncClient) -> None:
    job_id = await client.add("echo ran", hold=True)
    assert (await not_finished_within(client, job_id, 0.3)).state == "held"
    assert (await client.job(job_id)).runs == []
    status = await client.ok(p.GetStatus())
    assert isinstance(status, p.Status) and status.counts["held"] == 1
    assert await client.ok(p.ReleaseJobs(ids=[job_id])) == p.Changed(ids=[job_id])
    [job] = await client.wait(job_id)
    assert job.state == "completed"


async def test_hold_a_waiting_job_and_what_cannot_be_held(client: AsyncClient) -> None:
    later = await client.add("true", delay=3600)
    await client.ok(p.HoldJobs(ids=[later]))
    assert await state(client, later) == "held"
    again = await client.request(p.HoldJobs(ids=[later]))
    assert again == p.Error(
        code="invalid", message=f"job {later} is held: only pending or failed jobs can be held"
    )
    released = await client.request(p.ReleaseJobs(ids=[later, 999]))
    assert released == p.Error(code="not_found", message="no job 999")
    assert await state(client, later) == "held"  # a rejected request changes nothing
    await client.ok(p.CancelJobs(ids=[later]))
    assert await state(client, later) == "canceled"


async def test_a_held_dependent_follows_its_dependency(client: AsyncClient) -> None:
    first = await client.add("sleep 0.2")
    after = await client.add("echo after", after=[first], hold=True)
    await client.wait(first)
    assert await state(client, after) == "held"
    await client.ok(p.ReleaseJobs(ids=[after]))  # its dependency completed while it was held
    [job] = await client.wait(after)
    assert job.state == "completed"
    doomed = await client.add("exit 1", max_retries=0)
    held = await client.add("true", after=[doomed], hold=True)
    [job] = await client.wait(held)
    assert job.state == "canceled" and job.error == f"canceled: dependency {doomed} is dead"


async def test_a_job_held_after_it_was_read_ahead_never_runs(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    first, second = await behind_a_blocker(daemon, client, out, "second")
    await client.ok(p.HoldJobs(ids=[second]))
    await client.wait(first)
    assert (await not_finished_within(client, second, 0.5)).state == "held"
    assert out.read_text().split() == ["first"]


# -- edit and restart -----------------------------------------------------------------------


async def test_an_edit_after_the_read_ahead_runs_the_new_version(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    first, second = await behind_a_blocker(daemon, client, out, "old")
    await client.ok(p.EditJob(id=second, changes=p.JobChanges(command=appends(out, "new"), label="x")))
    await client.wait(first, second)
    assert out.read_text().split() == ["first", "new"]
    assert (await client.job(second)).job.label == "x"


async def test_an_edit_of_a_job_due_soon_is_what_its_timer_starts(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    job_id = await client.add(appends(out, "old"), delay=0.4)
    with trio.fail_after(5):  # read ahead, waiting for its timer
        while job_id not in [job.id for job in daemon.runner.supervisor.read_ahead.upcoming_jobs()]:
            await trio.sleep(0.01)
    await client.ok(p.EditJob(id=job_id, changes=p.JobChanges(command=appends(out, "new"))))
    await client.wait(job_id)
    assert out.read_text().split() == ["new"]


async def test_edit_changes_priority_queue_time_and_limits(client: AsyncClient) -> None:
    await client.ok(p.AddQueue(name="other"))
    job_id = await client.add("true", delay=3600, timeout=5)
    changes = p.JobChanges(
        priority=-3, queue="other", max_retries=7, backoff_base=3, no_timeout=True, delay=1800
    )
    await client.ok(p.EditJob(id=job_id, changes=changes))
    job = (await client.job(job_id)).job
    assert (job.priority, job.queue, job.max_retries, job.backoff_base, job.timeout) == (
        -3,
        "other",
        7,
        3,
        None,
    )
    assert 1700 < job.run_at - job.created_at < 1900
    queues = await client.ok(p.ListQueues())
    assert isinstance(queues, p.Queues)
    assert {q.name: q.pending for q in queues.queues} == {"default": 0, "other": 1}  # counts moved
    await client.ok(p.EditJob(id=job_id, changes=p.JobChanges(delay=0)))
    [job] = await client.wait(job_id)
    assert job.state == "completed"
    queues = await client.ok(p.ListQueues())
    assert isinstance(queues, p.Queues) and {q.name: q.pending for q in queues.queues} == {
        "default": 0,
        "other": 0,
    }


async def test_what_cannot_be_edited_is_refused_unchanged(daemon: DaemonHandle, client: AsyncClient) -> None:
    done = await client.add("true")
    await client.wait(done)
    refused = await client.request(p.EditJob(id=done, changes=p.JobChanges(priority=1)))
    assert isinstance(refused, p.Error) and refused.code == "invalid"
    assert refused.message.startswith(f"job {done} is completed: only a job that has not started")
    assert f"queuectl restart {done}" in refused.message
    busy = await client.add("sleep 30")
    await running(daemon, busy)
    refused = await client.request(p.EditJob(id=busy, changes=p.JobChanges(command="true")))
    assert isinstance(refused, p.Error) and "is running" in refused.message
    waiting = await client.add("true", delay=3600)
    for changes, reason in [
        (p.JobChanges(), "nothing to change"),
        (p.JobChanges(queue="nowhere"), "unknown queue 'nowhere'"),
        (p.JobChanges(command="   "), "command is empty"),
        (p.JobChanges(delay=1, run_at=1), "give either a delay or a run_at time, not both"),
    ]:
        refused = await client.request(p.EditJob(id=waiting, changes=changes))
        assert isinstance(refused, p.Error) and reason in refused.message, (changes, refused)
    assert (await client.request(p.EditJob(id=999, changes=p.JobChanges(priority=1)))) == p.Error(
        code="not_found", message="no job 999"
    )
    job = (await client.job(waiting)).job
    assert (job.queue, job.command, job.priority) == ("default", "true", 0)
    await client.ok(p.CancelJobs(ids=[busy]))


async def test_restart_copies_any_job_with_changes(client: AsyncClient, tmp_path: Path) -> None:
    original = await client.add(
        "echo $WHO; pwd", cwd=str(tmp_path), env={"WHO": "me"}, label="l", max_retries=5
    )
    await client.wait(original)
    response = await client.ok(p.RestartJob(id=original))
    assert isinstance(response, p.Added)
    [copy] = response.ids
    [job] = await client.wait(copy)
    assert (job.state, job.label, job.max_retries, job.cwd) == ("completed", "l", 5, str(tmp_path))
    log = await client.ok(p.ReadLog(id=copy))
    assert isinstance(log, p.LogChunk) and log.data == f"me\n{tmp_path}\n".encode()
    changed = await client.ok(
        p.RestartJob(id=original, changes=p.JobChanges(command="echo changed", label=""), hold=True)
    )
    assert isinstance(changed, p.Added)
    detail = await client.job(changed.ids[0])
    assert (detail.job.state, detail.job.command, detail.job.label) == ("held", "echo changed", None)
    assert (await client.job(original)).job.attempts == 1  # the original is left as it was
    assert (await client.request(p.RestartJob(id=999))) == p.Error(code="not_found", message="no job 999")


# -- pause, resume, signals ------------------------------------------------------------------


async def test_pause_stops_the_group_and_resume_continues_it(
    daemon: DaemonHandle, client: AsyncClient
) -> None:
    job_id = await client.add("sleep 30 & wait")
    leader = await running(daemon, job_id)
    children_file = Path(f"/proc/{leader}/task/{leader}/children")
    with trio.fail_after(10):  # the shell may be paused before it started `sleep` on a busy machine
        while not children_file.read_text().split():
            await trio.sleep(0.01)
    children = [int(pid) for pid in children_file.read_text().split()]
    assert await client.ok(p.PauseJobs(ids=[job_id])) == p.Changed(ids=[job_id])
    await until_stopped(leader)
    await until_stopped(children[0])  # the whole group, not just the shell
    assert (await client.job(job_id)).job.paused
    listed = await client.ok(p.ListJobs(ids=[job_id]))
    assert isinstance(listed, p.JobList) and listed.jobs[0].paused and listed.jobs[0].state == "running"
    workers = await client.ok(p.ListWorkers())
    assert isinstance(workers, p.Workers) and workers.slots[0].paused
    assert await client.ok(p.PauseJobs(ids=[job_id])) == p.Changed(ids=[])  # already paused
    assert await client.ok(p.PauseJobs(ids=[job_id], paused=False)) == p.Changed(ids=[job_id])
    await until_stopped(leader, stopped=False)
    assert not (await client.job(job_id)).job.paused
    await client.ok(p.CancelJobs(ids=[job_id]))


async def test_a_paused_jobs_timeout_waits(daemon: DaemonHandle, client: AsyncClient) -> None:
    job_id = await client.add("sleep 0.5; echo done", timeout=1)
    await running(daemon, job_id)
    await client.ok(p.PauseJobs(ids=[job_id]))
    await trio.sleep(1.5)  # past its timeout, paused
    assert (await client.job(job_id)).job.state == "running"
    await client.ok(p.PauseJobs(ids=[job_id], paused=False))
    [job] = await client.wait(job_id)
    assert job.state == "completed", job.error


async def test_a_paused_job_is_canceled_by_sigterm_not_after_the_grace(
    daemon: DaemonHandle, client: AsyncClient
) -> None:
    job_id = await client.add("sleep 30")
    await running(daemon, job_id)
    await client.ok(p.PauseJobs(ids=[job_id]))
    await client.ok(p.CancelJobs(ids=[job_id]))
    with trio.fail_after(5):  # the job is canceled at once; its attempt ends when its process does
        while (run := (await client.job(job_id)).runs[0]).ended_at is None:
            await trio.sleep(0.02)
    assert run.signal == signal.SIGTERM  # it ran to see the SIGTERM: no SIGKILL needed


async def test_pause_a_queue_with_its_jobs_and_everything(daemon: DaemonHandle, client: AsyncClient) -> None:
    await client.ok(p.AddQueue(name="gpu"))
    gpu = await client.add("sleep 30", queue="gpu")
    other = await client.add("sleep 30")
    gpu_pid, other_pid = await running(daemon, gpu), await running(daemon, other)
    ok = await client.ok(p.PauseQueue(name="gpu", jobs=True))
    assert isinstance(ok, p.Ok) and ok.message == f"queue gpu paused, paused job {gpu}"
    await until_stopped(gpu_pid)
    assert process_state(other_pid) != "T"
    ok = await client.ok(p.PauseQueue(name="gpu", paused=False))
    assert isinstance(ok, p.Ok) and ok.message == f"queue gpu resumed, resumed job {gpu}"
    await until_stopped(gpu_pid, stopped=False)
    assert await client.ok(p.PauseJobs(all=True)) == p.Changed(ids=[gpu, other])
    await until_stopped(other_pid)
    queues = await client.ok(p.ListQueues())
    assert isinstance(queues, p.Queues) and all(q.paused for q in queues.queues)
    assert await client.ok(p.PauseJobs(all=True, paused=False)) == p.Changed(ids=[gpu, other])
    await until_stopped(gpu_pid, stopped=False)
    queues = await client.ok(p.ListQueues())
    assert isinstance(queues, p.Queues) and not any(q.paused for q in queues.queues)
    await client.ok(p.CancelJobs(ids=[gpu, other]))


async def test_signals_reach_the_group_and_refusals(daemon: DaemonHandle, client: AsyncClient) -> None:
    job_id = await client.add("trap 'echo got usr1; exit 3' USR1; sleep 30 & wait", max_retries=0)
    await running(daemon, job_id)
    await trio.sleep(0.2)  # the trap is set
    assert await client.ok(p.SignalJobs(ids=[job_id], signal=signal.SIGUSR1)) == p.Changed(ids=[job_id])
    [job] = await client.wait(job_id)
    assert (job.state, job.exit_code) == ("dead", 3)
    refused = await client.request(p.SignalJobs(ids=[job_id], signal=signal.SIGTERM))
    assert refused == p.Error(
        code="invalid", message=f"job {job_id} is dead: only running jobs can be signalled"
    )
    waiting = await client.add("true", delay=3600)
    refused = await client.request(p.PauseJobs(ids=[waiting]))
    assert isinstance(refused, p.Error) and refused.message == (
        f"job {waiting} is pending: only running jobs can be paused; `queuectl hold {waiting}` keeps it from starting"
    )
    assert (await client.request(p.SignalJobs(ids=[5000], signal=1))) == p.Error(
        code="not_found", message="no job 5000"
    )


async def test_sigstop_by_kill_is_a_pause(daemon: DaemonHandle, client: AsyncClient) -> None:
    job_id = await client.add("sleep 30")
    pid = await running(daemon, job_id)
    await client.ok(p.SignalJobs(ids=[job_id], signal=signal.SIGSTOP))
    await until_stopped(pid)
    assert (await client.job(job_id)).job.paused
    await client.ok(p.SignalJobs(ids=[job_id], signal=signal.SIGCONT))
    await until_stopped(pid, stopped=False)
    assert not (await client.job(job_id)).job.paused
    await client.ok(p.CancelJobs(ids=[job_id]))
    assert os.path.exists(f"/proc/{os.getpid()}")


# -- the on-finish callback ---------------------------------------------------------------------


async def lines_of(path: Path, count: int) -> list[str]:
    with trio.fail_after(10):
        while not path.exists() or len(path.read_text().splitlines()) < count:
            await trio.sleep(0.02)
    return path.read_text().splitlines()


async def test_on_finish_runs_with_the_jobs_facts(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "finished"
    command = (
        'echo "$QUEUED_JOB_ID|$QUEUED_JOB_STATE|$QUEUED_JOB_EXIT_CODE|$QUEUED_JOB_COMMAND|$QUEUED_JOB_LABEL"'
        f" >> {out}"
    )
    await client.ok(p.SetConfig(key="on-finish", value=command))
    done = await client.add("echo 'a b'", label="l")
    dead = await client.add("exit 3", max_retries=0)
    canceled = await client.add("true", delay=3600)
    await client.ok(p.CancelJobs(ids=[canceled]))
    await client.wait(done, dead)
    lines = sorted(await lines_of(out, 3))
    assert lines == [
        f"{done}|completed|0|echo 'a b'|l",
        f"{dead}|dead|3|exit 3|",
        f"{canceled}|canceled||true|",
    ]
    config = await client.ok(p.GetConfig(key="on-finish"))
    assert isinstance(config, p.ConfigValues) and config.values == {"on-finish": command}


async def test_a_failing_on_finish_is_logged_and_the_job_unaffected(
    daemon: DaemonHandle, client: AsyncClient, caplog
) -> None:
    await client.ok(p.SetConfig(key="on-finish", value="echo it broke >&2; exit 4"))
    job_id = await client.add("true")
    [job] = await client.wait(job_id)
    with trio.fail_after(10):
        while "on-finish for job" not in caplog.text:
            await trio.sleep(0.02)
    assert f"on-finish for job {job_id} exited with status 4: it broke" in caplog.text
    assert (await client.job(job_id)).job.state == "completed" and job.state == "completed"


async def test_a_hanging_on_finish_is_stopped_at_its_timeout(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr("queued.processes.callbacks.TIMEOUT_SECONDS", 0.3)
    pids = tmp_path / "pids"
    await client.ok(p.SetConfig(key="on-finish", value=f"sleep 60 & echo $! >> {pids}; wait"))
    job_id = await client.add("true")
    await client.wait(job_id)
    [pid] = await lines_of(pids, 1)
    with trio.fail_after(10):  # its whole group is stopped
        while os.path.exists(f"/proc/{pid}") and process_state(int(pid)) != "Z":
            await trio.sleep(0.02)
    assert f"on-finish for job {job_id} ran over" in caplog.text
    assert isinstance(await client.ok(p.GetStatus()), p.Status)  # still serving


async def test_no_on_finish_queues_nothing(daemon: DaemonHandle, client: AsyncClient) -> None:
    job_id = await client.add("true")
    await client.wait(job_id)
    callbacks = daemon.runner.callbacks
    assert not callbacks._finished and not callbacks._running
    await client.ok(p.SetConfig(key="on-finish", value="true"))
    await client.ok(p.SetConfig(key="on-finish", value="none"))
    assert daemon.runner.supervisor.settings.on_finish is None


async def test_what_an_on_finish_leaves_in_its_group_is_stopped(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    await client.ok(p.SetConfig(key="on-finish", value=f"sleep 77 & echo $! >> {pids}"))
    await client.wait(await client.add("true"))
    [pid] = await lines_of(pids, 1)
    with trio.fail_after(10):
        while os.path.exists(f"/proc/{pid}") and process_state(int(pid)) != "Z":
            await trio.sleep(0.02)
    await client.ok(p.SetConfig(key="on-finish", value="none"))


async def test_a_graceful_shutdown_says_it_waits_for_paused_jobs(
    daemon: DaemonHandle, client: AsyncClient
) -> None:
    job_id = await client.add("sleep 30")
    await running(daemon, job_id)
    await client.ok(p.PauseJobs(ids=[job_id]))
    ok = await client.ok(p.Shutdown())
    assert isinstance(ok, p.Ok) and ok.message == (
        f"shutting down once the running jobs finish (job {job_id} paused:"
        " `queuectl resume --all`, or `queuectl shutdown --now`)"
    )


async def test_what_an_on_finish_starts_outside_its_group_is_stopped(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    await client.ok(p.SetConfig(key="on-finish", value=f"setsid sleep 4848 & echo $! >> {pids}; sleep 0.3"))
    await client.wait(await client.add("true"))
    [pid] = await lines_of(pids, 1)
    with trio.fail_after(10):
        while os.path.exists(f"/proc/{pid}") and process_state(int(pid)) != "Z":
            await trio.sleep(0.02)
    await client.ok(p.SetConfig(key="on-finish", value="none"))
