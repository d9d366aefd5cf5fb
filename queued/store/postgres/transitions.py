"""The statements of a state change in PostgreSQL (`queued.store.transitions`
decides nothing either: it records what lifecycle answers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import Connection

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.postgres.schema import COUNTED_APART, count_moved
from queued.store.sqlite.rows import UNSTARTED

# The cascade's statements are planned as if the statistics could not be
# trusted, for they often cannot: a chain of 100,000 dependents is added and
# canceled within a minute, before autovacuum's next ANALYZE. Statistics from
# when the tables held a few jobs may have the planner scan `dependencies`
# whole, or join in an order that does, at every step (the 100,000-chain's
# cascade ran over 11 minutes in the full suite, 3 s alone); with none, it guesses the recursion costs
# millions and compiles it (JIT: 0.5-1 s, for one dependent as for 100,000).
# Index lookups are right for any size here, and JIT never is. Set for the
# statement, then put back: to the connection's own (pg_settings.reset_val:
# the server's, the database's, the role's or the URL's options; the store
# sets neither for its session).
_PLANNED_BLIND = ("jit", "enable_seqscan")
_PLAN_BLIND = "SELECT " + ", ".join(f"set_config('{setting}', 'off', true)" for setting in _PLANNED_BLIND)
_PLAN_AS_TOLD = (
    "SELECT set_config(name, reset_val, true) FROM pg_settings"
    f" WHERE name IN ({', '.join(repr(setting) for setting in _PLANNED_BLIND)})"
)


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
        self, rows: list[tuple[int, JobState, JobState, float, int | None, str | None, float | None]]
    ) -> None:
        # Counted in the statement, the row trigger standing aside as for the
        # cascade (set_states): one upsert for the batch's finished jobs, not
        # one per job (about 0.04 ms of the server's CPU each in B8's drain).
        ids, olds, states, ats, exit_codes, errors, run_ats = (
            list(column) for column in zip(*rows, strict=True)
        )
        with self.conn.pipeline():
            self.conn.execute("SELECT set_config(%s, 'on', true)", (COUNTED_APART,))
            self.conn.execute(
                "WITH moved AS (UPDATE jobs SET state = t.new, updated_at = t.at, exit_code = t.exit_code,"
                " error = t.error, run_at = coalesce(t.run_at, jobs.run_at)"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::float8[], %s::int[], %s::text[],"
                " %s::float8[]) AS t(id, old, new, at, exit_code, error, run_at)"
                " WHERE jobs.id = t.id RETURNING t.old, t.new) " + count_moved("moved"),
                (ids, olds, states, ats, exit_codes, errors, run_ats),
            )
            self.conn.execute("SELECT set_config(%s, '', true)", (COUNTED_APART,))

    def recount_dependents_of(
        self, job_ids: list[int], sparing: Sequence[int] = ()
    ) -> tuple[bool, list[int]]:
        # A count, not a decrement: a dependency may complete, be retried and complete again.
        spared = " AND id != ALL(%s::bigint[])" if sparing else ""
        recounted = self.conn.execute(
            "UPDATE jobs SET unmet = (SELECT count(*) FROM dependencies d JOIN jobs dep"
            f" ON dep.id = d.depends_on WHERE d.job_id = jobs.id AND dep.state != '{lifecycle.COMPLETED}')"
            f" WHERE state IN ({UNSTARTED})"
            f" AND id IN (SELECT job_id FROM dependencies WHERE depends_on = ANY(%s::bigint[])){spared}"
            " RETURNING id, unmet",
            (job_ids, list(sparing)) if sparing else (job_ids,),
        ).fetchall()
        return bool(recounted), [dependent for dependent, unmet in recounted if unmet == 0]

    def doomed_links(self, roots: list[int]) -> list[tuple[int, int, JobState]]:
        # Two statements for a chain or a fan-out of any size, neither with a
        # join the planner could turn around: the recursion, each link an
        # index lookup; then the doomed rows locked and their states read again
        # after any wait for another node's change to them (`set_states`
        # counts from these states). Results in binary: 100,000 rows.
        with self.conn.pipeline():
            self.conn.execute(_PLAN_BLIND)
            found = self.conn.cursor(binary=True).execute(
                "WITH RECURSIVE doomed(id, blocker) AS ("
                " SELECT d.job_id, d.depends_on FROM dependencies d WHERE d.depends_on = ANY(%b::bigint[])"
                f" AND (SELECT state FROM jobs WHERE id = d.job_id) IN ({UNSTARTED})"
                # An index lookup per link (OFFSET 0 keeps the planner from
                # flattening it): a join would hash a whole table at every level.
                " UNION SELECT link.job_id, link.depends_on FROM doomed CROSS JOIN LATERAL ("
                " SELECT d.job_id, d.depends_on FROM dependencies d WHERE d.depends_on = doomed.id"
                f" AND (SELECT state FROM jobs WHERE id = d.job_id) IN ({UNSTARTED}) OFFSET 0) AS link)"
                " SELECT id, blocker FROM doomed",
                (roots,),
            )
            self._plan_as_told()
        links = found.fetchall()
        if not links:
            return []
        with self.conn.pipeline():
            self.conn.execute(_PLAN_BLIND)
            locked = self.conn.cursor(binary=True).execute(
                f"SELECT id, state FROM jobs WHERE id = ANY(%b::bigint[]) AND state IN ({UNSTARTED})"
                " ORDER BY id FOR UPDATE",
                (list({dependent for dependent, _ in links}),),
            )
            self._plan_as_told()
        states = dict(locked.fetchall())
        return [
            (dependent, blocker, states[dependent]) for dependent, blocker in links if dependent in states
        ]

    def _plan_as_told(self) -> None:
        """Undo _PLAN_BLIND: the session's own settings again."""
        self.conn.execute(_PLAN_AS_TOLD)

    def set_states(self, moves: list[tuple[int, JobState, JobState, str]], now: float) -> None:
        # One round trip: the moves and their finished counts in one statement,
        # the row trigger standing aside meanwhile (schema.COUNTED_APART). The
        # arrays in binary: in text, 100,000 moves took 1.2 s to send, 0.4 s so.
        ids, olds, states, errors = (list(column) for column in zip(*moves, strict=True))
        with self.conn.pipeline():
            self.conn.execute(_PLAN_BLIND)
            self.conn.execute("SELECT set_config(%s, 'on', true)", (COUNTED_APART,))
            self.conn.execute(
                "WITH moved AS (UPDATE jobs SET state = t.new, updated_at = %s, error = t.error"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[]) AS t(id, old, new, error)"
                " WHERE jobs.id = t.id RETURNING t.old, t.new) " + count_moved("moved"),
                (now, ids, olds, states, errors),
            )
            self.conn.execute("SELECT set_config(%s, '', true)", (COUNTED_APART,))
            self._plan_as_told()

    def set_states_to(
        self,
        moves: list[tuple[int, JobState, JobState]],
        now: float,
        columns: Mapping[str, object],
        unmet: Sequence[int] | None,
    ) -> None:
        # As set_states: one round trip, counted in the same statement.
        ids, olds, states = (list(column) for column in zip(*moves, strict=True))
        sets = "".join(f", {name} = %s" for name in columns)
        arrays, kinds, names = [ids, olds, states], "%b::bigint[], %b::text[], %b::text[]", "id, old, new"
        if unmet is not None:
            sets += ", unmet = t.unmet"
            arrays.append(list(unmet))
            kinds, names = kinds + ", %b::int[]", names + ", unmet"
        with self.conn.pipeline():
            self.conn.execute(_PLAN_BLIND)
            self.conn.execute("SELECT set_config(%s, 'on', true)", (COUNTED_APART,))
            self.conn.execute(
                f"WITH moved AS (UPDATE jobs SET state = t.new, updated_at = %s{sets}"
                f" FROM unnest({kinds}) AS t({names})"
                " WHERE jobs.id = t.id RETURNING t.old, t.new) " + count_moved("moved"),
                (now, *columns.values(), *arrays),
            )
            self.conn.execute("SELECT set_config(%s, '', true)", (COUNTED_APART,))
            self._plan_as_told()
