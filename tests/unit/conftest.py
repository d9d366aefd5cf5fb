"""A store on a temporary database, for the tests that drive it directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queued.store.sqlite import schema
from queued.store.sqlite.engine import Store

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    conn = schema.connect(tmp_path / "q.db")
    store = Store(conn)
    store.ensure_queue("default", T0)
    yield store
    conn.close()
