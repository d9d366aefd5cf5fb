"""How many more attempts each queue may start now. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from queued.protocol import QueueInfo


def queue_room(free: int, queues: Iterable[QueueInfo], running: Mapping[str, int]) -> dict[str, int]:
    """Each queue that is not paused, and how many of its jobs may start: no
    more than the `free` slots left overall, nor than its own concurrency
    less its `running` attempts (a queue with no concurrency of its own is
    bound by the slots alone). A paused queue is left out: it has no room."""
    free = max(0, free)
    room = {}
    for queue in queues:
        if not queue.paused:
            limit = free if queue.concurrency is None else queue.concurrency - running.get(queue.name, 0)
            room[queue.name] = max(0, min(free, limit))
    return room
