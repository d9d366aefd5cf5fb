"""The throwaway PostgreSQL the tests start: reachable, one fresh database per test."""

from __future__ import annotations

from tests.postgres import PostgresServer


def test_fresh_database_per_test(postgres_server: PostgresServer, postgres_empty_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_empty_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        conn.execute("CREATE TABLE mine (x int)")
    with psycopg.connect(postgres_server.tcp_url()) as conn:
        assert conn.execute("SELECT current_setting('fsync')").fetchone() == ("off",)


def test_another_database_holds_only_the_schema(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('mine')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM queued.jobs").fetchone() == (0,)
