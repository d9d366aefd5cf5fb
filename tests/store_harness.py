"""The store contract driven without the writer, for tests: each call in a
transaction of its own (or inside the one a test opened), its `Written`
unwrapped, and what it changed gathered in `changes`, as the writer would.
And the small steps the store tests are written in (`add`, `claim`,
`run_to`, ...), and `observable`: everything the contract lets one see.

Engine-independent: it uses only the contract and `Transactions`, so the
contract tests run the same way on every engine (tests/engines.py).
"""

from __future__ import annotations

from typing import Any

from queued import lifecycle, validation
from queued.lifecycle import classify_exit
from queued.protocol import Job, JobSpec
from queued.settings import Settings
from queued.store.contract import Changes, Claimed, Engine, Store, Written

T0 = 1_700_000_000.0
ROOM = {"default": 1000}
OK = classify_exit(0)
FAIL = classify_exit(1)
BACKOFF_MAX = 3600.0

# The supervisor's records, which the writer runs without a savepoint of their
# own (`Writer.record`, `record_now`, `run_now(Kind.RECORD, ...)`): an engine
# must refuse them before it writes, and `Direct` runs them the same way so
# that the tests see it. Reads run so too; every other change in a savepoint.
RECORDS = frozenset(
    {"start", "claim", "unclaim", "mark_started", "finish", "finish_many", "recover", "append_output"}
)


def _is_read(name: str) -> bool:
    return not str(getattr(Store, name).__annotations__.get("return", "")).startswith("Written")


UNGUARDED = RECORDS | {name for name in dir(Store) if not name.startswith("_") and _is_read(name)}


class Direct:
    """An engine whose contract methods answer plainly (`store.cancel(...)`
    returns the ids), one transaction per call, as the writer would run them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.changes = Changes()
        self.in_transaction = False  # a test's own transaction is open (see `transaction`)

    @property
    def finished(self) -> list[int]:
        """Jobs finished by the calls so far (clear it to start counting again)."""
        return self.changes.finished

    @property
    def reordered(self) -> bool:
        return self.changes.reordered

    @reordered.setter
    def reordered(self, value: bool) -> None:
        self.changes.reordered = value

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.engine, name)
        if not hasattr(Store, name):
            return method  # the engine's own (conn, forget_caches, ...)
        guarded = name not in UNGUARDED

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.in_transaction:
                result = self.engine.call(method, args, kwargs, guarded=guarded)
            else:
                self.engine.begin()
                try:
                    result = self.engine.call(method, args, kwargs, guarded=guarded)
                    self.engine.commit()
                except BaseException:
                    self.engine.abort()
                    raise
            if isinstance(result, Written):
                self.changes.merge(result.changes)
                return result.value
            return result

        return call

    def transaction(self) -> _Transaction:
        """Several calls in one transaction (as one writer batch)."""
        return _Transaction(self)

    def changes_of(self, method: str, *args: Any, **kwargs: Any) -> tuple[Any, Changes]:
        """Call `method`; its answer and what it alone changed."""
        self.changes = Changes()
        value = getattr(self, method)(*args, **kwargs)
        changes, self.changes = self.changes, Changes()
        return value, changes


class _Transaction:
    def __init__(self, direct: Direct) -> None:
        self.direct = direct

    def __enter__(self) -> Direct:
        self.direct.engine.begin()
        self.direct.in_transaction = True
        return self.direct

    def __exit__(self, kind: object, *_: object) -> None:
        self.direct.in_transaction = False
        if kind is None:
            self.direct.engine.commit()
        else:
            self.direct.engine.abort()


# -- the steps store tests are written in -----------------------------------------


def new(command: str = "true", *, now: float = T0, **spec: object) -> validation.NewJob:
    """A job as `queuectl add` would make it, from `JobSpec` fields."""
    return validation.new_job(
        JobSpec(command=command, **spec),  # type: ignore[arg-type]
        cwd="/tmp",
        env={"HOME": "/root"},
        settings=Settings(),
        now=now,
    )


def add(store: Any, command: str = "true", *, now: float = T0, **spec: object) -> int:
    [job_id] = store.add_jobs([new(command, now=now, **spec)], now)
    return job_id


def state(store: Any, job_id: int) -> str:
    return store.states([job_id])[job_id]


def job(store: Any, job_id: int) -> Job:
    return store.get_job(job_id)[0]


def claim(
    store: Any, now: float = T0, slots: int = 1000, room: dict[str, int] | None = None
) -> list[Claimed]:
    return store.claim(now=now, slots=slots, queue_room=ROOM if room is None else room)


def claim_one(store: Any, job_id: int, now: float = T0) -> Claimed:
    claimed = claim(store, now)
    assert [c.id for c in claimed] == [job_id]
    return claimed[0]


def run_to(store: Any, job_id: int, exit: lifecycle.Exit, now: float = T0) -> str:
    """Claim `job_id` (it must be the only due job) and finish it with `exit`."""
    return store.finish(claim_one(store, job_id, now), exit, BACKOFF_MAX, now)


def observable(store: Any) -> dict[str, Any]:
    """Everything the contract lets one see of a store: every job with its
    attempts and environment, the counts, the queues, the settings."""
    jobs = store.list_jobs()
    return {
        "jobs": {j.id: store.get_job(j.id) for j in jobs},
        "listed": jobs,
        "unfinished": store.unfinished_ids(),
        "counts": store.counts(),
        "queues": store.queues(),
        "config": store.config(),
    }


def finished_counts_written(conn: Any) -> int:
    """Rows of PostgreSQL's finished_counts written (inserted or updated) so
    far by the transaction open on `conn`."""
    [(written,)] = conn.execute(
        "SELECT n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'finished_counts'"
    ).fetchall()
    return written


def counted_apart(conn: Any) -> bool:
    """Whether the row trigger stands aside now (queued.counted_apart on)."""
    return conn.execute("SELECT current_setting('queued.counted_apart', true)").fetchone()[0] not in (
        "",
        None,
    )
