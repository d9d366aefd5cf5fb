"""The SQLite schema and opening the database safely.

A database we cannot read, or one written by a newer queued, stops the daemon
with a message naming the file; it is never replaced by a fresh one.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from queued.store.sqlite.rows import TERMINAL, UNIQUE, WAITING

SCHEMA_VERSION = 8

# At most one unfinished job per unique key, whoever adds it: the index, not a
# read before the write, is what keeps a second one out. The other index finds
# the job of a key that completed within an add's --unique-for window.
UNIQUE_INDEXES = f"""
CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key) WHERE unique_key IS NOT NULL AND state IN ({UNIQUE});
CREATE INDEX jobs_by_unique_key ON jobs(unique_key, updated_at) WHERE unique_key IS NOT NULL;
"""

# The attempts that ended in a span of time (version 7): the web page's
# history reads those of the last seconds at every refresh, which scanned
# every attempt (2 s at 1,000,000). Partial: an attempt gets its entry when
# it ends, none while it runs.
ATTEMPTS_ENDED = "CREATE INDEX IF NOT EXISTS attempts_ended ON attempts(ended_at) WHERE ended_at IS NOT NULL;"

# Finished jobs by state and time (version 8): `clean --older-than` and `dlq
# purge` read what they remove and nothing else. Partial: a job gets its
# entry when it finishes (an add writes none). It was (updated_at) alone,
# and the planner preferred jobs_by_state, whose rows of a state are all of
# them: clean --older-than that removed nothing read 1,000,000 (0.3 s).
JOBS_FINISHED = f"""DROP INDEX IF EXISTS jobs_finished;
CREATE INDEX jobs_finished ON jobs(state, updated_at) WHERE state IN ({TERMINAL});
"""

# Recurring jobs (version 5, queued/schedules.py, queued/store/schedule_table.py): each
# stores the job its firings add; a firing is recorded once per (schedule, time).
SCHEDULES = """
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    expression   TEXT NOT NULL,
    tz           TEXT NOT NULL,
    command      TEXT NOT NULL,
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_retries  INTEGER NOT NULL,
    backoff_base REAL NOT NULL,
    timeout      REAL,
    cwd          TEXT NOT NULL,
    env_id       INTEGER NOT NULL REFERENCES environments(id),
    no_overlap   INTEGER NOT NULL,
    catch_up     TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    since        REAL NOT NULL,
    last_firing  REAL,
    last_run_at  REAL,
    last_job_id  INTEGER
);
CREATE TABLE firings (
    schedule TEXT NOT NULL,
    fired_at REAL NOT NULL,
    job_id   INTEGER,
    PRIMARY KEY (schedule, fired_at)
) WITHOUT ROWID;
"""

# Resources and weights (version 6, queued/resources.py): a schedule's jobs
# take slots and needs as any job does (the jobs' and attempts' columns are
# in their tables below).
SCHEDULE_NEEDS = """
ALTER TABLE schedules ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
ALTER TABLE schedules ADD COLUMN needs TEXT;
"""

# State sets are lifecycle's (the same text as ever: a database made before reads alike).
SCHEMA = f"""
CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    concurrency INTEGER,
    paused      INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL
);
CREATE TABLE environments (
    id     INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    data   BLOB NOT NULL
);
-- AUTOINCREMENT: ids only grow, even after `clean` deleted the newest jobs.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    command      TEXT NOT NULL,
    state        TEXT NOT NULL,
    queue        TEXT NOT NULL REFERENCES queues(name),
    priority     INTEGER NOT NULL,
    label        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_retries  INTEGER NOT NULL,
    backoff_base REAL NOT NULL,
    timeout      REAL,
    exit_code    INTEGER,
    run_at       REAL NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    cwd          TEXT NOT NULL,
    env_id       INTEGER NOT NULL REFERENCES environments(id),
    unmet        INTEGER NOT NULL DEFAULT 0,  -- dependencies not completed yet
    error        TEXT,
    unique_key   TEXT,  -- `add --unique KEY`
    slots        INTEGER NOT NULL DEFAULT 1,  -- the slots of a node it takes (add --slots N)
    needs        TEXT,  -- what it needs (add --needs) as JSON, NULL: none
    node         TEXT  -- the node it is pinned to (`add --here`), or any
);
CREATE TABLE dependencies (
    job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    depends_on INTEGER NOT NULL,
    PRIMARY KEY (job_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX dependencies_by_target ON dependencies(depends_on);
CREATE TABLE attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    pid         INTEGER,
    started_at  REAL NOT NULL,
    ended_at    REAL,
    exit_code   INTEGER,
    signal      INTEGER,
    error       TEXT,
    stdout_path TEXT,
    stderr_path TEXT,
    log_incomplete TEXT,  -- what its logs miss, and why (a full disk), if anything
    node        TEXT,  -- the node that ran it
    gpus        TEXT,  -- the GPU indices it held as JSON, NULL: none
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Kept by triggers (and by Store.add_jobs, once per batch, for inserts) so that
-- `status` is O(queues), not a scan of a million rows.
CREATE TABLE counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

-- The next job to claim: lowest priority, then run_at, then id.
CREATE INDEX jobs_ready ON jobs(priority, run_at, id)
    WHERE state IN ({WAITING}) AND unmet = 0;
-- The earliest timer to sleep until.
CREATE INDEX jobs_due ON jobs(run_at) WHERE state IN ({WAITING}) AND unmet = 0;
CREATE INDEX jobs_by_state ON jobs(state, id);
CREATE INDEX jobs_by_queue ON jobs(queue, id);
CREATE INDEX jobs_by_label ON jobs(label, id) WHERE label IS NOT NULL;
{JOBS_FINISHED}{UNIQUE_INDEXES}{ATTEMPTS_ENDED}
CREATE TRIGGER count_update AFTER UPDATE OF state ON jobs WHEN old.state != new.state BEGIN
    UPDATE counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
    INSERT INTO counts VALUES (new.queue, new.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER count_delete AFTER DELETE ON jobs BEGIN
    UPDATE counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
END;
{SCHEDULES}{SCHEDULE_NEEDS}"""


# What brings a database of version N (the key) to version N + 1: run in one
# transaction with the new user_version, at the first start of a newer queued.
MIGRATIONS: dict[int, str] = {
    1: "ALTER TABLE attempts ADD COLUMN log_incomplete TEXT;",
    2: f"ALTER TABLE jobs ADD COLUMN unique_key TEXT; {UNIQUE_INDEXES}",
    3: "ALTER TABLE attempts ADD COLUMN node TEXT; ALTER TABLE jobs ADD COLUMN node TEXT;",
    4: SCHEDULES,
    5: "ALTER TABLE jobs ADD COLUMN slots INTEGER NOT NULL DEFAULT 1; ALTER TABLE jobs ADD COLUMN needs TEXT;"
    " ALTER TABLE attempts ADD COLUMN gpus TEXT;" + SCHEDULE_NEEDS,
    6: ATTEMPTS_ENDED,
    7: JOBS_FINISHED,  # clean and dlq purge read only what they remove
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION)), "one migration per version"


class DatabaseUnusable(Exception):
    """The database file exists but cannot be used; the message names it."""


def _check_readonly(path: Path) -> None:
    """Vet an existing database through a read-only connection, so that a file
    we refuse is not touched at all (not even by a checkpoint on close)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseUnusable(f"{path} cannot be opened: {exc}") from None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseUnusable(
                f"{path} has schema version {version}, newer than this queued "
                f"understands ({SCHEMA_VERSION}); upgrade queued or use another --data-dir"
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise DatabaseUnusable(f"{path} is an SQLite database, but not one of queued's")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise DatabaseUnusable(f"{path} failed its integrity check: {check}")
    except sqlite3.DatabaseError as exc:
        raise DatabaseUnusable(f"{path} cannot be used as queued's database: {exc}") from None
    finally:
        conn.close()


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the database at `path`, refusing anything we cannot trust."""
    existed = path.exists() and path.stat().st_size > 0
    if existed:
        _check_readonly(path)
    else:
        # Created 0600 by us before SQLite opens it: the -wal and -shm files copy its mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        if version == 0:
            conn.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            version = SCHEMA_VERSION
        for old in range(version, SCHEMA_VERSION):
            conn.executescript(f"BEGIN; {MIGRATIONS[old]} PRAGMA user_version={old + 1}; COMMIT;")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DatabaseUnusable(f"{path} cannot be used as queued's database: {exc}") from None
    except DatabaseUnusable:
        conn.close()
        raise
    return conn


class FileWatch:
    """Whether the database file and its WAL are still the ones a connection
    has open. Deleted (`rm queue.db*`) or replaced (`mv other.db queue.db`)
    under a running daemon, SQLite keeps writing into the old, unlinked files:
    commits that no later start will ever read. Two stat() calls tell."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        file = conn.execute("PRAGMA database_list").fetchone()[2]  # '' for a memory database
        self.paths = [file, f"{file}-wal"] if file else []
        self._known: dict[str, tuple[int, int]] = {}
        self.lost()  # remember the files as they are now

    def lost(self) -> str | None:
        """A sentence if a file is gone or is another file than at first sight."""
        for path in self.paths:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                if path in self._known:
                    return f"the database file {path} was deleted"
                continue  # a WAL not created yet
            except OSError as exc:
                return f"the database file {path} cannot be checked ({exc.strerror})"
            identity = (info.st_dev, info.st_ino)
            known = self._known.setdefault(path, identity)
            if known != identity:
                return f"the database file {path} was replaced by another file"
        return None
