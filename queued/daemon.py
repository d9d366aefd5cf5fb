"""Wiring: lock the data dir, open the store, start the guardian, bind the
socket, then run the database writer, the supervisor and the server under one
nursery until a shutdown request or signal ends them, in that order of trust:
nothing is answered before the store is open, nothing claimed before the
guardian watches."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from queued import batch_runner, early_signals, lifecycle, signals
from queued import lease as lease_rules
from queued.config import SETTINGS_KEYS, Sources, daemon_values
from queued.config import effective_settings as config_settings
from queued.cron import local_zone_name
from queued.data_lock import StartupError, lock_data_dir, name_lock_holders, stop_previous_instance
from queued.processes import descriptors
from queued.processes.callbacks import Callbacks
from queued.processes.ends import fault_text
from queued.processes.guardian_link import GuardianLink
from queued.processes.job_environment import JobEnvironments
from queued.processes.lease_keeper import LeaseKeeper
from queued.processes.node_resources import NodeResources, detect_gpus
from queued.processes.supervisor import Supervisor
from queued.resources import STARVATION_PATIENCE
from queued.scheduler import Scheduler
from queued.server import handlers, handlers_changes, handlers_schedules
from queued.server.connections import AccessPolicy, Server, bind_unix
from queued.server.context import Daemon, Watchers, dispatch
from queued.server.news import NodeNews
from queued.settings import Settings, parse_config_value
from queued.store import Changes, NodeIdentity, StorageError, Store
from queued.store.engines import StoreUnusable, is_postgres, open_node_leases, open_store
from queued.store.engines import describe as describe_store
from queued.store.writer import Kind, Writer
from queued.systemd import Notifier, inherited_listener, inherited_web_listener

log = logging.getLogger(__name__)
ANSWER_GRACE_SECONDS = 0.5
CALLBACK_GRACE_SECONDS = 5.0
STATUS_INTERVAL_SECONDS = 1.0  # at most one STATUS= datagram per interval
# Every request type, answered by one of the handler modules side by side.
REQUEST_HANDLERS = {**handlers.HANDLERS, **handlers_changes.HANDLERS, **handlers_schedules.HANDLERS}


@dataclass
class DaemonConfig:
    data_dir: Path
    socket_path: Path
    settings: Settings  # the defaults, before any source
    # Flags, environment and config file, ranked by queued.config; the store's
    # `config set` values join them once it is open.
    sources: Sources = field(default_factory=Sources)
    allow_group: int | None = None  # gid whose members may connect too
    store: str | None = None  # a postgresql:// URL; None: SQLite in the data dir
    # What SIGHUP reads again (see signals.py), and whether it must exist.
    config_file: Path | None = None
    config_file_required: bool = False
    # The web page's HOST:PORT (queued.web, imported only then) and its extra host names.
    http: str | None = None
    http_names: str | None = None
    # A batch runner leaves by itself (see BatchRunner).
    exit_when_idle: bool = False
    exit_after_jobs: int | None = None
    node: str | None = None  # this node's name (None: the host name)
    node_lease: float = lease_rules.DEFAULT_LEASE  # seconds, on a shared (PostgreSQL) store
    queues: tuple[str, ...] | None = None  # the queues this node serves (None: all)
    resources: dict[str, int] | None = None  # `--resources` (None: GPUs as nvidia-smi lists them)
    starvation_patience: float = STARVATION_PATIENCE  # see queued.resources


def prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(mode=0o700, exist_ok=True)


def daemon_local_zone() -> str:
    """The zone of a schedule added without --tz: $TZ's, else /etc/localtime's, else UTC."""
    try:
        link: str | None = os.readlink("/etc/localtime")
    except OSError:
        link = None
    return local_zone_name(os.environ.get("TZ"), link)


def recover(db: Writer, backoff_max: float, now: float) -> int:
    """Record attempts cut short by the previous daemon's death as interrupted."""
    recovered = db.run_now(Kind.RECORD, Store.recover, backoff_max, now)
    for attempt in recovered:
        log.warning(
            "job %d was running when queued stopped: attempt %d interrupted, now %s",
            attempt.job_id,
            attempt.run,
            attempt.state,
        )
    return len(recovered)


def effective_settings(config: DaemonConfig, persisted: dict[str, str]) -> Settings:
    """Flags and environment > `config set` (`persisted`) > config file > defaults:
    queued.config's one rule, with the store's values joining the sources. A
    stored value out of range (an older queued saved any number) is left out,
    with a warning: the daemon starts, and `config set` can replace it."""
    kept = {}
    for key, value in persisted.items():
        if key not in SETTINGS_KEYS:
            continue
        if key == "concurrency" and is_postgres(config.store):
            # The slots are each node's own: one saved for all (by an older
            # queued) would make every node run as many.
            log.warning("ignoring the saved concurrency %s: each node has its own (--concurrency)", value)
            continue
        try:
            parse_config_value(key, value)
        except ValueError as exc:
            log.warning(
                "ignoring the saved setting %s = %s: %s (`queuectl config set` replaces it)", key, value, exc
            )
            continue
        kept[key] = value
    config.sources.persisted = kept
    return config_settings(config.settings, config.sources)


class Runner:
    """One daemon run, from lock to unlock."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.shutdown_mode: str | None = None
        self.failure: str | None = None  # why the daemon stopped itself, if it did
        self._shutdown = trio.Event()
        self._shutdown_now = trio.Event()  # running jobs are interrupted (see Supervisor.drain)
        self.notifier = Notifier()
        self.web: Any = None  # queued.web.server.WebServer when --http is given
        self.node = NodeIdentity(config.node or lease_rules.default_node_name(), "")
        self.lease_keeper: LeaseKeeper | None = None  # on a shared store only
        self.on_serving: Callable[[], None] | None = None  # called once it serves (see __main__)

    def request_shutdown(self, mode: str) -> None:
        """Stop the daemon, at any time (before it runs too): gracefully, or
        "now" (its running jobs interrupted, also after a graceful request)."""
        if self.shutdown_mode is None or mode == "now":
            self.shutdown_mode = mode
        log.info("shutdown requested (%s)", mode)
        self._shutdown.set()
        if mode == "now":
            self._shutdown_now.set()

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        try:
            prepare_data_dir(config.data_dir)
        except OSError as exc:
            raise StartupError(f"cannot create data dir {config.data_dir}: {exc.strerror}") from None
        lock_fd = lock_data_dir(config.data_dir)
        try:
            await self._run_locked(lock_fd, task_status)
        finally:
            os.close(lock_fd)

    async def _run_locked(self, lock_fd: int, task_status: trio.TaskStatus[Runner]) -> None:
        config = self.config
        resources = await self._node_resources()
        try:
            engine = open_store(config.store, config.data_dir)
        except StoreUnusable as exc:
            raise StartupError(str(exc)) from None
        engine.identify(self.node)
        db = Writer(engine, on_commit=self._committed)
        try:
            settings = effective_settings(config, db.run_now(Kind.READ, Store.config))
            self.lease_keeper = self._register_node(settings)
            recover(db, settings.backoff_max, time.time())
        except ValueError as exc:
            engine.close()
            raise StartupError(f"bad configuration: {exc}") from None
        except BaseException:
            if self.lease_keeper is not None:
                self.lease_keeper.leave()
            engine.close()
            raise
        instance = secrets.token_hex(8)
        stop_previous_instance(config.data_dir, instance)
        guardian = GuardianLink(instance, keep_fds=(lock_fd,), on_started=self._guardian_started(lock_fd))
        web = None
        try:
            web = self.web = self._prepare_web()
            inherited = inherited_listener()
            if inherited is not None:
                sock = trio.socket.from_stdlib_socket(inherited)
                config.socket_path = Path(inherited.getsockname())
            else:
                sock = bind_unix(config.socket_path)
        except Exception:
            if web is not None:
                web.close()
            guardian.close()
            raise
        try:
            self.watchers = watchers = Watchers()
            self.supervisor = Supervisor(
                db, settings, config.data_dir / "logs", guardian, instance, resources=resources
            )
            self.supervisor.served = frozenset(config.queues) if config.queues is not None else None
            if web is not None:
                self.supervisor.descriptors_reserved += web.descriptors
            self.supervisor.start_budget = config.exit_after_jobs
            self.callbacks = Callbacks(
                db, settings, guardian, JobEnvironments(instance), self.supervisor.look_for_orphans
            )
            self.supervisor.set_queues(db.run_now(Kind.READ, Store.queues))
            self.daemon = Daemon(
                db,
                self.supervisor,
                watchers,
                data_dir=str(config.data_dir),
                socket_path=str(config.socket_path),
                request_shutdown=self.request_shutdown,
                defaults=config.settings,
                sources=config.sources,
            )
            self.supervisor.output_news = self.daemon.output_news.told
            self.daemon.shared_store = is_postgres(config.store)
            self.daemon.node = self.node
            self.daemon.served = config.queues
            keeper = self.lease_keeper
            if keeper is not None:
                self.daemon.lease_problem = lambda: keeper.problem
            self.scheduler = Scheduler(
                db,
                wake_supervisor=self.supervisor.wake,
                accepting=lambda: self.supervisor.accepting,
            )
            self.daemon.local_zone = daemon_local_zone()
            self.daemon.schedules_changed = self.scheduler.changed
            access = AccessPolicy(frozenset({os.getuid(), 0}), config.allow_group)
            supervisor = self.supervisor
            server = self.server = Server(
                functools.partial(dispatch, REQUEST_HANDLERS, self.daemon),
                access,
                lambda: descriptors.client_room(
                    descriptors.current_limit(),
                    supervisor.settings.concurrency,
                    supervisor.descriptors_reserved,
                ),
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(db.serve)
                await nursery.start(self._supervise)
                if self.supervisor.output is not None:
                    await nursery.start(self.supervisor.output.run)
                if self.lease_keeper is not None:
                    await nursery.start(self.lease_keeper.run, self.supervisor, guardian, db)
                await nursery.start(self.callbacks.run)
                news = engine.news()
                if news is not None:  # other nodes share the store: hear what they do
                    nursery.start_soon(NodeNews(self.daemon).run, news)
                await nursery.start(self.scheduler.run)
                nursery.start_soon(guardian.watch)
                await nursery.start(server.serve, trio.SocketListener(sock))
                if web is not None:
                    await nursery.start(
                        web.serve,
                        self.daemon,
                        REQUEST_HANDLERS,
                        dispatch,
                        None if is_postgres(config.store) else config.data_dir / "queue.db",
                        self.supervisor.next_change,
                    )
                nursery.start_soon(self._signals, nursery)
                if config.exit_after_jobs is not None:
                    nursery.start_soon(self._leave_after_budget, config.exit_after_jobs)
                if config.exit_when_idle:
                    nursery.start_soon(self._leave_when_idle, db, config.queues)
                if self.notifier.enabled:
                    nursery.start_soon(self._report_status, db)
                if self.notifier.watchdog_interval:
                    nursery.start_soon(self._watchdog, self.notifier.watchdog_interval)
                log.info(
                    "queued serving %s (node %s, data %s, store %s, concurrency %d%s%s)",
                    config.socket_path,
                    self.node.name,
                    config.data_dir,
                    describe_store(config.store, config.data_dir),
                    settings.concurrency,
                    resources.describe(),
                    f", queues {','.join(config.queues)}" if config.queues is not None else "",
                )
                shortfall = self.supervisor.descriptor_shortfall(settings.concurrency)
                if shortfall is not None:
                    log.warning("%s; meanwhile jobs wait for descriptors to start", shortfall)
                if self.on_serving is not None:
                    self.on_serving()
                task_status.started(self)
                await self._shutdown.wait()
                self.notifier.stopping()
                await self.supervisor.drain(interrupt=self._shutdown_now)
                # The last jobs' on-finish commands get a moment to run.
                with trio.move_on_after(CALLBACK_GRACE_SECONDS):
                    await self.callbacks.idle()
                # Answers already being prepared (a `wait` that just finished) still go out.
                with trio.move_on_after(ANSWER_GRACE_SECONDS):
                    await server.wait_idle()
                nursery.cancel_scope.cancel()
        finally:
            sock.close()
            if web is not None:
                web.close()
            if inherited is None:  # a socket systemd made is systemd's to remove
                try:
                    config.socket_path.unlink(missing_ok=True)
                except OSError:
                    pass
            guardian.close()
            if self.lease_keeper is not None:
                self.lease_keeper.leave()
            engine.close()
            log.info("queued stopped")

    async def _node_resources(self) -> NodeResources:
        """What this node has besides its slots: `--resources`, and GPUs as
        `nvidia-smi -L` lists them (on a thread: it may hang until its timeout)."""
        configured = self.config.resources
        detected: tuple[int, ...] = ()
        if NodeResources.wants_detection(configured):
            detected = await trio.to_thread.run_sync(detect_gpus)
        return NodeResources.found(configured, detected, self.config.starvation_patience)

    def _register_node(self, settings: Settings) -> LeaseKeeper | None:
        """On a shared store: this node registered under its name, with a lease
        it can honour (StartupError in one line if not)."""
        config = self.config
        leases: Any = open_node_leases(config.store, config.node_lease)
        if leases is None:
            return None
        from queued.store.postgres.nodes import LeaseUnreachable, NameTaken, NodeCard, machine_home

        refusal = lease_rules.lease_refusal(config.node_lease, settings.kill_grace)
        if refusal is not None:
            raise StartupError(refusal)
        card = NodeCard(
            name=self.node.name,
            home=machine_home(str(config.data_dir)),
            host=os.uname().nodename,
            pid=os.getpid(),
            slots=settings.concurrency,
            queues=config.queues,
            lease=config.node_lease,
        )
        keeper = LeaseKeeper(
            leases,
            self.node,
            card,
            config.node_lease,
            kill_grace=lambda: self.supervisor.settings.kill_grace,
            slots=lambda: self.supervisor.settings.concurrency,
            backoff_max=lambda: self.supervisor.settings.backoff_max,
            resources=lambda: self.supervisor.resources(),
        )
        try:
            keeper.register()
        except (NameTaken, LeaseUnreachable) as exc:
            leases.close()
            raise StartupError(str(exc)) from None
        return keeper

    def _committed(self, changes: Changes) -> None:
        """The writer's one subscriber: what a commit changed, told to whoever
        must learn of it (waiters and on-finish commands of finished jobs; the
        supervisor, when a job became claimable that may outrank its read-ahead)."""
        if changes.finished:
            self.watchers.notify(changes.finished)
            self.callbacks.notify(changes.finished)
        if changes.reordered:
            self.supervisor.wake()

    def _prepare_web(self) -> Any:
        """The web page's server, bound, when --http asks for one or systemd
        passed a second socket for it (StartupError if it cannot be)."""
        inherited = inherited_web_listener()
        if self.config.http is None and inherited is None:
            return None
        from queued.web.server import WebServer, WebStartError

        try:
            return WebServer.prepare(
                self.config.http, self.config.http_names, self.config.data_dir, inherited=inherited
            )
        except WebStartError as exc:
            raise StartupError(str(exc)) from None

    def _guardian_started(self, lock_fd: int) -> Callable[[int], None]:
        def started(pid: int) -> None:
            name_lock_holders(lock_fd, guardian=pid)
            supervisor = getattr(self, "supervisor", None)
            if supervisor is not None:
                supervisor.wake()  # it starts nothing while no guardian runs

        return started

    async def _supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The supervisor, and what happens if it fails (its own invariants
        broken: a fault around one attempt never reaches here): every running
        job stopped in order, then a shutdown that says why."""
        try:
            await self.supervisor.run(task_status=task_status)
        except Exception as exc:
            self.failure = f"its supervisor failed: {fault_text(exc)}"
            log.critical("queued stops: %s; stopping the running jobs first", self.failure, exc_info=exc)
            await self.supervisor.abort()
            self.request_shutdown("now")

    async def _leave_after_budget(self, count: int) -> None:
        await self.supervisor.budget_spent.wait()
        log.info("started %d attempts (--exit-after-jobs): leaving once they end", count)
        self.request_shutdown("graceful")

    async def _leave_when_idle(self, db: Writer, served: tuple[str, ...] | None) -> None:
        async def waits() -> bool:
            return await db.read(Store.waits_here, served)

        await batch_runner.leave_when_idle(
            busy=lambda: self.supervisor.busy,
            waits=waits,
            next_change=self.supervisor.next_change,
            leave=lambda: self.request_shutdown("graceful"),
        )

    async def _report_status(self, db: Writer) -> None:
        """READY=1 once serving, then STATUS= after changes, at most once a second."""
        first = True
        while True:
            change = self.supervisor.next_change()
            try:
                counts = await db.read(Store.counts)
                status = (
                    f"{len(self.supervisor.running)} running, "
                    f"{sum(counts[state] for state in lifecycle.WAITING_STATES)} waiting, "
                    f"{counts[lifecycle.COMPLETED]} completed, {counts[lifecycle.DEAD]} dead"
                )
            except StorageError as exc:
                status = f"{len(self.supervisor.running)} running; {exc}"
            if first:
                self.notifier.ready(status)
                first = False
            else:
                self.notifier.status(status)
            await trio.sleep(STATUS_INTERVAL_SECONDS)
            await change.wait()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    async def _signals(self, nursery: trio.Nursery) -> None:
        """SIGTERM and SIGINT stop the daemon (a second SIGINT: now); SIGHUP,
        SIGUSR1 and SIGUSR2 as signals.py says (the state report in a task of
        its own: it reads the store, and a stop must not wait behind it)."""
        caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
        with trio.open_signal_receiver(*caught) as received:
            interrupts = 0
            for signum in early_signals.arrived():  # sent before we listened (see early_signals)
                log.info("acting on %s, received during the start", signal.Signals(signum).name)
                self._early_signal(signum, nursery)
            async for signum in received:
                if signum == signal.SIGHUP:
                    self.reload()
                elif signum == signal.SIGUSR1:
                    nursery.start_soon(self.log_state)
                elif signum == signal.SIGUSR2:
                    log.info("SIGUSR2 ignored (SIGHUP reloads the config file, SIGUSR1 logs the state)")
                else:
                    if signum == signal.SIGINT:
                        interrupts += 1
                    self.request_shutdown("now" if interrupts >= 2 else "graceful")

    def _early_signal(self, signum: int, nursery: trio.Nursery) -> None:
        if signum == signal.SIGHUP:
            self.reload()
        elif signum == signal.SIGUSR1:
            nursery.start_soon(self.log_state)

    def reload(self) -> None:
        """Read the config file again and apply its job settings and log level
        (SIGHUP) by queued.config's one rule, as at start; log what changed, or
        why nothing did."""
        config, sources = self.config, self.config.sources
        root = logging.getLogger()
        before = signals.in_force(self.supervisor.settings, logging.getLevelName(root.level).lower())
        try:
            file = {}
            if config.config_file is not None:
                file = signals.read_config_file(config.config_file, required=config.config_file_required)
            candidate = dataclasses.replace(sources, file=Sources.read(flags={}, environ={}, file=file).file)
            config_settings(config.settings, candidate)  # every value checked before any is applied
            level = daemon_values(candidate).log_level
        except ValueError as exc:
            self.daemon.config_problem = f"the config file was not reloaded: {exc}"
            log.error("reload refused, the settings in force are kept: %s", exc)
            return
        moved = signals.changed_keys(
            {k: v for k, v in sources.file.items() if k in signals.START_ONLY},
            {k: v for k, v in candidate.file.items() if k in signals.START_ONLY},
        )
        sources.file = candidate.file
        self.daemon.config_problem = None
        self.daemon.reconfigure()
        root.setLevel(level.upper())
        changed = signals.changes(before, signals.in_force(self.supervisor.settings, level))
        log.info("reloaded %s: %s", config.config_file, "; ".join(changed) or "nothing changed")
        if moved:
            log.warning("%s changed in the config file: this takes effect at the next start", moved)

    async def log_state(self) -> None:
        """Log the daemon's state (SIGUSR1)."""
        d = self.daemon
        try:
            counts = await d.db.read(Store.counts)
        except StorageError:
            counts = {}  # the problems say why
        for line in signals.state_report(
            now=trio.current_time(),
            clock_now=time.time(),
            started_at=d.started_at,
            concurrency=self.supervisor.settings.concurrency,
            accepting=self.supervisor.accepting,
            running=self.supervisor.running,
            connections=self.server.connections,
            answering=self.server.in_flight,
            waiters=d.watchers.watched(),
            counts=counts,
            problems=d.problems(),
        ):
            log.info("%s", line)
