"""`queuectl logs`: print an attempt's output, and with -f keep following it,
across retries, until the job is finished."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import BinaryIO

from queued.lifecycle import TERMINAL_STATES

from .client import Client, DaemonError


def _target(stream: str, streams: Sequence[str], labelled: bool = False) -> BinaryIO:
    """Each stream to its own kind when both are shown; one stream alone, or
    labelled streams, go to stdout."""
    if labelled:
        return sys.stdout.buffer
    return sys.stderr.buffer if stream == "stderr" and len(streams) > 1 else sys.stdout.buffer


def _drain(
    client: Client,
    job_id: int,
    attempt: int,
    stream: str,
    offset: int,
    streams: Sequence[str],
    labelled: bool = False,
) -> tuple[int, bool, str]:
    """Print what the file holds past `offset`; (new offset, attempt still running, job state).
    `labelled`: under a `==> stream <==` line, ended by a newline (as `tail -v` prints files)."""
    out = _target(stream, streams, labelled)
    if labelled:
        out.write(f"==> {stream} <==\n".encode())
    last = b"\n"
    while True:
        chunk = client.read_log(job_id, attempt=attempt, stream=stream, offset=offset)
        if chunk.data:
            out.write(chunk.data)
            out.flush()
            last = chunk.data[-1:]
        offset = chunk.offset
        if not chunk.data or offset >= chunk.size:
            if labelled and last != b"\n":
                out.write(b"\n")
            out.flush()
            return offset, chunk.running, chunk.job_state


# How long one waiting read lasts at most when nothing happens: the daemon
# answers as soon as the attempt's output grows or it ends, where it can tell.
FOLLOW_WAIT = 1.0


def _wait_for_output(
    client: Client, job_id: int, attempt: int, stream: str, offset: int, streams: Sequence[str]
) -> int | None:
    """Wait for the attempt's output to grow (or its end) with a waiting read
    of `stream`, printing what it brings; the stream's new offset, or None
    when the daemon is older than waiting reads."""
    try:
        chunk = client.read_log(job_id, attempt=attempt, stream=stream, offset=offset, wait=FOLLOW_WAIT)
    except DaemonError as exc:
        if exc.code == "bad_request" and "'wait'" in exc.message:
            return None  # a daemon older than `wait`
        raise
    if chunk.data:
        out = _target(stream, streams)
        out.write(chunk.data)
        out.flush()
    return chunk.offset


def _latest_attempt(client: Client, job_id: int) -> int | None:
    runs = client.get(job_id).runs
    return runs[-1].attempt if runs else None


def _say_if_incomplete(client: Client, job_id: int, attempt: int) -> None:
    """A line on stderr when the daemon could not write all of an ended
    attempt's output (a full disk, say): what was printed is not all it wrote."""
    for run in client.get(job_id).runs:
        if run.attempt == attempt and run.log_incomplete:
            sys.stdout.flush()
            sys.stderr.write(f"queuectl: attempt {attempt}'s log is incomplete: {run.log_incomplete}\n")
            sys.stderr.flush()


TAIL_BLOCK = 64 * 1024


def tail_offset(client: Client, job_id: int, attempt: int, stream: str, lines: int) -> int:
    """Where the last `lines` lines of a stream begin, read backwards a block at
    a time (a final line without its newline counts as a line, as for tail)."""
    end = client.read_log(job_id, attempt=attempt, stream=stream, offset=0, limit=1).size
    if lines == 0:
        return end
    start, seen = end, 0
    while start > 0:
        block_start = max(0, start - TAIL_BLOCK)
        data = client.read_log(
            job_id, attempt=attempt, stream=stream, offset=block_start, limit=start - block_start
        ).data
        if start == end and data.endswith(b"\n"):
            data = data[:-1]  # the last line's own newline
        for position in range(len(data) - 1, -1, -1):
            if data[position] == 0x0A:
                seen += 1
                if seen == lines:
                    return block_start + position + 1
        start = block_start
    return 0


def print_logs(
    client: Client,
    job_id: int,
    *,
    attempt: int | None,
    streams: Sequence[str],
    follow: bool,
    interval: float,
    tail: int | None = None,
    labelled: bool = False,
) -> None:
    """Print an attempt's output (the latest attempt's unless `attempt`), only
    its last `tail` lines per stream if given; with `follow`, until the job is
    finished, across its retries. `labelled` (not with `follow`): every stream
    to stdout, one after the other, each under its name: the log files keep no
    times to interleave them by."""
    current = attempt or _latest_attempt(client, job_id)
    while current is None:  # not started yet
        if not follow:
            raise DaemonError("not_found", f"job {job_id} has not run yet")
        time.sleep(interval)
        if client.get(job_id).job.state in TERMINAL_STATES and not client.get(job_id).runs:
            return  # canceled before it ever ran
        current = _latest_attempt(client, job_id)
    offsets = dict.fromkeys(streams, 0)
    if tail is not None:
        offsets = {stream: tail_offset(client, job_id, current, stream, tail) for stream in streams}
    waits = True  # the daemon answers waiting reads (one older than them does not)
    while True:
        running, state = False, ""
        for stream in streams:
            offsets[stream], still, state = _drain(
                client, job_id, current, stream, offsets[stream], streams, labelled and not follow
            )
            running = running or still
        if not follow or (attempt is not None and not running):
            if not running:
                _say_if_incomplete(client, job_id, current)
            return
        if running:
            first = streams[0]
            offset = (
                _wait_for_output(client, job_id, current, first, offsets[first], streams) if waits else None
            )
            if offset is None:
                waits = False
                time.sleep(interval)
            else:
                offsets[first] = offset
            continue
        # This attempt is over. A later one may have started (and even ended) meanwhile.
        latest = _latest_attempt(client, job_id)
        if latest is not None and latest > current:
            _say_if_incomplete(client, job_id, current)
            current = latest
            offsets = dict.fromkeys(streams, 0)
            sys.stderr.write(f"--- attempt {current} ---\n")
            sys.stderr.flush()
        elif state in TERMINAL_STATES:
            _say_if_incomplete(client, job_id, current)
            return
        else:
            time.sleep(interval)
