"""`queued`: the command line of the daemon."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

from . import __version__, lifecycle, paths
from .logs import configure_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="queued",
        description="The queued job-queue daemon: runs shell jobs durably, driven by queuectl.",
        epilog="Example: queued --data-dir ~/jobs --concurrency 4",
    )
    parser.add_argument("--socket", type=Path, help="control socket path (env QUEUED_SOCKET)")
    parser.add_argument("--data-dir", type=Path, help="database and logs (env QUEUED_DATA_DIR)")
    parser.add_argument(
        "--concurrency", help="global job slots (env QUEUED_CONCURRENCY; default: the number of CPUs)"
    )
    parser.add_argument(
        "--config", type=Path, help=f"TOML config file (default: {paths.default_config_file()})"
    )
    parser.add_argument(
        "--log-level", default=None, choices=["debug", "info", "warning", "error"], help="default: info"
    )
    parser.add_argument(
        "--allow-group",
        help="also admit members of this group (env QUEUED_ALLOW_GROUP): for a system daemon "
        "whose socket is group-accessible",
    )
    parser.add_argument("--version", action="version", version=f"queued {__version__}")
    return parser.parse_args(argv)


def load_config_file(path: Path | None) -> dict[str, object]:
    explicit = path is not None
    path = path or paths.default_config_file()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise SystemExit(f"queued: config file {path} does not exist") from None
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise SystemExit(f"queued: cannot read config file {path}: {exc}") from None


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
    import trio

    keep_inherited_descriptors_from_jobs()

    from .daemon import DaemonConfig, Runner, StartupError
    from .server import SocketInUse

    args = parse_args(argv)
    file_values = load_config_file(args.config)
    socket_path = args.socket or file_values.pop("socket", None) or paths.default_socket_path()
    data_dir = args.data_dir or file_values.pop("data-dir", None) or file_values.pop("data_dir", None)
    data_dir = Path(data_dir) if data_dir else paths.default_data_dir()
    log_level = args.log_level or str(file_values.pop("log-level", "info"))
    configure_logging(log_level)
    overrides = {}
    concurrency = args.concurrency or os.environ.get("QUEUED_CONCURRENCY")
    if concurrency:
        overrides["concurrency"] = concurrency
    try:
        allow_group = resolve_group(args.allow_group or os.environ.get("QUEUED_ALLOW_GROUP"))
        config = DaemonConfig(
            data_dir=data_dir.expanduser().absolute(),
            socket_path=Path(socket_path).expanduser().absolute(),
            settings=lifecycle.Settings(concurrency=os.cpu_count() or 1),
            overrides=overrides,
            allow_group=allow_group,
            file_values=file_values,
        )
        lifecycle.settings_with(config.settings, {**file_values, **overrides})  # fail fast
        trio.run(Runner(config).run)
    except (StartupError, SocketInUse, ValueError, OSError) as exc:
        print(f"queued: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
