"""The SQLite engine of the store: the embedded default, a file in the data dir.

Its two public names load on first use: the modules every engine shares
(queued/store/queue_table.py and the others) read this package's rows.py, and
must not load the engine, which loads them, on the way (an import circle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from queued.store.sqlite.engine import SqliteStore
    from queued.store.sqlite.schema import DatabaseUnusable

__all__ = ["DatabaseUnusable", "SqliteStore"]


def __getattr__(name: str) -> Any:
    if name == "SqliteStore":
        from queued.store.sqlite.engine import SqliteStore

        return SqliteStore
    if name == "DatabaseUnusable":
        from queued.store.sqlite.schema import DatabaseUnusable

        return DatabaseUnusable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
