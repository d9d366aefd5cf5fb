"""The ends of several attempts recorded in a few statements (PostgreSQL),
whatever their number: what `Store.finish_many` does where every statement
costs a round trip and the server's time. Per end, the same rules as
`Attempts.finish`: fenced on this node's incarnation (an end of an attempt
another node rescued is Refused, and nothing of it recorded), recorded once
(a record tried again after its COMMIT was lost changes nothing), and its job
moved on as lifecycle says, at the end's own time."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import Connection

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.contract import AttemptEnd, Changes, Refused, Written
from queued.store.sqlite.rows import NOT_STARTED
from queued.store.transitions import EndedMove, GroupTransitions

_RECORD = f"""
UPDATE attempts a SET ended_at = e.ended_at, exit_code = e.exit_code, signal = e.signal, error = e.error,
    pid = coalesce(e.pid, nullif(a.pid, {NOT_STARTED})), stdout_path = coalesce(e.stdout, a.stdout_path),
    stderr_path = coalesce(e.stderr, a.stderr_path), log_incomplete = e.log_incomplete
FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::int[], %s::int[], %s::text[], %s::int[],
    %s::text[], %s::text[], %s::text[])
    AS e(job_id, attempt, ended_at, exit_code, signal, error, pid, stdout, stderr, log_incomplete)
-- Once, and only this incarnation's, unless another node rescued it.
WHERE a.job_id = e.job_id AND a.attempt = e.attempt AND a.ended_at IS NULL AND a.rescued_by IS NULL
    AND a.incarnation IS NOT DISTINCT FROM %s
RETURNING a.job_id"""

# (state, attempts, latest run) of each job, read after the records, and
# locked: a cancel from another node that commits meanwhile is seen (the end
# then decides nothing), never overwritten. In id order, as every statement
# that locks several jobs; after the attempts' rows, as a rescue takes them.
_JOBS = """
SELECT id, state, attempts, (SELECT max(attempt) FROM attempts WHERE job_id = jobs.id)
FROM jobs WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE"""

_ENDED_ELSEWHERE = """
SELECT a.job_id FROM attempts a JOIN unnest(%s::bigint[], %s::int[]) AS e(job_id, attempt)
    ON a.job_id = e.job_id AND a.attempt = e.attempt
WHERE a.rescued_by IS NOT NULL OR a.incarnation IS DISTINCT FROM %s"""


def distinct_runs(ends: Sequence[AttemptEnd]) -> list[Sequence[AttemptEnd]]:
    """`ends` cut, in order, into runs in which no job appears twice."""
    runs: list[Sequence[AttemptEnd]] = []
    begun, seen = 0, set()
    for i, end in enumerate(ends):
        if end.claimed.id in seen:
            runs.append(ends[begun:i])
            begun, seen = i, set()
        seen.add(end.claimed.id)
    if begun < len(ends):
        runs.append(ends[begun:])
    return runs


def refusal(job_id: int, run: int) -> Refused:
    return Refused(
        "invalid",
        f"job {job_id} attempt {run} was already ended elsewhere (rescued after this "
        "node's lease ran out): its end here is not recorded",
    )


def finish_many(
    conn: Connection,
    transitions: GroupTransitions,
    incarnation: str | None,
    ends: Sequence[AttemptEnd],
    backoff_max: float,
) -> Written[list[JobState | Refused | None]]:
    """Record `ends` (each of a different job): the attempts' records and
    their jobs' rows in one round trip, the jobs' moves in one more."""
    ids = [end.claimed.id for end in ends]
    runs = [end.claimed.run for end in ends]
    with conn.pipeline():
        recording = conn.execute(
            _RECORD,
            (
                ids,
                runs,
                [end.ended_at for end in ends],
                [end.exit.exit_code for end in ends],
                [end.exit.signal for end in ends],
                [end.exit.error for end in ends],
                [end.pid for end in ends],
                [end.stdout for end in ends],
                [end.stderr for end in ends],
                [end.log_incomplete for end in ends],
                incarnation,
            ),
        )
        reading = conn.execute(_JOBS, (ids,))
    recorded = {job_id for (job_id,) in recording.fetchall()}
    jobs = {row[0]: row[1:] for row in reading.fetchall()}
    refused = _refused(conn, incarnation, [end for end in ends if end.claimed.id not in recorded])
    results: list[JobState | Refused | None] = []
    moves: list[EndedMove] = []
    changes = Changes()
    for end in ends:
        job = end.claimed
        if job.id in refused:
            results.append(refusal(job.id, job.run))
            continue
        state, attempts, latest_run = jobs.get(job.id, (None, None, None))
        if not lifecycle.attempt_counts(job_state=state, latest_run=latest_run, run=job.run):
            results.append(state)
            continue
        outcome = lifecycle.after_attempt(
            succeeded=end.exit.succeeded,
            attempts=attempts,
            max_retries=job.max_retries,
            backoff_base=job.backoff_base,
            backoff_max=backoff_max,
            now=end.ended_at,
            retryable=end.exit.retryable,
        )
        if outcome.run_at is not None:
            changes.reordered = True  # its retry may outrank what was read ahead
        results.append(outcome.state)
        moves.append(
            EndedMove(
                job.id, state, outcome.event, end.ended_at, end.exit.exit_code, end.exit.error, outcome.run_at
            )
        )
    if moves:
        with conn.pipeline():
            transitions.move_ended(moves, changes)
    return Written(results, changes)


def _refused(conn: Connection, incarnation: str | None, unrecorded: list[AttemptEnd]) -> set[int]:
    """The jobs of `unrecorded` whose attempt another node ended (rescued) or
    another incarnation holds: their ends are refused."""
    if not unrecorded:
        return set()
    rows = conn.execute(
        _ENDED_ELSEWHERE,
        ([end.claimed.id for end in unrecorded], [end.claimed.run for end in unrecorded], incarnation),
    ).fetchall()
    return {job_id for (job_id,) in rows}
