"""The PostgreSQL engine: the store contract over one connection, composed of
parts as the SQLite engine is (jobs, user changes, attempts, queues), and the
writer's transactions (one BEGIN ... COMMIT per batch, a savepoint per
guarded call).

psycopg's async API runs only under asyncio: this is a synchronous
connection, only ever used from the writer's thread (see
`queued/store/writer.py`), exactly as the SQLite engine's. A lost connection
fails its batch with StoreUnreachable (CommitUnknown if the COMMIT was on its
way); the writer then fails every call at once, without touching the
connection, and calls `reconnect` with backoff until the database answers. A
connection that broke while idle is replaced at the next batch's begin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import Connection

from queued.lease import default_node_name
from queued.protocol import NodeInfo
from queued.store.composed import ComposedStore
from queued.store.contract import (
    BatchConflict,
    BatchLost,
    CommitUnknown,
    NodeIdentity,
    OutputChunk,
    OutputStream,
    Recovered,
    Refused,
    StorageError,
    StoreUnreachable,
    Written,
)
from queued.store.postgres import hung, nodes, schema
from queued.store.postgres.attempts import Attempts
from queued.store.postgres.dialect import POSTGRES
from queued.store.postgres.jobs import Jobs
from queued.store.postgres.news import CHANNEL, Listener, Outbox
from queued.store.postgres.output import Output
from queued.store.postgres.transitions import PostgresTransitionSql
from queued.store.transitions import GroupTransitions

log = logging.getLogger(__name__)
T = TypeVar("T")
# A broken connection found at a batch's begin is replaced at once, if the
# server answers within this (seconds; libpq's least): else the batch fails and
# the writer reconnects with backoff.
INLINE_CONNECT_TIMEOUT = 2
# Errors of a server that is going or gone (the connection with it), by SQLSTATE:
# class 08 (connection exceptions), admin_shutdown, crash_shutdown, cannot_connect_now.
_GOING = ("57P01", "57P02", "57P03")
# Errors that undid the transaction for another's sake: serialization_failure, deadlock_detected.
_CONFLICTS = ("40001", "40P01")


def unreachable_error(exc: BaseException) -> bool:
    """A driver error that says the server cannot be reached (not one it answered with)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _GOING


def conflict_error(exc: BaseException) -> bool:
    """A driver error after which running the whole transaction again is the answer."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate in _CONFLICTS


class PostgresStore(ComposedStore):
    """The store contract (`queued.store.Store`) and the writer's transactions
    (`queued.store.contract.Transactions`) on one PostgreSQL connection."""

    # Nodes share the database, not their disks: every node shows every attempt's output.
    keeps_output = True
    claims_before_start = True  # other nodes share the database
    dialect = POSTGRES  # its spelling of the shared statements (queued/store/reports.py reads it)

    def __init__(self, conn: Connection, url: str) -> None:
        self.url = url
        self.where = schema.where(url)
        self.store_name = f"the job store at {self.where}"
        # No node registered (tests, tools): attempts name the host, nothing is fenced.
        self._node = NodeIdentity(default_node_name(), "")
        self._outbox = Outbox()  # the news of the open batch, sent with its commit
        self.busy_since: float | None = None  # the call on its way since (see hung.py)
        self._compose(conn)

    def _compose(self, conn: Connection) -> None:
        self.conn = conn
        self.answer_bound: float | None = hung.answer_bound(conn)
        self.backend_pid: int | None = conn.info.backend_pid  # what this node's news comes from
        self._compose_parts(conn, POSTGRES, GroupTransitions(PostgresTransitionSql(conn)), Jobs, Attempts)
        self._output = Output(conn)

    @classmethod
    def open(cls, url: str) -> PostgresStore:
        """The store in the database of `url`, its schema created or migrated;
        schema.DatabaseUnusable says why when it cannot be used."""
        return cls(schema.connect(url), url)

    def news(self) -> Listener:
        """Other nodes' news, heard on a connection of its own (see news.py)."""
        return Listener(self.url, self.where, lambda: self.backend_pid)

    # -- attempts' output ----------------------------------------------------------

    def append_output(self, chunks: Sequence[OutputChunk]) -> Written[None]:
        return self._output.append(chunks)

    def read_output(
        self, job_id: int, attempt: int, stream: OutputStream, offset: int, limit: int
    ) -> tuple[bytes, int]:
        return self._output.read(job_id, attempt, stream, offset, limit)

    # -- nodes --------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        return nodes.read_nodes(self.conn, self._node)

    def rescue(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        return self._attempts.rescue(backoff_max, now)

    # -- the writer's transactions ----------------------------------------------

    def _unreachable(self, exc: BaseException | None = None) -> bool:
        # Not every OperationalError: a deadlock or a canceled statement is one too.
        return (exc is not None and unreachable_error(exc)) or self.conn.closed or bool(self.conn.broken)

    def _lost(self, exc: BaseException, *, committing: bool = False) -> BatchLost:
        """The batch is gone: the connection broke (StoreUnreachable; during
        the COMMIT, CommitUnknown: it may have been kept), or the database
        failed it (BatchConflict: a deadlock or serialization failure it
        undid, to be run again)."""
        if conflict_error(exc) and not self._unreachable():
            return BatchConflict(StorageError(self._conflict_message(exc)))
        if self._unreachable(exc):
            message = f"the job store at {self.where} is unreachable; retrying"
            if committing:
                message = (
                    f"the job store at {self.where} went away during the commit: the change may or may "
                    "not have been kept; look before you repeat it"
                )
                return BatchLost(CommitUnknown(message, schema.first_line(exc), self.store_name))
            return BatchLost(StoreUnreachable(message, schema.first_line(exc), self.store_name))
        return BatchLost(StorageError(self.describe(exc)))

    def _conflict_message(self, exc: BaseException) -> str:
        return (
            f"the job store at {self.where} kept undoing this change for other nodes' changes"
            f" ({schema.first_line(exc)}); try again"
        )

    def describe(self, exc: BaseException) -> str:
        if self._unreachable(exc):
            return f"the job store at {self.where} is unreachable; retrying"
        if isinstance(exc, psycopg.errors.DiskFull):
            return f"the job store at {self.where} is full; free some space and try again"
        if isinstance(exc, psycopg.errors.QueryCanceled):  # statement_timeout, or an operator's cancel
            return f"the job store at {self.where} gave up on it ({schema.first_line(exc)}); try again"
        return f"database error: {schema.first_line(exc)}"

    def reconnect(self, connect_timeout: int | None = None) -> None:
        """Replace a broken connection (the database restarted or failed over,
        the network was cut); StoreUnreachable while it cannot be reached, a
        StorageError if what answers is not a usable store."""
        try:
            self.conn.close()
        except Exception:
            pass
        try:
            conn = schema.connect(self.url, connect_timeout=connect_timeout)
        except schema.DatabaseUnreachable as exc:
            raise StoreUnreachable(
                f"the job store at {self.where} is unreachable; retrying", exc.detail, self.store_name
            ) from None
        except schema.DatabaseUnusable as exc:
            raise StorageError(str(exc)) from None
        self._compose(conn)

    def begin(self) -> None:
        """Open the batch's transaction. A connection that broke while it was
        idle (the server restarted since the last batch) is replaced once,
        at once: nothing of this batch is lost by it."""
        self._outbox.clear()
        if self._unreachable():
            self._reconnect_inline(None)
        self.busy_since = time.monotonic()
        try:
            self.conn.execute("BEGIN")
        except psycopg.Error as exc:
            if not self._unreachable(exc):
                raise self._lost(exc) from exc
            self._reconnect_inline(exc)
            self.busy_since = time.monotonic()
            try:
                self.conn.execute("BEGIN")
            except psycopg.Error as again:
                raise self._lost(again) from again

    def _reconnect_inline(self, exc: BaseException | None) -> None:
        self.busy_since = None  # bounded by its connect_timeout
        log.warning(
            "the connection to the job store at %s was broken (%s); reconnecting",
            self.where,
            "closed" if exc is None else schema.first_line(exc),
        )
        try:
            self.reconnect(connect_timeout=INLINE_CONNECT_TIMEOUT)
        except StorageError as error:
            raise BatchLost(error) from None
        log.info("reconnected to the job store at %s", self.where)

    def call(
        self, method: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, guarded: bool
    ) -> T:
        name = getattr(method, "__name__", "")
        self.busy_since = time.monotonic()
        if not guarded:
            # Refuses before it writes (see the contract); an error after a
            # write cannot be undone alone: the batch fails.
            try:
                result = method(*args, **kwargs)
                self._outbox.note(name, args, result)
                return result
            except Refused:
                raise
            except psycopg.Error as exc:
                raise self._lost(exc) from exc
            except Exception as exc:
                log.exception("store call %s failed", getattr(method, "__name__", method))
                raise BatchLost(StorageError(f"database error: internal error: {exc}")) from exc
        conn = self.conn
        try:
            conn.execute("SAVEPOINT call")
        except psycopg.Error as exc:
            raise self._lost(exc) from exc
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            if conflict_error(exc):  # the database chose this transaction to undo: all of it goes again
                raise self._lost(exc) from exc
            self._undo_call(exc)
            if isinstance(exc, psycopg.Error):
                raise StorageError(self.describe(exc)) from exc
            raise
        try:
            conn.execute("RELEASE SAVEPOINT call")
        except psycopg.Error as exc:
            raise self._lost(exc) from exc
        self._outbox.note(name, args, result)
        return result

    def _undo_call(self, exc: BaseException) -> None:
        """Roll back one guarded call; BatchLost if the transaction itself is
        gone (the connection broke): the calls before it lost their writes too."""
        if self._unreachable(exc):
            raise self._lost(exc) from exc
        try:
            self.conn.execute("ROLLBACK TO SAVEPOINT call")
            self.conn.execute("RELEASE SAVEPOINT call")
        except psycopg.Error as undo:
            raise self._lost(undo) from exc
        self.forget_caches()

    def commit(self) -> None:
        """A failed COMMIT has an unknown outcome: the callers are told so
        (CommitUnknown); the writer's records are made so that a second
        try of one already kept changes nothing more."""
        self.busy_since = time.monotonic()
        try:
            if self._outbox:
                # In the transaction, so that other nodes hear it only once it
                # commits; with the COMMIT in one message (one round trip).
                psycopg.ClientCursor(self.conn).execute(
                    "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p; COMMIT",
                    (CHANNEL, self._outbox.payloads()),
                )
            else:
                self.conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise self._lost(exc, committing=True) from exc
        finally:
            self._outbox.clear()
            self.busy_since = None

    def abort(self) -> None:
        self._outbox.clear()
        self.busy_since = None
        if not (self.conn.closed or self.conn.broken):
            try:
                self.conn.execute("ROLLBACK")
            except psycopg.Error as exc:
                # Its transaction is in an unknown state (a connection the server
                # ended mid-pipeline is not always marked broken yet): drop it, so
                # that the next call reconnects. The batch's failure was told already.
                log.warning(
                    "the connection to the job store was dropped: its rollback failed (%s)",
                    schema.first_line(exc),
                )
                self.conn.close()
        self.forget_caches()

    def answers(self) -> bool:
        """Whether the server answers on a new connection (see hung.py)."""
        return hung.answers(schema.with_defaults(self.url))

    def interrupt(self) -> None:
        """The server has not answered the call on its way for `answer_bound`
        seconds: break the connection under it (see hung.py)."""
        hung.break_connection(self.conn)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception as exc:
            log.warning("the connection to the job store was not closed cleanly (%s)", exc)
