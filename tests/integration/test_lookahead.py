"""Jobs started from the supervisor's read-ahead: never a job that changed since
the read, never ahead of one that outranks it, never without its record."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import trio

from queued import protocol as p
from queued.daemon import Runner
from queued.store import Refused, Store
from queued.store.sqlite import SqliteStore

from .conftest import AsyncClient, DaemonHandle, make_config


async def add_all(client: AsyncClient, *specs: p.JobSpec) -> list[int]:
    response = await client.ok(p.AddJobs(jobs=list(specs), cwd=os.getcwd(), env=dict(os.environ)))
    assert isinstance(response, p.Added)
    return response.ids


async def read_ahead(daemon: DaemonHandle) -> list[int]:
    """The ids the supervisor holds, once it holds some."""
    read = daemon.runner.supervisor.read_ahead
    with trio.fail_after(5):
        while not read.due_jobs():
            await trio.sleep(0.01)
    return [job.id for job in read.due_jobs()]


def count_reads(monkeypatch) -> list[float]:  # type: ignore[no-untyped-def]
    """The `now` of every read ahead the supervisor makes from here on."""
    real_lookahead = SqliteStore.lookahead
    reads: list[float] = []

    def lookahead_counted(store: Store, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(kwargs["now"])
        return real_lookahead(store, **kwargs)

    monkeypatch.setattr(SqliteStore, "lookahead", lookahead_counted)
    return reads


def appends(path: Path, text: str) -> str:
    return f"echo {text} >> {path}"


async def behind_a_blocker(daemon: DaemonHandle, client: AsyncClient, out: Path, *later: str) -> list[int]:
    """One slot, taken by a job that appends "first" to `out` after 0.3 s; jobs
    appending each of `later` queued behind it, read ahead and not taken."""
    await client.ok(p.ScaleWorkers(concurrency=1))
    ids = await add_all(
        client,
        p.JobSpec(command=f"sleep 0.3; {appends(out, 'first')}"),
        *(p.JobSpec(command=appends(out, word)) for word in later),
    )
    assert await read_ahead(daemon) == ids[1:]
    return ids


async def test_a_job_canceled_after_the_read_never_runs(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    first, second, third = await behind_a_blocker(daemon, client, out, "second", "third")
    await client.ok(p.CancelJobs(ids=[third]))
    jobs = {j.id: j for j in await client.wait(first, second, third)}
    assert out.read_text().split() == ["first", "second"]
    assert jobs[third].state == "canceled" and (await client.job(third)).runs == []


async def test_a_paused_queue_stops_what_was_read_ahead(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    first, second = await behind_a_blocker(daemon, client, out, "second")
    await client.ok(p.PauseQueue(name="default"))
    await client.wait(first)
    await trio.sleep(0.2)
    assert out.read_text().split() == ["first"]
    listed = await client.ok(p.ListJobs(ids=[second]))
    assert isinstance(listed, p.JobList) and listed.jobs[0].state == "pending"


async def test_an_added_job_that_outranks_the_read_runs_first(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    ids = await behind_a_blocker(daemon, client, out, "plain")
    [urgent] = await add_all(client, p.JobSpec(command=appends(out, "urgent"), priority=-5))
    await client.wait(*ids, urgent)
    assert out.read_text().split() == ["first", "urgent", "plain"]


async def test_a_released_dependent_outranks_the_read(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    await client.ok(p.ScaleWorkers(concurrency=1))
    await client.ok(p.PauseQueue(name="default"))  # everything in place before the first read
    first, plain = await add_all(
        client,
        p.JobSpec(command=f"sleep 0.3; {appends(out, 'first')}"),
        p.JobSpec(command=appends(out, "plain")),
    )
    [dependent] = await add_all(
        client, p.JobSpec(command=appends(out, "dependent"), after=[first], priority=-1)
    )
    await client.ok(p.PauseQueue(name="default", paused=False))
    assert await read_ahead(daemon) == [plain]
    await client.wait(first, plain, dependent)
    assert out.read_text().split() == ["first", "dependent", "plain"]


async def test_a_start_the_store_refuses_is_stopped_and_the_job_runs_later(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "ran"
    refused: list[int] = []
    real_start = SqliteStore.start

    def start_refusing_once(store: Store, job, now: float):  # type: ignore[no-untyped-def]
        if not refused:
            refused.append(job.id)
            raise Refused("invalid", "refused by the test")
        return real_start(store, job, now)

    monkeypatch.setattr(SqliteStore, "start", start_refusing_once)
    job_id = await client.add(f"{appends(out, 'start')}; sleep 0.5; {appends(out, 'end')}")
    [job] = await client.wait(job_id)  # after the hold that follows a refusal
    assert refused == [job_id]
    assert job.state == "completed" and job.attempts == 1
    # The first process was stopped, perhaps before it printed anything.
    assert out.read_text().split() in (["start", "start", "end"], ["start", "end"])
    assert [r.attempt for r in (await client.job(job_id)).runs] == [1]


async def test_a_read_made_stale_in_flight_falls_back_to_a_committed_claim(
    daemon: DaemonHandle, client: AsyncClient, monkeypatch
) -> None:
    db = daemon.runner.supervisor.db
    real_lookahead, real_claim = SqliteStore.lookahead, SqliteStore.claim
    claims: list[list[int]] = []

    def lookahead_raced(store: Store, **kwargs):
        ahead = real_lookahead(store, **kwargs)
        db.epoch += 1  # as if a cancel had been queued while this read ran
        return ahead

    def claim_counted(store: Store, **kwargs):
        claimed = real_claim(store, **kwargs)
        claims.append([job.id for job in claimed.value])
        return claimed

    monkeypatch.setattr(SqliteStore, "lookahead", lookahead_raced)
    monkeypatch.setattr(SqliteStore, "claim", claim_counted)
    job_id = await client.add("true")
    [job] = await client.wait(job_id)
    assert job.state == "completed" and [job_id] in claims


async def test_a_read_ahead_full_of_one_busy_queue_does_not_spin(
    daemon: DaemonHandle, client: AsyncClient, monkeypatch
) -> None:
    """The jobs read ahead all wait for a queue at its limit, and another queue's
    job ran from a committed claim: the loop must sleep until something changes."""
    reads = count_reads(monkeypatch)
    await client.ok(p.AddQueue(name="serial", concurrency=1))
    await client.ok(p.PauseQueue(name="serial"))
    await add_all(client, *(p.JobSpec(command="sleep 1", queue="serial") for _ in range(60)))
    [other] = await add_all(client, p.JobSpec(command="true"))
    await client.ok(p.PauseQueue(name="serial", paused=False))
    await client.wait(other)
    await trio.sleep(0.1)
    before = len(reads)
    await trio.sleep(0.5)  # one serial job runs; nothing else can start
    assert len(reads) - before <= 2


async def test_timers_start_their_jobs_from_memory_in_claim_order(
    daemon: DaemonHandle, client: AsyncClient, tmp_path: Path, monkeypatch
) -> None:
    reads = count_reads(monkeypatch)
    await client.ok(p.ScaleWorkers(concurrency=1))
    out = tmp_path / "ran"
    at = time.time() + 0.5
    low, high = await add_all(
        client,
        p.JobSpec(command=appends(out, "low"), run_at=at, priority=5),
        p.JobSpec(command=appends(out, "high"), run_at=at, priority=1),
    )
    with trio.fail_after(5):
        while not reads:  # the read that follows the add
            await trio.sleep(0.01)
    await trio.sleep(0.05)
    before = len(reads)
    await client.wait(low, high)
    assert len(reads) == before  # both started, one after the other, with no read
    assert out.read_text().split() == ["high", "low"]
    assert (await client.job(high)).runs[0].started_at >= at


async def test_a_failed_spawn_does_not_start_jobs_beyond_the_slots(
    client: AsyncClient, daemon: DaemonHandle
) -> None:
    # A spawn that fails is an end known at once: ended inside the start that
    # read it ahead, it would start the next jobs from within, and the outer
    # start would fill slots it no longer has. It is handed on as an end.
    await client.ok(p.PauseQueue(name="default"))  # so that one read takes them all
    response = await client.ok(
        p.AddJobs(jobs=[p.JobSpec(command="true", max_retries=0)], cwd="/nonexistent/queued-test", env={})
    )
    assert isinstance(response, p.Added)
    await add_all(client, *[p.JobSpec(command="sleep 0.3") for _ in range(4)])
    await client.ok(p.PauseQueue(name="default", paused=False))
    supervisor, most = daemon.runner.supervisor, 0
    with trio.fail_after(10):
        while (await client.ok(p.GetStatus())).counts.get("completed", 0) < 4:  # type: ignore[union-attr]
            most = max(most, len(supervisor.running))
            await trio.sleep(0.005)
    assert most == 2
    [failed] = await client.wait(*response.ids)
    assert failed.state == "dead" and failed.error.startswith("could not start: working directory")


async def test_a_claim_in_flight_when_claiming_stops_starts_nothing(tmp_path: Path, monkeypatch) -> None:
    """A shutdown that comes while a committed claim is being made: the job
    claimed waits again, its claim undone on disk, instead of starting as the
    daemon stops (before, it started and its attempt was cut short: one of
    its tries spent)."""
    config = make_config(tmp_path)
    real_lookahead, real_claim = SqliteStore.lookahead, SqliteStore.claim
    claiming = threading.Event()
    runner: Runner | None = None

    def lookahead_raced(store: Store, **kwargs):
        ahead = real_lookahead(store, **kwargs)
        assert runner is not None
        runner.supervisor.db.epoch += 1  # as if a cancel had been queued while this read ran
        return ahead

    def claim_slowly(store: Store, **kwargs):
        # A claim that took the job is held until the shutdown reached the
        # supervisor (a fixed sleep lost that race on a loaded machine, and an
        # empty claim at start set the signal before the job existed).
        claimed = real_claim(store, **kwargs)
        if claimed.value:
            claiming.set()
            deadline = time.monotonic() + 5
            assert runner is not None
            while not runner.supervisor.claiming_stopped.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        return claimed

    monkeypatch.setattr(SqliteStore, "lookahead", lookahead_raced)
    monkeypatch.setattr(SqliteStore, "claim", claim_slowly)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(Runner(config).run)
            client = await AsyncClient.connect(config.socket_path)
            # Added to a paused queue and resumed: the claim that takes it then
            # comes in a batch of its own, after the add's answer (in the add's
            # own batch, the held claim would hold back the answer too).
            await client.ok(p.PauseQueue(name="default"))
            job_id = await client.add("sleep 60")
            await client.ok(p.PauseQueue(name="default", paused=False))
            await trio.to_thread.run_sync(claiming.wait)
            runner.request_shutdown("now")
            await client.aclose()
    conn = sqlite3.connect(config.data_dir / "queue.db")
    state = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    attempts = conn.execute("SELECT count(*) FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]
    conn.close()
    assert (state, attempts) == ("pending", 0)


async def test_a_store_failing_in_a_committed_claim_holds_claiming_back_and_nothing_stops(
    daemon: DaemonHandle, client: AsyncClient, monkeypatch
) -> None:
    """Jobs read ahead all wait for a full queue, so the loop claims from the
    store: a full disk there holds claiming back a second; the supervisor (and
    every running job) goes on, and the job runs once the disk has room."""
    real_claim = SqliteStore.claim
    refusals: list[bool] = []

    def claim_on_a_full_disk(store: Store, **kwargs):  # type: ignore[no-untyped-def]
        if not refusals:
            refusals.append(True)
            raise sqlite3.OperationalError("database or disk is full")
        return real_claim(store, **kwargs)

    await client.ok(p.AddQueue(name="serial", concurrency=1))
    await client.ok(p.PauseQueue(name="serial"))
    await add_all(client, *(p.JobSpec(command="sleep 30", queue="serial") for _ in range(60)))
    await client.ok(p.PauseQueue(name="serial", paused=False))
    monkeypatch.setattr(SqliteStore, "claim", claim_on_a_full_disk)
    [other] = await add_all(client, p.JobSpec(command="true"))
    with trio.fail_after(10):
        # No request meanwhile: a failing commit fails every call of its batch.
        while not refusals:
            await trio.sleep(0.01)
        [job] = await client.wait(other)
    assert refusals and job.state == "completed"
    status = await client.ok(p.GetStatus())
    assert status.accepting and status.running == 1  # the serial job still runs
