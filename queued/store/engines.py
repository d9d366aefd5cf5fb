"""Which engine keeps the store: the one place that decides.

No `store` (flag `--store`, config key `store`, QUEUED_STORE): SQLite in the
data dir, the embedded default that needs nothing. A `postgresql://` URL (or
any libpq connection string naming a host or database): that PostgreSQL
database, through psycopg, imported only then — a daemon on SQLite never
loads it. A URL is only ever shown through `describe`, which hides any
password.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from queued.store.contract import Engine

SQLITE_FILE = "queue.db"
_POSTGRES = re.compile(r"^(postgres|postgresql)://", re.IGNORECASE)
_CONNINFO = re.compile(r"^\s*\w+\s*=")  # libpq's `host=... dbname=...` form


class StoreUnusable(Exception):
    """The store asked for cannot be opened; the message says why in one line."""


def is_postgres(spec: str | None) -> bool:
    return bool(spec) and bool(_POSTGRES.match(spec or "") or _CONNINFO.match(spec or ""))


def check_spec(spec: str | None) -> None:
    """ValueError for a `store` value no engine takes (before anything opens)."""
    if spec is None or spec.strip() in ("", "sqlite") or is_postgres(spec):
        return
    raise ValueError(
        f"invalid value for store: {redact(spec)!r}: give a postgresql:// URL, "
        "or leave it out for SQLite in the data dir"
    )


def describe(spec: str | None, data_dir: Path | None = None) -> str:
    """The store as logs and messages may name it: never a password."""
    if not is_postgres(spec):
        return str(data_dir / SQLITE_FILE) if data_dir is not None else "SQLite in the data dir"
    return redact(spec or "")


def redact(text: str) -> str:
    """`text` with any password in it (URL or key=value form) replaced by ***."""
    text = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", text)
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", text)


def open_store(spec: str | None, data_dir: Path) -> Engine:
    """The engine `spec` names, open, its schema current; StoreUnusable
    (one line, no password) when it cannot be used."""
    try:
        check_spec(spec)
    except ValueError as exc:
        raise StoreUnusable(str(exc)) from None
    if is_postgres(spec):
        assert spec is not None
        try:
            from queued.store.postgres import DatabaseUnusable, PostgresStore
        except ImportError as exc:
            raise StoreUnusable(
                f"a PostgreSQL store needs psycopg ({exc.name or exc}): pip install 'queued[postgres]'"
            ) from None
        try:
            return PostgresStore.open(spec)
        except DatabaseUnusable as exc:
            raise StoreUnusable(str(exc)) from None
    from queued.store.sqlite import DatabaseUnusable as SqliteUnusable
    from queued.store.sqlite import SqliteStore

    try:
        return SqliteStore.open(data_dir / SQLITE_FILE)
    except SqliteUnusable as exc:
        raise StoreUnusable(str(exc)) from None


def migrate(spec: str | None, data_dir: Path) -> int:
    """Create or upgrade the schema of the store `spec` names, without
    starting anything; the schema version it is at now."""
    engine = open_store(spec, data_dir)
    engine.close()
    if is_postgres(spec):
        from queued.store.postgres.schema import SCHEMA_VERSION
    else:
        from queued.store.sqlite.schema import SCHEMA_VERSION
    return SCHEMA_VERSION


def open_node_leases(spec: str | None, lease: float) -> object | None:
    """The nodes' registration and leases on a shared store, on a connection
    of their own (queued.store.postgres.nodes.NodeLeases); None for SQLite,
    whose one daemon per data dir needs none."""
    if not is_postgres(spec):
        return None
    from queued.store.postgres.nodes import NodeLeases

    assert spec is not None
    return NodeLeases(spec, lease)
