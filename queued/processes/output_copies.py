"""Attempts' output copied into a store that keeps it (`Store.keeps_output`:
PostgreSQL, where every node must show any attempt's output).

Each stream's log (`CappedLog`) hands what its file keeps, the truncation
marker included, to its `StreamCopy`; the bytes wait here and go to the store
as the supervisor's records (`Store.append_output`, through the writer, so
they share its transactions with the starts and ends):

- every stream's waiting bytes in one record, FLUSH_SECONDS after the first
  byte that waits, or at once when FLUSH_BYTES wait: a chatty job costs a few
  records a second, never one per pipe read, and many chatty jobs share them;
- an attempt's last bytes just before its end's record (`Ends`), so they
  commit in the same transaction or an earlier one: `logs` after `wait`
  shows everything;
- a job that writes nothing costs nothing: no record, no task, no timer.

A record the store failed (it is unreachable) keeps its chunks, which go
again with the next record: with the attempt's end at the latest, and with
each try of that end's record. Up to AGAIN_MAX bytes in all: beyond, the
store's copy loses them (the log file still has them), and the attempt's
record says how much (`missing`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from queued.store import OutputChunk, StorageError, Store
from queued.store.contract import OutputStream
from queued.store.writer import Call, Writer

# How long the first byte waiting waits for company; what `logs -f` on
# another node lags behind the job at most, but for the commit.
FLUSH_SECONDS = 0.1
# Waiting bytes that go at once, whatever their age.
FLUSH_BYTES = 256 * 1024
# The most bytes kept in memory to go again while the store fails.
AGAIN_MAX = 32 * 1024 * 1024

log = logging.getLogger(__name__)


class StreamCopy:
    """One stream of one attempt, as it goes to the store."""

    __slots__ = ("_copies", "attempt", "job_id", "sent", "stream", "waiting")

    def __init__(self, copies: OutputCopies, job_id: int, attempt: int, stream: OutputStream) -> None:
        self._copies = copies
        self.job_id = job_id
        self.attempt = attempt
        self.stream: OutputStream = stream
        self.sent = 0  # bytes of the stream handed to records so far
        self.waiting = bytearray()

    def write(self, data: bytes) -> None:
        """Bytes the stream's log keeps, in order."""
        if data:
            self._copies.take(self, data)

    def chunk(self) -> OutputChunk | None:
        """Its waiting bytes as a chunk, now counted as sent; None if none wait."""
        if not self.waiting:
            return None
        chunk = OutputChunk(
            job_id=self.job_id,
            attempt=self.attempt,
            stream=self.stream,
            at=self.sent,
            data=bytes(self.waiting),
        )
        self.sent += len(self.waiting)
        self.waiting.clear()
        return chunk


class OutputCopies:
    def __init__(self, db: Writer, kept: Callable[[Iterable[int]], None] | None = None) -> None:
        self.db = db
        self._kept = kept  # told the jobs whose output a record committed
        self._waiting: dict[StreamCopy, None] = {}  # streams with bytes waiting, in arrival order
        self._waiting_bytes = 0
        self._again: dict[tuple[int, int], list[OutputChunk]] = {}  # by attempt: chunks a failed record held
        self._again_bytes = 0
        self._lost: dict[tuple[int, int], tuple[int, str]] = {}  # by attempt: bytes the store will miss, why
        self._due = trio.Event()  # a byte waits
        self._full = trio.Event()  # FLUSH_BYTES wait

    def streams(self, job_id: int, attempt: int) -> tuple[StreamCopy, StreamCopy]:
        """The copies of a new attempt's stdout and stderr."""
        return StreamCopy(self, job_id, attempt, "stdout"), StreamCopy(self, job_id, attempt, "stderr")

    def take(self, copy: StreamCopy, data: bytes) -> None:
        if not copy.waiting:
            self._waiting[copy] = None
        copy.waiting += data
        self._waiting_bytes += len(data)
        self._due.set()
        if self._waiting_bytes >= FLUSH_BYTES:
            self._full.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what waits, FLUSH_SECONDS after its first byte (or once FLUSH_BYTES wait)."""
        task_status.started()
        while True:
            await self._due.wait()
            with trio.move_on_after(FLUSH_SECONDS):
                await self._full.wait()
            self._due = trio.Event()
            self._full = trio.Event()
            self.send(list(self._waiting))

    def send(self, copies: Iterable[StreamCopy]) -> Call | None:
        """Queue a record of what `copies` have waiting, with the chunks of
        their attempts that a failed record held; None if there is nothing."""
        chunks: list[OutputChunk] = []
        for copy in copies:
            again = self._again.pop((copy.job_id, copy.attempt), None)
            if again:
                chunks += again
                self._again_bytes -= sum(len(chunk.data) for chunk in again)
            chunk = copy.chunk()
            if chunk is not None:
                chunks.append(chunk)
                self._waiting_bytes -= len(chunk.data)
                self._waiting.pop(copy, None)
        if not chunks:
            return None
        call = self.db.record(Store.append_output, chunks)
        call.on_done = self._sent
        return call

    def _sent(self, call: Call) -> None:
        error = call.error
        chunks: list[OutputChunk] = call.args[0]
        if error is None:
            if self._kept is not None:
                self._kept({chunk.job_id for chunk in chunks})
            return
        again = isinstance(error, StorageError) and self.db.lost is None
        for chunk in chunks:
            key = (chunk.job_id, chunk.attempt)
            if again and self._again_bytes + len(chunk.data) <= AGAIN_MAX:
                self._again.setdefault(key, []).append(chunk)
                self._again_bytes += len(chunk.data)
                continue
            reason = f"{error} (for too long: {AGAIN_MAX:,} bytes wait to go again)" if again else str(error)
            count, why = self._lost.get(key, (0, reason))
            if not count:
                log.error(
                    "job %d attempt %d: output not kept in the store: %s (its log file has it)",
                    chunk.job_id,
                    chunk.attempt,
                    why,
                )
            self._lost[key] = (count + len(chunk.data), why)

    def missing(self, job_id: int, attempt: int) -> str | None:
        """What the store's copy of the attempt's output misses, for its record; None if nothing."""
        lost = self._lost.get((job_id, attempt))
        if lost is None:
            return None
        return f"the store: {lost[0]:,} bytes lost: {lost[1]}"

    def forget(self, job_id: int, attempt: int) -> None:
        """The attempt's end is recorded: chunks a failed record held go no more."""
        again = self._again.pop((job_id, attempt), None)
        if again:
            self._again_bytes -= sum(len(chunk.data) for chunk in again)
        self._lost.pop((job_id, attempt), None)
