"""What queuectl prints: tables and blocks for people, JSON for programs.

Pure functions from protocol Structs to text, with `now`, the width and colour
passed in, so that they are tested without a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from queued.durations import format_duration
from queued.protocol import Job, JobDetail, QueueInfo, Run, Status, Workers

_STATE_COLOURS = {
    "pending": "cyan",
    "held": "white",
    "running": "blue",
    "completed": "green",
    "failed": "yellow",
    "dead": "red",
    "canceled": "magenta",
}
_TIME_FIELDS = ("run_at", "created_at", "updated_at", "started_at", "ended_at")


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def terminal_width(stream: Any = None) -> int:
    """The terminal's width; COLUMNS or 120 when not a terminal (pipes are not cut short)."""
    stream = stream or sys.stdout
    if hasattr(stream, "isatty") and stream.isatty():
        import shutil

        return shutil.get_terminal_size((120, 24)).columns
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 20 else 120


def paint(text: str, state: str, colour: bool) -> str:
    if not colour or state not in _STATE_COLOURS:
        return text
    import click

    return click.style(text, fg=_STATE_COLOURS[state], bold=state in ("dead", "failed"))


def relative(when: float | None, now: float) -> str:
    """ "3 min ago", "in 20 s", "now"."""
    if when is None:
        return "-"
    delta = when - now
    seconds = abs(delta)
    if seconds < 1:
        return "now"
    if seconds < 60:
        amount = f"{seconds:.0f} s"
    elif seconds < 3600:
        amount = f"{seconds / 60:.0f} min"
    elif seconds < 86400:
        amount = f"{seconds / 3600:.0f} h"
    else:
        amount = f"{seconds / 86400:.0f} d"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def absolute(when: float | None) -> str:
    """Local time, to the second: for people reading `show`."""
    if when is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def iso(when: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds, for JSON."""
    if when is None:
        return None
    seconds = int(when)
    millis = round((when - seconds) * 1000)
    if millis == 1000:
        seconds, millis = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def ellipsize(text: str, width: int) -> str:
    text = " ".join(text.split())  # a multi-line command stays on one table row
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int, colour_of=None) -> str:
    """Columns padded to their widest cell; the last column is cut to fit `width`."""
    columns = list(zip(headers, *rows, strict=True)) if rows else [(h,) for h in headers]
    widths = [max(len(_plain(cell)) for cell in column) for column in columns[:-1]]
    lead = sum(widths) + 2 * len(widths)
    last = max(width - lead, 12)
    lines = []
    for row in [headers, *rows]:
        cells = [cell + " " * (w - len(_plain(cell))) for cell, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, ellipsize(row[-1], last)]).rstrip())
    return "\n".join(lines)


def _plain(text: str) -> str:
    """Text without ANSI colour codes, for measuring."""
    if "\x1b" not in text:
        return text
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def state_text(job: Job) -> str:
    """A job's state as people read it: a paused running job says so."""
    return "running (paused)" if job.paused else job.state


def job_table(jobs: Sequence[Job], *, now: float, width: int, colour: bool) -> str:
    rows = []
    for job in jobs:
        when = job.run_at if job.state in ("pending", "held", "failed") else job.updated_at
        rows.append(
            [
                str(job.id),
                paint(state_text(job), job.state, colour),
                job.queue,
                str(job.priority),
                f"{job.attempts}/{job.max_retries + 1}",
                "-" if job.exit_code is None else str(job.exit_code),
                relative(when, now),
                job.label or "",
                job.command,
            ]
        )
    return table(
        ["ID", "STATE", "QUEUE", "PRI", "TRIES", "EXIT", "WHEN", "LABEL", "COMMAND"], rows, width=width
    )


def run_result(run: Run) -> str:
    if run.ended_at is None:
        return "running"
    if run.error:
        return run.error
    if run.signal is not None:
        return f"killed by signal {run.signal}"
    return f"exit {run.exit_code}"


def job_block(detail: JobDetail, *, now: float, width: int, colour: bool) -> str:
    job = detail.job
    timeout = format_duration(job.timeout) if job.timeout else "none"
    lines = [
        f"job {job.id}: {paint(state_text(job), job.state, colour)}",
        f"  command:     {job.command}",
        f"  queue:       {job.queue} (priority {job.priority})",
        f"  label:       {job.label or '-'}",
        f"  attempts:    {job.attempts} of {job.max_retries + 1} "
        f"(backoff base {job.backoff_base:g}, timeout {timeout})",
        f"  exit code:   {'-' if job.exit_code is None else job.exit_code}",
        f"  error:       {job.error or '-'}",
        f"  depends on:  {', '.join(map(str, job.depends_on)) or '-'}",
        f"  cwd:         {job.cwd}",
        f"  created:     {absolute(job.created_at)} ({relative(job.created_at, now)})",
        f"  updated:     {absolute(job.updated_at)} ({relative(job.updated_at, now)})",
    ]
    if job.state in ("pending", "held", "failed"):
        lines.append(f"  runs at:     {absolute(job.run_at)} ({relative(job.run_at, now)})")
    if detail.runs:
        rows = []
        for run in detail.runs:
            end = run.ended_at if run.ended_at is not None else now
            rows.append(
                [
                    str(run.attempt),
                    str(run.pid or "-"),
                    absolute(run.started_at),
                    format_duration(end - run.started_at),
                    run_result(run),
                ]
            )
        lines += ["", table(["ATTEMPT", "PID", "STARTED", "DURATION", "RESULT"], rows, width=width)]
    return "\n".join(lines)


def job_json(job: Job) -> dict[str, Any]:
    import msgspec

    data = msgspec.to_builtins(job)
    for key in _TIME_FIELDS:
        if key in data:
            data[key] = iso(data[key])
    return data


def detail_json(detail: JobDetail) -> dict[str, Any]:
    import msgspec

    data = job_json(detail.job)
    data["runs"] = []
    for run in detail.runs:
        item = msgspec.to_builtins(run)
        for key in _TIME_FIELDS:
            if key in item:
                item[key] = iso(item[key])
        data["runs"].append(item)
    data["env"] = detail.env
    return data


def status_json(status: Status) -> dict[str, Any]:
    import msgspec

    data = msgspec.to_builtins(status)
    data["started_at"] = iso(status.started_at)
    data["uptime"] = round(time.time() - status.started_at, 3)
    return data


def status_block(status: Status, *, now: float) -> str:
    counts = status.counts
    order = ("pending", "held", "running", "failed", "completed", "dead", "canceled")
    state_line = "  ".join(f"{state} {counts.get(state, 0)}" for state in order)
    lines = [
        f"queued {status.version} (pid {status.pid}), up {format_duration(now - status.started_at)}"
        + ("" if status.accepting else ", shutting down"),
        f"  slots:   {status.running} of {status.concurrency} in use",
        f"  jobs:    {state_line}",
        f"  socket:  {status.socket}",
        f"  data:    {status.data_dir}",
        "",
        queue_table(status.queues),
    ]
    lines[1:1] = [f"  problem: {problem}" for problem in status.problems]
    return "\n".join(lines)


def queue_table(queues: Sequence[QueueInfo]) -> str:
    rows = [
        [
            q.name,
            "-" if q.concurrency is None else str(q.concurrency),
            "paused" if q.paused else "active",
            str(q.running),
            str(q.pending),
        ]
        for q in queues
    ]
    return table(["QUEUE", "LIMIT", "STATUS", "RUNNING", "WAITING"], rows, width=10_000)


def workers_table(workers: Workers, *, now: float, width: int) -> str:
    rows = [
        [
            str(slot.job_id),
            str(slot.attempt),
            slot.queue,
            str(slot.pid or "-"),
            format_duration(now - slot.started_at) + (" (paused)" if slot.paused else ""),
            slot.command,
        ]
        for slot in workers.slots
    ]
    head = f"{len(workers.slots)} of {workers.concurrency} slots in use"
    if not rows:
        return head
    return head + "\n" + table(["JOB", "ATTEMPT", "QUEUE", "PID", "RUNNING", "COMMAND"], rows, width=width)
