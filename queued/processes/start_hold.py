"""When claiming waits: after a start's record or a read was refused (for a
while, so that a refusing disk, or a bug, does not become a spawn loop), and
while no descriptor is free for a spawn (until an attempt ends and frees its
descriptors, or for a while: a client's may free up too). A want of
descriptors that lasts is logged at most every SHORTAGE_LOG_SECONDS."""

from __future__ import annotations

import logging
import math

# A want of descriptors that lasts is logged at most this often.
SHORTAGE_LOG_SECONDS = 60.0

log = logging.getLogger("queued.processes.supervisor")  # the supervisor's words


class StartHold:
    __slots__ = ("_for_descriptors", "_held", "_told", "until")

    def __init__(self) -> None:
        self.until = -math.inf  # clock time before which nothing starts
        self._for_descriptors = False  # the hold ends when an attempt ends, too
        self._told = -math.inf  # when the want of descriptors was last logged
        self._held = 0  # starts deferred for want of descriptors

    def holds(self, now: float) -> bool:
        return now < self.until

    def hold(self, until: float) -> None:
        self.until = until

    def for_descriptors(self, job_id: int, reason: str, running: int, now: float, until: float) -> None:
        """No descriptor was free to start job `job_id`: hold until an attempt ends, or `until`."""
        self._held += 1
        if now - self._told >= SHORTAGE_LOG_SECONDS:
            log.warning(
                "job %d not started: %s (%d attempts running; %d starts deferred so far); "
                "jobs stay due and start once descriptors are free (see the descriptor limit in README)",
                job_id,
                reason,
                running,
                self._held,
            )
            self._told = now
        self._for_descriptors = True
        self.until = until

    def attempt_ended(self) -> None:
        """An attempt's descriptors are free: a hold for want of them ends."""
        if self._for_descriptors:
            self._for_descriptors = False
            self.until = -math.inf
