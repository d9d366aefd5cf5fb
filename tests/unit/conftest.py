"""The store under test, on every engine of tests/engines.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from queued.store.contract import Changes, Engine
from tests.engines import ENGINES, chosen
from tests.store_harness import T0, Direct


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines(*names): run the test only on these store engines")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes `engine` (or `store`, or the writer's `db`) runs once
    per engine, or on those its `engines` mark names."""
    if "engine" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("engines")
    names = [name for name in chosen() if only is None or name in only.args]
    metafunc.parametrize("engine", names, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A fresh, empty store of one engine (never recovered: see `store`)."""
    with ENGINES[request.param](request) as opened:
        yield opened


@pytest.fixture
def store(engine: Engine) -> Direct:
    """The contract driven directly, after a daemon's start (the default queue exists)."""
    store = Direct(engine)
    store.recover(3600.0, T0)
    store.changes = Changes()  # what the test's own calls change, from here
    return store
