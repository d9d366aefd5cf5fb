"""News between the nodes sharing one PostgreSQL database: NOTIFY sent with
each commit, LISTEN on a connection of its own.

Theory of operation: what a committed batch did that other nodes must act on
(`News`: jobs to claim, queues or schedules to read again, room in a limited
queue, jobs canceled or finished) is gathered in an `Outbox` while the batch runs, from
each call's answer, and sent by one `pg_notify` just before the COMMIT: the
database delivers it only if that commit succeeds, and never when the batch
rolls back. A node drops what its own writer's connection sent: it acted on
that already.

Each node LISTENs on a dedicated autocommit connection, woken by
`trio.lowlevel.wait_readable` on its socket (no polling: an idle node sleeps
in the kernel). Notifications sent while that connection is down are lost, so
after every (re)connection the listener delivers `reconnected`: the daemon
reads again what it could have missed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import trio

from queued.store.contract import News, Written

log = logging.getLogger(__name__)

CHANNEL = "queued"
# Ids per notification: a payload must stay under 8,000 bytes.
IDS_PER_NOTICE = 500
# Reconnecting after a lost connection: first wait, doubling up to the last.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# A network cut must not go unnoticed for minutes (ignored on a Unix socket).
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

# What a call's success means for other nodes, by the contract method's name.
_WAKES = frozenset({"add_jobs", "retry", "release", "restart", "edit", "unclaim"})
# Attempts of lost incarnations ended: their jobs are retried or ended.
_RESCUES = frozenset({"rescue", "recover"})
_QUEUES = frozenset({"add_queue", "remove_queue", "set_paused", "set_all_paused", "set_queue_concurrency"})
_SCHEDULES = frozenset({"add_schedule", "remove_schedule", "pause_schedule"})


class Outbox:
    """The news of one transaction, gathered call by call (`note`), sent by
    the engine before it commits (`payloads`) and forgotten after."""

    __slots__ = ("cancel", "finished", "output", "queues", "removed", "room", "schedules", "wake")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.wake = False
        self.queues = False
        self.schedules = False
        self.room: set[str] = set()
        self.cancel: list[int] = []
        self.finished: list[int] = []
        self.output: set[int] = set()
        self.removed: set[int] = set()

    def __bool__(self) -> bool:
        flags = self.wake or self.queues or self.schedules
        return bool(flags or self.room or self.cancel or self.finished or self.output or self.removed)

    def note(self, name: str, args: tuple[Any, ...], result: Any) -> None:
        """What the contract method `name`, called with `args`, answered `result`."""
        if not isinstance(result, Written):
            return  # a read
        changes = result.changes
        if changes.finished:
            self.finished += changes.finished
        if changes.released or changes.reordered or name in _WAKES:
            self.wake = True
        if name == "finish":
            self.room.add(args[0].queue)  # a limited queue may have room now
            self.output.add(args[0].id)  # its `logs -f` readers see the end
        elif name == "append_output":
            self.output.update(chunk.job_id for chunk in args[0])
        elif name in ("remove", "clean"):  # the other nodes' log files of them go too
            paths = result.value if name == "remove" else result.value[1]
            self.removed.update(job_id for job_id in map(job_of, paths) if job_id is not None)
        elif name == "cancel" and result.value:
            self.cancel += result.value
        elif name == "cancel_what_can" and result.value[0]:
            self.cancel += result.value[0]
        elif name in _QUEUES:
            self.queues = True
        elif name in _SCHEDULES:
            self.schedules = True  # every node's scheduler reads them again
        elif name in _RESCUES and result.value:
            self.wake = True  # a lost node's jobs wait again (and a limited queue has room)
        elif name == "fire_schedule" and result.value.job_id is not None:
            self.wake = True  # a schedule's firing added a job

    def payloads(self) -> list[str]:
        out = []
        if self.wake:
            out.append("wake")
        if self.queues:
            out.append("queues")
        if self.schedules:
            out.append("schedules")
        out += [f"room {queue}" for queue in sorted(self.room)]
        out += _id_payloads("cancel", self.cancel)
        out += _id_payloads("finished", self.finished)
        # A finished job's output readers hear of it by "finished" (see parse).
        out += _id_payloads("output", sorted(self.output.difference(self.finished)))
        out += _id_payloads("removed", sorted(self.removed))
        return out


def job_of(path: str) -> int | None:
    """The job a log path is of, as any node names them (`JOB.RUN.out` in its
    logs folder: queued.processes.log_folders); None for another name."""
    stem = os.path.basename(path).partition(".")[0]
    return int(stem) if stem.isdigit() else None


def _id_payloads(kind: str, ids: Sequence[int]) -> list[str]:
    return [
        f"{kind} {','.join(map(str, ids[i : i + IDS_PER_NOTICE]))}"
        for i in range(0, len(ids), IDS_PER_NOTICE)
    ]


def parse(payload: str) -> News:
    """The news one notification carries (nothing for one it does not know:
    a newer node's, say)."""
    kind, _, rest = payload.partition(" ")
    news = News()
    if kind == "wake":
        news.wake = True
    elif kind == "queues":
        news.queues = True
    elif kind == "schedules":
        news.schedules = True
    elif kind == "room" and rest:
        news.room.add(rest)
    elif kind in ("cancel", "finished", "output", "removed"):
        try:
            ids = [int(part) for part in rest.split(",") if part]
        except ValueError:
            ids = []
        setattr(news, kind, ids)
        if kind == "finished":
            news.output = list(ids)  # its end is the last of its output: `logs -f` readers stop
    return news


class Listener:
    """LISTEN on a connection of its own; `run` delivers what other nodes send."""

    def __init__(self, url: str, where: str, own_pid: Callable[[], int | None]) -> None:
        self.url = url
        self.where = where
        self.own_pid = own_pid  # the backend of this node's writer: its news is not news here
        self.connected = False

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10, **KEEPALIVE)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def run(self, deliver: Callable[[News], None]) -> None:
        backoff = BACKOFF_FIRST
        lost_before = False
        while True:
            try:
                conn = await trio.to_thread.run_sync(self._connect)
            except psycopg.Error as exc:
                if not lost_before:
                    log.warning(
                        "cannot listen for other nodes' news at %s (%s); retrying",
                        self.where,
                        _first_line(exc),
                    )
                lost_before = True
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if lost_before:
                log.info("listening for other nodes' news at %s again", self.where)
            backoff = BACKOFF_FIRST
            self.connected = True
            fd = conn.pgconn.socket
            try:
                deliver(News(reconnected=True))  # what was sent before this LISTEN is gone
                await self._listen(conn, fd, deliver)
            except (psycopg.Error, OSError) as exc:
                deliver(News(lost=True))
                log.warning(
                    "lost the connection listening for other nodes' news at %s (%s); reconnecting",
                    self.where,
                    _first_line(exc),
                )
                lost_before = True
            finally:
                self.connected = False
                trio.lowlevel.notify_closing(fd)
                conn.close()

    async def _listen(self, conn: psycopg.Connection, fd: int, deliver: Callable[[News], None]) -> None:
        pgconn = conn.pgconn
        while True:
            await trio.lowlevel.wait_readable(fd)
            pgconn.consume_input()  # raises once the connection is gone
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection is closed")
            news = None
            own = self.own_pid()
            while (notice := pgconn.notifies()) is not None:
                if notice.be_pid == own:
                    continue
                heard = parse(notice.extra.decode("utf-8", "replace"))
                if news is None:
                    news = heard
                else:
                    news.merge(heard)
            if news is not None:
                deliver(news)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
