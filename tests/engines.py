"""The store engines the tests run on.

Every test that takes the `engine` fixture (tests/unit/conftest.py), directly
or through `store` or the writer's `db`, runs once per engine named here. A
new engine is one entry in `ENGINES`: its name and a factory that, given the
test's fixture request (for `tmp_path`, or a server fixture that skips where
the engine cannot run), opens a fresh, empty store of it and closes it after.

A test that only one engine can run (it reads that engine's insides) says so
with `@pytest.mark.engines("sqlite")`; a module of them, with `pytestmark`.
QUEUED_TEST_ENGINES=sqlite (names, comma-separated) runs only those engines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from queued.store.contract import Engine, NodeIdentity
from queued.store.sqlite import SqliteStore


@contextmanager
def sqlite_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A database file of its own in the test's directory (q.db)."""
    engine = SqliteStore.open(request.getfixturevalue("tmp_path") / "q.db")
    try:
        yield engine
    finally:
        engine.conn.close()


@contextmanager
def postgres_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A fresh database of its own on the session's throwaway PostgreSQL
    (tests/postgres.py), which skips, saying why, where it cannot run."""
    from queued.store.postgres import PostgresStore

    engine = PostgresStore.open(request.getfixturevalue("postgres_url"))
    try:
        yield engine
    finally:
        engine.close()


EngineFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[Engine]]

ENGINES: dict[str, EngineFactory] = {
    "sqlite": sqlite_engine,
    "postgresql": postgres_engine,
}


def chosen() -> list[str]:
    """The engines to run: all of them, or those QUEUED_TEST_ENGINES names."""
    asked = [name.strip() for name in os.environ.get("QUEUED_TEST_ENGINES", "").split(",") if name.strip()]
    unknown = [name for name in asked if name not in ENGINES]
    if unknown:
        raise pytest.UsageError(
            f"QUEUED_TEST_ENGINES names no engine {unknown[0]!r} (known: {', '.join(ENGINES)})"
        )
    return asked or list(ENGINES)


def join_node(engine: Engine, name: str, lease: float = 30.0, home: str = "") -> NodeIdentity:
    """`engine` as the store of node `name`, as a daemon starts one: on a
    shared engine (PostgreSQL) registered with a lease, on SQLite named."""
    from queued.store.contract import NodeIdentity

    node = NodeIdentity(name, "")
    url = getattr(engine, "url", None)
    if url is not None:
        from queued.store.postgres.nodes import NodeCard, NodeLeases

        leases = NodeLeases(url, lease)
        node.incarnation = f"{name}-{os.urandom(4).hex()}"
        card = NodeCard(name, home or f"test:{name}", "testhost", os.getpid(), 4, None, lease)
        try:
            leases.register(card, node.incarnation)
        finally:
            leases.close()
    engine.identify(node)
    return node
