"""The store contract: exactly what the supervisor and the handlers may ask of
a store, and the values that cross it. An engine (SQLite today) implements
`Store` and `Transactions`; nothing above the store package reads an engine.

Rules every engine keeps:

- Every method runs inside a transaction the writer (`writer.py`) opened, on
  the writer's one thread; `now` is always passed in.
- A method that refuses raises `Refused` and leaves nothing of its own behind
  (the writer runs each change in a savepoint). Methods the writer runs
  without a savepoint (reads and the supervisor's records, see `Writer`) must
  refuse before they write.
- Decisions are `lifecycle`'s: the store asks it what a change means and
  records the answer.
- A mutation returns `Written(value, changes)`: its answer, and what it did
  that others must learn of (`Changes`), which the writer merges per batch.
- Every state change goes through `lifecycle.next_state` and then carries out
  `lifecycle.cascade(old, new)` on the job's dependents that have not started
  (`lifecycle.UNSTARTED_STATES`): CANCEL moves each of them, and theirs in
  turn, by `lifecycle.DEPENDENT_CANCEL_EVENT`, with the error
  `lifecycle.dependency_cancel_reason(blocker, its state)` naming the lowest
  dependency that doomed it; RECOUNT sets each one's count of dependencies not
  completed. A job entering a terminal state is reported in
  `Changes.finished` (cascaded ones too); a recount that touched any job sets
  `Changes.reordered`, and those left with nothing to wait for are reported in
  `Changes.released`; a failed attempt's retry time and `release` set
  `reordered` too.
- A job is claimable when its state is in `lifecycle.WAITING_STATES`, its
  run_at has come and every dependency completed, and it is pinned to no
  node or to this one (`NodeIdentity.name`); claim order is
  `Claimed.claim_key` (priority, then run_at, then id).
- Nodes: every attempt row names the node (and, where leases are kept, the
  incarnation) that started it. An engine shared by several nodes
  (PostgreSQL) fences an attempt's start and end on this node's incarnation
  holding a live lease: a node declared lost records nothing. An engine of
  one node (SQLite) records the name and fences nothing.
- Errors: `Refused(code, message)` for what the user must change (codes of
  `protocol.ErrorCode`; the messages are the user's to read: the SQLite
  engine's wording is the reference), `StorageError` for a failing store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import msgspec

from queued.lifecycle import Exit, JobState
from queued.protocol import ErrorCode, Job, NodeInfo, QueueInfo, Run
from queued.resources import Fit
from queued.schedules import NewSchedule, Outcome
from queued.validation import NewJob

T = TypeVar("T")
OutputStream = Literal["stdout", "stderr"]


class Refused(Exception):
    """A request the store will not carry out; nothing it did is kept."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class StorageError(Exception):
    """The storage failed (disk full, I/O error): what the call did is not kept."""


class StoreUnreachable(StorageError):
    """The store cannot be reached now (its server restarts or fails over, the
    network is cut): nothing of the call is kept, and the writer reconnects by
    itself (`Transactions.reconnect`). `detail` is the driver's reason, for the
    log; the message is the user's one line."""

    def __init__(self, message: str, detail: str = "", store: str = "the job store") -> None:
        super().__init__(message)
        self.detail = detail
        self.store = store  # how messages name it ("the job store at HOST/DB")


class CommitUnknown(StoreUnreachable):
    """The store went away while the batch's COMMIT was on its way: the
    changes may or may not have been kept. `result` is what the call
    answered inside the transaction (a claim's jobs), for a caller that must
    put right what may have been kept."""

    def __init__(
        self, message: str, detail: str = "", store: str = "the job store", result: Any = None
    ) -> None:
        super().__init__(message, detail, store)
        self.result = result
        self.unreachable = f"{store} is unreachable; retrying"  # what a read is told instead


class BatchLost(Exception):
    """Raised by an engine to the writer: the whole transaction is gone (or
    cannot be kept), so every call of the batch fails with `error`."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


class StoreLost(BatchLost):
    """The store itself is gone (its file deleted or replaced under us): from
    now on every change is refused."""


class BatchConflict(BatchLost):
    """The database undid the whole transaction to settle a conflict with
    another node's (a deadlock, a serialization failure): nothing of it was
    kept, and the writer runs the batch again (`error` is what its callers are
    told if the conflicts go on)."""


class Claimed(msgspec.Struct, kw_only=True):
    """A job taken for an attempt: what the supervisor needs to run it."""

    id: int
    run: int  # run number across the job's life (names the attempt's logs)
    attempts: int  # attempts in the current round, for the retry policy
    command: str
    queue: str
    cwd: str | bytes  # bytes: a path that is not UTF-8, as stored
    env: dict[str, str]
    timeout: float | None
    max_retries: int
    backoff_base: float
    has_dependents: bool = False  # its success may release jobs waiting for it
    priority: int = 0
    run_at: float = 0.0
    slots: int = 1  # how many of a node's slots it takes (`--slots`)
    needs: dict[str, int] = {}  # counted resources it needs, GPUs as "gpu" (`--needs`)
    # The GPU indices its attempt holds, chosen when it is taken on a node
    # with GPUs (the supervisor's read-ahead, or the engine's claim).
    gpus: tuple[int, ...] = ()

    @property
    def claim_key(self) -> tuple[int, float, int]:
        """Jobs due together are claimed in this order."""
        return (self.priority, self.run_at, self.id)


class Ahead(msgspec.Struct):
    """Waiting jobs read without taking them (see `Store.lookahead`)."""

    jobs: list[Claimed]  # due now, in claim order
    complete: bool  # every job due now in the queues asked about is in `jobs`
    upcoming: list[Claimed]  # due later, by run_at: every one due before `until`
    until: float | None  # the earliest run_at not read (None: no other waiting job)


class OutputChunk(msgspec.Struct, frozen=True):
    """Bytes of one stream of a running attempt, for an engine that keeps
    output (`Store.keeps_output`): `data` begins at byte `at` of the stream."""

    job_id: int
    attempt: int
    stream: OutputStream
    at: int
    data: bytes


class Recovered(msgspec.Struct, frozen=True):
    """An attempt a dead daemon left running, recorded as interrupted."""

    job_id: int
    run: int
    state: JobState | None


class AttemptEnd(msgspec.Struct, frozen=True):
    """The end of one attempt, as `Store.finish` takes it (see `finish_many`)."""

    claimed: Claimed
    exit: Exit
    ended_at: float
    pid: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    log_incomplete: str | None = None


class NodeIdentity:
    """This daemon as a node: its name, and its incarnation (a fresh id at each
    start, and again when it registers anew after losing its lease). Whoever
    registers the node sets them; the engine reads them at each call (on the
    writer's thread: a plain attribute read)."""

    __slots__ = ("incarnation", "name")

    def __init__(self, name: str, incarnation: str) -> None:
        self.name = name
        self.incarnation = incarnation

    def __repr__(self) -> str:
        return f"NodeIdentity({self.name!r}, {self.incarnation!r})"


class StoredSchedule(msgspec.Struct, kw_only=True):
    """A schedule as stored, with its latest job's state (see queued/schedules.py)."""

    name: str
    expression: str
    tz: str
    command: str
    queue: str
    priority: int
    max_retries: int
    backoff_base: float
    timeout: float | None
    cwd: str | bytes
    no_overlap: bool
    catch_up: str
    paused: bool
    created_at: float  # also an interval's anchor
    since: float  # firings after this count: its creation, or its last resume
    last_firing: float | None  # the latest firing recorded (added or skipped)
    last_run_at: float | None  # when its latest job was added (a firing or `schedule run`)
    last_job_id: int | None
    last_job_state: JobState | None  # None: no job yet, or it was removed
    slots: int = 1  # each job's share of a node
    needs: dict[str, int] = {}


class Fired(msgspec.Struct, frozen=True):
    """What one firing of a schedule did."""

    outcome: Outcome  # added; taken (recorded already, by another node); overlap; early; paused; gone
    job_id: int | None = None  # the job added


class Changes:
    """What a mutation did that others must learn of; the writer merges those
    of a batch and hands them to its one subscriber after the commit."""

    __slots__ = ("finished", "released", "reordered")

    def __init__(self) -> None:
        self.finished: list[int] = []  # reached a terminal state: waiters, on-finish commands
        self.released: list[int] = []  # dependents whose last dependency completed
        # A job became claimable that may outrank those the supervisor read
        # ahead (a released dependent, a failed attempt's retry time).
        self.reordered = False

    def merge(self, other: Changes) -> None:
        self.finished += other.finished
        self.released += other.released
        self.reordered = self.reordered or other.reordered

    def __bool__(self) -> bool:
        return bool(self.finished or self.released or self.reordered)

    def __repr__(self) -> str:
        return f"Changes(finished={self.finished}, released={self.released}, reordered={self.reordered})"


class AddedIds(list[int]):
    """`Store.add_jobs`' answer: an id per job asked for, in order, with
    `existing[i]` True where job i's unique key was held by a job already
    there (whose id it is) and nothing was added for it."""

    __slots__ = ("existing",)

    def __init__(self, ids: Sequence[int] = (), existing: Sequence[bool] | None = None) -> None:
        super().__init__(ids)
        self.existing: list[bool] = [False] * len(self) if existing is None else list(existing)


class Written(Generic[T]):
    """A mutation's answer and what it changed."""

    __slots__ = ("changes", "value")

    def __init__(self, value: T, changes: Changes | None = None) -> None:
        self.value = value
        self.changes = NOTHING if changes is None else changes


NOTHING = Changes()  # shared by mutations that change nothing others must learn of: never merged into


class Store(Protocol):
    """What the supervisor and the handlers may ask of a store."""

    # Whether attempts' output is kept in the store (`append_output`,
    # `read_output`), so that any node of a shared store can show it. False:
    # it is only in the log files of the host that ran the attempt (the
    # paths its attempt row names), and those two methods refuse.
    keeps_output: ClassVar[bool]

    # -- jobs: reads ----------------------------------------------------------
    def states(self, ids: Sequence[int]) -> dict[int, JobState]:
        """The state of each of `ids` that exists."""
        ...

    def jobs_by_id(self, ids: Sequence[int]) -> list[Job]:
        """The jobs of `ids` that exist, by id."""
        ...

    def get_job(self, job_id: int) -> tuple[Job, list[Run], dict[str, str]]:
        """A job, its attempts and its environment (printable); Refused if unknown.
        A job's `waiting_on` lists its dependencies not completed (or removed)
        while it is in `lifecycle.UNSTARTED_STATES`, else nothing."""
        ...

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
        """Jobs matching every filter given, by id; with `limit`, the newest
        ones. `before`: ids below it only (the next page back); `command`:
        commands containing it; `created_after`/`created_before`: added in
        [after, before)."""
        ...

    def unfinished_ids(self) -> list[int]: ...

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state named."""
        ...

    # -- jobs: changes --------------------------------------------------------
    def add_jobs(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        """Store new jobs in `lifecycle.initial_state`; their ids, in order,
        consecutive for every job of one call that is added, with dependencies
        or without (one writer at a time: no other add interleaves). A
        dependency may be a job of the same call. Refused: an unknown queue or
        dependency ("not_found"), a dependency that can never complete
        ("invalid", `lifecycle.dependency_refusal`).

        Unique keys: a job with a `unique_key` held by a job already stored
        (`lifecycle.holds_key`: one in `UNIQUE_STATES`, or with the job's
        `unique_for`, the last one in `UNIQUE_WINDOW_STATES` that changed
        after `lifecycle.unique_window_start`) is not added: its place in the
        answer is the holder's id, flagged in `existing`, and nothing else of
        it (dependencies, options) is applied. A key given twice in one call
        is held by the first of them from then on. At most one job per key is
        ever in `UNIQUE_STATES`, however many adders race, on every engine: a
        partial unique index over those states keeps a second one out (a
        violation is an error, never a second job). Finding the holder and
        adding are one atomic step: SQLite has one writer; PostgreSQL's
        nodes take a transaction-scoped advisory lock per key (in key order)
        before they look, and so does `retry` (the one event that brings a
        finished job back into `UNIQUE_STATES`); a job that finishes
        meanwhile is seen either unfinished or finished, as of the look."""
        ...

    def cancel(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        """Cancel jobs (Refused unless every one can be); the ids of those that
        were running, whose processes must be stopped, ascending."""
        ...

    def cancel_what_can(
        self, ids: Sequence[int], now: float
    ) -> Written[tuple[list[int], list[int], dict[int, str]]]:
        """Cancel those of `ids` that can be: (were running, canceled, why each other one was not)."""
        ...

    def retry(self, ids: Sequence[int], all_dead: bool, now: float) -> Written[list[int]]:
        """Finished jobs (and every dead one, with `all_dead`) wait again, due
        now, attempts, exit code and error reset, in ascending id order; the
        ids retried. Refused if one of them depends on a job that can never
        complete and is not retried before it, or if its unique key is held
        by another unfinished job (one retried before it included:
        `lifecycle.unique_refusal`)."""
        ...

    def hold(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        """Keep waiting jobs from being claimed; the ids, sorted."""
        ...

    def release(self, ids: Sequence[int], now: float) -> Written[list[int]]:
        """Held jobs wait again at their own run_at; the ids, sorted (reordered)."""
        ...

    def edit(self, job_id: int, fields: Mapping[str, Any], now: float) -> Written[None]:
        """Change a job that has not started; `fields` from `validation.job_changes`
        (never its unique key: those who were given its id for that key keep it)."""
        ...

    def restart(self, job_id: int, fields: Mapping[str, Any], hold: bool, now: float) -> Written[int]:
        """Add a copy of any job with `fields` changed; the copy's id. The copy
        keeps the unique key: Refused (`lifecycle.unique_refusal`) while
        another unfinished job (the original included) holds it."""
        ...

    def remove(self, ids: Sequence[int]) -> Written[list[str]]:
        """Delete finished jobs; the log paths they named, for the caller to unlink."""
        ...

    def clean(self, states: Sequence[str], older_than: float | None) -> Written[tuple[int, list[str]]]:
        """Delete jobs in `states` (last changed before `older_than`): (how many, their log paths)."""
        ...

    # -- attempts' output (engines that keep it) -----------------------------
    def append_output(self, chunks: Sequence[OutputChunk]) -> Written[None]:
        """Keep chunks of attempts' output, as the supervisor's record (it
        refuses before it writes). Each chunk continues its stream (`at` is
        the number of bytes of the stream before it); one already kept (the
        same job, attempt, stream and `at`: a record tried again) is not kept
        twice, and one whose attempt no longer exists (its job removed) is
        dropped. An engine may split a chunk to store it. A removed job's
        output goes with it (`remove`, `clean`). Refused ("invalid") by an
        engine without `keeps_output`."""
        ...

    def read_output(
        self, job_id: int, attempt: int, stream: OutputStream, offset: int, limit: int
    ) -> tuple[bytes, int]:
        """Up to `limit` bytes of an attempt's stream from byte `offset`, and
        the stream's size (where its last chunk kept ends). The bytes read
        are contiguous: a read stops at a gap (a chunk tried again after a
        failing store may arrive after the one that follows it). (b"", size)
        past the end; (b"", 0) for an attempt that kept nothing or does not
        exist. Refused ("invalid") by an engine without `keeps_output`."""
        ...

    # -- queues and settings --------------------------------------------------
    def queues(self) -> list[QueueInfo]: ...

    def waits_here(self, queues: Sequence[str] | None) -> bool:
        """Whether a job waits that this node (`identify`) may run some day:
        pending or failed awaiting its retry, due or not, its dependencies met
        or not, in a queue that is not paused and is among `queues` (None:
        every queue), and not pinned to another node. Held jobs, paused
        queues, and jobs pinned to another node or in a queue this node does
        not serve keep no batch runner (`--exit-when-idle`)."""
        ...

    def add_queue(self, name: str, concurrency: int | None, now: float) -> Written[None]: ...

    def remove_queue(self, name: str) -> Written[None]: ...

    def set_paused(self, name: str, paused: bool) -> Written[None]: ...

    def set_queue_concurrency(self, name: str, concurrency: int | None) -> Written[None]:
        """Set queue `name`'s limit of attempts running at once (None: none but
        the global one), for every claim from the commit on; running attempts
        are left alone. Refused: an unknown queue ("not_found"), a limit below 1
        ("invalid")."""
        ...

    def set_all_paused(self, paused: bool) -> Written[None]: ...

    def config(self) -> dict[str, str]:
        """The settings saved by `config set`, as the user wrote them."""
        ...

    def set_config(self, key: str, value: str) -> Written[None]: ...

    # -- schedules --------------------------------------------------------------
    def schedules(self) -> list[StoredSchedule]:
        """Every schedule, by name."""
        ...

    def add_schedule(self, schedule: NewSchedule, now: float) -> Written[None]:
        """Store a schedule (its job's environment too), created and counting
        firings from `now`. Refused: the name is taken ("invalid"), the job's
        queue is unknown ("not_found")."""
        ...

    def remove_schedule(self, name: str) -> Written[None]:
        """Delete a schedule and its firings (its jobs stay); Refused if unknown."""
        ...

    def pause_schedule(self, name: str, paused: bool, now: float) -> Written[None]:
        """Pause a schedule, or resume it counting firings from `now` (those it
        passed while paused are not caught up); Refused if unknown."""
        ...

    def fire_schedule(self, name: str, firing: float | None, now: float) -> Written[Fired]:
        """Add the schedule's job (labelled with its name, due at the firing's
        time or at `now` if that is later: `schedules.job_due`) for `firing`,
        exactly once however many nodes ask: the firing is recorded
        in the same transaction, UNIQUE per (schedule, firing), and the
        schedule's row is locked first where the engine can. Outcomes: "taken"
        (this firing, or a later one, was recorded already: nothing added),
        "paused", "gone" (no such schedule), "overlap" (recorded without a job,
        `schedules.skips_for_overlap`), "early" (it would overlap, but its
        time has not come: nothing recorded, ask again then), else "added". `firing` None is
        `schedule run`: one job now, whatever the schedule's state, no firing
        recorded (Refused if unknown). Refused too when the job cannot be
        added (its queue was removed): then nothing is recorded."""
        ...

    # -- the supervisor's side ------------------------------------------------
    def lookahead(
        self, *, now: float, horizon: float, queues: Sequence[str], busy: Sequence[int], limit: int
    ) -> Ahead:
        """Claimable jobs of `queues` but `busy`, without taking them: the
        first `limit` due by `now` in claim order (`complete` when that is all
        of them), and those due after `now` up to `horizon` by run_at, cut
        before the first one past `limit` with every job due at that same
        instant (`until`: that instant, or else the earliest run_at after
        `horizon`, None when there is none)."""
        ...

    def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        """The earliest future run_at among waiting jobs of `queues`."""
        ...

    def start(self, job: Claimed, now: float, gpus: Sequence[int] = ()) -> Written[None]:
        """Record that `job`, read by `lookahead`, started attempt `job.run`:
        the job is claimed (`lifecycle` CLAIM, attempts = `job.attempts`) and
        the attempt row made, naming the GPU indices it holds (`Run.gpus`).
        Refused, having written nothing, if the job is no longer claimable as
        it was read (another attempt recorded, a state or attempt count
        changed, a dependency waiting again)."""
        ...

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
        """Take (as `start` does) up to `slots` due jobs, best first, at most
        `queue_room[q]` of each queue q (queues not named have no room), none
        of `busy`, the attempt of a job named in `gpus` holding those GPU
        indices; and of a queue with a concurrency of its own, no more than
        that concurrency less its jobs running in the store (on every node that
        shares it: an engine shared by nodes serializes the claims of such a
        queue so that two nodes together never exceed it). With `fit` (the
        node's capacity and what is free of it), the jobs are walked in claim
        order through `fit.allocator(now)` (queued.resources): only those it
        starts are taken, each with the GPUs it gives them (`Claimed.gpus`,
        recorded on the attempt); those passed over are not taken, nor kept
        from other nodes past the claim's commit.

        Unless `started`, the attempts are claimed but not started (a node
        claiming ahead of its free slots): they count as running (queue
        limits, cancel) but until `mark_started` records an attempt's process,
        `recover` and `rescue` give its job back (it waits again; the attempt
        row goes and does not count) instead of interrupting it."""
        ...

    def mark_started(self, attempts: Sequence[tuple[int, int, int | None, float]]) -> Written[list[int]]:
        """Record the process of each attempt claimed not started by this
        node (`claim(started=False)`), as (job id, run, pid or None, start
        time): from now on it is a started attempt. The ids of the jobs whose
        attempt is no longer an open, not started claim of this node (given
        back by a rescue, unclaimed, ended): their processes must stop."""
        ...

    def unclaim(self, job: Claimed, now: float) -> Written[None]:
        """Undo the committed claim of `job`, whose attempt did not start:
        its attempt row goes, and the job moves by `lifecycle.after_unclaim`.
        An engine that fences on incarnations leaves an attempt that is no
        longer this node's open one alone."""
        ...

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
        """Record the end of attempt `claimed.run` (its pid and log paths are
        known only now) and, if `lifecycle.attempt_counts`, move its job on as
        `lifecycle.after_attempt` says; the job's state after it, or None if the
        job was removed meanwhile."""
        ...

    def finish_many(
        self, ends: Sequence[AttemptEnd], backoff_max: float
    ) -> Written[list[JobState | Refused | None]]:
        """Record several ends, each as `finish` would (at its own `ended_at`),
        in one call: per end, in order, the job's state after it, None if the
        job was removed, or the Refused that end met (then nothing of it is
        recorded; the others are). An engine whose calls cost round trips
        records them in a few statements for all; one job appears at most once."""
        ...

    def recover(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        """At start: record the attempts a dead daemon left running as
        interrupted (`lifecycle.INTERRUPTED`), by job id, and make sure the
        default queue exists. Shared by nodes: only the attempts of this
        node's earlier incarnations and of nodes whose lease ran out (as `rescue`)."""
        ...

    # -- nodes ------------------------------------------------------------------
    def identify(self, node: NodeIdentity) -> None:
        """The node whose attempts this engine records from now on (before the
        writer serves; `node`'s incarnation may change later)."""
        ...

    def nodes(self) -> list[NodeInfo]:
        """The nodes that share this store, by name: a lone engine (SQLite)
        knows only its own (`identify`), with no lease."""
        ...

    def rescue(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        """Record the running attempts of nodes whose lease ran out as
        interrupted (`lifecycle.INTERRUPTED`: retried under the job's policy),
        in one statement that re-checks them, so that two rescuers never both
        record one. A lone engine (SQLite) has none to rescue."""
        ...


class Transactions(Protocol):
    """The engine's side of the writer's transactions (see `writer.py`)."""

    # A server that stops answering (its processes frozen, stuck I/O) must not
    # hold the writer for ever: when the call on its way (`busy_since`, on
    # time.monotonic(), None between batches) has had no answer for a while,
    # the writer asks whether the server `answers` at all, and if it does not
    # (or after `answer_bound` seconds in any case: math.inf for never) calls
    # `interrupt`. None: no watch (a file the daemon itself reads and writes).
    answer_bound: float | None
    busy_since: float | None

    def answers(self) -> bool:
        """Whether the server answers on a connection of its own (blocking,
        on a thread the writer gives up on if it takes too long)."""
        ...

    def interrupt(self) -> None:
        """From another thread: break the connection the batch waits on, so
        that the batch fails as StoreUnreachable (the writer then reconnects)."""
        ...

    def begin(self) -> None:
        """Open the batch's transaction."""
        ...

    def call(
        self, method: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, guarded: bool
    ) -> T:
        """Run one call of the batch. `guarded`: in a savepoint of its own, so
        that a refusal or an error (raised) leaves nothing of it. Raises
        BatchLost when the transaction itself is gone (BatchConflict when the
        database undid it for another's sake: the batch may run again)."""
        ...

    def commit(self) -> None:
        """Make the batch durable; BatchLost (or StoreLost) if it cannot be."""
        ...

    def abort(self) -> None:
        """Roll back whatever the batch did; forget what may name rolled-back rows."""
        ...

    def reconnect(self) -> None:
        """Reach the store again after a batch failed with StoreUnreachable
        (the writer calls it, with backoff, while no batch runs); StorageError
        while it still cannot. An engine that is never unreachable (SQLite)
        does nothing."""
        ...

    def close(self) -> None:
        """At shutdown, after the writer stopped."""
        ...


class News(msgspec.Struct, kw_only=True):
    """What other nodes sharing the store did that this one must act on
    (`Engine.news`): merged per wake-up, so that a burst costs one action."""

    wake: bool = False  # jobs became claimable (added, released, retried, due earlier)
    queues: bool = False  # queues were added, removed, paused or resumed: read them again
    schedules: bool = False  # schedules were added, removed, paused or resumed: read them again
    room: set[str] = msgspec.field(default_factory=set)  # queues where an attempt ended
    cancel: list[int] = msgspec.field(default_factory=list)  # jobs canceled: stop them if they run here
    finished: list[int] = msgspec.field(default_factory=list)  # jobs that reached a terminal state
    output: list[int] = msgspec.field(default_factory=list)  # jobs whose output grew or attempt ended
    # Jobs deleted (`rm`, `clean`): each node deletes its own log files of their attempts.
    removed: list[int] = msgspec.field(default_factory=list)
    # The news channel was (re)opened: whatever was sent while it was closed is
    # gone, so read everything again (queues, schedules, claimable jobs, running jobs' states).
    reconnected: bool = False
    lost: bool = False  # the news channel is closed: until `reconnected`, nothing is heard

    def merge(self, other: News) -> None:
        self.wake = self.wake or other.wake
        self.queues = self.queues or other.queues
        self.schedules = self.schedules or other.schedules
        self.room |= other.room
        self.cancel += other.cancel
        self.finished += other.finished
        self.output += other.output
        self.removed += other.removed
        self.reconnected = self.reconnected or other.reconnected
        self.lost = self.lost or other.lost


class NewsSource(Protocol):
    """The task that hears other nodes' news (see `Engine.news`)."""

    async def run(self, deliver: Callable[[News], None]) -> None:
        """Deliver news as it comes, for as long as the daemon runs, opening
        the channel again (with backoff) whenever it is lost; after each
        (re)opening, `News(reconnected=True)`, and on each loss `News(lost=True)`."""
        ...


class Engine(Store, Transactions, Protocol):
    """A store engine: the contract, and the transactions the writer runs it in."""

    # True when several nodes share the store: a job is claimed (committed)
    # before its attempt starts (`Store.claim`), so that two nodes never start
    # the same attempt. False for a store only this daemon uses: it may read
    # ahead and record starts behind the processes (`lookahead`, `start`).
    claims_before_start: bool

    def news(self) -> NewsSource | None:
        """What tells this node of other nodes' changes (a task the daemon
        runs), or None when no other node shares the store. The engine sends
        its own news with each commit: what it sends is heard only once that
        commit is durable, and never by the node that sent it."""
        ...
