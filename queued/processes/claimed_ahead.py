"""Jobs claimed ahead of the free slots (a node sharing its store): committed
claims whose attempts have not started, so that a slot an end frees starts
the next job at once instead of after a claim's round trip. Pure.

What is held here is running to every other node (its queue's cluster-wide
limit counts it, a cancel reaches it), so little is held and not for long:
only while attempts end quickly (`wanted`), only from queues with no limit
of their own, and each job at most HOLD_SECONDS before it is given back
(`expired`). The supervisor gives back what it holds when it stops claiming,
when its lease is in doubt, and when a queue is paused or no longer served;
a node that dies leaves them to recovery and rescue, which give them back
without counting an attempt (`Store.claim(started=False)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from queued.store import Claimed

# Held at most this long unstarted, then given back (other nodes may run it).
HOLD_SECONDS = 0.5
# Claims go ahead only while an attempt ended this recently after running no longer.
QUICK_SECONDS = 0.5
# At most this many held per slot, and at most MOST in all.
PER_SLOT = 16
MOST = 32


class ClaimedAhead:
    def __init__(self) -> None:
        self._held: list[tuple[Claimed, float]] = []  # (job, claimed at), in claim order
        self._quick_end = -math.inf  # when an attempt last ended after a quick run

    def __len__(self) -> int:
        return len(self._held)

    def ids(self) -> list[int]:
        return [job.id for job, _ in self._held]

    def ended(self, ran: float, now: float) -> None:
        """An attempt ended after running `ran` seconds."""
        if ran <= QUICK_SECONDS:
            self._quick_end = now

    def wanted(self, now: float, concurrency: int) -> int:
        """How many more to claim ahead now: none unless attempts end quickly;
        enough to refill to its size once half of it is gone."""
        if now - self._quick_end > QUICK_SECONDS:
            return 0
        size = min(MOST, PER_SLOT * concurrency)
        return 0 if len(self._held) > size // 2 else size - len(self._held)

    def hold(self, jobs: Iterable[Claimed], now: float) -> None:
        self._held += [(job, now) for job in jobs]
        self._held.sort(key=lambda held: held[0].claim_key)

    def take(self, has_room: Callable[[Claimed], bool]) -> Claimed | None:
        """The best job held whose queue has room, taken out; None if none has."""
        for i, (job, _) in enumerate(self._held):
            if has_room(job):
                del self._held[i]
                return job
        return None

    def remove(self, keep: Callable[[Claimed], bool]) -> list[Claimed]:
        """Take out every job held that `keep` refuses."""
        gone = [job for job, _ in self._held if not keep(job)]
        if gone:
            self._held = [(job, at) for job, at in self._held if keep(job)]
        return gone

    def expired(self, now: float) -> list[Claimed]:
        """Take out the jobs held HOLD_SECONDS or longer."""
        gone = [job for job, at in self._held if now - at >= HOLD_SECONDS]
        if gone:
            self._held = [(job, at) for job, at in self._held if now - at < HOLD_SECONDS]
        return gone

    def next_expiry(self) -> float:
        """When the oldest job held is given back (inf: none held)."""
        return min((at for _, at in self._held), default=math.inf) + HOLD_SECONDS

    def all(self) -> list[Claimed]:
        """Take out every job held."""
        gone = [job for job, _ in self._held]
        self._held = []
        return gone
