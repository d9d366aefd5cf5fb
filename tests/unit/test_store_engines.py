"""Choosing the store's engine: the one place, its checks, its words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from queued.store import engines
from queued.store.engines import StoreUnusable, check_spec, describe, open_store
from queued.store.sqlite import SqliteStore


def test_no_store_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    for spec in (None, "", "sqlite"):
        engine = open_store(spec, tmp_path)
        assert isinstance(engine, SqliteStore)
        engine.close()
    assert (tmp_path / "queue.db").exists()


def test_a_store_no_engine_takes_is_refused_saying_what_would_do() -> None:
    with pytest.raises(ValueError, match="give a postgresql:// URL") as caught:
        check_spec("mysql://u:pw@db/q")
    assert "'mysql://u:***@db/q'" in str(caught.value)
    with pytest.raises(StoreUnusable, match="give a postgresql:// URL"):
        open_store("/var/lib/queue.db", Path("/nonexistent"))
    check_spec("postgresql://u@h/q")
    check_spec("postgres://h/q")
    check_spec("host=db dbname=q")


def test_describe_never_shows_a_password() -> None:
    assert describe("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert describe("postgresql://h/db?password=pw&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    assert describe("host=h password=pw dbname=q") == "host=h password=*** dbname=q"
    assert describe("host=h password='p w' dbname=q") == "host=h password=*** dbname=q"
    assert describe("postgresql://u@h/db") == "postgresql://u@h/db"
    assert describe(None, Path("/d")) == "/d/queue.db"


@pytest.mark.parametrize("engine_class", ["sqlite", "postgresql"])
def test_every_engine_takes_every_contract_method_as_the_contract_says(engine_class: str) -> None:
    """A method the contract grows (a new filter of list_jobs) must reach every
    engine: the contract tests may not call it yet."""
    import inspect

    from queued.store.contract import Store

    if engine_class == "postgresql":
        pytest.importorskip("psycopg")
        from queued.store.postgres import PostgresStore as engine
    else:
        engine = SqliteStore
    for name, method in vars(Store).items():
        if name.startswith("_") or not callable(method):
            continue
        want = inspect.signature(method).parameters
        got = inspect.signature(getattr(engine, name)).parameters
        assert list(got) == list(want), name
        assert [p.kind for p in got.values()] == [p.kind for p in want.values()], name


def test_every_module_the_engines_share_loads_first() -> None:
    """A shared module reads the SQLite engine's rows.py and is read by both
    engines: loaded before either, it must not come back to itself."""
    shared = ["dialect", "environments", "job_table", "job_changes", "queue_table", "reports"]
    shared += ["schedule_table", "transitions", "composed"]
    for name in shared:
        subprocess.run([sys.executable, "-c", f"import queued.store.{name}"], check=True, capture_output=True)


def test_a_daemon_on_sqlite_imports_no_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from queued.store.engines import open_store;"
        f"open_store(None, Path({str(tmp_path)!r})).close();"
        "import queued.daemon, queued.__main__;"
        "print(sorted(m for m in sys.modules if m.startswith(('psycopg', 'queued.store.postgres'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unreachable_postgres_is_one_line_without_the_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreUnusable) as caught:
        open_store("postgresql://someone:s3cret@127.0.0.1:1/nothing?connect_timeout=2", Path("/nonexistent"))
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith("cannot connect to the job store at 127.0.0.1:1/nothing")
    assert engines.SQLITE_FILE not in message
