"""The overview's charts, drawn here as SVG from the stored attempts (pure:
attempts and a time in, text out): throughput, jobs ended per bucket by
outcome, as stacked bars; latency, the median and 95th percentile of the
wait (due to start) and of the run time, as lines on a log scale. Colours
are presentation attributes: the page shows the charts as images, and its
Content-Security-Policy allows no inline style.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

from queued.store.reports import EndedAttempt

RANGES = {"hour": (3600, 60), "day": (86_400, 900)}  # span, bucket (seconds)
OUTCOMES = ("completed", "failed", "error", "interrupted")
WIDTH, HEIGHT = 640, 200
COLOURS = {
    "completed": "#2f9e44",
    "failed": "#e8590c",
    "error": "#c92a2a",
    "interrupted": "#868e96",
    "wait-p50": "#1971c2",
    "wait-p95": "#74c0fc",
    "run-p50": "#9c36b5",
    "run-p95": "#e599f7",
}
INK, FAINT, PAPER = "#495057", "#dee2e6", "#ffffff"
TEXT = f'fill="{INK}" font-size="11" font-family="sans-serif"'
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 10, 24


def buckets(attempts: Iterable[EndedAttempt], now: float, span: int, step: int) -> list[list[EndedAttempt]]:
    """The attempts that ended in each step of the last `span` seconds, oldest first."""
    count = span // step
    start = now - count * step
    found: list[list[EndedAttempt]] = [[] for _ in range(count)]
    for attempt in attempts:
        index = math.floor((attempt.ended_at - start) / step)
        if 0 <= index < count:
            found[index].append(attempt)
    return found


def quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1 if q > 0 else 0)]


def _frame(
    title: str, y_labels: list[tuple[float, str]], span: int, legend: list[tuple[str, str]]
) -> list[str]:
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect fill="{PAPER}" stroke="{FAINT}" x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}"/>',
    ]
    for y, label in y_labels:
        parts.append(f'<line stroke="{FAINT}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text {TEXT} x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    marks = 6
    for i in range(marks + 1):
        x = LEFT + inner_w * i / marks
        ago = span * (1 - i / marks)
        text = "now" if ago == 0 else (f"-{ago / 60:.0f}m" if span <= 3600 else f"-{ago / 3600:.0f}h")
        parts.append(f'<text {TEXT} x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">{text}</text>')
    x = LEFT + 6
    for key, name in legend:
        parts.append(f'<rect fill="{COLOURS[key]}" x="{x}" y="{TOP + 4}" width="10" height="10"/>')
        parts.append(f'<text {TEXT} x="{x + 14}" y="{TOP + 13}">{escape(name)}</text>')
        x += 14 + 8 * len(name) + 12
    return parts


def throughput_svg(attempts: Iterable[EndedAttempt], now: float, range_name: str) -> str:
    span, step = RANGES[range_name]
    per = buckets(attempts, now, span, step)
    counts = [[sum(1 for a in bucket if a.outcome == o) for o in OUTCOMES] for bucket in per]
    top = max([sum(c) for c in counts] + [1])
    scale = _nice(top)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    y_labels = [(TOP + inner_h * (1 - f), _count(scale * f)) for f in (0, 0.5, 1)]
    unit = "minute" if step == 60 else f"{step // 60} minutes"
    parts = _frame(
        f"Attempts ended per {unit}, by outcome, over the last {range_name}",
        y_labels,
        span,
        [(o, o) for o in OUTCOMES],
    )
    width = inner_w / len(per)
    for index, bucket_counts in enumerate(counts):
        y = TOP + inner_h
        for outcome, n in zip(OUTCOMES, bucket_counts, strict=True):
            if not n:
                continue
            h = inner_h * n / scale
            y -= h
            parts.append(
                f'<rect fill="{COLOURS[outcome]}" x="{LEFT + index * width + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(width - 1, 0.5):.1f}" height="{h:.1f}"><title>{n} {outcome}</title></rect>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def latency_svg(attempts: Iterable[EndedAttempt], now: float, range_name: str) -> str:
    span, step = RANGES[range_name]
    per = buckets(attempts, now, span, step)
    series = {
        "wait-p50": [quantile([a.waited for a in b if a.waited is not None], 0.5) for b in per],
        "wait-p95": [quantile([a.waited for a in b if a.waited is not None], 0.95) for b in per],
        "run-p50": [quantile([a.ran for a in b], 0.5) for b in per],
        "run-p95": [quantile([a.ran for a in b], 0.95) for b in per],
    }
    values = [v for line in series.values() for v in line if v is not None]
    low = math.floor(math.log10(max(min(values, default=0.001), 0.0001)))
    high = max(math.ceil(math.log10(max(max(values, default=1), 0.001))), low + 1)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(value: float) -> float:
        fraction = (math.log10(max(value, 10.0**low)) - low) / (high - low)
        return TOP + inner_h * (1 - fraction)

    y_labels = [(y_of(10.0**e), _seconds(10.0**e)) for e in range(low, high + 1)]
    parts = _frame(
        f"Wait and run time (median, 95th percentile) over the last {range_name}",
        y_labels,
        span,
        [(name, name.replace("-", " ")) for name in series],
    )
    width = inner_w / len(per)
    for name, line in series.items():
        points = [
            f"{LEFT + (i + 0.5) * width:.1f},{y_of(v):.1f}" for i, v in enumerate(line) if v is not None
        ]
        for point in points:  # a lone point draws no line
            x, y = point.split(",")
            parts.append(f'<circle fill="{COLOURS[name]}" cx="{x}" cy="{y}" r="2.5"/>')
        if len(points) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{COLOURS[name]}" stroke-width="2" '
                f'points="{" ".join(points)}"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _nice(top: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `top`."""
    power = 10 ** math.floor(math.log10(top))
    for factor in (1, 2, 5, 10):
        if factor * power >= top:
            return factor * power
    return 10 * power


def _count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:g}ms"
    if value < 60:
        return f"{value:g}s"
    if value < 3600:
        return f"{value / 60:g}m"
    return f"{value / 3600:g}h"
