"""From the web's URLs and JSON bodies to the protocol's requests, and back:
pure functions, so that the filters a URL carries, the actions a page posts
and what an answer may show (environment keys, never values) are tested
without a server.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from queued import lifecycle
from queued import protocol as p

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_BULK = 100_000  # jobs one bulk action may name
FILTER_KEYS = ("state", "queue", "label", "command", "since", "until")


class BadRequest(ValueError):
    """A query or body the web refuses, in the user's words (HTTP 400)."""


Query = Mapping[str, Sequence[str]]


def _one(query: Query, key: str) -> str | None:
    values = query.get(key) or []
    value = values[-1].strip() if values else ""
    return value or None


def parse_time(text: str, name: str) -> float:
    """Unix seconds, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a time (2026-01-31, 2026-01-31T12:00 or Unix seconds)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def filters(query: Query) -> dict[str, Any]:
    """The job filters of a URL query, as Store.list_jobs's keywords:
    `state` (repeated or comma separated), `queue`, `label`, `command` (part
    of the command), `since` and `until` (when the job was added)."""
    states: list[str] = []
    for value in query.get("state", []):
        states += [s.strip() for s in value.split(",") if s.strip()]
    for state in states:
        if state not in lifecycle.STATES:
            raise BadRequest(f"unknown state {state!r}: use {', '.join(lifecycle.STATES)}")
    found: dict[str, Any] = {"states": sorted(set(states), key=lifecycle.STATES.index)}
    for key in ("queue", "label", "command"):
        found[key] = _one(query, key)
    since, until = _one(query, "since"), _one(query, "until")
    found["created_after"] = parse_time(since, "since") if since else None
    found["created_before"] = parse_time(until, "until") if until else None
    return found


def list_request(query: Query) -> p.ListJobs:
    """GET /api/jobs's query as the socket's ListJobs: the filters, `before`
    (the page below that id) and `limit` (PAGE_SIZE by default)."""
    fields = filters(query)
    limit_text, before_text = _one(query, "limit"), _one(query, "before")
    limit = PAGE_SIZE
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE_SIZE:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
        limit = int(limit_text)
    before = None
    if before_text is not None:
        if not before_text.isdigit():
            raise BadRequest("before must be a job id")
        before = int(before_text)
    try:
        return msgspec.convert({**fields, "limit": limit, "before": before}, p.ListJobs)
    except msgspec.ValidationError as exc:
        raise BadRequest(p.explain(exc)) from None


def filter_from_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A bulk action's `filter` (the same keys as the URL's) as list_jobs's keywords."""
    raw = body.get("filter")
    if not isinstance(raw, dict):
        raise BadRequest("name the jobs: `ids`, or a `filter` with the page's filters")
    query: dict[str, list[str]] = {}
    for key, value in raw.items():
        if key not in FILTER_KEYS:
            raise BadRequest(f"unknown filter {key!r}: use {', '.join(FILTER_KEYS)}")
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) for v in values):
            raise BadRequest(f"filter {key} must be text")
        query[key] = [str(v) for v in values]
    found = filters(query)
    try:
        msgspec.convert({k: v for k, v in found.items() if k != "created_before"}, p.ListJobs)
    except msgspec.ValidationError as exc:
        raise BadRequest(p.explain(exc)) from None
    return found


def job_ids(body: Mapping[str, Any]) -> list[int] | None:
    """The `ids` of an action's body, or None when it names a filter instead."""
    ids = body.get("ids")
    if ids is None:
        return None
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= p.MAX_JOB_ID for i in ids)
    ):
        raise BadRequest("ids must be a non-empty list of job ids")
    if len(ids) > MAX_BULK:
        raise BadRequest(f"at most {MAX_BULK:,} jobs at once")
    return sorted(set(ids))


def expected_count(body: Mapping[str, Any]) -> int:
    """The count the user confirmed for a bulk action by filter."""
    expect = body.get("expect")
    if not isinstance(expect, int) or isinstance(expect, bool) or expect < 0:
        raise BadRequest("a bulk action carries `expect`: the number of jobs the user confirmed")
    return expect


def action_request(name: str, body: Mapping[str, Any], ids: list[int] | None) -> p.Request:
    """The protocol request an action posts (`ids` resolved from a filter
    already where the action takes one)."""
    try:
        if name == "cancel":
            if not ids:
                raise BadRequest("no job matches: nothing to cancel")
            return p.CancelJobs(ids=ids)
        if name == "retry":
            if body.get("all_dead") is True:
                return p.RetryJobs(all_dead=True)
            if not ids:
                raise BadRequest("no job matches: nothing to retry")
            return p.RetryJobs(ids=ids)
        if name == "purge-dead":
            return p.CleanJobs(states=["dead"])
        if name == "queue-pause":
            return msgspec.convert(
                {"name": body.get("queue"), "paused": body.get("paused", True)}, p.PauseQueue
            )
        if name == "queue-concurrency":
            if "concurrency" not in body:
                raise BadRequest("name the queue's concurrency: a number from 1, or null for no limit")
            return msgspec.convert(
                {"name": body.get("queue"), "concurrency": body["concurrency"]}, p.SetQueueConcurrency
            )
        if name == "scale":
            return msgspec.convert({"concurrency": body.get("concurrency")}, p.ScaleWorkers)
    except msgspec.ValidationError as exc:
        raise BadRequest(p.explain(exc)) from None
    raise BadRequest(f"unknown action {name!r}: use {', '.join(ACTIONS)}")


ACTIONS = ("cancel", "retry", "purge-dead", "queue-pause", "queue-concurrency", "scale")
ACTIONS_BY_FILTER = ("cancel", "retry")


def job_detail(detail: p.JobDetail, dependents: list[int]) -> dict[str, Any]:
    """A job for the page: its environment's names only (values can hold
    secrets, and the page never needs them), its dependents beside its dependencies."""
    return {
        "job": detail.job,
        "runs": detail.runs,
        "env_keys": sorted(detail.env),
        "dependents": dependents,
    }


HTTP_STATUS = {
    "bad_request": 400,
    "invalid": 409,
    "not_found": 404,
    "forbidden": 403,
    "too_large": 413,
    "shutting_down": 503,
    "storage": 503,
    "version": 400,
    "internal": 500,
}


def status_of(response: p.Response) -> int:
    return HTTP_STATUS.get(response.code, 400) if isinstance(response, p.Error) else 200
