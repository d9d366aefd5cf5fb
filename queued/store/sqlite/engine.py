"""The SQLite engine: the store contract over one connection, composed of
parts that each keep one table's rules (jobs, user changes, attempts, queues),
and the writer's transactions (one BEGIN IMMEDIATE ... COMMIT per batch, a
savepoint per guarded call).

Only ever called from the writer's thread (see `queued/store/writer.py`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from queued.lease import default_node_name
from queued.lifecycle import Exit, JobState
from queued.protocol import Job, NodeInfo, QueueInfo, Run
from queued.resources import Fit
from queued.schedules import NewSchedule
from queued.store.contract import (
    AddedIds,
    Ahead,
    BatchLost,
    Claimed,
    Fired,
    NodeIdentity,
    OutputChunk,
    OutputStream,
    Recovered,
    Refused,
    StorageError,
    StoredSchedule,
    StoreLost,
    Written,
)
from queued.store.queue_table import QueueTable
from queued.store.schedule_table import ScheduleTable
from queued.store.sqlite import schema
from queued.store.sqlite.attempts import Attempts
from queued.store.sqlite.changes import JobChanges
from queued.store.sqlite.dialect import SQLITE
from queued.store.sqlite.environments import Environments
from queued.store.sqlite.jobs import Jobs
from queued.store.sqlite.transitions import SqliteTransitionSql
from queued.store.transitions import Transitions
from queued.validation import NewJob

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTPUT_IN_FILES = "this store keeps no output: an attempt's output is in the log files its row names"


class SqliteStore:
    """The store contract (`queued.store.Store`) and the writer's transactions
    (`queued.store.contract.Transactions`) on one SQLite connection."""

    # One host: attempts' output is in the log files its attempt rows name,
    # written by the supervisor, not in the database.
    keeps_output = False
    claims_before_start = False  # only this daemon uses the file: it reads ahead
    answer_bound = None  # a file of our own: nothing to wait on but the disk
    busy_since = None
    dialect = SQLITE  # its spelling of the shared statements (queued/store/reports.py reads it)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._environments = Environments(conn)
        transitions = Transitions(SqliteTransitionSql(conn))
        self._jobs = Jobs(conn, self._environments)
        self._changes = JobChanges(conn, self._jobs, self._environments, transitions)
        self._node = NodeIdentity(default_node_name(), "")
        self._attempts = Attempts(conn, self._environments, transitions, self._node)
        self._queues = QueueTable(conn, SQLITE)
        self._schedules = ScheduleTable(conn, SQLITE, self._jobs, self._environments)
        self._files = schema.FileWatch(conn)
        self._changes_at_begin = 0

    @classmethod
    def open(cls, path: Path) -> SqliteStore:
        """The store in the database file `path` (created if missing);
        schema.DatabaseUnusable names the file when it cannot be used."""
        return cls(schema.connect(path))

    def news(self) -> None:
        """No other node shares the file: no news to hear."""
        return None

    # -- jobs -------------------------------------------------------------------

    def states(self, ids: Iterable[int]) -> dict[int, JobState]:
        return self._jobs.states(ids)

    def jobs_by_id(self, ids: Sequence[int]) -> list[Job]:
        return self._jobs.jobs_by_id(ids)

    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        return self._jobs.get_job(job_id)

    def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queue: str | None = None,
        label: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
        before: int | None = None,
        command: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[Job]:
        return self._jobs.list_jobs(
            states=states,
            queue=queue,
            label=label,
            ids=ids,
            limit=limit,
            before=before,
            command=command,
            created_after=created_after,
            created_before=created_before,
        )

    def unfinished_ids(self) -> list[int]:
        return self._jobs.unfinished_ids()

    def counts(self) -> dict[str, int]:
        return self._queues.counts_by_state()

    def add_jobs(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        return self._jobs.add(jobs, now)

    def remove(self, ids: Sequence[int]) -> Written[list[str]]:
        return self._jobs.remove(ids)

    def clean(self, states: Sequence[str], older_than: float | None) -> Written[tuple[int, list[str]]]:
        return self._jobs.clean(states, older_than)

    # -- what users change ------------------------------------------------------

    def cancel(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        return self._changes.cancel(ids, now)

    def cancel_what_can(
        self, ids: Sequence[int], now: float
    ) -> Written[tuple[list[int], list[int], dict[int, str]]]:
        return self._changes.cancel_what_can(ids, now)

    def retry(self, ids: Sequence[int], all_dead: bool, now: float) -> Written[list[int]]:
        return self._changes.retry(ids, all_dead, now)

    def hold(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        return self._changes.hold(ids, now)

    def release(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        return self._changes.release(ids, now)

    def edit(self, job_id: int, fields: Mapping[str, Any], now: float) -> Written[None]:
        return self._changes.edit(job_id, fields, now)

    def restart(self, job_id: int, fields: Mapping[str, Any], hold: bool, now: float) -> Written[int]:
        return self._changes.restart(job_id, fields, hold, now)

    # -- queues and settings ----------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        return self._queues.queues()

    def add_queue(self, name: str, concurrency: int | None, now: float) -> Written[None]:
        return self._queues.add_queue(name, concurrency, now)

    def remove_queue(self, name: str) -> Written[None]:
        return self._queues.remove_queue(name)

    def set_paused(self, name: str, paused: bool) -> Written[None]:
        return self._queues.set_paused(name, paused)

    def set_queue_concurrency(self, name: str, concurrency: int | None) -> Written[None]:
        return self._queues.set_queue_concurrency(name, concurrency)

    def set_all_paused(self, paused: bool) -> Written[None]:
        return self._queues.set_all_paused(paused)

    def config(self) -> dict[str, str]:
        return self._queues.config()

    def set_config(self, key: str, value: str) -> Written[None]:
        return self._queues.set_config(key, value)

    # -- attempts' output ----------------------------------------------------------

    def append_output(self, chunks: Sequence[OutputChunk]) -> Written[None]:
        raise Refused("invalid", OUTPUT_IN_FILES)

    def read_output(
        self, job_id: int, attempt: int, stream: OutputStream, offset: int, limit: int
    ) -> tuple[bytes, int]:
        raise Refused("invalid", OUTPUT_IN_FILES)

    # -- schedules ----------------------------------------------------------------

    def schedules(self) -> list[StoredSchedule]:
        return self._schedules.schedules()

    def add_schedule(self, schedule: NewSchedule, now: float) -> Written[None]:
        return self._schedules.add(schedule, now)

    def remove_schedule(self, name: str) -> Written[None]:
        return self._schedules.remove(name)

    def pause_schedule(self, name: str, paused: bool, now: float) -> Written[None]:
        return self._schedules.pause(name, paused, now)

    def fire_schedule(self, name: str, firing: float | None, now: float) -> Written[Fired]:
        return self._schedules.fire(name, firing, now)

    # -- the supervisor's side --------------------------------------------------

    def lookahead(
        self, *, now: float, horizon: float, queues: Sequence[str], busy: Sequence[int], limit: int
    ) -> Ahead:
        return self._attempts.lookahead(now=now, horizon=horizon, queues=queues, busy=busy, limit=limit)

    def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        return self._attempts.next_due(now, queues)

    def start(self, job: Claimed, now: float, gpus: Sequence[int] = ()) -> Written[None]:
        return self._attempts.start(job, now, gpus)

    def claim(
        self,
        *,
        now: float,
        slots: int,
        queue_room: dict[str, int],
        busy: Sequence[int] = (),
        gpus: Mapping[int, Sequence[int]] | None = None,
        fit: Fit | None = None,
        started: bool = True,
    ) -> Written[list[Claimed]]:
        return self._attempts.claim(
            now=now, slots=slots, queue_room=queue_room, busy=busy, gpus=gpus, fit=fit, started=started
        )

    def mark_started(self, attempts: Sequence[tuple[int, int, int | None, float]]) -> Written[list[int]]:
        return self._attempts.mark_started(attempts)

    def unclaim(self, job: Claimed, now: float) -> Written[None]:
        return self._attempts.unclaim(job, now)

    def finish(
        self,
        claimed: Claimed,
        exit: Exit,
        backoff_max: float,
        now: float,
        *,
        pid: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
        log_incomplete: str | None = None,
    ) -> Written[JobState | None]:
        return self._attempts.finish(
            claimed,
            exit,
            backoff_max,
            now,
            pid=pid,
            stdout=stdout,
            stderr=stderr,
            log_incomplete=log_incomplete,
        )

    def recover(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        self._queues.ensure_default(now)
        return self._attempts.recover(backoff_max, now)

    # -- nodes: one, this daemon (the data dir's lock keeps it alone) -----------

    def identify(self, node: NodeIdentity) -> None:
        self._node = self._attempts.node = node

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(name=self._node.name, slots=0, running=0, this=True)]

    def rescue(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        return Written([])

    # -- the writer's transactions ----------------------------------------------

    def forget_caches(self) -> None:
        """Drop what may name rows a rollback removed."""
        self._environments.forget()

    def begin(self) -> None:
        self._changes_at_begin = self.conn.total_changes
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BatchLost(StorageError(describe(exc))) from exc

    def call(
        self, method: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, guarded: bool
    ) -> T:
        if not guarded:
            # Refuses before it writes (see the contract); an error after a
            # write cannot be undone alone: the batch fails.
            try:
                return method(*args, **kwargs)
            except Refused:
                raise
            except sqlite3.Error as exc:
                raise BatchLost(StorageError(describe(exc))) from exc
            except Exception as exc:
                log.exception("store call %s failed", getattr(method, "__name__", method))
                raise BatchLost(StorageError(f"database error: internal error: {exc}")) from exc
        conn = self.conn
        try:
            conn.execute("SAVEPOINT call")
        except sqlite3.Error as exc:
            raise BatchLost(StorageError(describe(exc))) from exc
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            self._undo_call(exc)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(describe(exc)) from exc
            raise
        conn.execute("RELEASE call")
        return result

    def _undo_call(self, exc: BaseException) -> None:
        """Roll back one guarded call; BatchLost if SQLite already rolled back
        the whole transaction (SQLITE_FULL, an I/O error): the calls before it
        lost their writes too."""
        conn = self.conn
        if not conn.in_transaction:
            error = (
                describe(exc) if isinstance(exc, sqlite3.Error) else f"database error: internal error: {exc}"
            )
            raise BatchLost(StorageError(error)) from exc
        try:
            conn.execute("ROLLBACK TO call")
            conn.execute("RELEASE call")
        except sqlite3.Error as undo:
            raise BatchLost(StorageError(describe(undo))) from exc
        self.forget_caches()

    def commit(self) -> None:
        """Before a commit that writes: the database file and its WAL must still
        be the ones the connection has open. Deleted or replaced under us, a
        commit would go into a file nobody will ever read again."""
        try:
            if self.conn.total_changes != self._changes_at_begin:
                reason = self._files.lost()
                if reason is not None:
                    raise StoreLost(
                        StorageError(
                            f"{reason} while queued was running: it refuses every change; restart queued"
                        )
                    )
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BatchLost(StorageError(describe(exc))) from exc

    def abort(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
        self.forget_caches()

    def reconnect(self) -> None:
        """A file is never unreachable (a lost one is StoreLost): nothing to do."""

    def answers(self) -> bool:
        """Never called (no `answer_bound`)."""
        return True

    def interrupt(self) -> None:
        """Never called (no `answer_bound`)."""

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:
            log.warning("final checkpoint not done (%s): the next start replays the WAL", exc)
        try:
            self.conn.close()
        except Exception as exc:
            log.warning("database not closed cleanly (%s): the next start replays the WAL", exc)


def describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return "the database disk is full; free some space and try again"
    return f"database error: {text}"
