"""Where each setting comes from: one rule for every key, at start and on reload.

Flags, then the environment (`QUEUED_<KEY>`), then `queuectl config set`
(persisted in the database), then the config file, then the defaults. The
first source that names a key decides it; every source's values are checked
all the same, so a typo in the file is reported even while the environment
masks it.

Two kinds of keys: the job settings (`CONFIG_KEYS`: max-retries,
timeout, …), which `config set` changes at run time, and the daemon's own
(socket, data-dir, log-level, allow-group, http, http-names, store, node,
node-lease, queues, resources, starvation-patience), fixed at
start: the database that holds `config set` is the store, so those cannot come
from it.

Pure functions: the caller reads flags, environment, file and database and
passes them in (the daemon at start, and again on a reload).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from queued import lease as lease_rules
from queued.resources import STARVATION_PATIENCE, parse_resources
from queued.settings import CONFIG_KEYS, Settings, parse_config_value, settings_with
from queued.store.engines import check_spec as check_store
from queued.store.engines import redact as redact_store

SETTINGS_KEYS = tuple(CONFIG_KEYS)
DAEMON_KEYS = (
    "socket",
    "data-dir",
    "log-level",
    "allow-group",
    "http",
    "http-names",
    "store",
    "exit-when-idle",
    "exit-after-jobs",
    "node",
    "node-lease",
    "queues",
    "resources",
    "starvation-patience",
)
# Daemon keys that are not text: a yes/no and a count (see daemon_values).
_SWITCHES = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
KEYS = (*SETTINGS_KEYS, *DAEMON_KEYS)
LOG_LEVELS = ("debug", "info", "warning", "error")
# The sources, strongest first.
FLAG, ENVIRONMENT, CONFIG_SET, FILE, DEFAULT = "flag", "environment", "config set", "file", "default"


def env_variable(key: str) -> str:
    """`max-retries` -> `QUEUED_MAX_RETRIES`."""
    return "QUEUED_" + key.upper().replace("-", "_")


def canonical_key(key: str) -> str:
    """A key as a file may spell it (`data_dir`, `Max-Retries`) in the one form, or ValueError."""
    canonical = key.strip().lower().replace("_", "-")
    if canonical not in KEYS:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}")
    return canonical


@dataclass
class Sources:
    """Every place a value can come from, as text (the file's as TOML gave them)."""

    flags: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    persisted: dict[str, str] = field(default_factory=dict)  # `config set`
    file: dict[str, object] = field(default_factory=dict)
    file_path: str | None = None  # named in errors about its values

    @classmethod
    def read(
        cls,
        *,
        flags: Mapping[str, object | None],
        environ: Mapping[str, str],
        file: Mapping[str, object],
        persisted: Mapping[str, str] | None = None,
        file_path: str | None = None,
    ) -> Sources:
        """Sources from raw inputs: flags not given (None) dropped, the QUEUED_*
        variables of `environ` picked (an empty one counts as unset), the
        file's keys made canonical (ValueError for one we do not know)."""
        file_values: dict[str, object] = {}
        for key, value in file.items():
            try:
                file_values[canonical_key(key)] = value
            except ValueError as exc:
                raise ValueError(f"{exc} (in {_file_name(file_path)})") from None
        return cls(
            flags={canonical_key(k): str(v) for k, v in flags.items() if v is not None},
            environment={k: environ[env_variable(k)] for k in KEYS if environ.get(env_variable(k), "")},
            persisted={k: v for k, v in (persisted or {}).items() if k in SETTINGS_KEYS},
            file=file_values,
            file_path=file_path,
        )

    def layers(self, key: str) -> list[tuple[str, object]]:
        """(source, value) for each source naming `key`, strongest first."""
        found: list[tuple[str, object]] = []
        for source, values in (
            (FLAG, self.flags),
            (ENVIRONMENT, self.environment),
            (CONFIG_SET, self.persisted if key in SETTINGS_KEYS else {}),
            (FILE, self.file),
        ):
            if key in values:
                found.append((source, values[key]))
        return found

    def origin(self, key: str) -> str:
        """Which source decides `key`: flag, environment, config set, file or default."""
        layers = self.layers(key)
        return layers[0][0] if layers else DEFAULT

    def describe(self, key: str, source: str) -> str:
        """Where a value came from, in the words a user would look for it."""
        if source == FLAG:
            return f"--{key}"
        if source == ENVIRONMENT:
            return env_variable(key)
        if source == FILE:
            return _file_name(self.file_path)
        return source


def _file_name(path: str | None) -> str:
    return f"config file {path}" if path else "the config file"


def effective_settings(defaults: Settings, sources: Sources) -> Settings:
    """The job settings: for each key the strongest source's value, else the default.
    ValueError naming the key and its source for any value that does not parse."""
    chosen: dict[str, object] = {}
    for key in SETTINGS_KEYS:
        layers = sources.layers(key)
        for source, value in layers:
            try:
                parse_config_value(key, str(value))
            except ValueError as exc:
                raise ValueError(f"{exc} (from {sources.describe(key, source)})") from None
        if layers:
            chosen[key] = layers[0][1]
    return settings_with(defaults, chosen)


@dataclass(frozen=True)
class DaemonValues:
    """The daemon's own keys as chosen; None where no source names one (the
    caller then uses its default: paths.default_socket_path and so on)."""

    socket: str | None
    data_dir: str | None
    log_level: str
    allow_group: str | None
    http: str | None = None  # the web page's HOST:PORT (off: None)
    http_names: str | None = None  # names its Host header may carry besides addresses
    store: str | None = None  # None: SQLite in the data dir (see queued.store.engines)
    exit_when_idle: bool = False  # leave once nothing it could run is left (a batch runner)
    exit_after_jobs: int | None = None  # leave after starting this many attempts (and seeing them end)
    node: str | None = None  # this node's name (None: the host name, see queued.lease)
    node_lease: float = lease_rules.DEFAULT_LEASE  # seconds, on a PostgreSQL store
    queues: tuple[str, ...] | None = None  # the queues this node serves (None: all)
    resources: dict[str, int] | None = None  # `--resources` (None: GPUs as nvidia-smi lists them)
    starvation_patience: float = STARVATION_PATIENCE  # seconds (see queued.resources)


def daemon_values(sources: Sources) -> DaemonValues:
    """The daemon's own keys by the same rule (no `config set`)."""
    values: dict[str, str | None] = {}
    exit_when_idle, exit_after_jobs = _batch_runner_values(sources)
    for key in DAEMON_KEYS:
        if key in ("exit-when-idle", "exit-after-jobs"):
            continue
        layers = sources.layers(key)
        for source, value in layers:
            if not isinstance(value, str) or (key not in ("allow-group", "http-names") and not value.strip()):
                shown = redact_store(str(value)) if key == "store" else value
                raise ValueError(f"invalid value for {key}: {shown!r} (from {sources.describe(key, source)})")
            if key == "store":
                try:
                    check_store(value)
                except ValueError as exc:
                    raise ValueError(f"{exc} (from {sources.describe(key, source)})") from None
            try:
                _check_daemon_value(key, value)
            except ValueError as exc:
                raise ValueError(f"{exc} (from {sources.describe(key, source)})") from None
            if key == "log-level" and value.lower() not in LOG_LEVELS:
                raise ValueError(
                    f"invalid value for log-level: {value!r}, use {', '.join(LOG_LEVELS)} "
                    f"(from {sources.describe(key, source)})"
                )
        values[key] = str(layers[0][1]) if layers else None
    return DaemonValues(
        socket=values["socket"],
        data_dir=values["data-dir"],
        log_level=(values["log-level"] or "info").lower(),
        allow_group=values["allow-group"] or None,
        http=values["http"],
        http_names=values["http-names"] or None,
        store=values["store"] or None,
        node=values["node"].strip() if values["node"] else None,
        node_lease=parse_seconds(values["node-lease"]) if values["node-lease"] else lease_rules.DEFAULT_LEASE,
        queues=lease_rules.check_queue_names(values["queues"]) if values["queues"] else None,
        resources=parse_resources(values["resources"]) if values["resources"] else None,
        starvation_patience=(
            parse_seconds(values["starvation-patience"], "starvation-patience")
            if values["starvation-patience"]
            else STARVATION_PATIENCE
        ),
        exit_when_idle=exit_when_idle,
        exit_after_jobs=exit_after_jobs,
    )


def _batch_runner_values(sources: Sources) -> tuple[bool, int | None]:
    """exit-when-idle (true/false, yes/no, on/off, 1/0) and exit-after-jobs (a
    count from 1), each from its strongest source; ValueError naming the source."""
    when_idle = False
    for source, value in reversed(sources.layers("exit-when-idle")):
        switch = value if isinstance(value, bool) else _SWITCHES.get(str(value).strip().lower())
        if switch is None:
            raise ValueError(
                f"invalid value for exit-when-idle: {value!r}, use true or false "
                f"(from {sources.describe('exit-when-idle', source)})"
            )
        when_idle = switch
    after_jobs = None
    for source, value in reversed(sources.layers("exit-after-jobs")):
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError(
                f"invalid value for exit-after-jobs: {value!r}, give a whole number from 1 "
                f"(from {sources.describe('exit-after-jobs', source)})"
            )
        after_jobs = int(text)
    return when_idle, after_jobs


def _check_daemon_value(key: str, value: str) -> None:
    """ValueError for a bad node, node-lease or queues value."""
    if key == "node":
        lease_rules.check_node_name(value.strip())
    elif key == "node-lease":
        parse_seconds(value)
    elif key == "queues":
        lease_rules.check_queue_names(value)
    elif key == "resources":
        parse_resources(value)
    elif key == "starvation-patience":
        parse_seconds(value, key)


def parse_seconds(text: str, key: str = "node-lease") -> float:
    """A node-lease (or another duration key): a positive duration (`30`,
    `30s`, `1m`); ValueError naming the key."""
    try:
        return float(parse_config_value("kill-grace", text)[1])  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(str(exc).replace("kill-grace", key)) from None
