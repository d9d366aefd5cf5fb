"""Resources and weights in the supervisor (SQLite, and the committed claim
on PostgreSQL): a node with a configured capacity starts only what fits,
fills gaps behind a big job (backfill) until it has waited its patience,
then holds what is free for it; the slots come back at every end (success,
retry, cancel) and follow `workers scale`; GPU jobs get their own devices."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from queued import protocol as p
from queued.daemon import Runner
from queued.processes.supervisor import Supervisor

from .conftest import AsyncClient, make_config

LONG = 3600.0  # a patience no test waits out


class Node:
    """A daemon with resources, a client, and gates that jobs wait behind."""

    def __init__(self, runner: Runner, client: AsyncClient, gates: Path) -> None:
        self.runner = runner
        self.client = client
        self.gates = gates

    @property
    def supervisor(self) -> Supervisor:
        return self.runner.supervisor

    def gated(self, name: str, extra: str = "") -> str:
        """A command that writes what it was given, then waits until `open(name)`."""
        gate = self.gates / name
        return (
            f'echo "${{CUDA_VISIBLE_DEVICES-unset}}" > {gate}.seen; {extra}'
            f"while [ ! -e {gate} ]; do sleep 0.01; done"
        )

    def open(self, name: str) -> None:
        (self.gates / name).touch()

    async def seen(self, name: str) -> str:
        """What the job `name` wrote at its start (once it wrote its line)."""
        path = self.gates / f"{name}.seen"
        with trio.fail_after(20):
            while not (path.exists() and path.read_text().endswith("\n")):
                await trio.sleep(0.01)
        return path.read_text().strip()

    async def add(self, name: str, **fields: object) -> int:
        return await self.client.add(self.gated(name), **fields)

    async def running(self, *ids: int, held: int | None = None) -> None:
        """Wait until exactly `ids` run here (and `held` slots are held)."""
        with trio.fail_after(20):
            while set(self.supervisor.running) != set(ids) or (
                held is not None and self.supervisor.attempts.slots_held != held
            ):
                await trio.sleep(0.01)

    async def still(self, *ids: int) -> None:
        """`ids` run, and nothing else starts for a while (what should wait, waits)."""
        await self.running(*ids)
        await trio.sleep(0.3)
        assert set(self.supervisor.running) == set(ids)


async def start_node(
    tmp_path: Path,
    nursery: trio.Nursery,
    *,
    concurrency: int,
    resources: dict[str, int] | None = None,
    patience: float = LONG,
    store: str | None = None,
) -> Node:
    config = make_config(tmp_path, concurrency=concurrency)
    config.resources = resources if resources is not None else {"gpu": 0}
    config.starvation_patience = patience
    config.store = store
    runner = await nursery.start(Runner(config).run)
    client = await AsyncClient.connect(config.socket_path)
    gates = tmp_path / "gates"
    gates.mkdir()
    return Node(runner, client, gates)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    yield request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


async def test_backfill_then_the_big_job_runs_alone(tmp_path: Path, store: str | None) -> None:
    async with trio.open_nursery() as nursery:
        node = await start_node(tmp_path, nursery, concurrency=2, store=store)
        first = await node.add("first")
        await node.running(first)
        big = await node.add("big", slots=2)
        small = await node.add("small")
        # The big job does not fit beside `first`; the small one behind it does.
        await node.still(first, small)
        node.open("first")
        await node.still(small)
        node.open("small")
        await node.running(big, held=2)
        after = await node.add("after")
        await node.still(big)  # it runs alone
        node.open("big")
        await node.running(after, held=1)
        node.open("after")
        await node.client.wait(first, small, big, after)
        node.runner.request_shutdown("now")


async def test_a_starved_big_job_holds_the_free_slots(tmp_path: Path, store: str | None) -> None:
    async with trio.open_nursery() as nursery:
        node = await start_node(tmp_path, nursery, concurrency=2, patience=0.5, store=store)
        first = await node.add("first")
        await node.running(first)
        big = await node.add("big", slots=2)
        await trio.sleep(0.6)  # past its patience: it holds the free slot
        small = await node.add("small")
        await node.still(first)
        node.open("first")
        await node.running(big, held=2)
        node.open("big")
        await node.running(small, held=1)
        node.open("small")
        await node.client.wait(first, big, small)
        node.runner.request_shutdown("now")


async def test_slots_come_back_after_retries_cancels_and_scaling(tmp_path: Path, store: str | None) -> None:
    async with trio.open_nursery() as nursery:
        node = await start_node(tmp_path, nursery, concurrency=3, store=store)
        client = node.client
        # A two-slot job that fails once, then succeeds: its retry takes two slots again.
        flaky = await client.add(
            f"if [ -e {tmp_path}/tried ]; then exit 0; fi; touch {tmp_path}/tried; exit 3",
            slots=2,
            max_retries=1,
            backoff_base=1,
        )
        [done] = await client.wait(flaky)
        assert done.state == "completed"
        await node.running(held=0)
        # A canceled two-slot job gives both back.
        big = await node.add("big", slots=2)
        await node.running(big, held=2)
        await client.ok(p.CancelJobs(ids=[big]))
        await node.running(held=0)
        # Scaled down below its slots, a job waits; scaled up again, it runs.
        whole = await node.add("whole", slots=3)
        await node.running(whole, held=3)
        wide = await node.add("wide", slots=2)
        narrow = await node.add("narrow")
        await client.ok(p.ScaleWorkers(concurrency=1))
        node.open("whole")
        await node.still(narrow)  # `wide` could never fit a 1-slot node: passed over
        await client.ok(p.ScaleWorkers(concurrency=3))
        await node.running(wide, narrow, held=3)
        node.open("wide")
        node.open("narrow")
        await client.wait(whole, wide, narrow)
        await node.running(held=0)
        node.runner.request_shutdown("now")


async def test_gpu_jobs_get_their_own_devices(tmp_path: Path, store: str | None) -> None:
    async with trio.open_nursery() as nursery:
        node = await start_node(
            tmp_path, nursery, concurrency=4, resources={"gpu": 2, "licence": 1}, store=store
        )
        one = await node.add("one", needs={"gpu": 1})
        two = await node.add("two", needs={"gpu": 1})
        third = await node.add("third", needs={"gpu": 1})  # waits for a GPU
        plain = await node.add("plain")
        await node.still(one, two, plain)
        assert {await node.seen("one"), await node.seen("two")} == {"0", "1"}
        assert await node.seen("plain") == ""  # on a node with GPUs, no GPU unless held
        status = await node.client.ok(p.GetStatus())
        assert isinstance(status, p.Status)
        use = status.resources[status.node]
        assert (use.slots, use.slots_used, use.gpus, use.gpus_used) == (4, 3, [0, 1], [0, 1])
        held = await node.seen("one")
        node.open("one")
        await node.running(two, third, plain)
        assert await node.seen("third") == held  # the GPU `one` gave back
        licensed = await node.add("licensed", needs={"licence": 1})
        await node.running(two, third, plain, licensed)
        use = node.supervisor.resources()
        assert (use.counts, use.counts_used) == ({"licence": 1}, {"licence": 1})
        for name in ("two", "third", "plain", "licensed"):
            node.open(name)
        await node.client.wait(one, two, third, plain, licensed)
        await node.running(held=0)
        assert node.supervisor.attempts.gpus_held == set()
        assert node.supervisor.attempts.counts_held == {"licence": 0}
        node.runner.request_shutdown("now")


async def test_a_node_without_gpus_leaves_cuda_visible_devices_alone(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        node = await start_node(tmp_path, nursery, concurrency=1)
        job = await node.client.add(node.gated("plain"), env={**os.environ, "CUDA_VISIBLE_DEVICES": "7"})
        await node.running(job)
        assert await node.seen("plain") == "7"
        node.open("plain")
        await node.client.wait(job)
        node.runner.request_shutdown("now")
