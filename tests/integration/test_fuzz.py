"""Random and mutated frames against a live daemon: it keeps serving, and a
rejected request never changes the store."""

from __future__ import annotations

import struct
from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queued import protocol as p
from queued.daemon import Runner

from .conftest import AsyncClient, make_config

VALID = [
    p.AddJobs(jobs=[p.JobSpec(command="true", max_retries=1, after=[1])], cwd="/tmp", env={"A": "1"}),
    p.CancelJobs(ids=[1, 2]),
    p.RetryJobs(ids=[1]),
    p.ListJobs(states=["dead"], limit=3),
    p.SetConfig(key="max-retries", value="4"),
    p.AddQueue(name="q", concurrency=2),
    p.CleanJobs(older_than=5),
]
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def mutate(message: p.Request, data: st.DataObject) -> bytes:
    """A valid request with one field replaced by a random value, as a frame."""
    body = msgspec.to_builtins(message)
    key = data.draw(st.sampled_from(sorted(body)))
    body[key] = data.draw(msgpack_values)
    encoded = msgspec.msgpack.encode(body)
    return struct.pack(">I", len(encoded)) + encoded


frames = st.one_of(
    st.binary(max_size=200),  # raw garbage, no framing
    st.binary(max_size=200).map(lambda b: struct.pack(">I", len(b)) + b),  # framed garbage
    msgpack_values.map(msgspec.msgpack.encode).map(lambda b: struct.pack(">I", len(b)) + b),
    st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n) + b"\x80"),  # lying lengths
)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_fuzzed_frames_leave_the_daemon_serving_and_the_store_unchanged(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    config = make_config(tmp_path)
    if engine == "postgresql":
        config.store = request.getfixturevalue("postgres_url")
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        good = await AsyncClient.connect(config.socket_path)
        await good.ok(p.PauseQueue(name="default"))  # nothing runs: the store only changes by requests
        await good.add("true")

        async def snapshot() -> bytes:
            jobs = await good.ok(p.ListJobs())
            status = await good.ok(p.GetStatus())
            config_values = await good.ok(p.GetConfig())
            assert isinstance(status, p.Status)
            return msgspec.msgpack.encode([jobs, status.counts, status.queues, config_values])

        before = await snapshot()
        cases: list[bytes] = []

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def collect(data: st.DataObject) -> None:
            if data.draw(st.booleans()):
                cases.append(data.draw(frames))
            else:
                cases.append(mutate(data.draw(st.sampled_from(VALID)), data))

        collect()
        refused = 0
        for frame in cases:
            client = await AsyncClient.connect(config.socket_path)
            await client.send_raw(frame)
            await client.stream.send_eof()
            with trio.fail_after(5):
                reply = await client.receive()
            await client.aclose()
            if reply is None or isinstance(reply, p.Error):
                assert await snapshot() == before, frame  # refused: nothing changed
                refused += 1
            else:
                before = await snapshot()  # a mutation that is still valid was carried out
        assert refused > len(cases) // 2
        assert await snapshot() == before
        status = await good.ok(p.GetStatus())
        assert isinstance(status, p.Status) and status.pid
        await good.aclose()
        runner.request_shutdown("now")
