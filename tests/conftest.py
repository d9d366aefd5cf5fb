"""Fixtures every test level may use: a throwaway PostgreSQL (tests/postgres.py)."""

from tests.postgres import _postgres_session, postgres_empty_url, postgres_server, postgres_url

__all__ = ["_postgres_session", "postgres_empty_url", "postgres_server", "postgres_url"]
