"""Waiting reads of a running attempt's output (`ReadLog.wait`, what `logs -f`
sends): answered when the output grows or the attempt ends, on each engine.
With PostgreSQL the output is read from the store, and this node's own
attempts wake the readers (no pace at all); log files are read again at a
steady pace (FILES_PACE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from queued import protocol as p
from queued.daemon import Runner
from tests.integration.conftest import AsyncClient, make_config


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    pytest.importorskip("psycopg")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def client(tmp_path: Path, store_url: str | None) -> AsyncIterator[AsyncClient]:
    config = make_config(tmp_path)
    config.store = store_url
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        client = await AsyncClient.connect(config.socket_path)
        yield client
        await client.aclose()
        runner.request_shutdown("now")


async def read(client: AsyncClient, job_id: int, offset: int = 0, wait: float = 0.0) -> p.LogChunk:
    chunk = await client.ok(p.ReadLog(id=job_id, offset=offset, wait=wait))
    assert isinstance(chunk, p.LogChunk)
    return chunk


async def until_running(client: AsyncClient, job_id: int) -> None:
    with trio.fail_after(20):
        while (await client.job(job_id)).job.state != "running":
            await trio.sleep(0.02)


async def test_a_waiting_read_answers_when_the_output_grows(client: AsyncClient, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = await client.add(f"echo a; while [ ! -e {go} ]; do sleep 0.02; done; echo b")
    await until_running(client, job_id)
    got = b""
    with trio.fail_after(20):  # far less than the waits asked for: they were woken
        while got != b"a\n":
            got += (await read(client, job_id, len(got), wait=60)).data
        go.touch()
        while got != b"a\nb\n":
            chunk = await read(client, job_id, len(got), wait=60)
            got += chunk.data
    await client.wait(job_id)


async def test_a_waiting_read_of_an_ended_attempt_answers_at_once(client: AsyncClient) -> None:
    job_id = await client.add("echo done")
    await client.wait(job_id)
    with trio.fail_after(20):
        chunk = await read(client, job_id, offset=5, wait=60)
    assert (chunk.data, chunk.running, chunk.job_state) == (b"", False, "completed")


async def test_a_waiting_read_ends_with_its_silent_attempt(client: AsyncClient, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = await client.add(f"while [ ! -e {go} ]; do sleep 0.02; done")
    await until_running(client, job_id)
    async with trio.open_nursery() as nursery:
        answers: list[p.LogChunk] = []

        async def follow() -> None:
            while not answers or answers[-1].running:
                answers.append(await read(client, job_id, wait=60))

        nursery.start_soon(follow)
        await trio.sleep(0.3)
        go.touch()
        with trio.fail_after(20):  # its end woke the reader
            while not answers or answers[-1].running:
                await trio.sleep(0.02)
    assert (answers[-1].data, answers[-1].job_state) == (b"", "completed")


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # SQLite keeps no output in the store
async def test_jobs_that_write_nothing_add_no_record_and_chatty_ones_share_few(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path: a job writing nothing costs the store nothing more; jobs
    writing a line every few milliseconds cost a few records a second in all,
    not one per line."""
    from queued.store.postgres.output import Output

    records: list[int] = []
    append = Output.append
    monkeypatch.setattr(
        Output, "append", lambda self, chunks: records.append(len(chunks)) or append(self, chunks)
    )
    silent = [await client.add("true") for _ in range(20)]
    await client.wait(*silent)
    assert records == []
    chatty = [await client.add("for i in $(seq 100); do echo $i; sleep 0.005; done") for _ in range(2)]
    await client.wait(*chatty)
    for job_id in chatty:
        chunk = await read(client, job_id)
        assert chunk.data == b"".join(b"%d\n" % i for i in range(1, 101))
    assert len(records) < 100  # 200 lines over a second or more: at most ~10 records a second, and the ends
