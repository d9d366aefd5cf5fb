"""The web's reads run on its own read-only connection, its changes through
the writer (queued.web.reader)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from queued.store import Store
from queued.store.reports import counts_by_queue
from queued.store.sqlite.engine import SqliteStore
from queued.web.reader import ReadConnection, WebDaemon, WebDatabase


class Writer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lost = None

    async def write(self, fn: Any, *args: Any, **kwargs: Any) -> str:
        self.calls.append(fn.__name__)
        return "written"


@pytest.fixture
def reader(tmp_path: Path) -> ReadConnection:
    SqliteStore.open(tmp_path / "queue.db").close()
    return ReadConnection(tmp_path / "queue.db", SqliteStore)


async def test_reads_go_to_the_read_connection_and_changes_to_the_writer(reader: ReadConnection) -> None:
    writer = Writer()
    db = WebDatabase(writer, reader)
    assert (await db.read(Store.counts))["pending"] == 0
    assert await db.read(Store.config) == {}
    assert await db.read(counts_by_queue) == {}  # a function of the engine, not of the contract
    assert writer.calls == [] and reader.reads == 3
    assert await db.write(Store.cancel, [1], 0.0) == "written"
    assert writer.calls == ["cancel"]
    assert db.lost is None  # everything else is the writer's


async def test_the_read_connection_cannot_write(reader: ReadConnection) -> None:
    def write(store: SqliteStore) -> None:
        store.conn.execute("INSERT INTO config VALUES ('x', 'y')")

    with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
        await reader.read(write)


def test_the_handlers_daemon_is_the_daemon_with_the_web_s_database() -> None:
    class Daemon:
        db = "writer"
        data_dir = "/data"

        def problems(self) -> list[str]:
            return []

    web = WebDaemon(Daemon(), WebDatabase(Writer(), None))  # type: ignore[arg-type]
    assert isinstance(web.db, WebDatabase) and web.data_dir == "/data" and web.problems() == []
