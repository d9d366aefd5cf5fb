"""What a node claiming first holds ahead of its free slots (pure)."""

from __future__ import annotations

import math

from queued.processes.claimed_ahead import HOLD_SECONDS, MOST, PER_SLOT, QUICK_SECONDS, ClaimedAhead
from queued.store import Claimed


def claimed(job_id: int, queue: str = "default", priority: int = 0) -> Claimed:
    return Claimed(
        id=job_id,
        run=1,
        attempts=1,
        command="true",
        queue=queue,
        cwd="/",
        env={},
        timeout=None,
        max_retries=0,
        backoff_base=1.0,
        priority=priority,
    )


def test_nothing_is_wanted_ahead_until_attempts_end_quickly() -> None:
    ahead = ClaimedAhead()
    assert ahead.wanted(100.0, 2) == 0
    ahead.ended(QUICK_SECONDS + 1, 100.0)  # a long attempt ended: still none
    assert ahead.wanted(100.0, 2) == 0
    ahead.ended(0.01, 100.0)
    assert ahead.wanted(100.0, 2) == PER_SLOT * 2
    assert ahead.wanted(100.0 + QUICK_SECONDS + 0.01, 2) == 0  # the quick ones stopped
    assert ahead.wanted(100.0, 1000) == MOST


def test_it_refills_only_once_half_is_gone() -> None:
    ahead = ClaimedAhead()
    ahead.ended(0.01, 100.0)
    size = PER_SLOT * 2
    ahead.hold([claimed(n) for n in range(size // 2 + 1)], 100.0)
    assert ahead.wanted(100.0, 2) == 0
    assert ahead.take(lambda job: True) is not None
    assert ahead.wanted(100.0, 2) == size // 2


def test_it_gives_the_best_job_with_room_and_lets_go_of_old_or_unwanted_ones() -> None:
    ahead = ClaimedAhead()
    assert ahead.next_expiry() == math.inf
    ahead.hold([claimed(1, "a"), claimed(2, "b", priority=-1)], 100.0)
    ahead.hold([claimed(3, "a")], 100.2)
    assert ahead.ids() == [2, 1, 3]
    assert ahead.take(lambda job: job.queue == "a").id == 1
    assert ahead.next_expiry() == 100.0 + HOLD_SECONDS
    assert [job.id for job in ahead.expired(100.0 + HOLD_SECONDS)] == [2]
    assert [job.id for job in ahead.remove(lambda job: job.id != 3)] == [3]
    assert len(ahead) == 0 and ahead.all() == []
