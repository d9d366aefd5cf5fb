"""Attempts' output copied into a store that keeps it: the copy holds what the
log file holds (the cap and its marker too), its bytes go in few records
(after FLUSH_SECONDS, or at FLUSH_BYTES), an attempt's last ones on demand
(before its end's record), a failed record's chunks go again, and a job that
writes nothing costs no record."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from queued.processes.job_process import CappedLog
from queued.processes.output_copies import FLUSH_BYTES, FLUSH_SECONDS, OutputCopies
from queued.store import OutputChunk, StorageError, Store
from queued.store.writer import Call, Kind
from tests.faults import inject


class Records:
    """The writer as OutputCopies sees it: the records queued, settled by the test."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lost: str | None = None

    def record(self, fn: Any, *args: Any, **kwargs: Any) -> Call:
        assert fn is Store.append_output
        call = Call(Kind.RECORD, fn, fn, args, kwargs, urgent=False)
        self.calls.append(call)
        return call

    def chunks(self, index: int) -> list[tuple[int, int, str, int, bytes]]:
        return [(c.job_id, c.attempt, c.stream, c.at, c.data) for c in self.calls[index].args[0]]

    def settle(self, index: int, error: BaseException | None = None) -> None:
        call = self.calls[index]
        call.error = error
        call.done.set()
        if call.on_done is not None:
            call.on_done(call)


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def copies(records: Records) -> OutputCopies:
    return OutputCopies(records)  # type: ignore[arg-type]


class Collected:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def test_the_copy_holds_what_the_file_holds_up_to_the_cap_and_its_marker(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    path = tmp_path / "1.1.out"
    copy = Collected()
    log = CappedLog(read_end, str(path), 100, copy=copy)
    for _ in range(7):
        log.write(b"0123456789abcdef")
    os.close(write_end)
    log.close()
    assert copy.data == path.read_bytes()
    assert copy.data.endswith(b"\n[queued: output truncated at 100 bytes; 12 more dropped]\n")
    assert len(copy.data.split(b"\n")[0]) == 100


def test_what_the_disk_refused_is_still_in_the_copy(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    path = tmp_path / "1.1.out"
    copy = Collected()
    log = CappedLog(read_end, str(path), 1000, copy=copy)
    log.write(b"a" * 3)
    with inject("write", 1, errno.ENOSPC):
        log.write(b"b" * 4)
    log.write(b"c" * 2)
    os.close(write_end)
    log.close()
    assert copy.data == b"aaabbbbcc"  # the store lost nothing: no gap, no marker
    assert path.read_bytes() == b"aaa\n[queued: 4 bytes lost: No space left on device]\ncc"


async def test_output_goes_in_one_record_a_short_time_after_its_first_byte(
    copies: OutputCopies, records: Records, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(copies.run)
        await trio.sleep(10 * FLUSH_SECONDS)
        assert records.calls == []  # nothing written: no record
        out, err = copies.streams(7, 1)
        other, _ = copies.streams(8, 2)
        started = trio.current_time()
        out.write(b"one\n")
        err.write(b"e\n")
        other.write(b"x")
        out.write(b"two\n")
        while not records.calls:
            await trio.sleep(0.001)
        assert trio.current_time() - started == pytest.approx(FLUSH_SECONDS, abs=0.01)
        assert records.chunks(0) == [
            (7, 1, "stdout", 0, b"one\ntwo\n"),
            (7, 1, "stderr", 0, b"e\n"),
            (8, 2, "stdout", 0, b"x"),
        ]
        records.settle(0)
        out.write(b"three\n")
        await trio.sleep(2 * FLUSH_SECONDS)
        assert len(records.calls) == 2
        assert records.chunks(1) == [(7, 1, "stdout", 8, b"three\n")]  # where the stream was
        await trio.sleep(10 * FLUSH_SECONDS)
        assert len(records.calls) == 2  # nothing more written, nothing more sent
        nursery.cancel_scope.cancel()


async def test_many_bytes_waiting_go_at_once(
    copies: OutputCopies, records: Records, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(copies.run)
        out, _ = copies.streams(1, 1)
        started = trio.current_time()
        out.write(b"z" * FLUSH_BYTES)
        while not records.calls:
            await trio.sleep(0.0001)
        assert trio.current_time() - started < FLUSH_SECONDS / 10
        nursery.cancel_scope.cancel()


def test_an_attempts_last_output_goes_on_demand_and_a_failed_record_goes_again(
    copies: OutputCopies, records: Records
) -> None:
    out, err = copies.streams(3, 1)
    running, _ = copies.streams(4, 1)
    out.write(b"ab")
    running.write(b"other")
    assert copies.send([out, err]) is not None
    assert records.chunks(0) == [(3, 1, "stdout", 0, b"ab")]  # only that attempt's
    records.settle(0, StorageError("the job store at db/q is unreachable; retrying"))
    out.write(b"cd")
    copies.send([out, err])  # its end's record, tried again, and its output first
    assert records.chunks(1) == [(3, 1, "stdout", 0, b"ab"), (3, 1, "stdout", 2, b"cd")]
    records.settle(1)
    assert copies.send([out, err]) is None  # nothing left of it
    assert copies.send([running]) is not None
    assert records.chunks(2) == [(4, 1, "stdout", 0, b"other")]


def test_a_lost_store_keeps_no_chunk_to_send_again(copies: OutputCopies, records: Records) -> None:
    out, _ = copies.streams(3, 1)
    out.write(b"ab")
    copies.send([out])
    records.lost = "the database file is gone"
    records.settle(0, StorageError("the database file is gone"))
    assert copies.send([out]) is None


def test_the_chunks_are_the_contracts(copies: OutputCopies, records: Records) -> None:
    out, _ = copies.streams(3, 1)
    out.write(b"ab")
    copies.send([out])
    [chunk] = records.calls[0].args[0]
    assert chunk == OutputChunk(job_id=3, attempt=1, stream="stdout", at=0, data=b"ab")


def test_what_waits_to_go_again_is_bounded_and_the_rest_is_said_missing(
    copies: OutputCopies, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store unreachable for long while jobs write: memory holds at most
    AGAIN_MAX bytes to send again; what is dropped beyond is counted for the
    attempt's record (its log file has it)."""
    monkeypatch.setattr("queued.processes.output_copies.AGAIN_MAX", 10)
    down = StorageError("the job store at db/q is unreachable; retrying")
    out, _ = copies.streams(3, 1)
    other, _ = copies.streams(4, 1)
    out.write(b"12345678")
    other.write(b"abcd")
    copies.send([out, other])
    records.settle(0, down)
    assert copies.missing(3, 1) is None
    assert copies.missing(4, 1) == (
        "the store: 4 bytes lost: the job store at db/q is unreachable; retrying "
        "(for too long: 10 bytes wait to go again)"
    )
    copies.send([out])
    assert records.chunks(1) == [(3, 1, "stdout", 0, b"12345678")]  # what was kept goes again
    records.settle(1)
    copies.forget(4, 1)
    assert copies.missing(4, 1) is None
