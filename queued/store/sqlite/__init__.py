"""The SQLite engine of the store: the embedded default, a file in the data dir."""

from queued.store.sqlite.engine import SqliteStore
from queued.store.sqlite.schema import DatabaseUnusable

__all__ = ["DatabaseUnusable", "SqliteStore"]
