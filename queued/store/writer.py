"""The one path to the store: a writer task that group-commits.

Theory of operation: every call names a method of the store contract
(`Store.cancel`; the engine's own method of that name runs) and says, by the
entry point it takes, what it may do:

- `read`: changes nothing;
- `write`: may change anything, including making a claimable job unclaimable
  (cancel, pause, edit): the supervisor's read-ahead is stale from then on;
- `add`: only adds claimable work (add, retry, release): the read-ahead stays
  valid but may be outranked;
- `record` / `record_now`: the supervisor's own records (an attempt's start
  and end, a claim), whose effects it tracks itself.

Calls queue in order; the writer task takes every call waiting, runs them in
one transaction on a worker thread (each change in its own savepoint, so one
refusal does not undo the others) and only then wakes the callers. An answer
therefore always follows a durable commit, and the fsync is shared by
everything that arrived while the previous one was in flight. Each mutation
returns what it changed (`Changes`); the writer merges them per batch and
hands them, after the commit, to its one subscriber (wired in daemon.py).

The supervisor reads due jobs ahead and starts them from memory. For that it
must know when a call was queued that could make a job it holds unclaimable:
`epoch` counts `write` calls, `additions` the `add` calls (and the commits
that reordered the claimable jobs by themselves), both counted when the call
is queued, which is before it runs.

An attempt's start and end are records nobody waits on at once (`record`). A
batch made only of them waits up to LINGER_SECONDS for company, so that a
busy drain pays one commit, and one fsync, for many attempts instead of one
or two each; any other call ends the wait, so requests and reads are never
held back by it.

A store that cannot be reached (a PostgreSQL server restarting, a network
cut: the engine raises StoreUnreachable) is an outage, not an end: from the
failed batch on, every call fails at once with the same one line, without
touching the engine, while a task of the writer's calls `engine.reconnect`
with backoff (RECONNECT_FIRST_SECONDS doubling to RECONNECT_MAX_SECONDS). The
log says when it began and when it ended; `unreachable_since` tells `status`;
`reconnected()` wakes whoever waits to try again (the supervisor's claims,
the ends kept in memory). A server that stops answering with its connection
up is an outage too: while a batch runs, a watch breaks the engine's
connection once the call on its way has had no answer for the engine's
`answer_bound` (see queued/store/postgres/hung.py). A batch the database
undid to settle a conflict with another node's (a deadlock: BatchConflict)
is no outage: it runs again, from the start.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from queued.store.contract import (
    NOTHING,
    BatchConflict,
    BatchLost,
    Changes,
    CommitUnknown,
    Engine,
    Refused,
    StorageError,
    Store,
    StoreLost,
    StoreUnreachable,
    Written,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")
MAX_BATCH = 512
# How long a batch of records alone waits for more calls before it commits.
# Measured on 2 cores draining `true` jobs: 5 ms cut commits per job from ~0.25
# to ~0.08 and the daemon's CPU per job by ~10%; longer gained nothing more.
LINGER_SECONDS = 0.005
# While the store is unreachable: the first reconnection try, doubling up to the
# last, and how often the log says it still is.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
UNREACHABLE_REMINDER_SECONDS = 60.0
# A batch the database undid for another node's sake (a deadlock) runs again, up to this many times in all.
CONFLICT_TRIES = 5
# A call without an answer this long has the server asked whether it answers
# at all, on a connection of its own, within PROBE_SECONDS (see postgres/hung.py).
PROBE_AFTER_SECONDS = 5.0
PROBE_SECONDS = 3.0


class Kind(enum.Enum):
    """What a call may do (see the module's docstring)."""

    READ = "read"
    WRITE = "write"
    ADD = "add"
    RECORD = "record"


# Reads and the supervisor's records refuse before they write: no savepoint.
_GUARDED = (Kind.WRITE, Kind.ADD)
# The contract's methods by the function a caller names (`Store.cancel`).
_CONTRACT = {fn: name for name, fn in vars(Store).items() if callable(fn) and not name.startswith("_")}


class Call:
    __slots__ = (
        "args",
        "done",
        "error",
        "fn",
        "kind",
        "kwargs",
        "method",
        "on_done",
        "on_taken",
        "result",
        "urgent",
    )

    def __init__(
        self,
        kind: Kind,
        fn: Callable[..., Any],
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        urgent: bool = True,
    ) -> None:
        self.kind = kind
        self.fn = fn  # as the caller named it
        self.method = method  # what runs
        self.urgent = urgent  # False for a record that may wait for company (see Writer.record)
        self.args = args
        self.kwargs = kwargs
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        # For an owner that does not wait on `done`: told as soon as the call's
        # transaction ended, committed or failed, in the order calls were queued.
        self.on_done: Callable[[Call], None] | None = None
        # Told (in the trio thread) when its batch is taken: its arguments are
        # final from then on (an owner adding to a call's list stops there).
        self.on_taken: Callable[[], None] | None = None

    async def outcome(self) -> Any:
        """The call's result once its transaction committed (or its error, raised)."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Writer:
    def __init__(self, engine: Engine, on_commit: Callable[[Changes], None] | None = None) -> None:
        self.engine = engine
        self._on_commit = on_commit
        self._pending: deque[Call] = deque()  # queued calls, in order
        self._urgent = 0  # how many of them are not records
        self._arrival: trio.Event | None = None  # set when the idle writer has work
        self._hurry: trio.Event | None = None  # set when a lingering batch must go
        self.epoch = 0  # `write` calls queued: each may make a claimable job unclaimable
        self.additions = 0  # `add` calls queued, and commits that reordered claimable jobs
        # Why every change is refused from now on (the store is gone), or None.
        self.lost: str | None = None
        # While the store cannot be reached: the error every call gets, and since when (time.time()).
        self.unreachable: StoreUnreachable | None = None
        self.unreachable_since: float | None = None
        self._outage: StoreUnreachable | None = None  # set by a failed batch (on the worker thread)
        self._reconnected = trio.Event()
        self.commits = 0  # transactions committed, and the seconds their COMMITs took
        self.commit_seconds = 0.0

    # -- entry points -----------------------------------------------------------

    async def read(self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read in the next transaction; its result."""
        result: T = await self.queue(Kind.READ, fn, *args, **kwargs).outcome()
        return result

    async def write(
        self, fn: Callable[Concatenate[Store, P], Written[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a change in the next transaction; its answer once it committed."""
        result: T = await self.queue(Kind.WRITE, fn, *args, **kwargs).outcome()
        return result

    async def add(
        self, fn: Callable[Concatenate[Store, P], Written[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a change that only adds claimable work; its answer once it committed."""
        result: T = await self.queue(Kind.ADD, fn, *args, **kwargs).outcome()
        return result

    def record(
        self, fn: Callable[Concatenate[Store, P], Written[Any]], *args: P.args, **kwargs: P.kwargs
    ) -> Call:
        """Queue a record of the supervisor's nobody waits on at once (an
        attempt's start or end): its transaction may wait up to LINGER_SECONDS
        for other calls to join."""
        return self._queue(self._call(Kind.RECORD, fn, args, kwargs, urgent=False))

    async def record_now(
        self, fn: Callable[Concatenate[Store, P], Written[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A change of the supervisor's own (a claim), committed without lingering."""
        result: T = await self.queue(Kind.RECORD, fn, *args, **kwargs).outcome()
        return result

    def queue(self, kind: Kind, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
        """Queue a call for the next transaction without waiting for it."""
        return self._queue(self._call(kind, fn, args, kwargs))

    def run_now(self, kind: Kind, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """At start, before `serve`: one call in a transaction of its own, in
        this thread (reading the saved settings, recovering what a dead daemon
        left)."""
        call = self._call(kind, fn, args, kwargs)
        self._commit([call])
        if call.error is not None:
            raise call.error
        return call.result

    def _call(
        self,
        kind: Kind,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        urgent: bool = True,
    ) -> Call:
        # A method of the contract runs as the engine's own; any other callable
        # (a test's) is given the engine first.
        name = _CONTRACT.get(fn)
        if name is None:
            return Call(kind, fn, fn, (self.engine, *args), kwargs, urgent=urgent)
        return Call(kind, fn, getattr(self.engine, name), args, kwargs, urgent=urgent)

    def _queue(self, call: Call) -> Call:
        if call.kind is Kind.ADD:
            self.additions += 1
        elif call.kind is Kind.WRITE:
            self.epoch += 1
        self._pending.append(call)
        if call.urgent:
            self._urgent += 1
        if self._hurry is not None and (call.urgent or len(self._pending) >= MAX_BATCH):
            self._hurry.set()
        if self._arrival is not None:
            self._arrival.set()
        return call

    def queued_last(self, call: Call) -> bool:
        """Whether `call` waits to be taken with no call queued after it (a
        record may then still take more: nothing queued later precedes it)."""
        return bool(self._pending) and self._pending[-1] is call

    # -- the writer task --------------------------------------------------------

    def reconnected(self) -> trio.Event:
        """An event set when the store, unreachable now, answers again."""
        return self._reconnected

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            await self._serve(nursery)

    async def _serve(self, nursery: trio.Nursery) -> None:
        while True:
            if not self._pending:
                self._arrival = trio.Event()
                await self._arrival.wait()
                self._arrival = None
            # One scheduling round lets tasks made runnable together (an exit and
            # the claim it allows) queue their calls into this same transaction.
            await trio.lowlevel.checkpoint()
            if self.unreachable is not None:
                self._fail_unreachable(self._take_batch(), self.unreachable)
                continue
            if not self._urgent and len(self._pending) < MAX_BATCH:
                # Records alone: wait for company, woken only by a call that
                # must not wait (records that join need not wake us).
                self._hurry = trio.Event()
                with trio.move_on_after(LINGER_SECONDS):
                    await self._hurry.wait()
                self._hurry = None
            batch = self._take_batch()
            changes = await self._run_batch(batch)
            if self._outage is not None:
                self._begin_outage(self._outage, nursery)
            if changes.reordered:
                self.additions += 1
            self._done(batch)
            if changes and self._on_commit is not None:
                self._on_commit(changes)

    async def _run_batch(self, batch: list[Call]) -> Changes:
        # Never abandon the thread: a transaction must not be cut half-way.
        if self.engine.answer_bound is None:
            return await trio.to_thread.run_sync(self._commit, batch, abandon_on_cancel=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_answers, self.engine.answer_bound)
            changes = await trio.to_thread.run_sync(self._commit, batch, abandon_on_cancel=False)
            nursery.cancel_scope.cancel()
        return changes

    async def _watch_answers(self, bound: float) -> None:
        """While a batch runs: a call without an answer for PROBE_AFTER_SECONDS
        has the server asked whether it answers at all; if it does not, or
        the call has had no answer for `bound` seconds, the server is hung:
        the connection is broken, so that the batch fails as unreachable and
        the outage begins (see queued/store/postgres/hung.py)."""
        engine = self.engine
        while True:
            since = engine.busy_since
            waited = 0.0 if since is None else time.monotonic() - since
            if waited < min(PROBE_AFTER_SECONDS, bound):
                await trio.sleep(min(PROBE_AFTER_SECONDS, bound) - waited)
                continue
            if waited < bound and await self._server_answers():
                await trio.sleep(min(PROBE_AFTER_SECONDS, bound - waited))  # a long statement: look again
                continue
            if engine.busy_since != since:
                continue  # the call was answered meanwhile
            log.warning(
                "the job store has not answered for %.0f s; dropping its connection to reconnect",
                time.monotonic() - since if since is not None else 0,
            )
            engine.interrupt()
            await trio.sleep(min(PROBE_AFTER_SECONDS, bound))  # the batch fails, or its next call is watched

    async def _server_answers(self) -> bool:
        answered = False
        with trio.move_on_after(PROBE_SECONDS):
            answered = await trio.to_thread.run_sync(self.engine.answers, abandon_on_cancel=True)
        return answered

    @staticmethod
    def _done(batch: list[Call]) -> None:
        for call in batch:
            call.done.set()
            if call.on_done is not None:
                call.on_done(call)

    def _fail_unreachable(self, batch: list[Call], error: StoreUnreachable) -> None:
        """While the store is unreachable every call fails at once, with the one line."""
        for call in batch:
            call.result, call.error = None, error
        self._done(batch)

    def _begin_outage(self, error: StoreUnreachable, nursery: trio.Nursery) -> None:
        self._outage = None
        if self.unreachable is not None:
            return
        # The calls of the outage are told it is unreachable: whether the batch that
        # found it out was kept (CommitUnknown) is that batch's callers' news alone.
        message = error.unreachable if isinstance(error, CommitUnknown) else str(error)
        self.unreachable = StoreUnreachable(message, error.detail, error.store)
        self.unreachable_since = time.time()
        log.warning("%s is unreachable (%s); reconnecting", error.store, error.detail or error)
        nursery.start_soon(self._reconnect, error)

    async def _reconnect(self, error: StoreUnreachable) -> None:
        """Try the store again with backoff until it answers; then calls run again."""
        began = reminded = trio.current_time()
        delay = RECONNECT_FIRST_SECONDS
        while True:
            await trio.sleep(delay)
            try:
                # Never abandoned: the engine's connection must not change under a batch.
                await trio.to_thread.run_sync(self.engine.reconnect, abandon_on_cancel=False)
                break
            except StorageError as exc:
                detail = exc.detail if isinstance(exc, StoreUnreachable) else str(exc)
                if self.unreachable is not None and detail:
                    self.unreachable.detail = detail  # `status` says why now (a password refused, no room)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                if trio.current_time() - reminded >= UNREACHABLE_REMINDER_SECONDS:
                    reminded = trio.current_time()
                    log.warning(
                        "%s is still unreachable after %.0f s (%s); trying every %.0f s",
                        error.store,
                        reminded - began,
                        detail,
                        delay,
                    )
                else:
                    log.debug("%s: reconnection failed (%s); next try in %.1f s", error.store, detail, delay)
        log.info("reconnected to %s after %.1f s unreachable", error.store, trio.current_time() - began)
        self.unreachable = self.unreachable_since = None
        reconnected, self._reconnected = self._reconnected, trio.Event()
        reconnected.set()
        if self._pending and self._arrival is not None:
            self._arrival.set()

    def _take_batch(self) -> list[Call]:
        batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
        self._urgent -= sum(call.urgent for call in batch)
        for call in batch:
            if call.on_taken is not None:
                call.on_taken()
        return batch

    def _commit(self, batch: list[Call]) -> Changes:
        """Run `batch` in one transaction (on the worker thread); what it
        changed. A transaction the database undid to settle a conflict with
        another node's (BatchConflict: a deadlock) runs again, from the start."""
        tries = 1
        while True:
            try:
                return self._transaction(batch)
            except BatchConflict as exc:
                if tries == CONFLICT_TRIES:
                    return self._fail_all(batch, exc)
                tries += 1
                cause = str(exc.__cause__ or exc).strip().splitlines()[0]
                log.info("the store undid a batch to settle a conflict with another node (%s); again", cause)
                self.engine.abort()
                for call in batch:
                    call.result = call.error = None
            except BatchLost as exc:
                return self._fail_all(batch, exc)

    def _transaction(self, batch: list[Call]) -> Changes:
        engine = self.engine
        changes = Changes()
        engine.begin()
        for call in batch:
            self._run_call(call, changes)
        started = time.perf_counter()
        engine.commit()
        # Read by /metrics (queued_store_commit_seconds): one count and sum a batch.
        self.commit_seconds += time.perf_counter() - started
        self.commits += 1
        return changes

    def _run_call(self, call: Call, changes: Changes) -> None:
        """Run one call inside the batch's transaction; BatchLost when the whole
        batch must fail."""
        if self.lost is not None and call.kind is not Kind.READ:
            call.error = StorageError(self.lost)  # reads still work: `status` says why
            return
        try:
            result = self.engine.call(call.method, call.args, call.kwargs, guarded=call.kind in _GUARDED)
        except (Refused, StorageError) as exc:
            call.error = exc
            return
        except BatchLost:
            raise
        except Exception as exc:
            log.exception("store call %s failed", getattr(call.fn, "__name__", call.fn))
            call.error = exc
            return
        if isinstance(result, Written):
            call.result = result.value
            if result.changes is not NOTHING:
                changes.merge(result.changes)
        else:
            call.result = result

    def _fail_all(self, batch: list[Call], exc: BatchLost) -> Changes:
        error = exc.error
        if isinstance(exc, StoreLost) and self.lost is None:
            self.lost = str(error)
        if isinstance(error, StoreUnreachable):
            self._outage = error  # the writer task begins the outage: see _begin_outage
        else:
            log.error("commit failed: %s", error)
        self.engine.abort()
        for call in batch:
            if isinstance(error, CommitUnknown) and call.kind is Kind.READ:
                # A read changes nothing: whether its COMMIT arrived does not matter.
                call.result, call.error = None, StoreUnreachable(error.unreachable, error.detail, error.store)
            elif isinstance(error, CommitUnknown):
                # Each call learns what it did inside the transaction, which may have been kept.
                call.result, call.error = (
                    None,
                    CommitUnknown(str(error), error.detail, error.store, call.result),
                )
            else:
                call.result, call.error = None, error
        return Changes()
