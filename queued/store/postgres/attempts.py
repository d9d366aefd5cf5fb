"""The supervisor's side of the store (PostgreSQL): reading due jobs ahead and recording
their starts, claiming due jobs outright, the next timer, recording how
attempts ended, and finding the attempts a dead daemon left."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import Connection
from psycopg.types.json import Jsonb

from queued import lifecycle
from queued.lifecycle import Event, Exit, JobState
from queued.resources import GPU, Capacity, Fit
from queued.store.contract import (
    NOTHING,
    Ahead,
    AttemptEnd,
    Changes,
    Claimed,
    NodeIdentity,
    Recovered,
    Refused,
    Written,
)
from queued.store.postgres import ends
from queued.store.postgres.jobs import Environments, with_path
from queued.store.sqlite import rows
from queued.store.sqlite.rows import NOT_STARTED, WAITING
from queued.store.transitions import GroupTransitions

_SELECT_WAITING = (
    f"SELECT {rows.WAITING_COLUMNS}"
    f" FROM jobs WHERE state IN ({WAITING}) AND unmet = 0 AND {{window}}"
    " AND queue = ANY(%s::text[]) AND id <> ALL(%s::bigint[]) AND (node IS NULL OR node = %s)"
    " ORDER BY {order} LIMIT %s"
)
_DUE = {"window": "run_at <= %s", "order": "priority, run_at, id"}
_UPCOMING = {"window": "run_at > %s AND run_at <= %s", "order": "run_at, id"}
# A claim with a fit reads past at most this many jobs that do not fit now.
PASSED_OVER = 64
CWD = 4  # the cwd's place in rows.WAITING_COLUMNS and rows.INTERRUPTED_COLUMNS

# What a claim makes of a waiting job (either waiting state): one UPDATE for all.
_CLAIMED = lifecycle.next_state(lifecycle.WAITING_STATES[0], Event.CLAIM)
assert all(lifecycle.next_state(state, Event.CLAIM) == _CLAIMED for state in lifecycle.WAITING_STATES)

# This node's incarnation holds a live lease (on the database's clock): the
# fence on every start of an attempt. NULL: an engine no node registered
# (tests, tools) fences nothing.
LEASE_HELD = (
    "(%(incarnation)s::text IS NULL OR EXISTS (SELECT 1 FROM nodes"
    " WHERE incarnation = %(incarnation)s AND lease_until > now()))"
)

# Claims of a queue with a concurrency of its own take this lock, per queue,
# before they count its running jobs: pg_advisory_xact_lock's first key (its
# second is the queue name's hash), released at the claim's commit. An
# advisory lock, not the queue's row: `queue pause` and the like update that
# row, and a claim must not wait for them nor deadlock with them.
QUEUE_LOCK = 0x71756575  # "queu"

# Lock every limited queue among those the claim may take from, in name order
# (two claims never wait for each other in a cycle). A statement of its own:
# the count that follows must see the claims committed while it waited, and a
# statement's snapshot is taken before its lock waits (READ COMMITTED: the
# next statement takes a new one).
_LOCK_LIMITED = """
SELECT pg_advisory_xact_lock(%(lock)s, hashtext(name)) FROM (SELECT name FROM queues
    WHERE name = ANY(%(queues)s::text[]) AND concurrency IS NOT NULL ORDER BY name) q
"""

# A job that could run on this node at all, idle (queued.resources.never_fits
# in SQL): no more slots than `capacity_slots`, and of each resource it needs
# no more than `capacity` (jsonb: each resource's count, GPUs as "gpu"). A
# claim without a fit (%(weighing)s false) takes any job as one slot.
_COULD_FIT = """(NOT %(weighing)s OR (slots <= %(capacity_slots)s AND (needs IS NULL OR NOT EXISTS (
    SELECT 1 FROM jsonb_each_text(needs) n
    WHERE n.value::int > coalesce((%(capacity)s::jsonb ->> n.key)::int, 0)))))"""

# The columns a claim returns: rows.WAITING_COLUMNS, of the jobs `taken`
# with their attempt `runs`.
_TAKEN_COLUMNS = """
    taken.id, taken.attempts - 1, command, queue, cwd, env_id, timeout, max_retries, backoff_base,
    runs.attempt, EXISTS (SELECT 1 FROM dependencies WHERE depends_on = taken.id), priority, run_at,
    slots, needs"""
# The claim's last row when it met a job that needs more than one slot (id NULL):
# the claim stopped before it, and the jobs from it on are walked in Python
# (`Attempts._claim_fitting`).
_WEIGHED = ", ".join(["NULL"] * 15)

# Take the best due jobs, up to each queue's room and `slots` in all, in one
# statement: rows other nodes are taking are skipped, not waited for. A
# queue's room is the supervisor's less, for a limited queue, its jobs running
# anywhere (its lock is held: no other claim of it runs until this commits);
# a queue paused on another node has none, even before this node heard of it.
# The attempt's row goes in with the claim, so the claim commits before
# anything starts: two nodes never start the same attempt. Each queue locks
# at most `slots` candidates; those beyond the best `slots` of all queues
# stay locked (not taken) until the claim commits, and another node's claim
# skips them. Nothing is taken unless this node's lease holds (LEASE_HELD).
# With a fit (resources), jobs this node could never run are not candidates,
# and the claim takes only the one-slot jobs ahead of the first candidate
# that needs more (`weighted`): a last row says it met one, and the claim
# goes on in Python from there (`Attempts._claim_fitting`).
_CLAIM = f"""
WITH asked(queue, n) AS (SELECT * FROM unnest(%(queues)s::text[], %(rooms)s::int[])
    WHERE {LEASE_HELD}),
room(queue, n) AS (
    SELECT asked.queue, CASE WHEN queues.concurrency IS NULL THEN asked.n
        ELSE greatest(0, least(asked.n, queues.concurrency - (SELECT count(*) FROM jobs
            WHERE state = '{lifecycle.RUNNING}' AND queue = asked.queue))) END
    FROM asked JOIN queues ON queues.name = asked.queue WHERE NOT queues.paused),
picked AS (
    SELECT j.id, j.priority, j.run_at, j.weighted FROM room CROSS JOIN LATERAL (
        SELECT id, priority, run_at, %(weighing)s AND (slots <> 1 OR needs IS NOT NULL) AS weighted
        FROM jobs
        WHERE state IN ({WAITING}) AND unmet = 0 AND run_at <= %(now)s AND queue = room.queue
            AND id <> ALL(%(busy)s::bigint[]) AND (node IS NULL OR node = %(node)s) AND {_COULD_FIT}
        ORDER BY priority, run_at, id LIMIT least(room.n, %(slots)s) FOR UPDATE SKIP LOCKED) j
    ORDER BY j.priority, j.run_at, j.id LIMIT %(slots)s),
plain AS (
    SELECT p.id FROM picked p WHERE NOT EXISTS (SELECT 1 FROM picked w
        WHERE w.weighted AND (w.priority, w.run_at, w.id) <= (p.priority, p.run_at, p.id))),
taken AS (
    UPDATE jobs SET state = '{_CLAIMED}', attempts = jobs.attempts + 1, updated_at = %(now)s
    FROM plain WHERE jobs.id = plain.id
    RETURNING jobs.id, jobs.attempts, jobs.command, jobs.queue, jobs.cwd, jobs.env_id, jobs.timeout,
        jobs.max_retries, jobs.backoff_base, jobs.priority, jobs.run_at, jobs.slots, jobs.needs),
runs AS (
    INSERT INTO attempts (job_id, attempt, started_at, node, incarnation, gpus, pid)
    SELECT id, (SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE job_id = taken.id), %(now)s,
        %(node)s, %(incarnation)s, %(gpus)s::jsonb -> taken.id::text, %(pid)s
    FROM taken RETURNING job_id, attempt)
SELECT {_TAKEN_COLUMNS}
FROM taken JOIN runs ON runs.job_id = taken.id
UNION ALL SELECT {_WEIGHED} WHERE EXISTS (SELECT 1 FROM picked WHERE weighted)
ORDER BY 12, 13, 1
"""


# What room each queue has left for the rest of a claim with a fit: as
# _CLAIM's `room` (the limited queues are locked already), counting the jobs
# the claim took so far, which run in its transaction.
_ROOM = f"""
SELECT asked.queue, CASE WHEN queues.concurrency IS NULL THEN asked.n
    ELSE greatest(0, least(asked.n, queues.concurrency - (SELECT count(*) FROM jobs
        WHERE state = '{lifecycle.RUNNING}' AND queue = asked.queue))) END
FROM unnest(%(queues)s::text[], %(rooms)s::int[]) AS asked(queue, n)
JOIN queues ON queues.name = asked.queue WHERE NOT queues.paused
"""

# The candidates of the rest of a claim with a fit, in claim order, not locked:
# those it passes over stay claimable by other nodes all along.
_CANDIDATES = f"""
SELECT {rows.WAITING_COLUMNS} FROM jobs
WHERE state IN ({WAITING}) AND unmet = 0 AND run_at <= %(now)s AND queue = ANY(%(queues)s::text[])
    AND id <> ALL(%(busy)s::bigint[]) AND (node IS NULL OR node = %(node)s) AND {_COULD_FIT}
ORDER BY priority, run_at, id LIMIT %(limit)s
"""

# Take the jobs the fit chose (with their GPUs), those still waiting and not
# being taken by another node; as _CLAIM takes them.
_TAKE_CHOSEN = f"""
WITH chosen(id, gpus) AS (SELECT * FROM unnest(%(ids)s::bigint[], %(gpus)s::text[]) WHERE {LEASE_HELD}),
locked AS (
    SELECT jobs.id FROM jobs JOIN chosen ON chosen.id = jobs.id
    WHERE jobs.state IN ({WAITING}) AND jobs.unmet = 0 FOR UPDATE OF jobs SKIP LOCKED),
taken AS (
    UPDATE jobs SET state = '{_CLAIMED}', attempts = jobs.attempts + 1, updated_at = %(now)s
    FROM locked WHERE jobs.id = locked.id
    RETURNING jobs.id, jobs.attempts, jobs.command, jobs.queue, jobs.cwd, jobs.env_id, jobs.timeout,
        jobs.max_retries, jobs.backoff_base, jobs.priority, jobs.run_at, jobs.slots, jobs.needs),
runs AS (
    INSERT INTO attempts (job_id, attempt, started_at, node, incarnation, gpus, pid)
    SELECT taken.id, (SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE job_id = taken.id),
        %(now)s, %(node)s, %(incarnation)s, chosen.gpus::jsonb, %(pid)s
    FROM taken JOIN chosen ON chosen.id = taken.id RETURNING job_id, attempt)
SELECT {_TAKEN_COLUMNS}
FROM taken JOIN runs ON runs.job_id = taken.id ORDER BY priority, run_at, taken.id
"""

# The open attempts of every incarnation that holds no live lease (a node
# lost, or an earlier start of this one), ended as interrupted in one
# statement: a second rescuer waits for the first one's row locks, then
# finds them ended and leaves them. Those claimed and never started are not
# interrupted: _GIVE_BACK forgets them (their jobs wait again).
_LOST = "NOT EXISTS (SELECT 1 FROM nodes n WHERE n.incarnation = a.incarnation AND n.lease_until > now())"
_RESCUE = f"""
UPDATE attempts a SET ended_at = %(now)s, rescued_by = %(node)s,
    error = CASE WHEN a.node IS NULL OR a.node = %(node)s THEN %(interrupted)s
        ELSE 'interrupted: its node ' || a.node || ' stopped renewing its lease while the job ran' END
WHERE a.ended_at IS NULL AND a.pid IS DISTINCT FROM {NOT_STARTED} AND {_LOST}
RETURNING a.job_id, a.attempt, a.error
"""
_GIVE_BACK = f"""
DELETE FROM attempts a WHERE a.ended_at IS NULL AND a.pid = {NOT_STARTED} AND {_LOST}
RETURNING a.job_id, a.attempt
"""
# Record the processes of attempts claimed not started, this incarnation's only.
_MARK_STARTED = f"""
UPDATE attempts a SET pid = s.pid, started_at = s.started_at
FROM unnest(%(ids)s::bigint[], %(runs)s::int[], %(pids)s::int[], %(at)s::float8[])
    AS s(job_id, attempt, pid, started_at)
WHERE a.job_id = s.job_id AND a.attempt = s.attempt AND a.pid = {NOT_STARTED} AND a.ended_at IS NULL
    AND a.incarnation IS NOT DISTINCT FROM %(incarnation)s
    AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id AND j.state = '{lifecycle.RUNNING}')
RETURNING a.job_id
"""
assert (
    lifecycle.node_lost("X").error == "interrupted: its node X stopped renewing its lease while the job ran"
)


def _capacity_json(capacity: Capacity | None) -> str | None:
    """A node's capacity as _COULD_FIT reads it: each resource's count, GPUs as "gpu"."""
    if capacity is None:
        return None
    return json.dumps({**capacity.counts, GPU: len(capacity.gpus)})


class Attempts:
    def __init__(
        self,
        conn: Connection,
        environments: Environments,
        transitions: GroupTransitions,
        node: NodeIdentity,
    ) -> None:
        self.conn = conn
        self.environments = environments
        self.transitions = transitions
        self.node = node  # named on every attempt; its incarnation fences starts and ends

    @property
    def _incarnation(self) -> str | None:
        return self.node.incarnation or None

    def _execute(self, *statements: tuple[str, object]) -> psycopg.Cursor:
        """Run `statements` pipelined, in one round trip, each prepared as psycopg prepares
        repeated statements (the claim's plan costs more than its execution);
        the cursor of the last one. The server runs each statement once the
        one before it ended, with a snapshot of its own."""
        with self.conn.pipeline():
            for query, params in statements[:-1]:
                self.conn.execute(query, params)
            cursor = self.conn.execute(*statements[-1])
        return cursor

    def _waiting(
        self,
        kind: dict[str, str],
        window: tuple[float, ...],
        queues: Sequence[str],
        busy: Sequence[int],
        limit: int,
    ) -> list[Claimed]:
        query = _SELECT_WAITING.format(**kind)
        environment = self.environments.get
        return [
            rows.waiting(with_path(row, CWD), environment(row[5]))
            for row in self.conn.execute(
                query, (*window, list(queues), list(busy), self.node.name, limit)
            ).fetchall()
        ]

    def lookahead(
        self, *, now: float, horizon: float, queues: Sequence[str], busy: Sequence[int], limit: int
    ) -> Ahead:
        """Waiting jobs of `queues`, without taking them: the first `limit` due
        now in claim order, and up to `limit` more due by `horizon`. The
        supervisor starts them one by one from memory (recording each start
        with `start`) for as long as nothing could have changed them."""
        if not queues:
            return Ahead([], complete=True, upcoming=[], until=None)
        jobs = self._waiting(_DUE, (now,), queues, busy, limit)
        upcoming = self._waiting(_UPCOMING, (now, horizon), queues, busy, limit + 1)
        if len(upcoming) > limit:
            # Cut at the first one left out, with any due at the same instant.
            until: float | None = upcoming[limit].run_at
            upcoming = [job for job in upcoming if job.run_at < upcoming[limit].run_at]
        else:
            until = self.next_due(horizon, queues)
        return Ahead(jobs, complete=len(jobs) < limit, upcoming=upcoming, until=until)

    def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        """The earliest future run_at among waiting jobs of `queues`."""
        if not queues:
            return None
        row = self.conn.execute(
            f"SELECT run_at FROM jobs WHERE state IN ({WAITING})"
            " AND unmet = 0 AND run_at > %s AND queue = ANY(%s::text[]) AND (node IS NULL OR node = %s)"
            " ORDER BY run_at LIMIT 1",
            (now, list(queues), self.node.name),
        ).fetchone()
        return row[0] if row else None

    def start(self, job: Claimed, now: float, gpus: Sequence[int] = ()) -> Written[None]:
        """Record that `job`, read by `lookahead`, started its attempt (holding
        `gpus`). Refused if it is no longer what was read (then nothing here changed)."""
        incarnation = self._incarnation
        changed = self.conn.execute(
            "UPDATE jobs SET state = %(claimed)s, attempts = %(attempts)s, updated_at = %(now)s"
            f" WHERE id = %(id)s AND state IN ({WAITING}) AND unmet = 0 AND attempts = %(attempts)s - 1"
            " AND NOT EXISTS (SELECT 1 FROM attempts WHERE job_id = %(id)s AND attempt >= %(run)s)"
            f" AND {LEASE_HELD}",
            {
                "claimed": _CLAIMED,
                "attempts": job.attempts,
                "now": now,
                "id": job.id,
                "run": job.run,
                "incarnation": incarnation,
            },
        ).rowcount
        if not changed:
            raise Refused("invalid", f"job {job.id} changed before its attempt {job.run} was recorded")
        self.conn.execute(
            "INSERT INTO attempts (job_id, attempt, started_at, node, incarnation, gpus)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (job.id, job.run, now, self.node.name, incarnation, Jsonb(list(gpus)) if gpus else None),
        )
        return Written(None)

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
        """Take up to `slots` due jobs, best first, from queues with room left.
        `queue_room` maps every claimable queue to this node's free slots for
        it (a limited queue's room is cut here to its concurrency less its jobs
        running on every node); `busy` jobs still have a process from an
        earlier attempt (a cancel in its grace period, then a retry) and wait
        for it to be gone; `gpus`: the GPU indices the attempt of a job (by
        id) holds, should the claim take it. With `fit`, one-slot jobs are
        taken in one statement up to the first job that needs more; from
        there the fit walks the candidates (`_claim_fitting`), in the same
        transaction. Unless `started`, the attempts are claimed, not
        started, until `mark_started` (pid NOT_STARTED meanwhile)."""
        room = {queue: n for queue, n in queue_room.items() if n > 0}
        if slots <= 0 or not room:
            return Written([])
        environment = self.environments.get
        capacity = fit.capacity if fit is not None else None
        # Both statements in one round trip: the server runs the claim once
        # the locks are taken, with a snapshot of its own.
        found = self._execute(
            (_LOCK_LIMITED, {"lock": QUEUE_LOCK, "queues": list(room)}),
            (
                _CLAIM,
                {
                    "queues": list(room),
                    "rooms": list(room.values()),
                    "now": now,
                    "busy": list(busy),
                    "slots": slots,
                    "node": self.node.name,
                    "incarnation": self._incarnation,
                    "gpus": Jsonb({str(job_id): list(held) for job_id, held in gpus.items() if held})
                    if gpus
                    else None,
                    "weighing": fit is not None,
                    "capacity_slots": capacity.slots if capacity else 0,
                    "capacity": _capacity_json(capacity),
                    "pid": None if started else NOT_STARTED,
                },
            ),
        ).fetchall()
        weighed = bool(found) and found[-1][0] is None
        claimed = [
            rows.waiting(with_path(row, CWD), environment(row[5])) for row in found if row[0] is not None
        ]
        if gpus:
            for job in claimed:
                job.gpus = tuple(gpus.get(job.id, ()))
        if weighed and fit is not None and len(claimed) < slots:
            claimed += self._claim_fitting(now, slots, room, busy, fit, claimed, started)
        return Written(claimed)

    def _claim_fitting(
        self,
        now: float,
        slots: int,
        room: dict[str, int],
        busy: Sequence[int],
        fit: Fit,
        claimed: list[Claimed],
        started: bool = True,
    ) -> list[Claimed]:
        """The rest of a claim with a fit, after the one-slot jobs `claimed`
        ahead of the first job needing more: read the candidates (not
        locked), walk them through the fit's allocator as the rules say,
        take those it starts. Round trips of its own: only when such a job
        is among the best candidates."""
        left = dict(room)
        for job in claimed:
            left[job.queue] -= 1
        rooms = dict(
            self.conn.execute(_ROOM, {"queues": list(left), "rooms": list(left.values())}).fetchall()
        )
        open_queues = [queue for queue, n in rooms.items() if n > 0]
        if not open_queues:
            return []
        allocator = fit.allocator(now)
        allocator.free.slots -= len(claimed)  # one each
        limit = slots - len(claimed)
        candidates = self.conn.execute(
            _CANDIDATES,
            {
                "now": now,
                "queues": open_queues,
                "busy": [*busy, *(job.id for job in claimed)],
                "node": self.node.name,
                "weighing": True,
                "capacity_slots": fit.capacity.slots,
                "capacity": _capacity_json(fit.capacity),
                "limit": limit + PASSED_OVER,
            },
        ).fetchall()
        chosen: dict[int, tuple[int, ...]] = {}
        for row in candidates:
            job_id, queue, run_at, job_slots, needs = row[0], row[3], row[12], row[13], row[14] or {}
            if len(chosen) >= limit or allocator.full:
                break
            if rooms.get(queue, 0) <= 0:
                continue
            gpus = allocator.offer(job_slots, needs, run_at)
            if gpus is not None:
                chosen[job_id] = gpus
                rooms[queue] -= 1
        if not chosen:
            return []
        environment = self.environments.get
        taken = self.conn.execute(
            _TAKE_CHOSEN,
            {
                "ids": list(chosen),
                "gpus": [json.dumps(list(gpus)) if gpus else None for gpus in chosen.values()],
                "now": now,
                "node": self.node.name,
                "incarnation": self._incarnation,
                "pid": None if started else NOT_STARTED,
            },
        ).fetchall()
        jobs = [rows.waiting(with_path(row, CWD), environment(row[5])) for row in taken]
        for job in jobs:
            job.gpus = chosen[job.id]
        return jobs

    def mark_started(self, attempts: Sequence[tuple[int, int, int | None, float]]) -> Written[list[int]]:
        """Record the process (pid, start time) of each (job id, run) this
        node claimed not started; the jobs of those that are no longer such
        (given back by a rescue meanwhile, unclaimed, ended): their processes
        must stop."""
        if not attempts:
            return Written([])
        ids, runs, pids, at = (list(column) for column in zip(*attempts, strict=True))
        marked = {
            row[0]
            for row in self.conn.execute(
                _MARK_STARTED,
                {"ids": ids, "runs": runs, "pids": pids, "at": at, "incarnation": self._incarnation},
            ).fetchall()
        }
        return Written([job_id for job_id in ids if job_id not in marked])

    def unclaim(self, job: Claimed, now: float) -> Written[None]:
        """Undo the committed claim of `job`, whose attempt did not start
        (no descriptor free, claimed ahead and given back): the attempt is
        forgotten and the job waits again (unless it was canceled meanwhile).
        Only this incarnation's own open attempt: one a rescue gave back, and
        another node claimed again since, is left alone."""
        if not self.conn.execute(
            "DELETE FROM attempts WHERE job_id = %s AND attempt = %s AND ended_at IS NULL"
            " AND incarnation IS NOT DISTINCT FROM %s",
            (job.id, job.run, self._incarnation),
        ).rowcount:
            return Written(None)
        row = self.conn.execute("SELECT state FROM jobs WHERE id = %s", (job.id,)).fetchone()
        event = lifecycle.after_unclaim(row[0] if row else None)
        if event is None:
            return Written(None)
        changes = Changes()
        self.transitions.move(job.id, row[0], event, now, changes, attempts=job.attempts - 1)
        return Written(None, changes)

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
        """Record the end of an attempt (with its pid and log paths, which the
        supervisor keeps in memory while it runs, and what its logs miss) and
        move the job on as lifecycle says: `finish_many` with one end."""
        end = AttemptEnd(claimed, exit, now, pid, stdout, stderr, log_incomplete)
        written = ends.finish_many(self.conn, self.transitions, self._incarnation, [end], backoff_max)
        [result] = written.value
        if isinstance(result, Refused):
            raise result
        return Written(result, written.changes)

    def finish_many(
        self, attempt_ends: Sequence[AttemptEnd], backoff_max: float
    ) -> Written[list[JobState | Refused | None]]:
        """Record the ends (see `ends.finish_many`), in runs without two ends
        of one job (never the case in one node's batch: a job runs once at a time)."""
        changes = Changes()
        results: list[JobState | Refused | None] = []
        for run in ends.distinct_runs(attempt_ends):
            written = ends.finish_many(self.conn, self.transitions, self._incarnation, run, backoff_max)
            changes.merge(written.changes)
            results += written.value
        return Written(results, changes)

    def _job_row(self, job_id: int) -> psycopg.Cursor:
        """(state, attempts, latest run) of a job, read by `_after_attempt`."""
        return self.conn.execute(
            "SELECT state, attempts, (SELECT max(attempt) FROM attempts WHERE job_id = jobs.id)"
            " FROM jobs WHERE id = %s",
            (job_id,),
        )

    def _after_attempt(
        self,
        job_id: int,
        run: int,
        exit: Exit,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        now: float,
        *,
        at_once: bool = False,
        job: tuple | bool | None = False,
    ) -> Written[JobState | None]:
        """Move the job of an attempt just ended on, as lifecycle says (if the
        attempt counts); its state after it, or None if it is gone. `job`:
        its row (`_job_row`) read already, or None if there was none."""
        row = self._job_row(job_id).fetchone() if job is False else job
        state, attempts, latest_run = row if row else (None, None, None)
        if not lifecycle.attempt_counts(job_state=state, latest_run=latest_run, run=run):
            return Written(state, NOTHING)
        outcome = lifecycle.after_attempt(
            succeeded=exit.succeeded,
            attempts=attempts,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            now=now,
            retryable=exit.retryable,
            at_once=at_once,
        )
        changes = Changes()
        extra: dict[str, object] = {"exit_code": exit.exit_code, "error": exit.error}
        if outcome.run_at is not None:
            extra["run_at"] = outcome.run_at
            changes.reordered = True  # its retry may outrank what was read ahead
        # The job's new state and its cascade in one round trip (pipelined).
        with self.conn.pipeline():
            self.transitions.move(job_id, state, outcome.event, now, changes, **extra)
        return Written(outcome.state, changes)

    def recover(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        """At start: the attempts this node's earlier incarnations left
        running, and those of nodes whose lease ran out (`rescue`)."""
        return self.rescue(backoff_max, now)

    def rescue(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        """Record the open attempts of every incarnation holding no live lease
        as interrupted (one statement: two rescuers never both record one),
        and move their jobs on (retried under their policy)."""
        ended = self.conn.execute(
            _RESCUE,
            {
                "now": now,
                "node": self.node.name,
                "interrupted": lifecycle.INTERRUPTED.error,
            },
        ).fetchall()
        changes = Changes()
        self._give_back(now, changes)
        recovered = []
        for job_id, run, error in sorted(ended):
            row = self.conn.execute(
                "SELECT max_retries, backoff_base FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
            if row is None:
                continue
            exit = lifecycle.Exit(False, None, None, error)
            # A lost node's attempt is retried at once (the node failed, not
            # the job); this node's own earlier ones (recovered at start) as ever.
            lost = error != lifecycle.INTERRUPTED.error
            written = self._after_attempt(job_id, run, exit, row[0], row[1], backoff_max, now, at_once=lost)
            changes.merge(written.changes)
            recovered.append(Recovered(job_id, run, written.value))
        return Written(recovered, changes)

    def _give_back(self, now: float, changes: Changes) -> None:
        """The attempts of lost incarnations that were claimed and never
        started: forgotten, and their jobs wait again (the attempt does not
        count: it never ran)."""
        for job_id, run in sorted(self.conn.execute(_GIVE_BACK).fetchall()):
            row = self._job_row(job_id).fetchone()
            if row is None:
                continue
            state, attempts, latest_run = row
            event = lifecycle.after_unclaim(state)
            if event is None or (latest_run or 0) >= run:
                continue  # canceled meanwhile (or moved on without it)
            self.transitions.move(job_id, state, event, now, changes, attempts=attempts - 1)
            changes.reordered = True  # claimable again: the nodes hear of it
