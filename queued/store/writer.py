"""The one path to the database: a writer task that group-commits.

Theory of operation: callers `await db.run(fn, *args)`, where fn is a `Store`
method (or any callable taking the Store first). Calls queue on a channel; the
writer task takes every call waiting, runs them in one `BEGIN IMMEDIATE ...
COMMIT` on a worker thread (each in its own savepoint, so one refusal does not
undo the others), and only then wakes the callers. With synchronous=FULL an
answer therefore always follows a durable commit, and the fsync is shared by
everything that arrived while the previous one was in flight.

The supervisor reads due jobs ahead and starts them from memory (see
`Supervisor`). For that it must know when a call was queued that could make a
job it holds unclaimable: `epoch` counts such calls, `additions` those that
only add claimable work, both counted when the call is queued, which is before
it runs. Store methods say which they are with `store_attempts.effect`.

An attempt's start and end are records nobody waits on at once (`record`). A
batch made only of them waits up to LINGER_SECONDS for company, so that a
busy drain pays one commit, and one fsync, for many attempts instead of one
or two each; any other call ends the wait, so requests and reads are never
held back by it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from queued.store.sqlite.attempts import ADDS, READ, SUPERVISOR
from queued.store.sqlite.engine import Refused, Store
from queued.store.sqlite.schema import FileWatch

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 512
# How long a batch of records alone waits for more calls before it commits.
# Measured on 2 cores draining `true` jobs: 5 ms cut commits per job from ~0.25
# to ~0.08 and the daemon's CPU per job by ~10%; longer gained nothing more.
LINGER_SECONDS = 0.005


class StorageError(Exception):
    """The commit failed (disk full, I/O error): none of the batch was kept."""


class StoreLost(sqlite3.DatabaseError):
    """The database file was deleted or replaced under the open connection."""


class Call:
    __slots__ = ("args", "done", "effect", "error", "fn", "kwargs", "on_done", "result", "urgent")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, urgent: bool = True
    ) -> None:
        self.fn = fn
        self.urgent = urgent  # False for a record that may wait for company (see Database.record)
        self.effect: str | None = getattr(fn, "effect", None)  # see store_attempts.effect
        self.args = args
        self.kwargs = kwargs
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        # For an owner that does not wait on `done`: told as soon as the call's
        # transaction ended, committed or failed, in the order calls were queued.
        self.on_done: Callable[[Call], None] | None = None

    async def outcome(self) -> Any:
        """The call's result once its transaction committed (or its error, raised)."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Database:
    def __init__(self, store: Store, on_finished: Callable[[list[int]], None] | None = None) -> None:
        self.store = store
        self._on_finished = on_finished
        self._pending: deque[Call] = deque()  # queued calls, in order
        self._urgent = 0  # how many of them are not records
        self._arrival: trio.Event | None = None  # set when the idle writer has work
        self._hurry: trio.Event | None = None  # set when a lingering batch must go
        self.epoch = 0  # calls queued that may make a claimable job unclaimable
        self.additions = 0  # calls queued (or batches committed) that may add claimable jobs
        # Called after a commit that made jobs claimable by itself (see Store.reordered).
        self.on_reordered: Callable[[], None] | None = None
        self._files = FileWatch(store.conn)
        # Why every change is refused from now on (the database file is gone), or None.
        self.lost: str | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(store, *args, **kwargs) in the next transaction; return once it committed."""
        result: T = await self.submit(fn, *args, **kwargs).outcome()
        return result

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
        """Queue fn(store, *args, **kwargs) for the next transaction without waiting for it."""
        return self._queue(Call(fn, args, kwargs))

    def record(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
        """Queue a record nobody waits on at once (an attempt's start or end):
        its transaction may wait up to LINGER_SECONDS for other calls to join."""
        return self._queue(Call(fn, args, kwargs, urgent=False))

    def _queue(self, call: Call) -> Call:
        if call.effect == ADDS:
            self.additions += 1
        elif call.effect not in (READ, SUPERVISOR):
            self.epoch += 1
        self._pending.append(call)
        if call.urgent:
            self._urgent += 1
        if self._hurry is not None and (call.urgent or len(self._pending) >= MAX_BATCH):
            self._hurry.set()
        if self._arrival is not None:
            self._arrival.set()
        return call

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._pending:
                self._arrival = trio.Event()
                await self._arrival.wait()
                self._arrival = None
            # One scheduling round lets tasks made runnable together (an exit and
            # the claim it allows) queue their calls into this same transaction.
            await trio.lowlevel.checkpoint()
            if not self._urgent and len(self._pending) < MAX_BATCH:
                # Records alone: wait for company, woken only by a call that
                # must not wait (records that join need not wake us).
                self._hurry = trio.Event()
                with trio.move_on_after(LINGER_SECONDS):
                    await self._hurry.wait()
                self._hurry = None
            batch = self._take_batch()
            # Never abandon the thread: a transaction must not be cut half-way.
            finished = await trio.to_thread.run_sync(self._commit, batch, abandon_on_cancel=False)
            if self.store.reordered:
                self.additions += 1
                if self.on_reordered is not None:
                    self.on_reordered()
            for call in batch:
                call.done.set()
                if call.on_done is not None:
                    call.on_done(call)
            if finished and self._on_finished is not None:
                self._on_finished(finished)

    def _take_batch(self) -> list[Call]:
        batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
        self._urgent -= sum(call.urgent for call in batch)
        return batch

    def _commit(self, batch: list[Call]) -> list[int]:
        conn = self.store.conn
        self.store.finished = []
        self.store.reordered = False
        changes = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            for call in batch:
                self._run_call(call)
            if conn.total_changes != changes:
                self._check_files()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._fail_all(batch, exc)
        return self.store.finished

    def _run_call(self, call: Call) -> None:
        """Run one call inside the batch's transaction. Raises sqlite3.Error when
        the whole batch must fail (its transaction is gone or cannot be kept)."""
        conn = self.store.conn
        if self.lost is not None and call.effect != READ:
            call.error = StorageError(self.lost)  # reads still work: `status` says why
            return
        # Reads and the supervisor's records refuse before they write (see
        # store_attempts.effect): they need no savepoint of their own.
        guarded = call.effect not in (READ, SUPERVISOR)
        if guarded:
            conn.execute("SAVEPOINT call")
        error: sqlite3.Error = sqlite3.DatabaseError("the transaction was rolled back")
        try:
            call.result = call.fn(self.store, *call.args, **call.kwargs)
        except Refused as exc:
            call.error = exc
        except sqlite3.Error as exc:
            if not guarded:
                raise
            call.error = StorageError(_describe(exc))
            error = exc
        except Exception as exc:
            log.exception("database call %s failed", getattr(call.fn, "__name__", call.fn))
            if not guarded:
                raise sqlite3.DatabaseError(f"internal error: {exc}") from exc
            call.error = exc
            error = sqlite3.DatabaseError(f"internal error: {exc}")
        if not guarded:
            return
        if not conn.in_transaction:
            # SQLite rolled the whole transaction back (SQLITE_FULL, an I/O
            # error): the calls before this one lost their writes too.
            raise error
        if call.error is not None:
            conn.execute("ROLLBACK TO call")
            self.store.forget_caches()
        conn.execute("RELEASE call")

    def _check_files(self) -> None:
        """Before a commit that writes: the database file and its WAL must still be
        the ones the connection has open. Deleted or replaced under us, a commit
        would go into a file nobody will ever read again; from then on every
        change is refused (see `lost`)."""
        reason = self._files.lost()
        if reason is not None:
            self.lost = f"{reason} while queued was running: it refuses every change; restart queued"
            raise StoreLost(self.lost)

    def _fail_all(self, batch: list[Call], exc: sqlite3.Error) -> list[int]:
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
    if isinstance(exc, StoreLost):
        return text
    if "full" in text:
        return "the database disk is full; free some space and try again"
    return f"database error: {text}"
