"""The statements of a state change in PostgreSQL (`queued.store.transitions`
decides nothing either: it records what lifecycle answers)."""

from __future__ import annotations

from psycopg import Connection

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.postgres.schema import COUNTED_APART, count_moved
from queued.store.sqlite.rows import UNSTARTED


class PostgresTransitionSql:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def set_state(self, job_id: int, state: JobState, now: float, columns: dict[str, object]) -> None:
        sets = "".join(f", {name} = %s" for name in columns)
        self.conn.execute(
            f"UPDATE jobs SET state = %s, updated_at = %s{sets} WHERE id = %s",
            (state, now, *columns.values(), job_id),
        )

    def recount_dependents(self, job_id: int) -> tuple[bool, list[int]]:
        return self.recount_dependents_of([job_id])

    def set_ended_states(
        self, rows: list[tuple[int, JobState, float, int | None, str | None, float | None]]
    ) -> None:
        ids, states, ats, exit_codes, errors, run_ats = (list(column) for column in zip(*rows, strict=True))
        self.conn.execute(
            "UPDATE jobs SET state = t.state, updated_at = t.at, exit_code = t.exit_code, error = t.error,"
            " run_at = coalesce(t.run_at, jobs.run_at)"
            " FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::int[], %s::text[], %s::float8[])"
            " AS t(id, state, at, exit_code, error, run_at) WHERE jobs.id = t.id",
            (ids, states, ats, exit_codes, errors, run_ats),
        )

    def recount_dependents_of(self, job_ids: list[int]) -> tuple[bool, list[int]]:
        # A count, not a decrement: a dependency may complete, be retried and complete again.
        recounted = self.conn.execute(
            "UPDATE jobs SET unmet = (SELECT count(*) FROM dependencies d JOIN jobs dep"
            f" ON dep.id = d.depends_on WHERE d.job_id = jobs.id AND dep.state != '{lifecycle.COMPLETED}')"
            f" WHERE state IN ({UNSTARTED})"
            " AND id IN (SELECT job_id FROM dependencies WHERE depends_on = ANY(%s::bigint[]))"
            " RETURNING id, unmet",
            (job_ids,),
        ).fetchall()
        return bool(recounted), [dependent for dependent, unmet in recounted if unmet == 0]

    def doomed_dependents(self, job_id: int) -> list[tuple[int, int, JobState]]:
        # One statement for a chain or a fan-out of any size. The rows are
        # locked, and their states read again after any wait for another
        # node's change to them: `set_states` counts from these states.
        # Without JIT: before its tables' first ANALYZE the planner guesses
        # this recursion costs millions, and compiling it took 0.5-1 s, for
        # one dependent as for 100,000. Results in binary: 100,000 rows.
        with self.conn.pipeline():
            self.conn.execute("SET LOCAL jit = off")
            doomed = self.conn.cursor(binary=True).execute(
                "WITH RECURSIVE doomed(id, blocker) AS ("
                " SELECT d.job_id, d.depends_on FROM dependencies d JOIN jobs j ON j.id = d.job_id"
                f" WHERE d.depends_on = %s AND j.state IN ({UNSTARTED})"
                # An index lookup per link (OFFSET 0 keeps the planner from
                # flattening it): a join would hash a whole table at every level.
                " UNION SELECT link.job_id, link.depends_on FROM doomed CROSS JOIN LATERAL ("
                " SELECT d.job_id, d.depends_on FROM dependencies d WHERE d.depends_on = doomed.id"
                f" AND (SELECT state FROM jobs WHERE id = d.job_id) IN ({UNSTARTED}) OFFSET 0) AS link),"
                " first_blocker AS (SELECT id, min(blocker) AS blocker FROM doomed GROUP BY id)"
                " SELECT jobs.id, first_blocker.blocker, jobs.state FROM first_blocker"
                f" JOIN jobs ON jobs.id = first_blocker.id WHERE jobs.state IN ({UNSTARTED})"
                " ORDER BY jobs.id FOR UPDATE OF jobs",
                (job_id,),
            )
            self.conn.execute("SET LOCAL jit = DEFAULT")
        return doomed.fetchall()

    def set_states(self, moves: list[tuple[int, JobState, JobState, str]], now: float) -> None:
        # One round trip: the moves and their finished counts in one statement,
        # the row trigger standing aside meanwhile (schema.COUNTED_APART). The
        # arrays in binary: in text, 100,000 moves took 1.2 s to send, 0.4 s so.
        ids, olds, states, errors = (list(column) for column in zip(*moves, strict=True))
        with self.conn.pipeline():
            self.conn.execute("SELECT set_config(%s, 'on', true)", (COUNTED_APART,))
            self.conn.execute(
                "WITH moved AS (UPDATE jobs SET state = t.new, updated_at = %s, error = t.error"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[]) AS t(id, old, new, error)"
                " WHERE jobs.id = t.id RETURNING t.old, t.new) " + count_moved("moved"),
                (now, ids, olds, states, errors),
            )
            self.conn.execute("SELECT set_config(%s, '', true)", (COUNTED_APART,))
