"""The PostgreSQL schema, and connecting to the database safely.

Every table lives in the schema `queued` of the database the URL names, so a
database the user shares with other applications keeps its own tables apart.
The schema is created or migrated at start inside one transaction under an
advisory lock: several nodes starting at once create it once, and a database
written by a newer queued is refused with a message naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from queued import lifecycle
from queued.store.sqlite.rows import TERMINAL, UNIQUE, WAITING

if TYPE_CHECKING:
    from psycopg import Connection

SCHEMA_VERSION = 9
NAMESPACE = "queued"
# pg_advisory_xact_lock's key for creating and migrating the schema ("queued" in ASCII).
SCHEMA_LOCK = 0x717565756564
# pg_advisory_lock's key while an add takes its ids ("jobids").
JOB_IDS_LOCK = 0x6A6F62696473

# Attempts' output (version 2), so that any node shows any attempt's: each
# stream (1 stdout, 2 stderr) in pieces of at most output.PIECE bytes, each
# keyed by the byte of the stream where it begins.
OUTPUT_CHUNKS = """
CREATE TABLE output_chunks (
    job_id  BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    stream  SMALLINT NOT NULL,
    at      BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, stream, at),
    FOREIGN KEY (job_id, attempt) REFERENCES attempts(job_id, attempt) ON DELETE CASCADE
);
"""

# At most one unfinished job per unique key, whichever node adds it (see
# Jobs.add for the lock that makes looking and adding one step); the other
# index finds the job of a key that completed within an add's --unique-for.
UNIQUE_INDEXES = f"""
CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key) WHERE unique_key IS NOT NULL AND state IN ({UNIQUE});
CREATE INDEX jobs_by_unique_key ON jobs(unique_key, updated_at) WHERE unique_key IS NOT NULL;
"""

# The nodes: one row per name, naming its latest incarnation (a daemon start)
# and when its lease ends on the database's clock. An attempt whose
# incarnation holds no live lease here is rescued by the nodes alive.
NODES = """
CREATE TABLE nodes (
    name         TEXT PRIMARY KEY,
    incarnation  TEXT NOT NULL UNIQUE,
    home         TEXT NOT NULL,  -- machine id and data dir: a restart there may take its name at once
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    slots        INTEGER NOT NULL,
    queues       TEXT[],  -- the queues it serves; NULL: all
    lease        DOUBLE PRECISION NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ  -- it left cleanly (its name is free)
);
CREATE INDEX attempts_open ON attempts(incarnation) WHERE ended_at IS NULL;
"""

# The attempts that ended in a span of time (version 9): the web page's
# history reads those of the last seconds at every refresh, which scanned
# every attempt at 1,000,000. Partial: an attempt gets its entry when it
# ends, none while it runs (its end changes ended_at, an indexed column of
# attempts_open's predicate already: the end was no HOT update before either).
ATTEMPTS_ENDED = "CREATE INDEX IF NOT EXISTS attempts_ended ON attempts(ended_at) WHERE ended_at IS NOT NULL;"

# Recurring jobs (version 6, queued/store/schedule_table.py): each stores the
# job its firings add; a firing is recorded once per (schedule, time),
# whichever node fires.
SCHEDULES = """
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    expression   TEXT NOT NULL,
    tz           TEXT NOT NULL,
    command      TEXT NOT NULL,
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_retries  INTEGER NOT NULL,
    backoff_base DOUBLE PRECISION NOT NULL,
    timeout      DOUBLE PRECISION,
    cwd          BYTEA NOT NULL,
    env_id       BIGINT NOT NULL REFERENCES environments(id),
    no_overlap   BOOLEAN NOT NULL,
    catch_up     TEXT NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT false,
    created_at   DOUBLE PRECISION NOT NULL,
    since        DOUBLE PRECISION NOT NULL,
    last_firing  DOUBLE PRECISION,
    last_run_at  DOUBLE PRECISION,
    last_job_id  BIGINT
);
CREATE TABLE firings (
    schedule TEXT NOT NULL,
    fired_at DOUBLE PRECISION NOT NULL,
    job_id   BIGINT,
    PRIMARY KEY (schedule, fired_at)
);
"""

# Resources and weights (version 7, queued/resources.py): a schedule's jobs
# take slots and needs as any job does, and each node keeps its resources'
# capacity and use (protocol.Resources as JSON, written with its heartbeat)
# for the other nodes' `status`. The jobs' and attempts' columns are in their
# tables below.
RESOURCES = """
ALTER TABLE schedules ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
ALTER TABLE schedules ADD COLUMN needs JSONB;
ALTER TABLE nodes ADD COLUMN resources JSONB;
"""

# A job's queue and environment were foreign keys until version 8: each
# inserted row then ran two checks of its own at the end of the statement,
# which took half the server's time of a bulk add (B3pg). An add checks its
# queues once instead, locking their rows FOR KEY SHARE as the foreign key
# did (Jobs.add, Changes.edit), and `queue rm` locks its row FOR UPDATE before
# it looks for jobs (Queues.remove_queue), so that neither can miss the
# other's commit. Environments are never deleted.
JOB_KEYS_CHECKED_ONCE = """
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_queue_fkey;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_env_id_fkey;
"""

# State sets are lifecycle's. `cwd` is bytes: a path need not be UTF-8 (read
# back as str when it is). Job counts are read with GROUP BY, not kept by a
# trigger: a trigger-kept counts table serializes every node's claims.
# A job's queue and environment are not foreign keys (JOB_KEYS_CHECKED_ONCE).
SCHEMA = f"""
CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    concurrency INTEGER,
    paused      BOOLEAN NOT NULL DEFAULT false,
    created_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE environments (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest BYTEA NOT NULL UNIQUE,
    data   BYTEA NOT NULL
);
-- A sequence: ids only grow, even after `clean` deleted the newest jobs (an
-- add takes its ids from it first: see Jobs.add).
CREATE TABLE jobs (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    command      TEXT NOT NULL,
    state        TEXT NOT NULL,
    queue        TEXT NOT NULL,  -- a queues row: see JOB_KEYS_CHECKED_ONCE
    priority     INTEGER NOT NULL,
    label        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_retries  INTEGER NOT NULL,
    backoff_base DOUBLE PRECISION NOT NULL,
    timeout      DOUBLE PRECISION,
    exit_code    INTEGER,
    run_at       DOUBLE PRECISION NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    cwd          BYTEA NOT NULL,
    env_id       BIGINT NOT NULL,  -- an environments row: see JOB_KEYS_CHECKED_ONCE
    unmet        INTEGER NOT NULL DEFAULT 0,  -- dependencies not completed yet
    error        TEXT,
    unique_key   TEXT,  -- `add --unique KEY`
    node         TEXT,  -- the node it is pinned to (`add --here`, `add --node`), or any
    slots        INTEGER NOT NULL DEFAULT 1,  -- the node's slots it takes (`add --slots N`)
    needs        JSONB  -- {{"gpu": 1, ...}} (`add --needs`); NULL: none
);
CREATE TABLE dependencies (
    job_id     BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    depends_on BIGINT NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX dependencies_by_target ON dependencies(depends_on);
CREATE TABLE attempts (
    job_id      BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    pid         INTEGER,
    started_at  DOUBLE PRECISION NOT NULL,
    ended_at    DOUBLE PRECISION,
    exit_code   INTEGER,
    signal      INTEGER,
    error       TEXT,
    stdout_path TEXT,
    stderr_path TEXT,
    log_incomplete TEXT,
    node        TEXT,  -- the node that ran it
    incarnation TEXT,  -- and the daemon start of that node: its records are fenced on it
    rescued_by  TEXT,  -- the node that ended it as interrupted, its own node being lost
    gpus        JSONB,  -- [0, 1]: the GPU indices it held; NULL: none
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The next jobs to claim in each queue: lowest priority, then run_at, then id.
CREATE INDEX jobs_ready ON jobs(queue, priority, run_at, id)
    WHERE state IN ({WAITING}) AND unmet = 0;
-- The earliest timer to sleep until.
CREATE INDEX jobs_due ON jobs(run_at) WHERE state IN ({WAITING}) AND unmet = 0;
CREATE INDEX jobs_by_state ON jobs(state, id);
CREATE INDEX jobs_by_queue ON jobs(queue, id);
CREATE INDEX jobs_by_label ON jobs(label, id) WHERE label IS NOT NULL;
CREATE INDEX jobs_finished ON jobs(updated_at) WHERE state IN ({TERMINAL});
{OUTPUT_CHUNKS}
{UNIQUE_INDEXES}{NODES}{ATTEMPTS_ENDED}
"""

# Finished jobs are counted apart, so that `status` need not count a million
# rows (GROUP BY state: 128 ms at 1M). Unfinished ones are few and counted on
# the fly through jobs_by_state; claims (pending -> running) never touch this
# table. A job entering or leaving a terminal state moves one row of it, in
# the same transaction: the row of the writing backend's shard (its pid
# modulo FINISHED_SHARDS), so that nodes finishing jobs at once do not queue
# on one hot row; one row per shard, a column per state, so that a
# transaction only ever locks one row of it (no deadlock between shards).
# Bulk deletes (clean, rm) are counted once per statement. Written to be run
# again over itself (the migration recounts from the jobs).
# The functions name the table with its schema: they run under the search_path
# of whoever changes the jobs.
FINISHED_SHARDS = 16
_TERMINAL_STATES = lifecycle.TERMINAL_STATES
_COLUMNS = ", ".join(_TERMINAL_STATES)
_SHARD = f"pg_backend_pid() % {FINISHED_SHARDS}"
_ADD_EXCLUDED = ", ".join(f"{state} = c.{state} + excluded.{state}" for state in _TERMINAL_STATES)


def _delta(new: str, old: str | None) -> str:
    """Each terminal state's change of count from row `old` (None: none) to row `new`."""
    return ", ".join(
        f"({new}.state = '{state}')::int" + (f" - ({old}.state = '{state}')::int" if old else "")
        for state in _TERMINAL_STATES
    )


# A statement that moves many jobs at once (the dependents cascade) counts
# them itself, in one upsert (`count_moved`), with COUNTED_APART set around
# it (transaction-local: an error undoes it): the row trigger stands aside. Row by
# row, n moves in one transaction would write n versions of one counts row,
# and each upsert walks the versions before it: 100,000 cascaded cancels took
# 80 s, quadratic (version 9).
COUNTED_APART = "queued.counted_apart"
FINISHED_CHANGE_TRIGGER = f"""DROP TRIGGER IF EXISTS jobs_finished_change ON jobs;
CREATE TRIGGER jobs_finished_change AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          AND (OLD.state IN ({TERMINAL}) OR NEW.state IN ({TERMINAL}))
          AND current_setting('{COUNTED_APART}', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION count_finished_change();
"""


def count_moved(moved: str) -> str:
    """An upsert adding to this backend's shard the change of finished counts
    of the moves in `moved` (a relation with columns `old` and `new`, states),
    written for a statement with parameters (its `%` doubled)."""
    sums = ", ".join(f"sum((new = '{state}')::int - (old = '{state}')::int)" for state in _TERMINAL_STATES)
    return (
        f"INSERT INTO finished_counts AS c (shard, {_COLUMNS}) SELECT {_SHARD.replace('%', '%%')}, {sums}"
        f" FROM {moved}"
        f" WHERE old IS DISTINCT FROM new AND (old IN ({TERMINAL}) OR new IN ({TERMINAL}))"
        f" HAVING count(*) > 0 ON CONFLICT (shard) DO UPDATE SET {_ADD_EXCLUDED}"
    )


_SIGNED_COUNTS = ", ".join(f"sign * count(*) FILTER (WHERE state = '{state}')" for state in _TERMINAL_STATES)
FINISHED_COUNTS = f"""
CREATE TABLE IF NOT EXISTS finished_counts (
    shard INTEGER PRIMARY KEY,
    {", ".join(f"{state} BIGINT NOT NULL DEFAULT 0" for state in _TERMINAL_STATES)}
);
CREATE OR REPLACE FUNCTION count_finished_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {NAMESPACE}.finished_counts AS c (shard, {_COLUMNS})
        VALUES ({_SHARD}, {_delta("NEW", None)})
        ON CONFLICT (shard) DO UPDATE SET {_ADD_EXCLUDED};
    ELSE
        INSERT INTO {NAMESPACE}.finished_counts AS c (shard, {_COLUMNS})
        VALUES ({_SHARD}, {_delta("NEW", "OLD")})
        ON CONFLICT (shard) DO UPDATE SET {_ADD_EXCLUDED};
    END IF;
    RETURN NULL;
END $$;
{FINISHED_CHANGE_TRIGGER}
CREATE OR REPLACE FUNCTION count_finished_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign INTEGER := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    INSERT INTO {NAMESPACE}.finished_counts AS c (shard, {_COLUMNS})
    SELECT {_SHARD}, {_SIGNED_COUNTS}
    FROM changed WHERE state IN ({TERMINAL})
    HAVING count(*) > 0
    ON CONFLICT (shard) DO UPDATE SET {_ADD_EXCLUDED};
    RETURN NULL;
END $$;
-- An add inserts no finished job: a row trigger that the WHEN skips costs it
-- nothing (a statement trigger would copy every row into a transition table).
DROP TRIGGER IF EXISTS jobs_finished_inserted ON jobs;
CREATE TRIGGER jobs_finished_inserted AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.state IN ({TERMINAL}))
    EXECUTE FUNCTION count_finished_change();
DROP TRIGGER IF EXISTS jobs_finished_deleted ON jobs;
CREATE TRIGGER jobs_finished_deleted AFTER DELETE ON jobs REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION count_finished_rows();
-- An add's ids, consecutive whatever other nodes add meanwhile: the first of
-- `n` taken under a lock every add takes, held only while it takes them.
CREATE OR REPLACE FUNCTION take_job_ids(n BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    first BIGINT;
BEGIN
    PERFORM pg_advisory_lock({JOB_IDS_LOCK});
    first := nextval('{NAMESPACE}.jobs_id_seq');
    IF n > 1 THEN
        PERFORM setval('{NAMESPACE}.jobs_id_seq', first + n - 1);
    END IF;
    PERFORM pg_advisory_unlock({JOB_IDS_LOCK});
    RETURN first;
END $$;
CREATE OR REPLACE FUNCTION count_finished_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {NAMESPACE}.finished_counts;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS jobs_finished_truncated ON jobs;
CREATE TRIGGER jobs_finished_truncated AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_finished_truncated();
"""

SCHEMA += FINISHED_COUNTS
SCHEMA += SCHEDULES
SCHEMA += RESOURCES

# What brings a database of version N (the key) to version N + 1, run in the
# transaction that opens it, under the advisory lock.
MIGRATIONS: dict[int, str] = {
    1: OUTPUT_CHUNKS,  # attempts' output kept in the database (before: only in the node's files)
    2: f"ALTER TABLE jobs ADD COLUMN unique_key TEXT; {UNIQUE_INDEXES}",
    3: FINISHED_COUNTS  # finished jobs counted apart; an add's ids taken at once
    + f"""
DELETE FROM finished_counts;
INSERT INTO finished_counts (shard, {_COLUMNS})
    SELECT 0, {", ".join(f"count(*) FILTER (WHERE state = '{state}')" for state in _TERMINAL_STATES)}
    FROM jobs WHERE state IN ({TERMINAL});
""",
    4: "ALTER TABLE attempts ADD COLUMN node TEXT; ALTER TABLE attempts ADD COLUMN incarnation TEXT;"
    " ALTER TABLE attempts ADD COLUMN rescued_by TEXT; ALTER TABLE jobs ADD COLUMN node TEXT;" + NODES,
    5: SCHEDULES,  # recurring jobs
    # resources and weights
    6: "ALTER TABLE jobs ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;"
    " ALTER TABLE jobs ADD COLUMN needs JSONB; ALTER TABLE attempts ADD COLUMN gpus JSONB;" + RESOURCES,
    7: JOB_KEYS_CHECKED_ONCE,  # a bulk add checks its queues once, not per row
    8: FINISHED_CHANGE_TRIGGER + ATTEMPTS_ENDED,  # a cascade counts its moves in one statement
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION)), "one migration per version"


class DatabaseUnusable(Exception):
    """The database cannot be used as queued's store; the message names it."""


class DatabaseUnreachable(DatabaseUnusable):
    """No connection could be made (the server is down, the network cut):
    trying again later may work. `detail` is the driver's reason."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


# What a connection string gets unless the user chose otherwise (in the URL,
# or PGCONNECT_TIMEOUT): TCP keepalive and tcp_user_timeout, without which a
# network cut goes unnoticed for minutes (with them: seconds, see
# FIELD-NOTES.md), and a bounded wait for a connection. libpq ignores the TCP
# ones on a Unix socket.
CONNECTION_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
    "tcp_user_timeout": "5000",  # milliseconds
    "connect_timeout": "10",
}
_DEFAULTS_FROM_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT"}


def with_defaults(url: str, environ: Mapping[str, str] | None = None) -> str:
    """`url` with CONNECTION_DEFAULTS for every parameter it does not set."""
    environ = os.environ if environ is None else environ
    given = psycopg.conninfo.conninfo_to_dict(url)
    missing = {
        key: value
        for key, value in CONNECTION_DEFAULTS.items()
        if key not in given and _DEFAULTS_FROM_ENVIRONMENT.get(key, "") not in environ
    }
    return psycopg.conninfo.make_conninfo(url, **missing) if missing else url


def where(url: str) -> str:
    """The database a URL names, for messages: host and database, never a password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database given"
    host = str(info.get("host") or "localhost")
    if host.startswith("/"):
        host = "localhost"
    port = info.get("port")
    database = info.get("dbname") or info.get("user") or ""
    return f"{host}{':' + str(port) if port else ''}/{database}"


def connect(url: str, connect_timeout: int | None = None) -> Connection:
    """An autocommit connection to the store of `url` (CONNECTION_DEFAULTS
    added; `connect_timeout` in seconds overrides the URL's), with the schema
    current; DatabaseUnusable with a one-line reason when it cannot be used
    (DatabaseUnreachable when no connection could be made)."""
    try:
        conninfo = with_defaults(url)
        extra = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
        conn = psycopg.connect(conninfo, autocommit=True, **extra)
    except psycopg.ProgrammingError as exc:  # not a connection string libpq takes
        raise DatabaseUnusable(f"invalid job store URL: {first_line(exc)}") from None
    except psycopg.Error as exc:
        raise DatabaseUnreachable(
            f"cannot connect to the job store at {where(url)}: {first_line(exc)}", first_line(exc)
        ) from None
    try:
        prepare(conn, where(url))
    except BaseException:
        conn.close()
        raise
    return conn


def prepare(conn: Connection, name: str) -> None:
    """Create or migrate the schema once, whatever other nodes do meanwhile."""
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(NAMESPACE)))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(NAMESPACE)))
            version = stored_version(conn)
            if version is None:
                if conn.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (NAMESPACE,)
                ).fetchone()[0]:
                    raise DatabaseUnusable(
                        f"the schema {NAMESPACE!r} of {name} holds tables that are not queued's"
                    )
                conn.execute(SCHEMA)
                conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
                version = SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise DatabaseUnusable(
                    f"the job store at {name} has schema version {version}, newer than this queued "
                    f"understands ({SCHEMA_VERSION}); upgrade queued on this node"
                )
            for old in range(version, SCHEMA_VERSION):
                conn.execute(MIGRATIONS[old])
                conn.execute("UPDATE schema_version SET version = %s", (old + 1,))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(NAMESPACE)))
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError) or conn.broken:
            raise DatabaseUnreachable(
                f"cannot reach the job store at {name}: {first_line(exc)}", first_line(exc)
            ) from None
        raise DatabaseUnusable(f"the job store at {name} cannot be used: {first_line(exc)}") from None


def stored_version(conn: Connection) -> int | None:
    """The schema's version row, or None if there is no schema yet."""
    if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return None if row is None else int(row[0])


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
