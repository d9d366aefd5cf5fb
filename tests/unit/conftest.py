"""A store on a temporary database, for the tests that drive it directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queued.store.sqlite import SqliteStore
from tests.store_harness import Direct

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Direct]:
    engine = SqliteStore.open(tmp_path / "q.db")
    store = Direct(engine)
    store.recover(3600.0, T0)  # as a daemon's start does: the default queue exists
    yield store
    engine.conn.close()
