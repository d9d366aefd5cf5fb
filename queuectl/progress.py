"""`queuectl wait` on a terminal: one line of live progress, redrawn in place."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

from queued.lifecycle import ENDED_BADLY_STATES, FAILED, RUNNING, TERMINAL_STATES, UNFINISHED_STATES
from queued.protocol import Job, Waited

from .client import Client

REFRESH_SECONDS = 0.5


def progress_line(jobs: Sequence[Job]) -> str:
    """`3/10 done, 2 running, 5 waiting (1 to retry), 1 failed`: every job is in
    one of done, running and waiting; `failed` are the done that did not complete."""
    done = sum(job.state in TERMINAL_STATES for job in jobs)
    running = sum(job.state == RUNNING for job in jobs)
    retrying = sum(job.state == FAILED for job in jobs)
    waiting = len(jobs) - done - running
    failed = sum(job.state in ENDED_BADLY_STATES for job in jobs)
    to_retry = f" ({retrying} to retry)" if retrying else ""
    return f"{done}/{len(jobs)} done, {running} running, {waiting} waiting{to_retry}, {failed} failed"


def wait_with_progress(client: Client, ids: Sequence[int], timeout: float | None, out: TextIO) -> Waited:
    """Like Client.wait, redrawing the progress line every half second."""
    if not ids:  # "every unfinished job", fixed now so that the total stays put
        ids = [job.id for job in client.list(states=UNFINISHED_STATES)]
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            step = REFRESH_SECONDS
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            result = client.wait(*ids, timeout=step)
            out.write("\r\x1b[K" + progress_line(result.jobs))
            out.flush()
            if not result.timed_out or (deadline is not None and time.monotonic() >= deadline):
                return result
    finally:
        out.write("\n")
        out.flush()
