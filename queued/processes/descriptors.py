"""Open-file descriptors: the daemon's limit, and what its slots need of it.

Each running attempt holds up to FDS_PER_ATTEMPT descriptors, and the daemon a
few dozen of its own (the database, the socket, the guardian's pipe, trio's,
a spawn's three for an instant, a connected client each). The usual soft
limit (1,024) is reached by a couple of hundred slots, so queued raises it to
the hard limit at start, as services commonly need. A concurrency beyond what
the limit allows draws a warning at start (jobs then wait for descriptors;
nothing fails) and is refused by `workers scale` and `config set`. The web
page, when on, reserves what its capped connections may hold on top.
"""

from __future__ import annotations

import resource

FDS_PER_ATTEMPT = 5  # the read ends of its two pipes, its pidfd, its two log files
FDS_RESERVED = 32  # the daemon's own (about 15), and room for a few clients
# Clients connected at once: what the slots leave of the limit, within these.
MIN_CLIENTS = 16  # the reserve's room for a few
MAX_CLIENTS = 4096  # `queuectl wait` of many scripts at once each holds one


def raise_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep what we have
    return soft


def current_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def most_slots(limit: int, reserved: int = FDS_RESERVED) -> int:
    """The concurrency that `limit` descriptors carry in full, `reserved` of them the daemon's own."""
    return max(1, (limit - reserved) // FDS_PER_ATTEMPT)


def shortfall(concurrency: int, limit: int, reserved: int = FDS_RESERVED) -> str | None:
    """Why `concurrency` slots may run short of descriptors under `limit`
    (`reserved` of them the daemon's own); None if they will not."""
    needed = concurrency * FDS_PER_ATTEMPT + reserved
    if needed <= limit:
        return None
    return (
        f"concurrency {concurrency} needs up to {needed:,} open files, and queued may open "
        f"{limit:,} (its RLIMIT_NOFILE): raise the limit (`ulimit -n`, LimitNOFILE= in the unit) "
        f"and restart queued, or use a concurrency of at most {most_slots(limit, reserved):,}"
    )


def client_room(limit: int, concurrency: int, reserved: int = FDS_RESERVED) -> int:
    """How many clients may be connected at once: the descriptors `concurrency`
    running attempts and the daemon's own (`reserved`, which holds room for
    MIN_CLIENTS) leave of `limit`, at most MAX_CLIENTS. Beyond it a client is
    turned away with a reason: 10,000 idle connections would otherwise take
    the descriptors a job needs to start."""
    return max(MIN_CLIENTS, min(MAX_CLIENTS, limit - reserved - concurrency * FDS_PER_ATTEMPT + MIN_CLIENTS))
