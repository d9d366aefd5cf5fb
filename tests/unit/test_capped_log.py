"""An attempt's log on a disk that refuses writes: the output is dropped and
counted, a marker line marks the gap once writing works again."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from queued.processes.job_process import CappedLog
from tests.faults import inject


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_refused_write_is_counted_and_marked_where_the_gap_is(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    path = tmp_path / "1.1.out"
    losses: list[OSError] = []
    log = CappedLog(pipe[0], str(path), 1000, lambda _, exc: losses.append(exc))
    log.write(b"a" * 10)
    with inject("write", 1, errno.ENOSPC, times=2):
        log.write(b"b" * 20)
        log.write(b"c" * 30)  # the disk still refuses: one gap
    log.write(b"d" * 5)  # space is back
    log.close()
    assert path.read_bytes() == b"a" * 10 + b"\n[queued: 50 bytes lost: No space left on device]\n" + b"d" * 5
    assert (log.lost, log.loss_reason) == (50, "No space left on device")
    assert [exc.errno for exc in losses] == [errno.ENOSPC, errno.ENOSPC]


def test_a_gap_at_the_end_is_marked_at_close_when_it_can_be(tmp_path: Path, pipe: tuple[int, int]) -> None:
    path = tmp_path / "1.1.err"
    log = CappedLog(pipe[0], str(path), 1000)
    log.write(b"x" * 4)
    with inject("write", 1, errno.EIO):
        log.write(b"y" * 1_234_567)
    log.close()
    assert path.read_bytes() == (
        b"xxxx\n[queued: 996 bytes lost: Input/output error]\n"
        b"\n[queued: output truncated at 1000 bytes; 1233571 more dropped]\n"
    )
    assert log.lost == 996  # the rest is over the cap, dropped as usual


def test_a_log_that_cannot_be_created_loses_its_output_until_it_can(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    path = tmp_path / "1.1.out"
    log = CappedLog(pipe[0], str(path), 1000)
    with inject("log_open", 1, errno.EROFS):
        log.write(b"lost\n")
        log.write(b"kept\n")
    log.close()
    assert path.read_bytes() == b"\n[queued: 5 bytes lost: Read-only file system]\nkept\n"
    assert log.loss_reason == "Read-only file system"


def test_output_to_a_disk_that_never_recovers_is_counted_in_full(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    path = tmp_path / "1.1.out"
    log = CappedLog(pipe[0], str(path), 1000)
    with inject("log_open", 1, errno.ENOSPC, times=3):
        log.write(b"a" * 100)
        log.write(b"b" * 100)
        log.close()
    assert log.lost == 200 and log.loss_reason == "No space left on device"


def test_a_removed_logs_folder_is_made_again(tmp_path: Path, pipe: tuple[int, int]) -> None:
    path = tmp_path / "logs" / "0" / "1.1.out"
    log = CappedLog(pipe[0], str(path), 1000)
    log.write(b"hello\n")
    log.close()
    assert path.read_bytes() == b"hello\n" and log.lost == 0


def test_a_file_size_limit_counts_as_lost_output(tmp_path: Path, pipe: tuple[int, int]) -> None:
    path = tmp_path / "1.1.out"
    log = CappedLog(pipe[0], str(path), 1000)
    with inject("write", 1, errno.EFBIG):
        log.write(b"z" * 10)
    log.close()
    assert log.lost == 10 and log.loss_reason == "File too large"
    assert b"10 bytes lost: File too large" in path.read_bytes()
