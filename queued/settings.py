"""Settings the rules depend on: defaults for new jobs and limits for the
supervisor, as `config set` and the config file give them, checked and
formatted in one place. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping

from msgspec import Struct

from queued.durations import format_duration_exact, format_size_exact, parse_duration, parse_size
from queued.protocol import MAX_CONCURRENCY, MAX_RETRIES
from queued.validation import check_command


class Settings(Struct, kw_only=True):
    """Defaults for new jobs and limits for the supervisor; persisted with
    `config set`. Durations are seconds, sizes bytes."""

    max_retries: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 3600.0
    timeout: float | None = None
    concurrency: int = 1
    log_max_size: int = 10 * 1024 * 1024
    kill_grace: float = 10.0
    on_finish: str | None = None  # a shell command run when a job ends (see callbacks.py)


MAX_SECONDS = 10 * 365 * 86400  # the protocol's limit on every duration
MAX_LOG_SIZE = 1024**4


def _parse_whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"must be from {low:,} to {high:,}, got {value:,}")
    return value


def _parse_count(text: str) -> int:
    return _parse_whole(text, 0, MAX_RETRIES)


def _parse_slots(text: str) -> int:
    """Global slots: 0 stops claiming (running jobs go on), like pausing every queue."""
    return _parse_whole(text, 0, MAX_CONCURRENCY)


def _parse_base(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not 1 <= value <= 3600:  # also refuses nan
        raise ValueError(f"must be from 1 to 3600, got {text.strip()}")
    return value


def _parse_seconds(text: str) -> float:
    value = parse_duration(text)
    if value > MAX_SECONDS:
        raise ValueError(f"{text.strip()!r} is longer than the 10-year limit")
    return value


def _parse_optional_duration(text: str) -> float | None:
    """A duration, where none, off or zero mean "no limit"."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    return _parse_seconds(text) or None


def _parse_positive_duration(text: str) -> float:
    value = _parse_seconds(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, got {text.strip()!r}")
    return value


def _parse_optional_command(text: str) -> str | None:
    """A shell command, where none, off or nothing mean "no command"."""
    text = text.strip()
    if text.lower() in ("", "none", "off"):
        return None
    check_command(text)
    return text


def _parse_log_size(text: str) -> int:
    value = parse_size(text)
    if not 1024 <= value <= MAX_LOG_SIZE:
        raise ValueError(f"must be from 1k to 1T, got {text.strip()!r}")
    return value


# key as users write it -> (Settings field, parser of the user's text)
CONFIG_KEYS = {
    "max-retries": ("max_retries", _parse_count),
    "backoff-base": ("backoff_base", _parse_base),
    "backoff-max": ("backoff_max", _parse_positive_duration),
    "timeout": ("timeout", _parse_optional_duration),
    "concurrency": ("concurrency", _parse_slots),
    "log-max-size": ("log_max_size", _parse_log_size),
    "kill-grace": ("kill_grace", _parse_positive_duration),
    "on-finish": ("on_finish", _parse_optional_command),
}


def config_key(key: str) -> str:
    """The canonical spelling of a config key (dashes), or ValueError."""
    canonical = key.strip().lower().replace("_", "-")
    if canonical not in CONFIG_KEYS:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
    return canonical


def parse_config_value(key: str, text: str) -> tuple[str, int | float | str | None]:
    """(Settings field, value) for a user's `config set KEY VALUE`, or ValueError."""
    canonical = config_key(key)
    field, parse = CONFIG_KEYS[canonical]
    try:
        return field, parse(str(text))
    except ValueError as exc:
        raise ValueError(f"invalid value for {canonical}: {exc}") from None


def format_config_value(key: str, value: object) -> str:
    """A setting in the form `config set` takes and `config get` shows: 1h, 10M, none."""
    if value is None:
        return "none"
    if key in ("timeout", "backoff-max", "kill-grace"):
        return format_duration_exact(float(value))  # type: ignore[arg-type]
    if key == "log-max-size":
        return format_size_exact(int(value))  # type: ignore[call-overload]
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_with(settings: Settings, values: Mapping[str, object]) -> Settings:
    """A copy of `settings` with user-facing `values` (key -> text or number) applied."""
    fields = {}
    for key, raw in values.items():
        field, value = parse_config_value(key, str(raw))
        fields[field] = value
    return Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, **fields})


def settings_as_config(settings: Settings) -> dict[str, int | float | str | None]:
    return {key: getattr(settings, field) for key, (field, _) in CONFIG_KEYS.items()}
