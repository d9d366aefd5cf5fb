"""The daemon in-process: jobs run, retry, wait, order and depend as DESIGN.md says."""

from __future__ import annotations

import itertools
import os
import sqlite3

import pytest
import trio

from queued import protocol as p
from queued.store import Store
from queued.store.sqlite import SqliteStore

from .conftest import AsyncClient, DaemonHandle


async def test_job_runs_and_logs_are_captured(client: AsyncClient) -> None:
    job_id = await client.add("echo out; echo err >&2; pwd", cwd="/tmp")
    [job] = await client.wait(job_id)
    assert job.state == "completed" and job.exit_code == 0 and job.attempts == 1
    out = await client.ok(p.ReadLog(id=job_id))
    assert isinstance(out, p.LogChunk) and out.data == b"out\n/tmp\n" and not out.running
    err = await client.ok(p.ReadLog(id=job_id, stream="stderr"))
    assert isinstance(err, p.LogChunk) and err.data == b"err\n"
    detail = await client.job(job_id)
    [run] = detail.runs
    assert run.exit_code == 0 and run.pid and run.ended_at and run.ended_at >= run.started_at
    for path in (run.stdout_path, run.stderr_path):
        assert path and os.stat(path).st_mode & 0o777 == 0o600


async def test_environment_is_captured_and_daemon_variables_are_not_leaked(client: AsyncClient) -> None:
    job_id = await client.add(
        'echo "$GREETING $QUEUED_JOB_ID ${NOTIFY_SOCKET:-none}"', env={"GREETING": "hello"}
    )
    await client.wait(job_id)
    out = await client.ok(p.ReadLog(id=job_id))
    assert isinstance(out, p.LogChunk) and out.data == f"hello {job_id} none\n".encode()


async def test_failures_retry_with_backoff_then_go_dead(client: AsyncClient) -> None:
    job_id = await client.add("exit 7", max_retries=2, backoff_base=1.5)
    [job] = await client.wait(job_id)
    assert job.state == "dead" and job.attempts == 3 and job.exit_code == 7
    assert job.error == "exited with status 7"
    runs = (await client.job(job_id)).runs
    assert [r.exit_code for r in runs] == [7, 7, 7]
    gaps = [b.started_at - a.ended_at for a, b in itertools.pairwise(runs)]
    # before retry k the wait is 1.5 ** k: 1.5 s then 2.25 s
    assert 1.5 <= gaps[0] < 2.2 and 2.25 <= gaps[1] < 3.0, gaps
    dead = await client.ok(p.ListJobs(states=["dead"]))
    assert isinstance(dead, p.JobList) and [j.id for j in dead.jobs] == [job_id]


async def test_retry_from_the_dead_letter_queue_resets_attempts(client: AsyncClient) -> None:
    marker = f"/tmp/queued-test-{os.getpid()}-{id(client)}"
    job_id = await client.add(f"test -e {marker} || {{ touch {marker}; exit 1; }}", max_retries=0)
    [job] = await client.wait(job_id)
    assert job.state == "dead"
    changed = await client.ok(p.RetryJobs(all_dead=True))
    assert isinstance(changed, p.Changed) and changed.ids == [job_id]
    [job] = await client.wait(job_id)
    os.unlink(marker)
    assert job.state == "completed" and job.attempts == 1
    assert [r.attempt for r in (await client.job(job_id)).runs] == [1, 2]


async def test_priority_then_run_at_then_id(daemon: DaemonHandle, client: AsyncClient) -> None:
    await client.ok(p.ScaleWorkers(concurrency=1))
    blocker = await client.add("sleep 0.3")
    low = await client.add("true", priority=5)
    first_zero = await client.add("true")
    high = await client.add("true", priority=-3)
    second_zero = await client.add("true")
    await client.wait(blocker, low, first_zero, high, second_zero)
    starts = {}
    for job_id in (low, first_zero, high, second_zero):
        starts[job_id] = (await client.job(job_id)).runs[0].started_at
    assert sorted(starts, key=starts.__getitem__) == [high, first_zero, second_zero, low]


async def test_delay_holds_a_job_until_its_time(client: AsyncClient) -> None:
    job_id = await client.add("true", delay=1.0)
    [job] = await client.wait(job_id)
    run = (await client.job(job_id)).runs[0]
    assert 1.0 <= run.started_at - job.created_at < 1.5


async def test_dependencies_wait_and_dead_dependencies_cancel(client: AsyncClient) -> None:
    first = await client.add("sleep 0.2")
    second = await client.add("true", after=[first])
    doomed = await client.add("exit 1", max_retries=0, delay=0.3)  # dead after its dependents are added
    orphan = await client.add("true", after=[doomed])
    grandchild = await client.add("true", after=[orphan])
    jobs = {j.id: j for j in await client.wait(first, second, doomed, orphan, grandchild)}
    assert jobs[second].state == "completed" and jobs[second].depends_on == [first]
    assert (await client.job(second)).runs[0].started_at >= jobs[first].updated_at
    assert jobs[orphan].state == "canceled" and jobs[orphan].error == f"canceled: dependency {doomed} is dead"
    assert jobs[grandchild].state == "canceled" and str(orphan) in (jobs[grandchild].error or "")


async def test_named_queue_concurrency_and_pause(client: AsyncClient) -> None:
    await client.ok(p.AddQueue(name="serial", concurrency=1))
    await client.ok(p.PauseQueue(name="serial"))
    ids = [await client.add("sleep 0.2", queue="serial") for _ in range(3)]
    await trio.sleep(0.3)
    listed = await client.ok(p.ListJobs(ids=ids))
    assert isinstance(listed, p.JobList) and {j.state for j in listed.jobs} == {"pending"}
    await client.ok(p.PauseQueue(name="serial", paused=False))
    await client.wait(*ids)
    runs = [(await client.job(i)).runs[0] for i in ids]
    for earlier, later in itertools.pairwise(runs):
        assert earlier.ended_at is not None and later.started_at >= earlier.ended_at  # one at a time


async def test_unknown_queue_is_refused(client: AsyncClient) -> None:
    response = await client.request(
        p.AddJobs(jobs=[p.JobSpec(command="true", queue="nope")], cwd="/tmp", env={})
    )
    assert isinstance(response, p.Error) and response.code == "not_found" and "nope" in response.message


async def test_workers_scale_and_slots(client: AsyncClient) -> None:
    await client.ok(p.ScaleWorkers(concurrency=3))
    ids = [await client.add("sleep 0.5") for _ in range(4)]
    await trio.sleep(0.25)
    workers = await client.ok(p.ListWorkers())
    assert isinstance(workers, p.Workers) and workers.concurrency == 3
    assert sorted(s.job_id for s in workers.slots) == ids[:3]
    await client.wait(*ids)
    config = await client.ok(p.GetConfig(key="concurrency"))
    assert isinstance(config, p.ConfigValues) and config.values == {"concurrency": 3}


async def test_status_counts(client: AsyncClient) -> None:
    ok = await client.add("true")
    bad = await client.add("false", max_retries=0)
    await client.wait(ok, bad)
    status = await client.ok(p.GetStatus())
    assert isinstance(status, p.Status)
    assert status.counts["completed"] == 1 and status.counts["dead"] == 1 and status.running == 0
    assert [q.name for q in status.queues] == ["default"]


async def test_spawn_error_is_a_failure_with_a_reason(client: AsyncClient, tmp_path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    job_id = await client.add("true", cwd=str(gone), max_retries=0)
    gone.rmdir()
    [job] = await client.wait(job_id)
    assert job.state == "dead" and job.error == f"could not start: working directory {gone} does not exist"


async def test_a_working_directory_that_is_a_file_is_named_so(client: AsyncClient, tmp_path) -> None:
    replaced = tmp_path / "replaced"
    replaced.write_text("")
    job_id = await client.add("true", cwd=str(replaced), max_retries=0)
    [job] = await client.wait(job_id)
    assert (
        job.state == "dead"
        and job.error == f"could not start: working directory {replaced} is not a directory"
    )


async def test_clean_and_rm(client: AsyncClient) -> None:
    done = await client.add("echo x")
    running = await client.add("sleep 5")
    await client.wait(done)
    refused = await client.request(p.RemoveJobs(ids=[running]))
    assert isinstance(refused, p.Error) and refused.code == "invalid"
    log_path = (await client.job(done)).runs[0].stdout_path
    cleaned = await client.ok(p.CleanJobs())
    assert isinstance(cleaned, p.Cleaned) and cleaned.count == 1
    assert log_path and not os.path.exists(log_path)
    missing = await client.request(p.GetJob(id=done))
    assert isinstance(missing, p.Error) and missing.code == "not_found"
    await client.ok(p.CancelJobs(ids=[running]))


async def test_an_end_the_disk_refused_is_recorded_again_until_it_is_kept(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = []
    finish_many = SqliteStore.finish_many

    def finish_once_refused(store: Store, *args: object, **kwargs: object) -> object:
        if not refusals:
            refusals.append(True)
            raise sqlite3.OperationalError("database or disk is full")
        return finish_many(store, *args, **kwargs)

    monkeypatch.setattr(SqliteStore, "finish_many", finish_once_refused)
    job_id = await client.add("sleep 0.2")  # its start commits on its own, before the end
    started = trio.current_time()
    with trio.fail_after(10):
        [job] = await client.wait(job_id)
    assert refusals and trio.current_time() - started >= 1  # kept at the retry, a second later
    assert job.state == "completed" and job.attempts == 1
    [run] = (await client.job(job_id)).runs
    assert run.exit_code == 0 and run.ended_at is not None


async def test_a_request_sent_behind_a_wait_is_answered_after_it(client: AsyncClient) -> None:
    """While a `wait` waits, the daemon watches its connection for a hang-up;
    a request the client sent ahead meanwhile is kept and answered in turn."""
    job_id = await client.add("true", delay=3600)
    await client.send_raw(p.encode_frame(p.WaitJobs(ids=[job_id], timeout=0.2)))
    await client.send_raw(p.encode_frame(p.GetStatus()))
    waited = await client.receive()
    assert isinstance(waited, p.Waited) and waited.timed_out
    assert isinstance(await client.receive(), p.Status)


async def test_a_waiter_that_hangs_up_stops_waiting(daemon: DaemonHandle, client: AsyncClient) -> None:
    job_id = await client.add("true", delay=3600)
    watchers = daemon.runner.daemon.watchers
    waiting = await daemon.client()
    await waiting.send_raw(p.encode_frame(p.WaitJobs(ids=[job_id])))
    with trio.fail_after(5):
        while not watchers._waiters:
            await trio.sleep(0.01)
    await waiting.aclose()
    with trio.fail_after(5):
        while watchers._waiters:
            await trio.sleep(0.01)


async def test_a_log_read_past_its_end_is_empty(client: AsyncClient) -> None:
    # Regression: an offset beyond what lseek accepts was an internal error.
    job_id = await client.add("echo hi")
    await client.wait(job_id)
    for offset in (3, 2**62):
        chunk = await client.ok(p.ReadLog(id=job_id, offset=offset))
        assert isinstance(chunk, p.LogChunk) and (chunk.data, chunk.size) == (b"", 3)
