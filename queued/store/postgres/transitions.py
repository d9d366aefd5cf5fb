"""Recording what lifecycle answers: a job's new state, and what that state
change does to the jobs that wait for it (lifecycle.CASCADES). Nothing here
decides: the next state comes from `lifecycle.next_state`, the rule for the
dependents from `lifecycle.cascade`."""

from __future__ import annotations

from psycopg import Connection

from queued import lifecycle
from queued.lifecycle import Cascade, Event, JobState
from queued.store.contract import Changes
from queued.store.sqlite.rows import UNSTARTED


class Transitions:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def move(
        self, job_id: int, old: JobState, event: Event, now: float, changes: Changes, **columns: object
    ) -> JobState:
        """Move job `job_id` from `old` by `event`, setting `columns` too, and
        carry out the cascade the change triggers; its new state."""
        new = lifecycle.next_state(old, event)
        sets = "".join(f", {name} = %s" for name in columns)
        self.conn.execute(
            f"UPDATE jobs SET state = %s, updated_at = %s{sets} WHERE id = %s",
            (new, now, *columns.values(), job_id),
        )
        if lifecycle.is_terminal(new):
            changes.finished.append(job_id)
        rule = lifecycle.cascade(old, new)
        if rule is Cascade.CANCEL:
            self._cancel_dependents(job_id, new, now, changes)
        elif rule is Cascade.RECOUNT:
            self._recount_dependents(job_id, changes)
        return new

    def _recount_dependents(self, job_id: int, changes: Changes) -> None:
        """Recount the unfinished dependencies of `job_id`'s unstarted dependents.
        A count, not a decrement: a dependency may complete, be retried and complete again."""
        recounted = self.conn.execute(
            "UPDATE jobs SET unmet = (SELECT count(*) FROM dependencies d JOIN jobs dep"
            f" ON dep.id = d.depends_on WHERE d.job_id = jobs.id AND dep.state != '{lifecycle.COMPLETED}')"
            f" WHERE state IN ({UNSTARTED})"
            " AND id IN (SELECT job_id FROM dependencies WHERE depends_on = %s) RETURNING id, unmet",
            (job_id,),
        ).fetchall()
        if recounted:
            changes.reordered = True
            changes.released += [dependent for dependent, unmet in recounted if unmet == 0]

    def _cancel_dependents(self, job_id: int, state: JobState, now: float, changes: Changes) -> None:
        """Cancel every unstarted job that depends on `job_id`, directly or
        through others, in one pass: a recursive query, not a recursion per
        link, so a chain of any length costs one statement and no stack. Each
        names the dependency that doomed it (the lowest, when several did)."""
        rows = self.conn.execute(
            "WITH RECURSIVE doomed(id, blocker) AS ("
            " SELECT d.job_id, d.depends_on FROM dependencies d JOIN jobs j ON j.id = d.job_id"
            f" WHERE d.depends_on = %s AND j.state IN ({UNSTARTED})"
            # An index lookup per link (OFFSET 0 keeps the planner from
            # flattening it): a join would hash a whole table at every level.
            " UNION SELECT link.job_id, link.depends_on FROM doomed CROSS JOIN LATERAL ("
            " SELECT d.job_id, d.depends_on FROM dependencies d WHERE d.depends_on = doomed.id"
            f" AND (SELECT state FROM jobs WHERE id = d.job_id) IN ({UNSTARTED}) OFFSET 0) AS link)"
            " SELECT doomed.id, min(blocker), jobs.state FROM doomed JOIN jobs ON jobs.id = doomed.id"
            " GROUP BY doomed.id, jobs.state ORDER BY doomed.id",
            (job_id,),
        ).fetchall()
        event = lifecycle.DEPENDENT_CANCEL_EVENT
        if not rows:
            return
        doomed = [dependent for dependent, _, _ in rows]
        states = [lifecycle.next_state(dependent_state, event) for _, _, dependent_state in rows]
        reasons = [
            # A dependent doomed through another names that one, canceled too.
            lifecycle.dependency_cancel_reason(
                blocker, state if blocker == job_id else lifecycle.next_state(dependent_state, event)
            )
            for _, blocker, dependent_state in rows
        ]
        self.conn.execute(
            "UPDATE jobs SET state = t.state, updated_at = %s, error = t.error"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS t(id, state, error) WHERE jobs.id = t.id",
            (now, doomed, states, reasons),
        )
        changes.finished += [dependent for dependent, _, _ in rows]
