"""Clients' mistakes get an error, never crash the daemon, and change nothing."""

from __future__ import annotations

import struct
from pathlib import Path

import msgspec
import pytest
import trio

from queued import protocol as p
from queued.daemon import Runner

from .conftest import AsyncClient, DaemonHandle, make_config


async def snapshot(client: AsyncClient) -> tuple[list[p.Job], dict[str, int]]:
    jobs = await client.ok(p.ListJobs())
    status = await client.ok(p.GetStatus())
    assert isinstance(jobs, p.JobList) and isinstance(status, p.Status)
    return jobs.jobs, status.counts


def raw_frame(obj: object) -> bytes:
    body = msgspec.msgpack.encode(obj)
    return struct.pack(">I", len(body)) + body


async def test_wrong_types_and_values_are_refused_with_the_field(any_client: AsyncClient) -> None:
    client = any_client  # on each engine: a refusal changes nothing in either store
    await client.wait(await client.add("true"))
    before = await snapshot(client)
    cases = [
        ({"op": "add", "jobs": [{"command": "true", "max_retries": "x"}], "cwd": "/"}, "max_retries"),
        ({"op": "add", "jobs": [{"command": "true", "max_retries": -1}], "cwd": "/"}, "max_retries"),
        ({"op": "add", "jobs": [{"command": ""}], "cwd": "/"}, "command"),
        ({"op": "add", "jobs": [], "cwd": "/"}, "jobs"),
        ({"op": "add", "jobs": [{"command": "true", "bogus": 1}], "cwd": "/"}, "bogus"),
        ({"op": "get", "id": 0}, "id"),
        ({"op": "frobnicate"}, "frobnicate"),
        ({"op": "scale", "concurrency": -2}, "concurrency"),
        ([1, 2, 3], "object"),
    ]
    for request, word in cases:
        await client.send_raw(raw_frame(request))
        response = await client.receive()
        assert isinstance(response, p.Error) and response.code == "bad_request", (request, response)
        assert word in response.message, (word, response.message)
    for request in (
        p.AddJobs(jobs=[p.JobSpec(command="   ")], cwd="/", env={}),
        p.AddJobs(jobs=[p.JobSpec(command="true", after=[12345])], cwd="/", env={}),
        p.AddJobs(
            jobs=[p.JobSpec(command="true"), p.JobSpec(command="true", queue="ghost")], cwd="/", env={}
        ),
        p.AddJobs(jobs=[p.JobSpec(command="true", delay=1, run_at=2)], cwd="/", env={}),
        p.AddJobs(jobs=[p.JobSpec(command="true")], cwd="relative", env={}),
        p.RetryJobs(ids=[1, 999]),
        p.SetConfig(key="max-retries", value="-3"),
        p.SetConfig(key="nonsense", value="1"),
        p.RemoveQueue(name="default"),
    ):
        response = await client.request(request)
        assert isinstance(response, p.Error) and response.code in ("invalid", "not_found"), (
            request,
            response,
        )
    assert await snapshot(client) == before


async def test_garbage_closes_only_that_connection(daemon: DaemonHandle, client: AsyncClient) -> None:
    await client.wait(await client.add("true"))
    before = await snapshot(client)
    payloads = [
        b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1",  # msgpack's never-used byte
        b"GET / HTTP/1.1\r\n\r\n",
        struct.pack(">I", 2**31) + b"x" * 100,  # announces 2 GiB
        b"\x00\x00\x00\x10short",  # truncated, then closed
        b"",
    ]
    for payload in payloads:
        stream = await trio.open_unix_socket(str(daemon.config.socket_path))
        if payload:
            await stream.send_all(payload)
        await stream.send_eof()
        with trio.fail_after(5):
            while await stream.receive_some(65536):
                pass  # the daemon answers (an error) or just closes
        await stream.aclose()
    # Garbage after a good handshake, too: its reason, then the end.
    other = await daemon.client()
    await other.send_raw(b"\x00\x00\x00\x03\xc1\xc1\xc1")
    response = await other.receive()
    assert isinstance(response, p.Error) and response.code == "bad_request"
    assert "not valid msgpack" in response.message and "\n" not in response.message
    assert await other.receive() is None
    await other.aclose()
    assert await snapshot(client) == before
    assert len(daemon.runner.supervisor.running) == 0


async def test_oversized_frame_is_refused_before_reading_it(daemon: DaemonHandle) -> None:
    other = await daemon.client()
    await other.send_raw(struct.pack(">I", p.MAX_FRAME + 1))
    response = await other.receive()
    assert isinstance(response, p.Error) and response.code == "too_large"
    assert await other.receive() is None
    await other.aclose()


async def test_version_mismatch_is_explained(daemon: DaemonHandle) -> None:
    stream = await trio.open_unix_socket(str(daemon.config.socket_path))
    await stream.send_all(p.encode_frame(p.Hello(protocol=p.PROTOCOL_VERSION + 1)))
    client = AsyncClient(stream)
    response = await client.receive()
    assert isinstance(response, p.Error) and response.code == "version"
    assert "protocol version mismatch" in response.message
    await stream.aclose()


async def test_a_rejected_batch_adds_nothing(any_daemon: DaemonHandle, any_client: AsyncClient) -> None:
    client = any_client
    response = await client.request(
        p.AddJobs(jobs=[p.JobSpec(command="true"), p.JobSpec(command="true", after=[777])], cwd="/", env={})
    )
    assert isinstance(response, p.Error) and response.code == "not_found"
    good = await client.add("true")
    if any_daemon.config.store is None:
        assert good == 1  # SQLite: the refused batch consumed no id (PostgreSQL's sequence may have)
    jobs = await client.ok(p.ListJobs())
    assert isinstance(jobs, p.JobList) and [j.id for j in jobs.jobs] == [good]


async def test_an_answer_too_large_for_a_frame_is_an_error(client: AsyncClient, monkeypatch) -> None:
    await client.ok(p.PauseQueue(name="default"))
    await client.ok(p.AddJobs(jobs=[p.JobSpec(command="x" * 1000)] * 50, cwd="/", env={}))
    monkeypatch.setattr(p, "MAX_FRAME", 10_000)
    response = await client.request(p.ListJobs())
    assert isinstance(response, p.Error) and response.code == "too_large" and "--limit" in response.message
    monkeypatch.undo()
    assert isinstance(await client.request(p.ListJobs(limit=1)), p.JobList)


async def test_text_that_is_not_utf8_is_refused_with_its_reason(any_daemon: DaemonHandle) -> None:
    """A lone surrogate or a stray byte in a msgpack string (an SDK written in
    another language): a one-line reason on either engine, before or after the
    hello, and the daemon serves the next client."""
    lone_surrogate = b"\xed\xa0\x80"
    for text in (lone_surrogate, b"\xff\xfe"):
        body = msgspec.msgpack.encode({"op": "list", "label": "@"}).replace(
            b"\xa1@", bytes([0xA0 | len(text)]) + text
        )
        client = await any_daemon.client()
        await client.send_raw(struct.pack(">I", len(body)) + body)
        response = await client.receive()
        assert isinstance(response, p.Error) and response.code == "bad_request", response
        assert "UTF-8" in response.message
        await client.aclose()
    stream = await trio.open_unix_socket(str(any_daemon.config.socket_path))
    body = msgspec.msgpack.encode({"op": "hello", "protocol": 1, "client": "@"}).replace(
        b"\xa1@", b"\xa2\xff\xfe"
    )
    await stream.send_all(struct.pack(">I", len(body)) + body)
    response = await AsyncClient(stream).receive()
    assert isinstance(response, p.Error) and "UTF-8" in response.message
    await stream.aclose()
    client = await any_daemon.client()
    assert isinstance(await client.request(p.GetStatus()), p.Status)
    await client.aclose()


async def test_a_nul_byte_in_a_list_filter_is_refused_alike_on_both_engines(any_client: AsyncClient) -> None:
    """PostgreSQL refuses NUL in text where SQLite matches nothing: the rule is
    ours, so both engines answer the same reason (it was `storage: database
    error` on PostgreSQL)."""
    await any_client.wait(await any_client.add("true"))
    for request in (p.ListJobs(label="a\0b"), p.ListJobs(command="tr\0ue")):
        response = await any_client.request(request)
        assert isinstance(response, p.Error) and response.code == "invalid", response
        assert "NUL byte" in response.message
    jobs = await any_client.ok(p.ListJobs(command="true"))
    assert isinstance(jobs, p.JobList) and len(jobs.jobs) == 1


async def test_clients_over_the_cap_are_turned_away_with_a_reason_and_jobs_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 idle connections took every descriptor, and then no job could
    start and no client learnt why; past the cap (here 3) a client gets
    "busy" at once, jobs start, and a freed place is taken again."""
    from queued.processes import descriptors

    monkeypatch.setattr(descriptors, "MAX_CLIENTS", 3)
    monkeypatch.setattr(descriptors, "MIN_CLIENTS", 3)
    config = make_config(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(Runner(config).run)
        held = [await AsyncClient.connect(config.socket_path) for _ in range(3)]
        stream = await trio.open_unix_socket(str(config.socket_path))
        turned_away = AsyncClient(stream)
        with trio.fail_after(10):  # (without the cap: it waits for ever for our hello)
            answer = await turned_away.receive()
        assert isinstance(answer, p.Error) and answer.code == "busy", answer
        assert "3 clients are connected" in answer.message and "try again" in answer.message
        assert await turned_away.receive() is None
        await turned_away.aclose()
        job_id = await held[0].add("true")
        [done] = await held[0].wait(job_id)
        assert done.state == "completed"
        await held[2].aclose()
        with trio.fail_after(5):
            while True:  # the daemon notices the hang-up a moment later
                try:
                    again = await AsyncClient.connect(config.socket_path)
                    break
                except (AssertionError, trio.BrokenResourceError):
                    await trio.sleep(0.01)
        assert isinstance(await again.request(p.GetStatus()), p.Status)
        for client in (*held[:2], again):
            await client.aclose()
        nursery.cancel_scope.cancel()
