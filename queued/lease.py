"""A node's name and its lease: the pure rules (no clock read here, `now` is
passed in).

A node on a shared PostgreSQL store holds a lease in the database: each
renewal sets its end to the database's `now()` plus `lease` seconds, and
another node may rescue its running attempts once the database's clock has
passed that end. The node cannot read the database's clock, so it measures
its lease on its own monotonic clock from the moment it *sent* its last
successful renewal: the database stamped that renewal no earlier, so the
database cannot call the lease expired before `sent + lease` (as long as the
two clocks advance at the same rate; neither is compared with the other).

A node that cannot renew stops claiming at once and, by `stop_at`, starts
stopping its running jobs (SIGTERM, then SIGKILL after the kill grace), so
that they are dead by `dead_by`, a margin before the lease can expire: they
are about to be run elsewhere.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

DEFAULT_LEASE = 30.0
NAME_MAX = 63
# What the margin covers: the delivery of SIGKILL, the reaping of the
# group, and the two clocks' drift over one lease.
MARGIN_MIN = 0.5
MARGIN_SHARE = 0.05
# A failed renewal is tried again this often (a share of the lease, at least this long).
RETRY_SHARE = 0.1
RETRY_MIN = 0.2


def check_node_name(name: str) -> str:
    """The name, or ValueError saying what is wrong with it: short, printable, no spaces."""
    if not name:
        raise ValueError("invalid value for node: it is empty")
    if len(name) > NAME_MAX:
        raise ValueError(f"invalid value for node: {name[:20]!r}... is longer than {NAME_MAX} characters")
    if not name.isprintable() or any(c.isspace() for c in name) or "," in name:
        raise ValueError(f"invalid value for node: {name!r}: use printable characters, no spaces or commas")
    return name


def default_node_name() -> str:
    """The host name (its first label, as `hostname -s` says it), or "localhost"."""
    host = socket.gethostname().split(".")[0].strip()
    try:
        return check_node_name(host)
    except ValueError:
        return "localhost"


def check_queue_names(text: str) -> tuple[str, ...]:
    """`gpu,default` -> ("gpu", "default"); ValueError for an empty list or name."""
    names = tuple(part.strip() for part in text.split(","))
    if not names or any(not name for name in names):
        raise ValueError(f"invalid value for queues: {text!r}: give queue names separated by commas")
    return tuple(dict.fromkeys(names))


def margin(lease: float) -> float:
    """How long before the lease can expire a node's jobs must be dead."""
    return max(MARGIN_MIN, MARGIN_SHARE * lease)


def renew_interval(lease: float) -> float:
    """How often a node renews: three tries before its jobs must stop."""
    return lease / 3


def retry_interval(lease: float) -> float:
    """How soon a renewal that failed is tried again."""
    return max(RETRY_MIN, RETRY_SHARE * lease)


def lease_fits(lease: float, kill_grace: float) -> bool:
    """Whether a node renewing every `renew_interval` keeps its jobs through one
    failed renewal: the first renewal is due before its jobs would have to stop."""
    return lease - margin(lease) - kill_grace > renew_interval(lease) + retry_interval(lease)


def minimum_lease(kill_grace: float) -> float:
    """The shortest lease that fits `kill_grace` (rounded up to a tenth of a second)."""
    lease = 0.1
    while not lease_fits(lease, kill_grace):
        lease = round(lease + 0.1, 1)
    return lease


def lease_refusal(lease: float, kill_grace: float) -> str | None:
    """Why a node cannot honour `lease` with `kill_grace`, in one line, or None."""
    if lease_fits(lease, kill_grace):
        return None
    return (
        f"node-lease {lease:g}s is too short for kill-grace {kill_grace:g}s: a node that loses the "
        f"database must have stopped its jobs before its lease runs out; use a node-lease of at "
        f"least {minimum_lease(kill_grace):g}s or a shorter kill-grace"
    )


@dataclass(frozen=True)
class Lease:
    """The lease as this node knows it: renewed by the renewal it sent at
    `sent` (its monotonic clock), for `seconds`."""

    sent: float
    seconds: float

    @property
    def dead_by(self) -> float:
        """When every job of this node must be dead: a margin before the
        database can call the lease expired."""
        return self.sent + self.seconds - margin(self.seconds)

    def stop_at(self, kill_grace: float) -> float:
        """When to start stopping the jobs (SIGTERM) so that they are dead by `dead_by`."""
        return self.dead_by - kill_grace

    def next_renewal(self) -> float:
        return self.sent + renew_interval(self.seconds)

    def held(self, now: float) -> bool:
        """Whether the lease still holds by this node's reckoning (it may claim)."""
        return now < self.dead_by

    def renewed(self, sent: float) -> Lease:
        """After a successful renewal sent at `sent` (never moves backwards)."""
        return Lease(max(self.sent, sent), self.seconds)
