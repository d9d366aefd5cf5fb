"""Acting on other nodes' news (a store shared by several nodes: see
`Engine.news`): jobs to claim wake the supervisor, canceled jobs running here
stop, finished jobs reach this node's `wait`ers, output that grew its `logs -f`
readers, a change of schedules wakes the scheduler to read them again, and a
change of queues (or a
channel opened again, after which nothing missed can be told) is read again
from the store, in a task of its own so that delivery never waits."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from queued import lifecycle
from queued.server.context import Daemon
from queued.store import StorageError, Store
from queued.store.contract import News, NewsSource

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0  # after a read that failed, the next try


class NodeNews:
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self._queues = False  # the queues must be read again
        self._everything = False  # and the running and watched jobs' states too
        self._asked = trio.Event()
        self._removed: list[int] = []  # jobs deleted elsewhere whose log files here go next
        self._removals = trio.Event()

    def deliver(self, news: News) -> None:
        d = self.d
        if news.lost:
            d.output_news.remote = False  # `logs -f` of other nodes' jobs reads at a pace meanwhile
        if news.reconnected:
            d.output_news.remote = True
            news.output += d.output_news.watched_ids()  # what grew meanwhile was not told
        if news.finished or news.cancel or news.output:
            d.supervisor.changed_elsewhere()  # the web page's live view reads again
        if news.finished:
            d.watchers.notify(news.finished)
        if news.output:
            d.output_news.told(news.output)
        if news.cancel:
            d.supervisor.stop_jobs(news.cancel, "cancel")  # those that run here
        if news.removed:
            self._removed += news.removed
            self._removals.set()
        if news.room:
            d.supervisor.room_freed(news.room)
        if news.wake:
            d.supervisor.wake()
        if news.schedules or news.reconnected:
            d.schedules_changed()  # the scheduler reads them again, in its own task
        if news.queues or news.reconnected:
            self._queues = True
            self._everything = self._everything or news.reconnected
            self._asked.set()

    async def run(self, source: NewsSource) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_again)
            nursery.start_soon(self._delete_removed_logs)
            await source.run(self.deliver)

    async def _read_again(self) -> None:
        """Read the queues (and, after a reconnection, what news could have
        been missed) whenever news asks for it; many asks, one read."""
        while True:
            await self._asked.wait()
            self._asked = trio.Event()
            everything, self._everything = self._everything, False
            self._queues = False
            try:
                await self.d.queues_changed()  # the supervisor learns them, and looks for due jobs
                if everything:
                    await self._check_jobs()
            except StorageError as exc:
                log.warning("cannot read the store after other nodes' news (%s); retrying", exc)
                self._everything = self._everything or everything
                self._asked.set()
                await trio.sleep(RETRY_SECONDS)

    async def _delete_removed_logs(self) -> None:
        """Another node's `rm` or `clean` deleted jobs whose attempts ran here
        too: their log files on this node's disk go (that node cannot reach
        them), on a worker thread."""
        folders = self.d.supervisor.log_folders
        while True:
            await self._removals.wait()
            self._removals = trio.Event()
            removed, self._removed = self._removed, []
            await trio.to_thread.run_sync(_unlink_all, folders.files_of, removed)

    async def _check_jobs(self) -> None:
        """Cancels and finishes told while the channel was closed: running
        jobs no longer running in the store stop, watched ones that finished
        reach their waiters."""
        d = self.d
        running = d.supervisor.running_in()
        watched = d.watchers.watched_ids()
        if not running and not watched:
            return
        states = await d.db.read(Store.states, sorted(set(running) | set(watched)))
        gone = [i for i in running if states.get(i, lifecycle.CANCELED) != lifecycle.RUNNING]
        if gone:
            log.info("jobs %s were canceled while other nodes' news could not be heard: stopping them", gone)
            d.supervisor.stop_jobs(gone, "cancel")
        d.watchers.notify([i for i in watched if i not in states or lifecycle.is_terminal(states[i])])


def _unlink_all(files_of: Callable[[list[int]], list[str]], job_ids: list[int]) -> None:
    for path in files_of(job_ids):
        try:
            os.unlink(path)
        except OSError:
            pass  # gone already, or never ours to delete
