"""The store engines the tests run on.

Every test that takes the `engine` fixture (tests/unit/conftest.py), directly
or through `store` or the writer's `db`, runs once per engine named here. A
new engine is one entry in `ENGINES`: its name and a factory that opens a
fresh, empty store of it for one test and closes it after (skipping, with a
reason, when the engine cannot run here, e.g. no server to talk to).

A test that only one engine can run (it reads that engine's insides) says so
with `@pytest.mark.engines("sqlite")`; a module of them, with `pytestmark`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from queued.store.contract import Engine
from queued.store.sqlite import SqliteStore


@contextmanager
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A database file of its own in the test's directory (q.db)."""
    engine = SqliteStore.open(tmp_path / "q.db")
    try:
        yield engine
    finally:
        engine.conn.close()


EngineFactory = Callable[[Path], AbstractContextManager[Engine]]

ENGINES: dict[str, EngineFactory] = {
    "sqlite": sqlite_engine,
}
