"""The one path to the database: a writer task that group-commits.

Theory of operation: callers `await db.run(fn, *args)`, where fn is a `Store`
method (or any callable taking the Store first). Calls queue on a channel; the
writer task takes every call waiting, runs them in one `BEGIN IMMEDIATE ...
COMMIT` on a worker thread (each in its own savepoint, so one refusal does not
undo the others), and only then wakes the callers. With synchronous=FULL an
answer therefore always follows a durable commit, and the fsync is shared by
everything that arrived while the previous one was in flight.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .store import Refused, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 512


class StorageError(Exception):
    """The commit failed (disk full, I/O error): none of the batch was kept."""


class _Call:
    __slots__ = ("args", "done", "error", "fn", "kwargs", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Database:
    def __init__(self, store: Store, on_finished: Callable[[list[int]], None] | None = None) -> None:
        self.store = store
        self._on_finished = on_finished
        self._send, self._receive = trio.open_memory_channel[_Call](float("inf"))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(store, *args, **kwargs) in the next transaction; return once it committed."""
        call = _Call(fn, args, kwargs)
        self._send.send_nowait(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            # One scheduling round lets tasks made runnable together (an exit and
            # the claim it allows) queue their calls into this same transaction.
            await trio.lowlevel.checkpoint()
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            # Never abandon the thread: a transaction must not be cut half-way.
            finished = await trio.to_thread.run_sync(self._commit, batch, abandon_on_cancel=False)
            for call in batch:
                call.done.set()
            if finished and self._on_finished is not None:
                self._on_finished(finished)

    def _commit(self, batch: list[_Call]) -> list[int]:
        conn = self.store.conn
        self.store.finished = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._fail_all(batch, exc)
        for call in batch:
            conn.execute("SAVEPOINT call")
            try:
                call.result = call.fn(self.store, *call.args, **call.kwargs)
            except Refused as exc:
                call.error = exc
            except sqlite3.Error as exc:
                call.error = StorageError(_describe(exc))
            except Exception as exc:
                log.exception("database call %s failed", getattr(call.fn, "__name__", call.fn))
                call.error = exc
            if call.error is not None:
                conn.execute("ROLLBACK TO call")
                self.store.forget_caches()
            conn.execute("RELEASE call")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._fail_all(batch, exc)
        return self.store.finished

    def _fail_all(self, batch: list[_Call], exc: sqlite3.Error) -> list[int]:
        log.error("commit failed: %s", exc)
        if self.store.conn.in_transaction:
            try:
                self.store.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
        error = StorageError(_describe(exc))
        for call in batch:
            call.result, call.error = None, error
        # The store's caches may name rows that were rolled back.
        self.store.forget_caches()
        return []


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return "the database disk is full; free some space and try again"
    return f"database error: {text}"
