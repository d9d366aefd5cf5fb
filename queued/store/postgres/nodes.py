"""The nodes sharing a PostgreSQL store: registration, the lease and its
renewal, on a connection of their own (a busy writer never delays a
heartbeat), and the nodes as `status` lists them.

Leases live on the database's clock: each renewal sets `lease_until` to
`now()` plus the lease; a node compares nothing with its own clock here (see
queued/lease.py for how it keeps its side). Two live nodes never share a name:
registering takes a name only from a node whose lease ran out, or from an
earlier start in the same data dir on the same machine (whose daemon is dead:
the data dir's lock says so).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import msgspec
import psycopg
from psycopg import Connection, sql

from queued.protocol import NodeInfo, Resources
from queued.store.contract import NodeIdentity
from queued.store.postgres import schema

log = logging.getLogger(__name__)


class NameTaken(Exception):
    """Another live node holds the name; the message says which, in one line."""


class LeaseUnreachable(Exception):
    """The database did not answer the registration or renewal."""


@dataclass(frozen=True)
class NodeCard:
    """What a node registers: who it is, where, and what it serves."""

    name: str
    home: str  # machine id and data dir
    host: str
    pid: int
    slots: int
    queues: tuple[str, ...] | None
    lease: float


@dataclass(frozen=True)
class Renewal:
    """A renewal's answer: whether the lease still held (and is renewed), when
    the next other node with running attempts may expire (seconds on the
    database's clock, None: none), and whether attempts wait to be rescued."""

    held: bool
    next_expiry: float | None = None
    orphans: bool = False


_REGISTER = """
INSERT INTO nodes AS n (name, incarnation, home, host, pid, slots, queues, lease, started_at,
    heartbeat_at, lease_until)
VALUES (%(name)s, %(incarnation)s, %(home)s, %(host)s, %(pid)s, %(slots)s, %(queues)s, %(lease)s, now(),
    now(), now() + make_interval(secs => %(lease)s))
ON CONFLICT (name) DO UPDATE SET incarnation = excluded.incarnation, home = excluded.home,
    host = excluded.host, pid = excluded.pid, slots = excluded.slots, queues = excluded.queues,
    lease = excluded.lease, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
    lease_until = excluded.lease_until, stopped_at = NULL
WHERE n.lease_until <= now() OR n.home = excluded.home
RETURNING 1
"""

# Open attempts whose incarnation holds no live lease: a node was lost.
_ORPHANS = """EXISTS (SELECT 1 FROM attempts a WHERE a.ended_at IS NULL AND NOT EXISTS (
    SELECT 1 FROM nodes l WHERE l.incarnation = a.incarnation AND l.lease_until > now()))"""

_RENEW = f"""
UPDATE nodes SET heartbeat_at = now(), lease_until = now() + make_interval(secs => lease),
    slots = %(slots)s, resources = coalesce(%(resources)s::jsonb, resources)
WHERE incarnation = %(incarnation)s AND lease_until > now()
RETURNING
    (SELECT extract(epoch FROM min(o.lease_until) - now()) FROM nodes o
     WHERE o.lease_until > now() AND o.incarnation <> %(incarnation)s AND EXISTS (
         SELECT 1 FROM attempts a WHERE a.ended_at IS NULL AND a.incarnation = o.incarnation)),
    {_ORPHANS}
"""

_NODES = """
SELECT name, slots,
    (SELECT count(*) FROM attempts a WHERE a.ended_at IS NULL AND a.incarnation = n.incarnation),
    queues, host, pid, extract(epoch FROM started_at), extract(epoch FROM heartbeat_at), lease,
    CASE WHEN lease_until > now() THEN 'alive' WHEN stopped_at IS NOT NULL THEN 'stopped' ELSE 'lost' END,
    incarnation, resources
FROM nodes n ORDER BY name
"""


def read_nodes(conn: Connection, me: NodeIdentity) -> list[NodeInfo]:
    """Every node that ever registered, by name."""
    return [
        NodeInfo(
            name=name,
            slots=slots,
            running=running,
            queues=list(queues) if queues is not None else None,
            host=host,
            pid=pid,
            started_at=float(started),
            last_heartbeat=float(beat),
            lease=lease,
            state=state,
            this=incarnation == me.incarnation,
            resources=None if resources is None else msgspec.convert(resources, Resources),
        )
        for (
            name,
            slots,
            running,
            queues,
            host,
            pid,
            started,
            beat,
            lease,
            state,
            incarnation,
            resources,
        ) in conn.execute(_NODES).fetchall()
    ]


def known_node(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM nodes WHERE name = %s", (name,)).fetchone() is not None


def machine_home(data_dir: str) -> str:
    """This machine (its machine id, where it has one, and its host name:
    containers of one image share the image's machine id) and the data dir."""
    machine = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                machine = f.read().strip()
        except OSError:
            continue
        if machine:
            break
    return f"{machine}:{os.uname().nodename}:{data_dir}"


class NodeLeases:
    """The node's registration and lease, on a connection only the lease
    keeper uses (one call at a time, on a worker thread)."""

    def __init__(self, url: str, lease: float) -> None:
        self.url = url
        self.where = schema.where(url)
        self.lease = lease
        self.conn: Connection | None = None

    def _connection(self) -> Connection:
        if self.conn is not None and not (self.conn.closed or self.conn.broken):
            return self.conn
        self.close()
        # Bounded by the lease: a renewal that cannot finish in a third of it is a failed one.
        bound = max(1, int(self.lease / 3))
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(2, bound),
                keepalives=1,
                keepalives_idle=bound,
                keepalives_interval=1,
                keepalives_count=3,
                tcp_user_timeout=bound * 1000,
            )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema.NAMESPACE)))
            conn.execute(f"SET statement_timeout = {bound * 1000}")
        except psycopg.Error as exc:
            raise LeaseUnreachable(
                f"the job store at {self.where} is unreachable ({schema.first_line(exc)})"
            ) from None
        self.conn = conn
        return conn

    def _run(self, query: str, params: dict[str, object]) -> tuple | None:
        """One statement (each of ours is idempotent: a renewal, a registration
        of the same home, a leave). A kept connection found broken (the server
        ended it while idle: pg_terminate_backend, a restart, an idle timeout)
        is replaced and the statement tried once more at once, so that a
        server that answers costs no failed renewal."""
        kept = self.conn is not None and not (self.conn.closed or self.conn.broken)
        try:
            return self._connection().execute(query, params).fetchone()
        except psycopg.OperationalError as exc:
            broken = self.conn is not None and self.conn.broken
            self.close()
            if not (kept and broken):
                raise LeaseUnreachable(
                    f"the job store at {self.where} did not answer ({schema.first_line(exc)})"
                ) from None
        except psycopg.Error as exc:
            self.close()
            raise LeaseUnreachable(
                f"the job store at {self.where} did not answer ({schema.first_line(exc)})"
            ) from None
        try:
            return self._connection().execute(query, params).fetchone()
        except psycopg.Error as exc:
            self.close()
            raise LeaseUnreachable(
                f"the job store at {self.where} did not answer ({schema.first_line(exc)})"
            ) from None

    def register(self, card: NodeCard, incarnation: str) -> None:
        """Register `incarnation` as node `card.name`, its lease starting now;
        NameTaken if a live node of another home holds the name."""
        params = {
            "name": card.name,
            "incarnation": incarnation,
            "home": card.home,
            "host": card.host,
            "pid": card.pid,
            "slots": card.slots,
            "queues": list(card.queues) if card.queues is not None else None,
            "lease": card.lease,
        }
        if self._run(_REGISTER, params) is not None:
            return
        holder = self._run(
            "SELECT host, pid, extract(epoch FROM lease_until - now()) FROM nodes WHERE name = %(name)s",
            {"name": card.name},
        )
        host, pid, left = holder if holder else ("?", "?", 0.0)
        raise NameTaken(
            f"another node named {card.name!r} is alive (queued pid {pid} on {host}, its lease runs "
            f"{max(0.0, float(left)):.0f}s more): give this one another --node, or stop that one"
        )

    def renew(self, incarnation: str, slots: int, resources: Resources | None = None) -> Renewal:
        """Renew the lease of `incarnation` (and store its `resources`, for
        other nodes' `status`; None: as they were); Renewal(held=False) when
        it had run out already (or the name went to another node): then this
        incarnation is lost, and registers anew."""
        stored = None if resources is None else msgspec.json.encode(resources).decode()
        row = self._run(_RENEW, {"incarnation": incarnation, "slots": slots, "resources": stored})
        if row is None:
            return Renewal(held=False)
        return Renewal(True, None if row[0] is None else float(row[0]), bool(row[1]))

    def leave(self, incarnation: str) -> None:
        """A clean stop: the lease ends now and the name is free."""
        self._run(
            "UPDATE nodes SET lease_until = now(), stopped_at = now() WHERE incarnation = %(incarnation)s"
            " RETURNING 1",
            {"incarnation": incarnation},
        )

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
