"""`queuectl logs`: print an attempt's output, and with -f keep following it,
across retries, until the job is finished."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import BinaryIO

from queued.protocol import TERMINAL_STATES

from .client import Client, DaemonError


def _target(stream: str, streams: Sequence[str]) -> BinaryIO:
    """Each stream to its own kind when both are shown; one stream alone goes to stdout."""
    return sys.stderr.buffer if stream == "stderr" and len(streams) > 1 else sys.stdout.buffer


def _drain(
    client: Client, job_id: int, attempt: int, stream: str, offset: int, streams: Sequence[str]
) -> tuple[int, bool, str]:
    """Print what the file holds past `offset`; (new offset, attempt still running, job state)."""
    out = _target(stream, streams)
    while True:
        chunk = client.read_log(job_id, attempt=attempt, stream=stream, offset=offset)
        if chunk.data:
            out.write(chunk.data)
            out.flush()
        offset = chunk.offset
        if not chunk.data or offset >= chunk.size:
            return offset, chunk.running, chunk.job_state


def _latest_attempt(client: Client, job_id: int) -> int | None:
    runs = client.get(job_id).runs
    return runs[-1].attempt if runs else None


def print_logs(
    client: Client,
    job_id: int,
    *,
    attempt: int | None,
    streams: Sequence[str],
    follow: bool,
    interval: float,
) -> None:
    current = attempt or _latest_attempt(client, job_id)
    while current is None:  # not started yet
        if not follow:
            raise DaemonError("not_found", f"job {job_id} has not run yet")
        time.sleep(interval)
        if client.get(job_id).job.state in TERMINAL_STATES and not client.get(job_id).runs:
            return  # canceled before it ever ran
        current = _latest_attempt(client, job_id)
    offsets = dict.fromkeys(streams, 0)
    while True:
        running, state = False, ""
        for stream in streams:
            offsets[stream], still, state = _drain(client, job_id, current, stream, offsets[stream], streams)
            running = running or still
        if not follow or (attempt is not None and not running):
            return
        if running:
            time.sleep(interval)
            continue
        # This attempt is over. A later one may have started (and even ended) meanwhile.
        latest = _latest_attempt(client, job_id)
        if latest is not None and latest > current:
            current = latest
            offsets = dict.fromkeys(streams, 0)
            sys.stderr.write(f"--- attempt {current} ---\n")
            sys.stderr.flush()
        elif state in TERMINAL_STATES:
            return
        else:
            time.sleep(interval)
