"""`queued`: the command line of the daemon."""

from __future__ import annotations

from queued import early_signals

early_signals.catch()  # first: a SIGHUP sent right after the start must not kill it

import argparse
import gc
import os
import sys
from pathlib import Path

from queued import __version__, paths
from queued import config as config_rules
from queued.logs import configure_logging
from queued.settings import Settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queued",
        description="The queued job-queue daemon: runs shell jobs durably, driven by queuectl.",
        epilog="Every setting also comes from the environment (QUEUED_MAX_RETRIES, QUEUED_TIMEOUT, ...) "
        "and the config file; flags and environment win over `queuectl config set`, which wins over "
        "the file. Example: queued --data-dir ~/jobs --concurrency 4",
    )
    parser.add_argument("--socket", help="control socket path (env QUEUED_SOCKET)")
    parser.add_argument("--data-dir", help="database and logs (env QUEUED_DATA_DIR)")
    parser.add_argument(
        "--concurrency",
        help="global job slots, 0 to start none (env QUEUED_CONCURRENCY; default: the number of CPUs)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"TOML config file (env QUEUED_CONFIG; default: {paths.default_config_file()})",
    )
    parser.add_argument(
        "--log-level", choices=config_rules.LOG_LEVELS, help="env QUEUED_LOG_LEVEL; default: info"
    )
    parser.add_argument(
        "--allow-group",
        help="also admit members of this group (env QUEUED_ALLOW_GROUP): for a system daemon "
        "whose socket is group-accessible",
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the web page, JSON API and /metrics there (env QUEUED_HTTP; off by default; "
        "port 0 picks a free one; a non-loopback address needs `queuectl web token` first)",
    )
    parser.add_argument(
        "--http-names",
        metavar="NAMES",
        help="host names the web page answers besides IP addresses and localhost, comma separated "
        "(env QUEUED_HTTP_NAMES): the name of a reverse proxy in front of it",
    )
    parser.add_argument(
        "--store",
        help="where jobs are kept (env QUEUED_STORE): a postgresql:// URL (libpq's variables, .pgpass "
        "and sslmode apply) makes this daemon use that database; default: SQLite in the data dir. "
        "`queued migrate --store URL` creates or upgrades its schema without starting a daemon",
    )
    parser.add_argument(
        "--exit-when-idle",
        action="store_const",
        const="true",
        help="a batch runner: leave (gracefully, as on SIGTERM) once nothing is running here and "
        "no job waits that it could run, delayed ones and retries included; held jobs and paused "
        "queues wait for a person and keep no node, nor do jobs pinned to another node or in a queue "
        "it does not serve (env QUEUED_EXIT_WHEN_IDLE). Example: "
        "queued --store postgresql://db.example/queue --exit-when-idle",
    )
    parser.add_argument(
        "--exit-after-jobs",
        metavar="N",
        help="start N attempts at most, then leave once they ended (env QUEUED_EXIT_AFTER_JOBS)",
    )
    parser.add_argument(
        "--node",
        help="this node's name among the nodes sharing a --store (env QUEUED_NODE; default: the host "
        "name): short, printable, no spaces; two live nodes cannot share one",
    )
    parser.add_argument(
        "--node-lease",
        metavar="SECONDS",
        help="with a PostgreSQL --store: how long this node's heartbeat lease lasts (env QUEUED_NODE_LEASE; "
        "default 30s); a node silent that long is lost and its running jobs are run elsewhere",
    )
    parser.add_argument(
        "--queues",
        metavar="NAMES",
        help="the queues this node takes jobs from, comma separated (env QUEUED_QUEUES; default: all), "
        "e.g. --queues gpu,default",
    )
    parser.add_argument(
        "--resources",
        metavar="NAME=COUNT,...",
        help="what this node has besides its slots, for jobs added with --needs (env QUEUED_RESOURCES), "
        "e.g. --resources gpu=2,licence=1; by default the GPUs `nvidia-smi -L` lists, and nothing else "
        "(gpu=0: none, and nvidia-smi is not run). Each GPU job gets CUDA_VISIBLE_DEVICES set to the "
        "GPUs it holds; any other job gets it empty on a node with GPUs",
    )
    parser.add_argument(
        "--starvation-patience",
        metavar="SECONDS",
        help="how long a job that does not fit (--slots, --needs) lets smaller jobs behind it go first; "
        "past it, it holds what is free until it fits (env QUEUED_STARVATION_PATIENCE; default 60s)",
    )
    parser.add_argument("--version", action="version", version=f"queued {__version__}")
    return parser


def migrate(argv: list[str]) -> None:
    """`queued migrate`: create or upgrade the store's schema, then exit."""
    parser = argparse.ArgumentParser(
        prog="queued migrate",
        description="Create or upgrade the job store's schema without starting a daemon "
        "(a daemon does it at start too). Example: queued migrate --store postgresql://db.example/queue",
    )
    parser.add_argument(
        "--store", help="a postgresql:// URL (env QUEUED_STORE; default: SQLite in the data dir)"
    )
    parser.add_argument("--data-dir", help="for SQLite: the data dir (env QUEUED_DATA_DIR)")
    args = parser.parse_args(argv)
    from queued.store import engines

    spec = args.store or os.environ.get("QUEUED_STORE") or None
    data_dir = Path(args.data_dir) if args.data_dir else paths.default_data_dir()
    if not engines.is_postgres(spec):
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        version = engines.migrate(spec, data_dir)
    except engines.StoreUnusable as exc:
        print(f"queued: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"the job store at {engines.describe(spec, data_dir)} is at schema version {version}")


def load_config_file(path: Path | None) -> dict[str, object]:
    from queued.signals import read_config_file

    try:
        return read_config_file(path or paths.default_config_file(), required=path is not None)
    except ValueError as exc:
        raise SystemExit(f"queued: {exc}") from None


def resolve_group(name: str | None) -> int | None:
    if not name:
        return None
    if name.isdigit():
        return int(name)
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {name!r} for --allow-group") from None


def keep_inherited_descriptors_from_jobs() -> None:
    """Jobs are spawned without closing descriptors one by one (see
    process._spawn): whatever the daemon inherited must close on exec."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own descriptor, closed by now


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate"]:
        migrate(argv[1:])
        return
    import trio

    keep_inherited_descriptors_from_jobs()
    from queued.processes.descriptors import raise_limit

    raise_limit()

    from queued.daemon import DaemonConfig, Runner, StartupError
    from queued.server.connections import SocketInUse

    args = parse_args(argv)
    from_env = os.environ.get("QUEUED_CONFIG")
    config_path = args.config or (Path(from_env) if from_env else None)
    file_values = load_config_file(config_path)
    try:
        sources = config_rules.Sources.read(
            flags={
                "socket": args.socket,
                "data-dir": args.data_dir,
                "concurrency": args.concurrency,
                "log-level": args.log_level,
                "allow-group": args.allow_group,
                "http": args.http,
                "http-names": args.http_names,
                "store": args.store,
                "exit-when-idle": args.exit_when_idle,
                "exit-after-jobs": args.exit_after_jobs,
                "node": args.node,
                "node-lease": args.node_lease,
                "queues": args.queues,
                "resources": args.resources,
                "starvation-patience": args.starvation_patience,
            },
            environ=os.environ,
            file=file_values,
            file_path=str(config_path or paths.default_config_file()) if file_values else None,
        )
        chosen = config_rules.daemon_values(sources)
        if chosen.http is not None:  # checked before the data dir is locked
            from queued.web.security import parse_bind

            parse_bind(chosen.http)
    except ValueError as exc:
        print(f"queued: {exc}", file=sys.stderr)
        sys.exit(1)
    configure_logging(chosen.log_level)
    # The defaults after the environment: paths' own defaults also read QUEUED_SOCKET
    # and QUEUED_DATA_DIR, which `sources` has already ranked above the file.
    socket_path = Path(chosen.socket) if chosen.socket else paths.default_socket_path()
    data_dir = Path(chosen.data_dir) if chosen.data_dir else paths.default_data_dir()
    try:
        allow_group = resolve_group(chosen.allow_group)
        config = DaemonConfig(
            data_dir=data_dir.expanduser().absolute(),
            socket_path=socket_path.expanduser().absolute(),
            settings=Settings(concurrency=os.cpu_count() or 1),
            sources=sources,
            allow_group=allow_group,
            store=chosen.store,
            config_file=(config_path or paths.default_config_file()).expanduser().absolute(),
            config_file_required=config_path is not None,
            http=chosen.http,
            http_names=chosen.http_names,
            exit_when_idle=chosen.exit_when_idle,
            exit_after_jobs=chosen.exit_after_jobs,
            node=chosen.node,
            node_lease=chosen.node_lease,
            queues=chosen.queues,
            resources=chosen.resources,
            starvation_patience=chosen.starvation_patience,
        )
        config_rules.effective_settings(config.settings, sources)  # fail fast, before the lock
        runner = Runner(config)
        # What start-up made (modules, settings, the store's connections) lives
        # as long as the daemon: out of the collector's way, so that a full
        # collection, which a bulk add's 10,000 new objects a request trigger,
        # does not walk it each time (3x faster decoding and checking of an add).
        runner.on_serving = gc.freeze
        trio.run(runner.run)
    except (StartupError, SocketInUse, ValueError, OSError) as exc:
        print(f"queued: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    if runner.failure is not None:
        print(f"queued: stopped after a fault: {runner.failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
