"""Schedules and their firings, for every engine: the statements are the same
in SQLite and PostgreSQL but for placeholders, row locks and how a cwd is
stored, which the engine supplies (queued/store/dialect.py). The rules are
queued/schedules.py's; the contract's docstrings (Store.fire_schedule) say
what each method must do.

Exactly once: a firing is recorded in the table `firings`, whose primary key
is (schedule, fired_at), in the transaction that adds its job. Two nodes
firing the same time insert the same key: the second waits for the first's
commit, then inserts nothing and adds nothing. The schedule's row is locked
first (PostgreSQL's FOR UPDATE; SQLite has one writer), so that a node that
comes late to a firing another already passed also adds nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from queued import schedules
from queued.store.contract import Fired, Refused, StoredSchedule, Written
from queued.store.dialect import Dialect
from queued.store.sqlite.rows import needs as needs_read
from queued.validation import NewJob

# Firings kept per schedule: enough to see what happened lately; the exactly-
# once rule needs only the latest (a firing at or before it is "taken").
FIRINGS_KEPT = 10

_COLUMNS = (
    "s.name, s.expression, s.tz, s.command, s.queue, s.priority, s.max_retries, s.backoff_base,"
    " s.timeout, s.cwd, s.no_overlap, s.catch_up, s.paused, s.created_at, s.since, s.last_firing,"
    " s.last_run_at, s.last_job_id, j.state, s.slots, s.needs"
)


class Connection(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...


class Environments(Protocol):
    def store(self, env: Any) -> int: ...

    def get(self, env_id: int) -> dict[str, str]: ...


class JobAdder(Protocol):
    def add(self, jobs: list[NewJob], now: float) -> Written[list[int]]: ...


def unknown(name: str) -> Refused:
    return Refused("not_found", f"no schedule {name!r} (`queuectl schedule ls` lists them)")


class ScheduleTable:
    def __init__(
        self, conn: Connection, dialect: Dialect, jobs: JobAdder, environments: Environments
    ) -> None:
        self.conn = conn
        self.dialect = dialect
        self.jobs = jobs
        self.environments = environments

    def _execute(self, text: str, params: tuple = ()) -> Any:
        return self.conn.execute(self.dialect.sql(text), params)

    def schedules(self) -> list[StoredSchedule]:
        found = self._execute(
            f"SELECT {_COLUMNS} FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id ORDER BY s.name"
        ).fetchall()
        return [self._schedule(row) for row in found]

    def _schedule(self, row: tuple) -> StoredSchedule:
        return StoredSchedule(
            name=row[0],
            expression=row[1],
            tz=row[2],
            command=row[3],
            queue=row[4],
            priority=row[5],
            max_retries=row[6],
            backoff_base=row[7],
            timeout=row[8],
            cwd=self.dialect.read_path(row[9]),
            no_overlap=bool(row[10]),
            catch_up=row[11],
            paused=bool(row[12]),
            created_at=row[13],
            since=row[14],
            last_firing=row[15],
            last_run_at=row[16],
            last_job_id=row[17],
            last_job_state=row[18],
            slots=row[19],
            needs=needs_read(row[20]),
        )

    def add(self, schedule: schedules.NewSchedule, now: float) -> Written[None]:
        job = schedule.job
        if self._execute("SELECT 1 FROM schedules WHERE name = ?", (schedule.name,)).fetchone():
            raise Refused(
                "invalid",
                f"schedule {schedule.name!r} already exists (`queuectl schedule rm {schedule.name}` first)",
            )
        if not self._execute("SELECT 1 FROM queues WHERE name = ?", (job.queue,)).fetchone():
            raise Refused(
                "not_found", f"unknown queue {job.queue!r} (create it with `queuectl queue add {job.queue}`)"
            )
        self._execute(
            "INSERT INTO schedules (name, expression, tz, command, queue, priority, max_retries,"
            " backoff_base, timeout, cwd, env_id, no_overlap, catch_up, paused, created_at, since,"
            " slots, needs)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                schedule.name,
                schedule.expression,
                schedule.tz,
                job.command,
                job.queue,
                job.priority,
                job.max_retries,
                job.backoff_base,
                job.timeout,
                self.dialect.path_in(job.cwd),
                self.environments.store(job.env),
                schedule.no_overlap,
                schedule.catch_up,
                False,
                now,
                now,
                job.slots,
                self.dialect.json_in(job.needs) if job.needs else None,
            ),
        )
        return Written(None)

    def remove(self, name: str) -> Written[None]:
        self._require(name)
        self._execute("DELETE FROM firings WHERE schedule = ?", (name,))
        self._execute("DELETE FROM schedules WHERE name = ?", (name,))
        return Written(None)

    def pause(self, name: str, paused: bool, now: float) -> Written[None]:
        was = self._require(name)[0]
        if bool(was) == paused:
            raise Refused("invalid", f"schedule {name!r} is {'paused' if paused else 'not paused'} already")
        if paused:
            self._execute("UPDATE schedules SET paused = ? WHERE name = ?", (True, name))
        else:
            self._execute("UPDATE schedules SET paused = ?, since = ? WHERE name = ?", (False, now, name))
        return Written(None)

    def _require(self, name: str) -> tuple:
        row = self._execute(
            f"SELECT paused FROM schedules WHERE name = ?{self.dialect.lock}", (name,)
        ).fetchone()
        if row is None:
            raise unknown(name)
        return row

    def fire(self, name: str, firing: float | None, now: float) -> Written[Fired]:
        row = self._execute(
            "SELECT command, queue, priority, max_retries, backoff_base, timeout, cwd, env_id,"
            " no_overlap, paused, last_firing, last_job_id, slots, needs"
            f" FROM schedules WHERE name = ?{self.dialect.lock}",
            (name,),
        ).fetchone()
        if row is None:
            if firing is None:
                raise unknown(name)
            return Written(Fired("gone"))
        (command, queue, priority, retries, backoff, timeout, cwd, env_id) = row[:8]
        no_overlap, paused, last_firing, last_job_id, slots, needs = row[8:]
        if firing is not None:
            if paused:
                return Written(Fired("paused"))
            if last_firing is not None and firing <= last_firing:
                return Written(Fired("taken"))
            last_state = None
            if last_job_id is not None:
                state_row = self._execute("SELECT state FROM jobs WHERE id = ?", (last_job_id,)).fetchone()
                last_state = None if state_row is None else state_row[0]
            overlaps = schedules.skips_for_overlap(bool(no_overlap), last_state)
            if overlaps and firing > now:
                return Written(Fired("early"))
            inserted = self._execute(
                "INSERT INTO firings (schedule, fired_at) VALUES (?, ?)"
                " ON CONFLICT (schedule, fired_at) DO NOTHING RETURNING fired_at",
                (name, firing),
            ).fetchone()
            if inserted is None:
                return Written(Fired("taken"))
            self._execute("UPDATE schedules SET last_firing = ? WHERE name = ?", (firing, name))
            self._execute(
                "DELETE FROM firings WHERE schedule = ? AND fired_at < ("
                " SELECT fired_at FROM firings WHERE schedule = ?"
                f" ORDER BY fired_at DESC LIMIT 1 OFFSET {FIRINGS_KEPT - 1})",
                (name, name),
            )
            if overlaps:
                return Written(Fired("overlap"))
        job = NewJob(
            command=command,
            queue=queue,
            priority=priority,
            max_retries=retries,
            backoff_base=backoff,
            timeout=timeout,
            run_at=schedules.job_due(firing, now),
            depends_on=[],
            label=name,
            cwd=self.dialect.read_path(cwd),  # type: ignore[arg-type]  # bytes: a path that is not UTF-8
            env=self.environments.get(env_id),
            slots=slots,
            needs=needs_read(needs),
        )
        written = self.jobs.add([job], now)
        [job_id] = written.value
        if firing is not None:
            self._execute(
                "UPDATE firings SET job_id = ? WHERE schedule = ? AND fired_at = ?", (job_id, name, firing)
            )
        self._execute(
            "UPDATE schedules SET last_job_id = ?, last_run_at = ? WHERE name = ?", (job_id, now, name)
        )
        return Written(Fired("added", job_id), written.changes)
