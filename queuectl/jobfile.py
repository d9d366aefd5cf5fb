"""Reading jobs written by people: `add --from` lines and `enqueue` JSON.

A line is either a shell command, or a JSON object with the fields of `add`'s
options (`{"command": "./x.sh", "max_retries": 5, "timeout": "10m"}`; `--unique`
is "unique_key", `--unique-for` "unique_for", `--needs gpu=1` "needs":
{"gpu": 1}, `--slots 2` "slots": 2). Options given on the command
line are the defaults every line starts from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from queued.durations import parse_duration
from queued.protocol import MAX_MOMENT, JobSpec
from queued.validation import check_needs, check_slots

Number = int | float


class JobLine(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The JSON form: like JobSpec, but durations may be "5m" and run_at an ISO time."""

    command: str
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    backoff_base: Number | None = None
    timeout: Number | str | None = None
    delay: Number | str | None = None
    run_at: Number | str | None = None
    at: str | None = None
    after: list[int] | None = None
    label: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    id: str | int | None = None  # the seeds' job name: kept as the label
    unique_key: str | None = None
    unique_for: Number | str | None = None
    # Checked below, so that a wrong one is told in the words of --needs and --slots.
    slots: Any = None
    needs: Any = None


class JobFileError(ValueError):
    """A line that is not a job; the message names the line."""


_decoder = msgspec.json.Decoder(JobLine)
# A \uD800-\uDFFF escape without its other half: JSON allows it, text cannot hold it.
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def parse_time(text: str) -> float:
    """Unix seconds from an ISO 8601 time; a time without a zone is local time.
    A time before 1970 is 0: like any time in the past, it means "now"."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use ISO 8601 with a year up to 9999, e.g. 2026-12-01T09:30"
        ) from None
    try:
        seconds = moment.timestamp()
    except (OverflowError, OSError, ValueError):  # the first days of year 1, say
        return 0.0
    if seconds > MAX_MOMENT:
        raise ValueError(f"{text!r} is after the year 9999, the last that queued keeps")
    return max(seconds, 0.0)


def _seconds(value: Number | str | None) -> float | None:
    if value is None:
        return None
    return parse_duration(value) if isinstance(value, str) else float(value)


def spec_from_json(text: str, defaults: JobSpec) -> JobSpec:
    """A JobSpec from one JSON object, over `defaults`. Raises ValueError with the reason."""
    try:
        line = _decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    except msgspec.DecodeError as exc:
        lone = _LONE_SURROGATE.search(text)
        if lone:  # msgspec calls a lone high one "truncated" input
            raise ValueError(
                f"not valid JSON: {lone.group()} is half of a UTF-16 surrogate pair, not a character"
            ) from None
        raise ValueError(f"not valid JSON ({exc})") from None
    fields = {f: getattr(line, f) for f in line.__struct_fields__ if getattr(line, f) is not None}
    job_name = fields.pop("id", None)
    if "label" not in fields and job_name is not None:
        fields["label"] = str(job_name)
    at = fields.pop("at", None)
    if at is not None:
        fields["run_at"] = at
    for key in ("timeout", "delay", "unique_for"):
        if key in fields:
            fields[key] = _seconds(fields[key])
    if isinstance(fields.get("run_at"), str):
        fields["run_at"] = parse_time(fields["run_at"])
    if "slots" in fields:
        check_slots(fields["slots"])
    if "needs" in fields:
        check_needs(fields["needs"])
    if "env" in fields:
        fields["env"] = {**defaults.env, **fields["env"]}
    merged = {f: getattr(defaults, f) for f in defaults.__struct_fields__}
    merged.update(fields)
    try:
        return msgspec.convert(merged, JobSpec)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None


def specs_from_lines(lines: Iterable[str], defaults: JobSpec) -> list[JobSpec]:
    """Every job in a job file; blank lines and `#` comments are skipped."""
    return numbered_specs(lines, defaults)[0]


def numbered_specs(lines: Iterable[str], defaults: JobSpec) -> tuple[list[JobSpec], list[int]]:
    """Every job in a job file, and the number of the line of each."""
    specs: list[JobSpec] = []
    numbers: list[int] = []
    replace = msgspec.structs.replace
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        try:
            if line[0] == "{":
                specs.append(spec_from_json(line, defaults))
            else:
                specs.append(replace(defaults, command=line))
        except (ValueError, msgspec.ValidationError) as exc:
            raise JobFileError(f"line {number}: {exc}") from None
        numbers.append(number)
    return specs, numbers
