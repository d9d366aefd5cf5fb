"""The click parameter types and options that queuectl's commands share.

Which jobs an id argument completes to is the lifecycle's word: a command that
sends an event takes the states that event applies to (`states_that_can`), so
that completion offers what the daemon would accept.
"""

from __future__ import annotations

from typing import Any

import click

from queued.durations import parse_duration
from queued.lifecycle import (
    DEAD,
    EDITABLE_STATES,
    RUNNING,
    STATES,
    TERMINAL_STATES,
    Event,
    states_that_can,
)
from queued.protocol import MAX_CONCURRENCY, MAX_RETRIES, MAX_SECONDS

from .completion import JobIdType, NeedsType, NodeNameType, QueueNameType, UniqueKeyType


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds > MAX_SECONDS:
            self.fail(f"{value!r} is longer than 10 years, the longest queued keeps", param, ctx)
        return seconds


class Moment(click.ParamType):
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from .jobfile import parse_time

        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
COUNT = click.IntRange(min=0, max=MAX_RETRIES)
COUNT_FROM_1 = click.IntRange(min=1, max=MAX_RETRIES + 1)
STATE = click.Choice(STATES)
FINISHED_STATE = click.Choice(sorted(TERMINAL_STATES))
QUEUE = QueueNameType()
SLOTS = click.IntRange(min=1, max=MAX_CONCURRENCY)  # a job's share of a node's slots (tsp -N)
NEEDS = NeedsType()
NEEDS_OR_NONE = NeedsType(allow_none=True)
UNIQUE_KEY = UniqueKeyType()
NODE = NodeNameType()

JOB_ID = JobIdType()
FINISHED_JOB = JobIdType(TERMINAL_STATES)
CANCELABLE_JOB = JobIdType(states_that_can(Event.CANCEL))
RETRYABLE_JOB = JobIdType(states_that_can(Event.RETRY))
DEAD_JOB = JobIdType((DEAD,))
HOLDABLE_JOB = JobIdType(states_that_can(Event.HOLD))
HELD_JOB = JobIdType(states_that_can(Event.RELEASE))
EDITABLE_JOB = JobIdType(EDITABLE_STATES)
RUNNING_JOB = JobIdType((RUNNING,))  # pause, resume and kill act on a running job's process group


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)
