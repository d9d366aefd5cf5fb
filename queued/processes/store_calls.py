"""Every call the process side makes to the store, in one place: what the
supervisor reads (the jobs due next, the next due time), claims, and records
(an attempt's start and end, an unclaim). Records are queued without waiting
(`Writer.record`): they commit in the order they were queued, so a start is
on disk before its attempt's end."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from queued.processes.read_ahead import Marks
from queued.resources import Fit
from queued.store import Ahead, AttemptEnd, Claimed, Store
from queued.store.writer import Call, Writer


class StoreCalls:
    __slots__ = ("db",)

    def __init__(self, db: Writer) -> None:
        self.db = db

    @property
    def marks(self) -> Marks:
        """What the read-ahead is valid for (see `ReadAhead`)."""
        return (self.db.epoch, self.db.additions)

    @property
    def claims_before_start(self) -> bool:
        """Whether each start must be claimed (committed) first: other nodes share the store."""
        return bool(getattr(self.db.engine, "claims_before_start", False))

    @property
    def lost(self) -> str | None:
        """Why no change can be recorded any more (the database file is gone), or None."""
        return self.db.lost

    @property
    def unreachable(self) -> bool:
        """Whether the store cannot be reached now (see `Writer`): calls fail at once."""
        return self.db.unreachable is not None

    def queued_last(self, call: Call) -> bool:
        """Whether `call` is not taken yet and nothing was queued after it."""
        return self.db.queued_last(call)

    def reconnected(self) -> trio.Event:
        """Set when the store, unreachable now, answers again."""
        return self.db.reconnected()

    async def lookahead(
        self, *, now: float, horizon: float, queues: list[str], busy: list[int], limit: int
    ) -> Ahead:
        return await self.db.read(
            Store.lookahead, now=now, horizon=horizon, queues=queues, busy=busy, limit=limit
        )

    async def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        return await self.db.read(Store.next_due, now, queues)

    async def claim(
        self,
        *,
        now: float,
        slots: int,
        queue_room: dict[str, int],
        busy: list[int],
        fit: Fit | None = None,
        started: bool = True,
    ) -> list[Claimed]:
        return await self.db.record_now(
            Store.claim,
            now=now,
            slots=slots,
            queue_room=queue_room,
            busy=busy,
            fit=fit,
            started=started,
        )

    def mark_started(self, attempts: list[tuple[int, int, int | None, float]]) -> Call:
        """Queue the record of attempts claimed not started that started; more
        may join `attempts` until the call's batch is taken (`Call.on_taken`)."""
        return self.db.record(Store.mark_started, attempts)

    def unclaim(self, job: Claimed, now: float) -> Call:
        return self.db.record(Store.unclaim, job, now)

    def start(self, job: Claimed, now: float, gpus: Sequence[int] = ()) -> Call:
        if gpus:
            return self.db.record(Store.start, job, now, gpus)
        return self.db.record(Store.start, job, now)  # a job holding no GPU: the call as ever

    def finish_many(self, ends: list[AttemptEnd], backoff_max: float) -> Call:
        """Queue the record of attempts' ends; more may join `ends` until the
        call's batch is taken (`Call.on_taken`)."""
        return self.db.record(Store.finish_many, ends, backoff_max)
