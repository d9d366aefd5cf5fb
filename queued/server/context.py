"""What a request handler may touch: the store (through the writer), the
process side (through `Supervision`, what the supervisor offers the socket
side), the daemon's facts and settings, and the `wait`ers to tell when jobs
finish. Both handler modules take it; neither imports the other for it, and
nothing here imports the process side: daemon.py hands the supervisor in."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import msgspec
import trio

from queued import config
from queued import protocol as p
from queued.lease import default_node_name
from queued.settings import Settings
from queued.store import NodeIdentity, Refused, Store
from queued.store.writer import Writer


class Waiter:
    """One `wait` request: the ids it still waits for."""

    def __init__(self, ids: list[int]) -> None:
        self.remaining = set(ids)
        self.done = trio.Event()

    def finished(self, job_id: int) -> None:
        self.remaining.discard(job_id)
        if not self.remaining:
            self.done.set()


class Watchers:
    """Tells `wait` requests which of their jobs finished, so that a waiter on
    100,000 jobs costs a set removal per finish, not a query."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[Waiter]] = {}

    def notify(self, finished: list[int]) -> None:
        for job_id in finished:
            for waiter in self._waiters.pop(job_id, ()):
                waiter.finished(job_id)

    def watch(self, waiter: Waiter) -> None:
        for job_id in waiter.remaining:
            self._waiters.setdefault(job_id, set()).add(waiter)

    def watched_ids(self) -> list[int]:
        """The jobs some `wait` waits for."""
        return list(self._waiters)

    def watched(self) -> int:
        """How many jobs some `wait` waits for."""
        return len(self._waiters)

    def unwatch(self, waiter: Waiter) -> None:
        for job_id in waiter.remaining:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[job_id]


class OutputNews:
    """Wakes `logs -f` readers waiting on a job (`ReadLog.wait`) when its
    output grew in the store or an attempt of it ended: told by this node's
    supervisor for its own attempts, and, once `remote` is set, by a listener
    for other nodes' (their NOTIFY). Without such news (the log files of a
    SQLite store, or other nodes' output without a listener), a waiting reader
    looks again at a steady pace instead (`pace`)."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[trio.Event, int]] = {}  # by job: its event, and how many wait on it
        self.remote = False  # set when other nodes' news arrive (a LISTEN connection)

    def told(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            entry = self._waiting.pop(job_id, None)
            if entry is not None:
                entry[0].set()

    @contextmanager
    def watch(self, job_id: int) -> Iterator[trio.Event]:
        """An event set at the job's next news; watched before reading, so that none slips in between."""
        event, count = self._waiting.get(job_id, (None, 0))
        if event is None:
            event = trio.Event()
        self._waiting[job_id] = (event, count + 1)
        try:
            yield event
        finally:
            entry = self._waiting.get(job_id)
            if entry is not None and entry[0] is event:
                if entry[1] > 1:
                    self._waiting[job_id] = (event, entry[1] - 1)
                else:
                    del self._waiting[job_id]

    def watched(self) -> int:
        return len(self._waiting)

    def watched_ids(self) -> list[int]:
        """The jobs some reader waits on."""
        return list(self._waiting)


class LogFiles(Protocol):
    def files_of(self, job_ids: Iterable[int]) -> list[str]:
        """This node's log files of these jobs' attempts."""
        ...


class Supervision(Protocol):
    """What the handlers may ask of the process side, and nothing more."""

    settings: Settings  # in force; `reconfigure` updates it in place
    log_folders: LogFiles  # where this node's attempts' log files are

    @property
    def accepting(self) -> bool:
        """False once a shutdown began: nothing new starts."""
        ...

    def wake(self) -> None:
        """Something claimable may have changed: look again."""
        ...

    def set_queues(self, queues: list[p.QueueInfo]) -> None: ...

    def room_freed(self, queues: set[str]) -> None:
        """Attempts of `queues` ended on another node (a store shared by nodes)."""
        ...

    def set_concurrency(self, concurrency: int) -> None: ...

    def slots(self) -> list[p.Slot]: ...

    def resources(self) -> p.Resources:
        """This node's resources, capacity and use: its slots (the concurrency,
        and the slots its running jobs take), counted resources and GPUs."""
        ...

    def running_in(self, queue: str | None = None) -> list[int]: ...

    def is_running(self, job_id: int) -> bool: ...

    def paused_ids(self) -> set[int]: ...

    def live_run(self, job_id: int, run: int) -> tuple[int | None, str, str]: ...

    def stop_jobs(self, ids: list[int], reason: str) -> None: ...

    def pause_jobs(self, ids: list[int], *, paused: bool) -> list[int]: ...

    def signal_jobs(self, ids: list[int], sig: int) -> None: ...

    def descriptor_shortfall(self, concurrency: int) -> str | None: ...

    def could_never_run(self, slots: int, needs: dict[str, int]) -> str | None:
        """Why this node could not run such a job even idle (one line), or None."""
        ...

    def next_change(self) -> trio.Event: ...


class Daemon:
    """What a handler may touch: the database, the supervisor, and daemon facts."""

    def __init__(
        self,
        db: Writer,
        supervisor: Supervision,
        watchers: Watchers,
        *,
        data_dir: str,
        socket_path: str,
        request_shutdown: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        defaults: Settings | None = None,
        sources: config.Sources | None = None,
    ) -> None:
        self.db = db
        self.supervisor = supervisor
        self.watchers = watchers
        self.output_news = OutputNews()  # for `logs -f` (see handlers._read_log)
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.request_shutdown = request_shutdown
        self.clock = clock
        self.started_at = clock()
        # What the settings are made of (queued.config): `config set` changes a
        # source and the settings are worked out again by the one rule.
        self.defaults = defaults if defaults is not None else msgspec.structs.replace(supervisor.settings)
        self.sources = sources if sources is not None else config.Sources()
        self.config_problem: str | None = None  # why the last reload was refused
        self.web_url: str | None = None  # the web page's address, once it serves one
        self.node = NodeIdentity(default_node_name(), "")  # this node (the Runner sets it)
        self.served: tuple[str, ...] | None = None  # the queues this node serves (None: all)
        # Why this node's lease is in doubt, if it is (a shared store's lease keeper says).
        self.lease_problem: Callable[[], str | None] = lambda: None

        # The store is shared by several nodes (PostgreSQL): `config set` values
        # are every node's, the slots (concurrency) each node's own.
        self.shared_store = False
        # Schedules: the zone a schedule added without --tz keeps (the daemon's
        # local one, set at start), and whom to tell when schedules change.
        self.local_zone = "UTC"
        self.schedules_changed: Callable[[], None] = lambda: None

    def problems(self) -> list[str]:
        """What is wrong with the daemon itself, for `status` (empty when all is well)."""
        return [
            problem
            for problem in (self.db.lost, self._unreachable(), self.config_problem, self.lease_problem())
            if problem
        ]

    def _unreachable(self) -> str | None:
        since, error = self.db.unreachable_since, self.db.unreachable
        if since is None or error is None:
            return None
        when = time.strftime("%H:%M:%S", time.localtime(since))
        seconds = max(0, round(self.clock() - since))
        why = _driver_reason(error.detail)
        because = f": {why}" if why else ""
        return f"{error.store} is unreachable since {when} ({seconds} s ago{because}); reconnecting"

    def reconfigure(self) -> None:
        """Apply the settings the sources now give (after `config set`, or a reload)."""
        settings = config.effective_settings(self.defaults, self.sources)
        for name in settings.__struct_fields__:
            if name != "concurrency":
                setattr(self.supervisor.settings, name, getattr(settings, name))
        if settings.concurrency != self.supervisor.settings.concurrency:
            self.supervisor.set_concurrency(settings.concurrency)

    @property
    def settings(self) -> Settings:
        return self.supervisor.settings

    async def queues_changed(self) -> list[p.QueueInfo]:
        """After a change of queues committed: the supervisor learns them anew."""
        queues = await self.db.read(Store.queues)
        self.supervisor.set_queues(queues)
        return queues


Handler = Callable[[Daemon, Any], Awaitable[p.Response]]


async def dispatch(handlers: dict[type, Handler], d: Daemon, request: p.Request) -> p.Response:
    """The response to one decoded request, from the handler its type names
    (the server's handler, with `handlers` and `d` bound by the daemon)."""
    handler = handlers.get(type(request))
    if handler is None:
        return p.Error(code="bad_request", message=f"unexpected request {type(request).__name__}")
    try:
        return await handler(d, request)
    except Refused as exc:
        return p.Error(code=exc.code, message=exc.message)
    except ValueError as exc:
        return p.Error(code="invalid", message=str(exc))


def _driver_reason(detail: str) -> str:
    """The gist of a driver's reason, on one line: libpq's "connection to server
    on socket ... failed: FATAL:  password authentication failed for user ..."
    says what matters after its last "failed: "."""
    line = " ".join(detail.split())
    gist = line.rsplit(" failed: ", 1)[-1] if " failed: " in line else line
    return gist if len(gist) <= 160 else gist[:157] + "..."
