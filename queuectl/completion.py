"""Shell completion (click's own mechanism) with job ids and queue names asked
of the daemon. A daemon that is down completes nothing rather than failing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from queued.lifecycle import TERMINAL_STATES

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_QUEUECTL_COMPLETE"
MAX_ITEMS = 200


def _client(ctx: click.Context):  # type: ignore[no-untyped-def]
    from .client import Client

    params = ctx.find_root().params
    # The same rule as every command: an untrusted listener is sent nothing.
    return Client(params.get("socket"), timeout=2.0, trust_uids=params.get("trust_uids") or None)


LATEST = "last"  # a job id's stand-in for the most recently added job (`tsp -d`)


class JobIdType(click.IntRange):
    """A job id, or `last` for the most recently added job; completes to the
    newest jobs in `states` (all states by default)."""

    name = "id"

    def __init__(self, states: Sequence[str] = ()) -> None:
        super().__init__(min=1)
        self.states = tuple(states)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == LATEST:
            return latest_job_id(ctx)
        return super().convert(value, param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem  # only when completing

        try:
            with _client(ctx) as client:
                jobs = client.list(states=self.states, limit=MAX_ITEMS)
        except Exception:
            return []
        items = [
            CompletionItem(str(job.id), help=f"{job.state}: {job.command[:60]}")
            for job in reversed(jobs)
            if str(job.id).startswith(incomplete)
        ]
        if not self.states and LATEST.startswith(incomplete):  # it may name a job of any state
            items.append(CompletionItem(LATEST, help="the most recently added job"))
        return items


class QueueNameType(click.ParamType):
    name = "queue"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        try:
            with _client(ctx) as client:
                queues = client.queues()
        except Exception:
            return []
        return [CompletionItem(q.name) for q in queues if q.name.startswith(incomplete)]


class UniqueKeyType(click.ParamType):
    """A unique key (`add --unique`); completes to the keys of the newest jobs
    that have one, the unfinished ones first (those an add would find)."""

    name = "key"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from queued.validation import check_unique_key

        try:
            check_unique_key(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        try:
            with _client(ctx) as client:
                jobs = client.list(limit=MAX_ITEMS)
        except Exception:
            return []
        keys: dict[str, str] = {}
        for job in sorted(reversed(jobs), key=lambda job: job.state in TERMINAL_STATES):
            if job.unique_key and job.unique_key.startswith(incomplete):
                keys.setdefault(job.unique_key, f"job {job.id}, {job.state}")
        return [CompletionItem(key, help=where) for key, where in keys.items()]


class NodeNameType(click.ParamType):
    """A node's name, completed from `status` (the nodes sharing the store)."""

    name = "node"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        try:
            with _client(ctx) as client:
                nodes = client.status().nodes
        except Exception:
            return []
        return [CompletionItem(n.name, help=n.state) for n in nodes if n.name.startswith(incomplete)]


class NeedsType(click.ParamType):
    """A job's needs, `gpu=1,licence=1` (resources.parse_needs); completes
    to the resources the nodes have (`status`), each with a count of 1.
    `allow_none`: "none" (or "") is no needs at all (`edit --needs none`)."""

    name = "needs"

    def __init__(self, allow_none: bool = False) -> None:
        self.allow_none = allow_none

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from queued.resources import parse_needs

        if isinstance(value, dict):
            return value
        if self.allow_none and value.strip().lower() in ("", "none"):
            return {}
        try:
            return parse_needs(value)
        except ValueError as exc:
            self.fail(str(exc).replace("--needs ", "").replace("invalid --needs", "invalid"), param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        done, comma, last = incomplete.rpartition(",")
        try:
            with _client(ctx) as client:
                resources = client.status().resources
        except Exception:
            return []
        names: dict[str, str] = {}
        for node, have in sorted(resources.items()):
            if have.gpus:
                names.setdefault("gpu", f"{len(have.gpus)} on {node}")
            for name, count in sorted(have.counts.items()):
                names.setdefault(name, f"{count} on {node}")
        given = {item.partition("=")[0] for item in done.split(",")} if comma else set()
        return [
            CompletionItem(f"{done}{comma}{name}=1", help=f"{where}")
            for name, where in names.items()
            if name.startswith(last) and name not in given
        ]


class ScheduleNameType(click.ParamType):
    name = "schedule"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        try:
            with _client(ctx) as client:
                found = client.schedules()
        except Exception:
            return []
        return [
            CompletionItem(s.name, help=f"{s.expression}: {s.command[:60]}")
            for s in found
            if s.name.startswith(incomplete)
        ]


def latest_job_id(ctx: click.Context | None) -> int:
    """The id of the most recently added job, asked of the daemon (exit 1 if there is none)."""
    from .client import Client, DaemonError

    client = ctx.find_object(Client) if ctx is not None else None
    if client is None:
        client = _client(ctx) if ctx is not None else Client()
    jobs = client.list(limit=1)
    if not jobs:
        raise DaemonError("not_found", "there are no jobs yet")
    return jobs[0].id


def completion_script(cli: click.Command, shell: str) -> str:
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    return cls(cli, {}, "queuectl", COMPLETE_VAR).source()
