"""A node used as a batch runner leaves by itself, gracefully (as on SIGTERM:
what runs ends and is recorded, nothing new starts):

- `--exit-when-idle`: once nothing runs here (no attempt, no end waiting for
  its record) and no job waits that it could run: none pending or awaiting a
  retry in a queue that is not paused, delayed ones and those waiting for a
  dependency included (they will be due) (`Store.waits_here`). Held jobs and
  paused queues wait for a person and keep no node; on PostgreSQL, neither do
  jobs pinned to another node (gone or not) nor jobs in queues it does not
  serve (`--queues`): they are other nodes' work, and a batch runner that
  waited for them might never leave. It must stay so for IDLE_GRACE_SECONDS:
  jobs added by a script right after the node started are not missed.
- `--exit-after-jobs N`: it starts N attempts at most (the supervisor's
  budget), then leaves once they ended.

Nothing polls: the node looks again at each change of its jobs, slots or
queues, and reads the store only when nothing runs here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from queued.store import StorageError

log = logging.getLogger("queued.daemon")
IDLE_GRACE_SECONDS = 1.0


async def leave_when_idle(
    *,
    busy: Callable[[], bool],
    waits: Callable[[], Awaitable[bool]],
    next_change: Callable[[], trio.Event],
    leave: Callable[[], None],
    grace: float = IDLE_GRACE_SECONDS,
) -> None:
    """Call `leave` once the node has been idle for `grace` seconds: nothing
    `busy` here and nothing it `waits` for (read from the store)."""
    while True:
        change = next_change()
        if not busy() and await _nothing_waits(waits):
            with trio.move_on_after(grace):
                await change.wait()
            if not change.is_set() and not busy() and await _nothing_waits(waits):
                log.info("nothing left to run here: leaving (--exit-when-idle)")
                leave()
                return
            continue
        await change.wait()


async def _nothing_waits(waits: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return not await waits()
    except StorageError:
        return False  # the store cannot say (unreachable): wait for it
