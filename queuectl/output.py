"""What queuectl prints: tables and blocks for people, JSON for programs.

Pure functions from protocol Structs to text, with `now`, the width and colour
passed in, so that they are tested without a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from queued.durations import format_duration, format_duration_exact
from queued.lifecycle import (
    CANCELED,
    COMPLETED,
    DEAD,
    EDITABLE_STATES,
    FAILED,
    HELD,
    PENDING,
    RUNNING,
    TERMINAL_STATES,
    UNFINISHED_STATES,
)
from queued.protocol import Job, JobDetail, NodeInfo, QueueInfo, Resources, Run, Status, Workers

_STATE_COLOURS = {
    PENDING: "cyan",
    HELD: "white",
    RUNNING: "blue",
    COMPLETED: "green",
    FAILED: "yellow",
    DEAD: "red",
    CANCELED: "magenta",
}
_BOLD_STATES = (FAILED, DEAD)  # a failure to look at: awaiting its retry, or out of them
_TIME_FIELDS = ("run_at", "created_at", "updated_at", "started_at", "ended_at")


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


UNLIMITED = 1 << 30  # the width of a pipe: nothing is cut


def terminal_width(stream: Any = None) -> int:
    """The terminal's width; off a terminal (a pipe, a file) nothing is cut."""
    stream = stream or sys.stdout
    if hasattr(stream, "isatty") and stream.isatty():
        import shutil

        return shutil.get_terminal_size((120, 24)).columns
    return UNLIMITED


def paint(text: str, state: str, colour: bool) -> str:
    if not colour or state not in _STATE_COLOURS:
        return text
    import click

    return click.style(text, fg=_STATE_COLOURS[state], bold=state in _BOLD_STATES)


def relative(when: float | None, now: float) -> str:
    """ "3m ago", "in 20s", "now": whole seconds, in format_duration's style."""
    if when is None:
        return "-"
    delta = when - now
    seconds = round(abs(delta))
    if seconds < 1:
        return "now"
    amount = format_duration(seconds)
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


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal: CJK and most emoji take two, combining
    marks and zero-width characters none (what wcwidth says, near enough)."""
    if text.isascii():
        return len(text)
    import unicodedata

    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def ellipsize(text: str, width: int) -> str:
    text = " ".join(text.split())  # a multi-line command stays on one table row
    if width <= 0:
        return ""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += display_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def pad(text: str, width: int) -> str:
    """`text` and spaces to `width` columns (colour codes and wide characters measured right)."""
    return text + " " * (width - display_width(_plain(text)))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int, colour_of=None) -> str:
    """Columns padded to their widest cell; the last column is cut to fit `width`."""
    columns = list(zip(headers, *rows, strict=True)) if rows else [(h,) for h in headers]
    widths = [max(display_width(_plain(cell)) for cell in column) for column in columns[:-1]]
    lead = sum(widths) + 2 * len(widths)
    last = max(width - lead, 12)
    lines = []
    for row in [headers, *rows]:
        cells = [pad(cell, w) for cell, w in zip(row[:-1], widths, strict=True)]
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


def _when(job: Job, now: float) -> str:
    """When a job runs next (a waiting one: what it waits for), or last changed."""
    if job.state in EDITABLE_STATES:  # it has not started: when it runs is ahead
        if job.waiting_on:
            return "after " + ",".join(map(str, job.waiting_on))
        return relative(job.run_at, now)
    return relative(job.updated_at, now)


def _duration(job: Job, now: float) -> str:
    if job.started_at is None:
        return "-"
    return format_duration((job.ended_at if job.ended_at is not None else now) - job.started_at)


# name -> (header, cell); `ls --columns` picks among them.
JOB_COLUMNS: dict[str, tuple[str, Callable[[Job, float], str]]] = {
    "id": ("ID", lambda job, now: str(job.id)),
    "state": ("STATE", lambda job, now: state_text(job)),
    "queue": ("QUEUE", lambda job, now: job.queue),
    "priority": ("PRI", lambda job, now: str(job.priority)),
    "tries": ("TRIES", lambda job, now: f"{job.attempts}/{job.max_retries + 1}"),
    "exit": ("EXIT", lambda job, now: "-" if job.exit_code is None else str(job.exit_code)),
    "when": ("WHEN", _when),
    "started": ("STARTED", lambda job, now: relative(job.started_at, now)),
    "ended": ("ENDED", lambda job, now: relative(job.ended_at, now)),
    "duration": ("DURATION", _duration),
    "label": ("LABEL", lambda job, now: job.label or ""),
    "key": ("KEY", lambda job, now: job.unique_key or ""),
    "node": ("NODE", lambda job, now: job.node or (f"({job.pinned})" if job.pinned else "-")),
    "needs": ("NEEDS", lambda job, now: needs_text(job, compact=True) or "-"),
    "command": ("COMMAND", lambda job, now: job.command),
}
DEFAULT_JOB_COLUMNS = ("id", "state", "queue", "priority", "tries", "exit", "when", "label", "command")


def default_columns(jobs: Sequence[Job]) -> tuple[str, ...]:
    """The default columns, with NODE (before LABEL) once the jobs listed
    ran on, or are pinned to, more than one node: a cluster's listing; and
    NEEDS (before LABEL) once one of them needs more than a slot: what a
    running job holds (its GPUs by index), what a waiting one waits for."""
    columns = DEFAULT_JOB_COLUMNS
    at = columns.index("label")
    if any(job.slots != 1 or job.needs for job in jobs):
        columns = (*columns[:at], "needs", *columns[at:])
    nodes = {job.node for job in jobs if job.node} | {job.pinned for job in jobs if job.pinned}
    if len(nodes) > 1:
        columns = (*columns[:at], "node", *columns[at:])
    return columns


def needs_text(job: Job, *, compact: bool = False) -> str:
    """What a job takes of a node: "2 slots, gpu=1, licence=1"; a running
    job's GPUs by index. Empty for a job of one slot needing nothing.
    `compact` (a column of `ls`): "2sl gpu:0,1 licence=1", a running job's
    GPUs by index."""
    parts = []
    if job.slots != 1:
        parts.append(f"{job.slots}sl" if compact else f"{job.slots} slots")
    for name, count in job.needs.items():
        if compact and name == "gpu" and job.gpus and job.state == RUNNING:
            parts.append("gpu:" + ",".join(map(str, job.gpus)))
        else:
            parts.append(f"{name}={count}")
    return (" " if compact else ", ").join(parts)


def parse_columns(text: str) -> tuple[str, ...]:
    """`id,state,command` -> the column names, or ValueError naming the unknown one."""
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    for name in names:
        if name not in JOB_COLUMNS:
            raise ValueError(f"no column {name!r}; choose from {','.join(JOB_COLUMNS)}")
    if not names:
        raise ValueError(f"name at least one column of {','.join(JOB_COLUMNS)}")
    return names


def job_table(
    jobs: Sequence[Job],
    *,
    now: float,
    width: int,
    colour: bool,
    columns: Sequence[str] = DEFAULT_JOB_COLUMNS,
) -> str:
    """A row per job; the last column (the command by default) is cut to fit."""
    rows = []
    for job in jobs:
        row = [JOB_COLUMNS[name][1](job, now) for name in columns]
        if "state" in columns:
            at = columns.index("state")
            row[at] = paint(row[at], job.state, colour)
        rows.append(row)
    return table([JOB_COLUMNS[name][0] for name in columns], rows, width=width)


def run_result(run: Run) -> str:
    if run.ended_at is None:
        return "running"
    if run.error:
        return run.error
    if run.signal is not None:
        return f"killed by signal {run.signal}"
    return f"exit {run.exit_code}"


def _indented(text: str, indent: str) -> str:
    """A multi-line value under its label: later lines start where the first did."""
    return text.replace("\n", "\n" + indent)


def _holding(job: Job) -> str:
    """Which GPUs a running job holds, after what it needs."""
    if job.state != RUNNING or not job.gpus:
        return ""
    return f" (holds GPU {','.join(map(str, job.gpus))})"


def job_block(detail: JobDetail, *, now: float, width: int, colour: bool) -> str:
    job = detail.job
    timeout = format_duration_exact(job.timeout) if job.timeout else "none"
    earlier = max(0, len(detail.runs) - job.attempts)  # runs before a retry reset the count
    attempts = f"{job.attempts} of {job.max_retries + 1}"
    if earlier > 0:
        attempts += f" since it was retried ({len(detail.runs)} runs in all)"
    depends = ", ".join(map(str, job.depends_on)) or "-"
    if job.waiting_on:
        depends += f" (waiting for {', '.join(map(str, job.waiting_on))})"
    indent = " " * 15
    lines = [
        f"job {job.id}: {paint(state_text(job), job.state, colour)}",
        f"  command:     {_indented(job.command, indent)}",
        f"  queue:       {job.queue} (priority {job.priority})",
        f"  label:       {job.label or '-'}",
        *([f"  unique key:  {job.unique_key}"] if job.unique_key else []),
        f"  attempts:    {attempts} (backoff base {job.backoff_base:g}, timeout {timeout})",
        f"  exit code:   {'-' if job.exit_code is None else job.exit_code}",
        f"  error:       {_indented(job.error or '-', indent)}",
        f"  depends on:  {depends}",
        *([f"  pinned to:   node {job.pinned}"] if job.pinned else []),
        *([f"  needs:       {needs_text(job)}{_holding(job)}"] if job.slots != 1 or job.needs else []),
        f"  cwd:         {job.cwd}",
        f"  created:     {absolute(job.created_at)} ({relative(job.created_at, now)})",
        f"  updated:     {absolute(job.updated_at)} ({relative(job.updated_at, now)})",
    ]
    if job.state in EDITABLE_STATES:  # it has not started: when it runs is ahead
        lines.append(f"  runs at:     {absolute(job.run_at)} ({relative(job.run_at, now)})")
    if detail.runs:
        rows = []
        for index, run in enumerate(detail.runs):
            end = run.ended_at if run.ended_at is not None else now
            # ATTEMPT counts as "attempts: N of M" does: within the current round.
            attempt = "-" if index < earlier else f"{index - earlier + 1}/{job.max_retries + 1}"
            rows.append(
                [
                    str(run.attempt),
                    attempt,
                    run.node or "-",
                    str(run.pid or "-"),
                    absolute(run.started_at),
                    format_duration(end - run.started_at),
                    run_result(run),
                ]
            )
        headers = ["RUN", "ATTEMPT", "NODE", "PID", "STARTED", "DURATION", "RESULT"]
        if any(run.gpus for run in detail.runs):  # the GPUs each attempt held
            headers.insert(4, "GPUS")
            for row, run in zip(rows, detail.runs, strict=True):
                row.insert(4, ",".join(map(str, run.gpus)) or "-")
        if not any(run.node for run in detail.runs):  # recorded before nodes had names
            headers.remove("NODE")
            rows = [row[:2] + row[3:] for row in rows]
        lines += ["", table(headers, rows, width=width)]
        if earlier > 0:
            lines.append(f"(runs 1-{earlier} came before the retry that reset the attempts)")
        for run in detail.runs:
            if run.log_incomplete:
                lines.append(f"run {run.attempt}'s log is incomplete: {run.log_incomplete}")
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


_COUNTED_STATES = UNFINISHED_STATES + TERMINAL_STATES  # the unfinished first, then the finished


def status_block(status: Status, *, now: float) -> str:
    """The words of `status --json`: each state by its name (`failed` is a job
    awaiting its retry; `dead` used up its retries)."""
    counts = status.counts
    state_line = "  ".join(f"{state} {counts.get(state, 0)}" for state in _COUNTED_STATES)
    if status.store_unreachable_since is not None:
        state_line = "unknown while the job store is unreachable"
    slots = f"{status.running} of {status.concurrency} in use"
    this = status.resources.get(status.node)
    if this is not None and this.slots_used != status.running:  # jobs of more than one slot
        jobs = f"{status.running} job" + ("" if status.running == 1 else "s")
        slots = f"{this.slots_used} of {status.concurrency} in use ({jobs})"
    if status.concurrency == 0:
        slots += " (no job starts: `queuectl workers scale N` to start again)"
    lines = [
        f"queued {status.version} (pid {status.pid}), up {format_duration(round(now - status.started_at))}"
        + ("" if status.accepting else ", shutting down"),
        f"  slots:   {slots}",
        f"  jobs:    {state_line}",
        f"  socket:  {status.socket}",
        f"  data:    {status.data_dir}",
        *([f"  web:     {status.web}"] if status.web else []),
        *([f"  node:    {status.node}"] if status.node else []),
        *(["", queue_table(status.queues)] if status.store_unreachable_since is None else []),
    ]
    lines[2:2] = resources_lines(status)  # after the slots
    lines[1:1] = [f"  problem: {problem}" for problem in status.problems]
    if any(node.last_heartbeat is not None for node in status.nodes):
        lines += ["", node_table(status.nodes, now=now)]
    return "\n".join(lines)


def resources_lines(status: Status) -> list[str]:
    """`status`'s lines on resources, once a node has GPUs or counted
    resources: each one's use and capacity (and which GPUs are held), per
    node when several share the store."""
    found = status.resources
    if not any(have.counts or have.gpus for have in found.values()):
        return []
    if len(found) == 1:
        [have] = found.values()
        return [f"  resources: {resource_text(have, slots=False)}"]
    width = max(map(len, found))
    lines = [f"    {pad(name, width)}  {resource_text(have)}" for name, have in found.items()]
    return ["  resources:", *lines]


def resource_text(have: Resources, *, slots: bool = True) -> str:
    """One node's resources: "slots 3/4, gpu 1/2 (held: 1), licence 0/1"."""
    parts = [f"slots {have.slots_used}/{have.slots}"] if slots else []
    if have.gpus:
        held = f" (held: {','.join(map(str, have.gpus_used))})" if have.gpus_used else ""
        parts.append(f"gpu {len(have.gpus_used)}/{len(have.gpus)}{held}")
    parts += [f"{name} {have.counts_used.get(name, 0)}/{count}" for name, count in have.counts.items()]
    return ", ".join(parts) or "-"


def node_table(nodes: Sequence[NodeInfo], *, now: float) -> str:
    """The nodes sharing the store: name, slots, running, queues, last heartbeat, alive or lost."""
    rows = [
        [
            node.name + (" *" if node.this else ""),
            str(node.slots),
            str(node.running),
            ",".join(node.queues) if node.queues is not None else "all",
            relative(node.last_heartbeat, now) if node.last_heartbeat is not None else "-",
            node.state,
            f"{node.host} pid {node.pid}" if node.pid else node.host,
        ]
        for node in nodes
    ]
    return table(["NODE", "SLOTS", "RUNNING", "QUEUES", "HEARTBEAT", "STATE", "WHERE"], rows, width=UNLIMITED)


def queue_table(queues: Sequence[QueueInfo]) -> str:
    rows = [
        [
            q.name,
            "-" if q.concurrency is None else str(q.concurrency),
            "paused" if q.paused else "active",
            str(q.pending),
            str(q.held),
            str(q.running),
            str(q.failed),
        ]
        for q in queues
    ]
    return table(["QUEUE", "LIMIT", "STATUS", "PENDING", "HELD", "RUNNING", "FAILED"], rows, width=UNLIMITED)


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
