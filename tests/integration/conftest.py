"""An in-process daemon under pytest-trio, and a small async client for it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from queued import protocol as p
from queued.daemon import DaemonConfig, Runner
from queued.settings import Settings


class AsyncClient:
    """Speaks the protocol over a trio socket: the daemon under test shares our loop."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames = p.FrameBuffer()

    @classmethod
    async def connect(cls, path: Path) -> AsyncClient:
        client = cls(await trio.open_unix_socket(str(path)))
        welcome = await client.request(p.Hello(protocol=p.PROTOCOL_VERSION))
        assert isinstance(welcome, p.Welcome), welcome
        return client

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> p.Response | None:
        while True:
            body = self.frames.next_frame()
            if body is not None:
                return p.decode_response(body)
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.frames.feed(data)

    async def request(self, message: p.Request) -> p.Response:
        await self.stream.send_all(p.encode_frame(message))
        response = await self.receive()
        assert response is not None, "daemon closed the connection"
        return response

    async def ok(self, message: p.Request) -> p.Response:
        response = await self.request(message)
        assert not isinstance(response, p.Error), response
        return response

    async def add(self, command: str, **fields: object) -> int:
        response = await self.ok(
            p.AddJobs(jobs=[p.JobSpec(command=command, **fields)], cwd=os.getcwd(), env=dict(os.environ))
        )
        assert isinstance(response, p.Added)
        return response.ids[0]

    async def wait(self, *ids: int, timeout: float = 30) -> list[p.Job]:
        response = await self.ok(p.WaitJobs(ids=list(ids), timeout=timeout))
        assert isinstance(response, p.Waited) and not response.timed_out, response
        return response.jobs

    async def job(self, job_id: int) -> p.JobDetail:
        response = await self.ok(p.GetJob(id=job_id))
        assert isinstance(response, p.JobDetail)
        return response

    async def aclose(self) -> None:
        await self.stream.aclose()


class DaemonHandle:
    def __init__(self, runner: Runner, config: DaemonConfig) -> None:
        self.runner = runner
        self.config = config

    async def client(self) -> AsyncClient:
        return await AsyncClient.connect(self.config.socket_path)


def make_config(tmp_path: Path, **settings: object) -> DaemonConfig:
    base = {"concurrency": 2, "kill_grace": 1.0, **settings}
    return DaemonConfig(
        data_dir=tmp_path / "data",
        socket_path=tmp_path / "run" / "queued.sock",
        settings=Settings(**base),  # type: ignore[arg-type]
    )


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonHandle]:
    config = make_config(tmp_path)
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        yield DaemonHandle(runner, config)
        runner.request_shutdown("now")


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_daemon(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[DaemonHandle]:
    """A daemon on each engine: SQLite, and PostgreSQL (skipped where it cannot run)."""
    config = make_config(tmp_path)
    if request.param == "postgresql":
        config.store = request.getfixturevalue("postgres_url")
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        yield DaemonHandle(runner, config)
        runner.request_shutdown("now")


@pytest.fixture
async def any_client(any_daemon: DaemonHandle) -> AsyncIterator[AsyncClient]:
    client = await any_daemon.client()
    yield client
    await client.aclose()


@pytest.fixture
async def client(daemon: DaemonHandle) -> AsyncIterator[AsyncClient]:
    client = await daemon.client()
    yield client
    await client.aclose()
