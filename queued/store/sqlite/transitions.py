"""The statements of a state change in SQLite (`queued.store.transitions`
decides nothing either: it records what lifecycle answers)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import msgspec

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.sqlite.rows import UNSTARTED

_encode = msgspec.json.Encoder().encode

_DEPENDENTS = "SELECT job_id FROM dependencies WHERE depends_on = ?"


class SqliteTransitionSql:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def set_state(self, job_id: int, state: JobState, now: float, columns: dict[str, object]) -> None:
        sets = "".join(f", {name} = ?" for name in columns)
        self.conn.execute(
            f"UPDATE jobs SET state = ?, updated_at = ?{sets} WHERE id = ?",
            (state, now, *columns.values(), job_id),
        )

    def recount_dependents(self, job_id: int) -> tuple[bool, list[int]]:
        # A count, not a decrement: a dependency may complete, be retried and
        # complete again. No RETURNING: most jobs have no dependents, and a
        # plain UPDATE that touches nothing is the cheapest way to learn it.
        if not self.conn.execute(
            "UPDATE jobs SET unmet = (SELECT count(*) FROM dependencies d JOIN jobs dep"
            f" ON dep.id = d.depends_on WHERE d.job_id = jobs.id AND dep.state != '{lifecycle.COMPLETED}')"
            f" WHERE state IN ({UNSTARTED}) AND id IN ({_DEPENDENTS})",
            (job_id,),
        ).rowcount:
            return False, []
        released = self.conn.execute(
            f"SELECT id FROM jobs WHERE unmet = 0 AND state IN ({UNSTARTED}) AND id IN ({_DEPENDENTS})",
            (job_id,),
        )
        return True, [dependent for (dependent,) in released]

    def recount_dependents_of(
        self, job_ids: list[int], sparing: Sequence[int] = ()
    ) -> tuple[bool, list[int]]:
        # The jobs as one JSON array: any number in one statement.
        dependents = "SELECT job_id FROM dependencies WHERE depends_on IN (SELECT value FROM json_each(?))"
        spared = " AND id NOT IN (SELECT value FROM json_each(?))"
        args = (_encode(job_ids), _encode(list(sparing)))
        if not self.conn.execute(
            "UPDATE jobs SET unmet = (SELECT count(*) FROM dependencies d JOIN jobs dep"
            f" ON dep.id = d.depends_on WHERE d.job_id = jobs.id AND dep.state != '{lifecycle.COMPLETED}')"
            f" WHERE state IN ({UNSTARTED}) AND id IN ({dependents}){spared}",
            args,
        ).rowcount:
            return False, []
        released = self.conn.execute(
            f"SELECT id FROM jobs WHERE unmet = 0 AND state IN ({UNSTARTED}) AND id IN ({dependents}){spared}"
            " ORDER BY id",
            args,
        )
        return True, [dependent for (dependent,) in released]

    def doomed_links(self, roots: list[int]) -> list[tuple[int, int, JobState]]:
        # A recursive query, not a recursion per link: a chain of any length
        # costs one statement and no stack.
        return self.conn.execute(
            "WITH RECURSIVE doomed(id, blocker) AS ("
            " SELECT d.job_id, d.depends_on FROM dependencies d JOIN jobs j ON j.id = d.job_id"
            f" WHERE d.depends_on IN (SELECT value FROM json_each(?)) AND j.state IN ({UNSTARTED})"
            " UNION SELECT d.job_id, d.depends_on FROM doomed"
            " JOIN dependencies d ON d.depends_on = doomed.id JOIN jobs j ON j.id = d.job_id"
            f" WHERE j.state IN ({UNSTARTED}))"
            " SELECT doomed.id, blocker, jobs.state FROM doomed JOIN jobs ON jobs.id = doomed.id",
            (_encode(roots),),
        ).fetchall()

    def set_states(self, moves: list[tuple[int, JobState, JobState, str]], now: float) -> None:
        # One statement over the moves handed as one JSON array (an UPDATE per
        # job cost 3x as much at 100,000); the counts trigger keeps count.
        self.conn.execute(
            "UPDATE jobs SET state = json_extract(m.value, '$[1]'), updated_at = ?,"
            " error = json_extract(m.value, '$[2]')"
            " FROM json_each(?) AS m WHERE jobs.id = json_extract(m.value, '$[0]')",
            (now, _encode([(job_id, new, error) for job_id, _, new, error in moves])),
        )

    def set_states_to(
        self,
        moves: list[tuple[int, JobState, JobState]],
        now: float,
        columns: Mapping[str, object],
        unmet: Sequence[int] | None,
    ) -> None:
        # As set_states: one statement over one JSON array.
        sets = "".join(f", {name} = ?" for name in columns)
        if unmet is None:
            rows = [(job_id, new) for job_id, _, new in moves]
        else:
            sets += ", unmet = json_extract(m.value, '$[2]')"
            rows = [(job_id, new, count) for (job_id, _, new), count in zip(moves, unmet, strict=True)]
        self.conn.execute(
            f"UPDATE jobs SET state = json_extract(m.value, '$[1]'), updated_at = ?{sets}"
            " FROM json_each(?) AS m WHERE jobs.id = json_extract(m.value, '$[0]')",
            (now, *columns.values(), _encode(rows)),
        )
