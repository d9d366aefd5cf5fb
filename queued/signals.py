"""What queued does with the signals an operator sends it, besides SIGTERM and
SIGINT (which stop it, see `daemon.Runner`):

- SIGHUP reloads the config file: the job settings (max-retries, timeout, ...)
  and the log level, ranked as at start (flags and environment > `config set`
  > the file > the defaults), and logs each value that changed. The daemon's
  place (socket, data dir, allowed group) stays as it is until the next start;
  a reload says so when the file changed it. A file that does not parse, or
  names a bad value, changes nothing: the reload is refused, with the reason,
  in the log and in `status`. This is systemd's `ExecReload=`.
- SIGUSR1 logs the daemon's state: slots, each running attempt, waiters,
  connections and problems.
- SIGUSR2 has no use: it is logged and otherwise ignored, where its default
  action would kill the daemon.

All of them are caught, never set to SIG_IGN: an ignored signal would stay
ignored in every job's process (exec keeps SIG_IGN, resets caught ones).

The pure parts (reading the file, the list of changes, the state report) are
here; which source wins is queued.config's one rule, and the daemon's Runner
applies it.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from queued.durations import format_duration
from queued.settings import Settings, settings_as_config

if TYPE_CHECKING:
    from queued.processes.attempt import Attempt

# The daemon's own keys that a reload cannot change (its socket, data dir and
# admitted group are fixed at start; log-level is reloaded).
START_ONLY = ("socket", "data-dir", "allow-group")


def read_config_file(path: Path, *, required: bool) -> dict[str, object]:
    """The TOML file's values; {} when an optional file does not exist. ValueError
    with a sentence naming the file for anything else."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise ValueError(f"config file {path} does not exist") from None
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ValueError(f"cannot read config file {path}: {exc}") from None


def changed_keys(before: Mapping[str, object], after: Mapping[str, object]) -> str:
    """The keys whose values differ, comma-separated ('' when none)."""
    return ", ".join(sorted(key for key in {*before, *after} if before.get(key) != after.get(key)))


def changes(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    """`key old -> new` for each key whose value differs, in the order of `after`."""
    return [
        f"{key} {_shown(key, before.get(key))} -> {_shown(key, value)}"
        for key, value in after.items()
        if before.get(key) != value
    ]


def _shown(key: str, value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and key in ("timeout", "backoff-max", "kill-grace"):
        return format_duration(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def in_force(settings: Settings, log_level: str) -> dict[str, object]:
    """What a reload may change, as `config get` names it, plus the log level."""
    return {**settings_as_config(settings), "log-level": log_level}


def state_report(
    *,
    now: float,
    clock_now: float,
    started_at: float,
    concurrency: int,
    accepting: bool,
    running: Mapping[int, Attempt],
    connections: int,
    answering: int,
    waiters: int,
    counts: Mapping[str, int],
    problems: list[str],
) -> list[str]:
    """The lines SIGUSR1 logs. `now` is trio's clock (attempts' spawn times),
    `clock_now` the wall clock."""
    lines = [
        f"state: up {format_duration(max(0.0, clock_now - started_at))}, "
        f"{'accepting jobs' if accepting else 'shutting down'}, {len(running)} of {concurrency} slots "
        f"in use, {connections} connections ({answering} being answered), {waiters} jobs waited for",
        "state: jobs " + ", ".join(f"{state} {n}" for state, n in counts.items()),
    ]
    for job_id in sorted(running):
        attempt = running[job_id]
        age = format_duration(max(0.0, now - attempt.spawned_at)) if math.isfinite(now) else "?"
        stopping = f", stopping ({attempt.stop_reason})" if attempt.stop_reason else ""
        command = attempt.claimed.command
        if len(command) > 80:
            command = command[:77] + "..."
        lines.append(
            f"state: job {job_id} attempt {attempt.claimed.run} in queue {attempt.claimed.queue}, "
            f"pid {attempt.pid}, running {age}{stopping}: {command}"
        )
    lines += [f"state: problem: {problem}" for problem in problems]
    return lines
