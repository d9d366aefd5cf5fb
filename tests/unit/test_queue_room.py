"""How many jobs each queue may start: the free slots, each queue's own
concurrency less what runs in it, and nothing for a paused queue."""

from __future__ import annotations

from queued.processes.queue_room import queue_room
from queued.protocol import QueueInfo


def queue(name: str, concurrency: int | None = None, paused: bool = False) -> QueueInfo:
    return QueueInfo(name=name, concurrency=concurrency, paused=paused)


def test_a_queue_without_a_limit_has_the_free_slots() -> None:
    assert queue_room(3, [queue("default")], {}) == {"default": 3}
    assert queue_room(3, [queue("default")], {"default": 5}) == {"default": 3}


def test_a_queues_own_concurrency_bounds_it_less_what_runs_in_it() -> None:
    queues = [queue("serial", 1), queue("pair", 2), queue("wide", 10)]
    assert queue_room(4, queues, {"pair": 1}) == {"serial": 1, "pair": 1, "wide": 4}
    assert queue_room(4, queues, {"serial": 1, "pair": 2}) == {"serial": 0, "pair": 0, "wide": 4}


def test_a_paused_queue_has_no_room_and_is_left_out() -> None:
    assert queue_room(4, [queue("held", paused=True), queue("default")], {}) == {"default": 4}


def test_no_free_slot_leaves_no_room_anywhere() -> None:
    queues = [queue("default"), queue("serial", 1)]
    assert queue_room(0, queues, {}) == {"default": 0, "serial": 0}
    # More running than the slots (concurrency lowered while they ran): still none, never less.
    assert queue_room(-2, queues, {"serial": 3}) == {"default": 0, "serial": 0}


def test_no_queue_no_room() -> None:
    assert queue_room(4, [], {}) == {}
