"""Human durations and sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queued.durations import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("0", 0.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 7 * 86400.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("250ms", 0.25),
        (" 5 m ", 300.0),
        ("5M", 300.0),
        ("2H", 7200.0),
        ("10MS", 0.01),
        ("1h30m", 5400.0),
        ("5m30s", 330.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "s",
        "m5",
        "-5",
        "-5m",
        "5 minutes",
        "5y",
        "1e3",
        "inf",
        "nan",
        ".5",
        "5.",
        "0x10",
        "5mm",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_duration_bare_integer_is_seconds(n: int) -> None:
    assert parse_duration(str(n)) == n
    assert parse_duration(f"{n}s") == n


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("100", 100),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("10M", 10 * 1024**2),
        ("10MB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("2t", 2 * 1024**4),
        (" 3 m ", 3 * 1024**2),
        ("64b", 64),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5M", "10X", "10 megabytes", "1e6"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.25, "250ms"),
        (0.85, "850ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (42, "42s"),
        (42.4, "42s"),
        (60, "1m"),
        (90, "1m30s"),
        (330, "5m30s"),
        (3600, "1h"),
        (7500, "2h05m"),
        (86400, "1d"),
        (3 * 86400 + 4 * 3600, "3d04h"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1s", "42s", "5m", "2h", "1d", "60", "250ms"])
def test_single_unit_durations_round_trip(text: str) -> None:
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.floats(min_value=0, max_value=10 * 365 * 86400, allow_nan=False))
def test_format_duration_never_fails(seconds: float) -> None:
    text = format_duration(seconds)
    assert text and not text.startswith("-")


@pytest.mark.parametrize(("seconds", "text"), [(59.6, "1m"), (0.9996, "1s"), (9.96, "10s")])
def test_format_duration_rounding_carries_into_the_next_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (10 * 1024**2, "10.0MiB"),
        (3 * 1024**3, "3.0GiB"),
        (2048 * 1024**3, "2048.0GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
