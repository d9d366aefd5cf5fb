"""Human durations and sizes ("90", "90s", "5m", "2h", "1d"; "10M"), shared by
the CLI and the daemon's config. Pure functions."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION = re.compile(r"^(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_SECONDS_PER = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_BYTES_PER = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(text: str) -> float:
    """Seconds in `text` ("90", "90s", "5m", "1h30m"); a bare number is seconds.
    Raises ValueError with a reason."""
    if _NUMBER.match(text):
        return float(text)
    if not _DURATION.match(text):
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 90s, 5m)")
    return sum(float(number) * _SECONDS_PER[unit.lower()] for number, unit in _PART.findall(text))


def parse_size(text: str) -> int:
    """Bytes in `text` ("10M", "512k", "1GiB"); a bare number is bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with k, M or G (e.g. 10M)")
    number, unit, _ = match.groups()
    return int(number) * _BYTES_PER[unit.lower()]


def format_duration(seconds: float) -> str:
    """A short human form that parse_duration reads back: 850ms, 4.5s, 42s, 5m30s, 2h05m, 3d04h."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    tenths = round(seconds, 1)
    if tenths < 10:
        return f"{tenths:g}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(round(seconds / 60), 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days}d{hours:02d}h" if hours else f"{days}d"


def format_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size}B"


def format_duration_exact(seconds: float) -> str:
    """The form a user would type, exactly: 3600 -> 1h, 90 -> 1m30s, 2.5 -> 2.5s,
    0.25 -> 250ms; parse_duration reads it back to the same value."""
    if seconds < 0:
        return "-" + format_duration_exact(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1 and float(round(seconds * 1000)) == seconds * 1000:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = whole + (seconds - int(seconds))
    if rest:
        parts.append(f"{rest:.9f}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)


def format_size_exact(size: int) -> str:
    """The form a user would type, exactly: 10485760 -> 10M, 1536 -> 1536 (bytes)."""
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
