"""Unique keys in PostgreSQL: looking up the job that holds a key, and the
advisory locks that make looking and adding one step across nodes.

The partial unique index jobs_unique keeps a second unfinished job of a key
out whatever happens; the locks make an add that finds the key held answer
with the holder instead of failing on the index. Every node's add, and every
retry (the one event that brings a finished job back into
lifecycle.UNIQUE_STATES), takes `pg_advisory_xact_lock(UNIQUE_LOCKS,
hashtext(key))` for its keys, in one order, before it looks; the lock is held
to the end of the writer's batch. A job that finishes meanwhile takes no lock:
the look sees it either unfinished (then the add joins it) or finished (then
the window decides), and no other change can make a key held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import Connection

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.sqlite.rows import UNIQUE, UNIQUE_WINDOW
from queued.validation import NewJob

# Two int keys: a space apart from the one-bigint locks (such as the schema's).
UNIQUE_LOCKS = 0x756E71  # "unq"


class UniqueKeys:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def lock(self, keys: Iterable[str]) -> None:
        """Take every key's advisory lock until the transaction ends, in one
        order on every node (so that two adders never wait for each other in a circle)."""
        keys = sorted(set(keys))
        if keys:
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(%s, h) FROM"
                " (SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) k ORDER BY 1) ordered",
                (UNIQUE_LOCKS, keys),
            )

    def holders(
        self, keys: Sequence[str], windowed: Sequence[str]
    ) -> tuple[dict[str, tuple[int, JobState]], dict[str, tuple[int, JobState, float]]]:
        """(the unfinished job of each of `keys` that has one, the job of each of
        `windowed` that completed last). Read under the keys' locks."""
        unfinished = {
            key: (job_id, state)
            for key, job_id, state in self.conn.execute(
                "SELECT unique_key, id, state FROM jobs"
                f" WHERE unique_key = ANY(%s::text[]) AND state IN ({UNIQUE})",
                (list(keys),),
            )
        }
        completed: dict[str, tuple[int, JobState, float]] = {}
        if windowed:
            completed = {
                key: (job_id, state, updated_at)
                for key, job_id, state, updated_at in self.conn.execute(
                    "SELECT DISTINCT ON (unique_key) unique_key, id, state, updated_at FROM jobs"
                    f" WHERE unique_key = ANY(%s::text[]) AND state IN ({UNIQUE_WINDOW})"
                    " ORDER BY unique_key, updated_at DESC, id DESC",
                    (list(windowed),),
                )
            }
        return unfinished, completed

    def holder(self, key: str, window_start: float | None) -> tuple[int, JobState] | None:
        """The job an add of `key` returns (`lifecycle.holds_key`); the caller holds the key's lock."""
        unfinished, completed = self.holders([key], [key] if window_start is not None else [])
        if key in unfinished:
            return unfinished[key]
        if key in completed:
            job_id, state, updated_at = completed[key]
            if lifecycle.holds_key(state, updated_at, window_start):
                return job_id, state
        return None

    def found(self, jobs: Sequence[NewJob], now: float) -> dict[int, int]:
        """Which of `jobs` are not added: index -> the holder's id, or for a key
        given earlier in this call, -1 - the index of the job of it that is."""
        keys = [job.unique_key for job in jobs if job.unique_key is not None]
        if not keys:
            return {}
        self.lock(keys)
        windowed = [job.unique_key for job in jobs if job.unique_key is not None and job.unique_for]
        unfinished, completed = self.holders(sorted(set(keys)), sorted(set(windowed)))
        found: dict[int, int] = {}
        ours: dict[str, int] = {}  # key -> index of this call's job that adds it
        for index, job in enumerate(jobs):
            key = job.unique_key
            if key is None:
                continue
            if key in ours:
                found[index] = -1 - ours[key]
                continue
            if key in unfinished:
                found[index] = unfinished[key][0]
                continue
            if key in completed:
                job_id, state, updated_at = completed[key]
                if lifecycle.holds_key(state, updated_at, lifecycle.unique_window_start(now, job.unique_for)):
                    found[index] = job_id
                    continue
            ours[key] = index
        return found
