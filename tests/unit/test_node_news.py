"""Acting on other nodes' news (queued/server/news.py), with the daemon's
parts stood in for: what each kind of news makes this node do."""

from __future__ import annotations

from types import SimpleNamespace

import trio
import trio.testing

from queued import lifecycle
from queued.server.context import OutputNews, Waiter, Watchers
from queued.server.news import NodeNews
from queued.store.contract import News


class FakeSupervisor:
    def __init__(self, running: list[int]) -> None:
        self.running = running
        self.stopped: list[tuple[list[int], str]] = []
        self.woken = 0
        self.freed: list[set[str]] = []
        self.changes = 0

    def stop_jobs(self, ids: list[int], reason: str) -> None:
        self.stopped.append((ids, reason))

    def wake(self) -> None:
        self.woken += 1

    def changed_elsewhere(self) -> None:
        self.changes += 1

    def room_freed(self, queues: set[str]) -> None:
        self.freed.append(queues)

    def running_in(self) -> list[int]:
        return list(self.running)


class FakeLogFolders:
    def __init__(self, root) -> None:
        from queued.processes.log_folders import LogFolders

        self.real = LogFolders(root)

    def files_of(self, job_ids):
        return self.real.files_of(job_ids)


class FakeDb:
    def __init__(self, states: dict[int, str]) -> None:
        self.states = states
        self.reads: list[object] = []

    async def read(self, fn, *args):
        self.reads.append(fn.__name__)
        return {i: self.states[i] for i in args[0] if i in self.states}


def daemon(running=(), states=None):
    supervisor = FakeSupervisor(list(running))
    d = SimpleNamespace(
        supervisor=supervisor,
        watchers=Watchers(),
        output_news=OutputNews(),
        db=FakeDb(states or {}),
        queues_read=0,
        schedules_read=0,
    )

    def schedules_changed():
        d.schedules_read += 1

    d.schedules_changed = schedules_changed

    async def queues_changed():
        d.queues_read += 1
        supervisor.wake()

    d.queues_changed = queues_changed
    return d


def test_news_reaches_the_supervisor_waiters_and_readers() -> None:
    d = daemon(running=[7])
    news = NodeNews(d)  # type: ignore[arg-type]
    waiter = Waiter([3])
    d.watchers.watch(waiter)
    with d.output_news.watch(9) as grown:
        news.deliver(News(wake=True, room={"gpu"}, cancel=[7, 8], finished=[3], output=[9]))
        assert grown.is_set()
    assert waiter.done.is_set()
    assert d.supervisor.stopped == [([7, 8], "cancel")]  # it stops those it runs
    assert d.supervisor.freed == [{"gpu"}]
    assert d.supervisor.woken == 1
    assert d.supervisor.changes == 1  # the web page's live view reads again


async def test_after_a_reconnection_the_node_reads_again_what_it_could_have_missed() -> None:
    d = daemon(running=[1, 2], states={1: lifecycle.RUNNING, 2: lifecycle.CANCELED, 5: lifecycle.COMPLETED})
    news = NodeNews(d)  # type: ignore[arg-type]
    waiter = Waiter([5])
    d.watchers.watch(waiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(news._read_again)
        news.deliver(News(lost=True))
        assert d.output_news.remote is False
        news.deliver(News(reconnected=True))
        assert d.output_news.remote is True
        with trio.fail_after(5):
            await waiter.done.wait()
        nursery.cancel_scope.cancel()
    assert d.queues_read == 1
    assert d.supervisor.stopped == [([2], "cancel")]  # canceled while the node could not hear it


async def test_many_queue_changes_are_read_once() -> None:
    d = daemon()
    news = NodeNews(d)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            news.deliver(News(queues=True))
        nursery.start_soon(news._read_again)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert d.queues_read == 1


def test_a_change_of_schedules_or_a_reconnection_has_the_scheduler_read_them_again() -> None:
    d = daemon()
    news = NodeNews(d)  # type: ignore[arg-type]
    news.deliver(News(wake=True))
    assert d.schedules_read == 0
    news.deliver(News(schedules=True))
    assert d.schedules_read == 1
    news.deliver(News(reconnected=True))  # what was sent while the channel was closed is gone
    assert d.schedules_read == 2


async def test_jobs_deleted_elsewhere_lose_their_log_files_here(tmp_path) -> None:
    d = daemon()
    d.supervisor.log_folders = FakeLogFolders(tmp_path)
    for name in ("0/7.1.out", "0/7.1.err", "0/7.2.out", "0/70.1.out", "1/1007.1.out", "0/8.1.out"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    news = NodeNews(d)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(news._delete_removed_logs)
        news.deliver(News(removed=[7, 1007, 9]))  # 9 never ran here
        with trio.fail_after(5):
            while (tmp_path / "0/7.1.out").exists() or (tmp_path / "1/1007.1.out").exists():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*"))
    assert left == ["0/70.1.out", "0/8.1.out"]
