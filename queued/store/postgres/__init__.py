"""The PostgreSQL engine of the store: a database several nodes may share.

Imported only when a postgresql:// store is asked for (see `queued.store.engines`):
a daemon on SQLite never imports psycopg.
"""

from queued.store.postgres.engine import PostgresStore
from queued.store.postgres.schema import DatabaseUnusable

__all__ = ["DatabaseUnusable", "PostgresStore"]
