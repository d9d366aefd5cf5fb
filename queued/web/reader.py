"""The web's reads, on a connection of its own.

Theory: the daemon's writer runs every call in its next group commit; a read
queued there waits behind a busy drain's batches, and a page full of viewers
would add calls to the very batches that record attempts. So the web opens a
second, read-only connection to the same SQLite file (WAL: readers never
block the writer, nor it them) and runs the store's read methods on it, one
at a time on one worker thread of its own (`ReadConnection`). Changes still
go through the writer, which answers after the commit; the next read then
sees them.

A store shared by nodes (PostgreSQL) has no file to open a second time: its
page reads through the writer (`WriterReads`), which batches them with the
rest and knows when the server is unreachable; a read there costs the
database a statement in a transaction the writer runs anyway.

`WebDatabase` is what the socket's request handlers see as `d.db` when the
web calls them: reads go to the read connection, everything else to the
writer, so the page uses the very handlers the socket does.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from queued.store import Store

T = TypeVar("T")


class ReadConnection:
    """A read-only connection to the database file, used from one thread at a time."""

    def __init__(self, path: Path, make_store: Callable[[sqlite3.Connection], Any]) -> None:
        self.conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self.conn.execute("PRAGMA query_only=1")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.store = make_store(self.conn)
        self._limiter = trio.CapacityLimiter(1)
        self.reads = 0

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(store, *args, **kwargs) in one read transaction (one snapshot)."""
        self.reads += 1
        return await trio.to_thread.run_sync(self._call, fn, args, kwargs, limiter=self._limiter)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the same thread, one call at a time with the reads:
        the web's heavy work (the history, charts, /metrics, long logs as
        JSON) goes here rather than on the daemon's own thread, which runs
        the timers and dispatch. It still holds the GIL, but Python hands it
        over every few milliseconds where a step on the daemon's thread
        would hold that thread until done. The history is touched only here."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        # A method of the store contract runs as the engine's own (as the
        # writer runs it); any other function (queued.store.reports)
        # is given the engine first.
        name = getattr(fn, "__name__", "")
        method: Callable[..., T]
        if getattr(Store, name, None) is fn:
            method = getattr(self.store, name)
        else:
            method = functools.partial(fn, self.store)
        self.conn.execute("BEGIN")
        try:
            return method(*args, **kwargs)
        finally:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class WriterReads:
    """The web's reads through the daemon's writer (a store shared by nodes),
    with a thread of its own for the web's heavy work as ReadConnection has."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self._limiter = trio.CapacityLimiter(1)
        self.reads = 0

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(store, *args, **kwargs) in the writer's next transaction."""
        self.reads += 1
        result: T = await self.writer.read(fn, *args, **kwargs)
        return result

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the web's own thread (see ReadConnection.run)."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def close(self) -> None:
        """Nothing of its own to close."""


class WebDatabase:
    """The writer's interface, with `read` served by a ReadConnection (and
    `write`, `add` and the rest by the writer)."""

    def __init__(self, db: Any, reader: ReadConnection | WriterReads) -> None:
        self._db = db
        self.reader = reader

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.reader.read(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class WebDaemon:
    """The handlers' `Daemon`, with `db` reading on the web's own connection."""

    def __init__(self, daemon: Any, db: WebDatabase) -> None:
        self._daemon = daemon
        self.db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._daemon, name)
