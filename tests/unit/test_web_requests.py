"""URL queries and action bodies to the socket's requests (queued.web.requests)."""

from __future__ import annotations

import datetime

import msgspec
import pytest

from queued import protocol as p
from queued.web import requests as r


def test_filters_become_list_jobs() -> None:
    request = r.list_request(
        {"state": ["dead,failed", "held"], "queue": ["q1"], "label": ["nightly"], "command": ["backup"]}
    )
    assert request == p.ListJobs(
        states=["held", "failed", "dead"], queue="q1", label="nightly", command="backup", limit=r.PAGE_SIZE
    )


def test_pages_go_back_by_id() -> None:
    assert r.list_request({"before": ["120"], "limit": ["10"]}) == p.ListJobs(before=120, limit=10)


def test_times_are_iso_or_unix_seconds_in_utc() -> None:
    request = r.list_request({"since": ["2026-01-31"], "until": ["1800000000"]})
    assert request.created_after == datetime.datetime(2026, 1, 31, tzinfo=datetime.UTC).timestamp()
    assert request.created_before == 1800000000.0
    zoned = r.list_request({"since": ["2026-01-31T12:00+01:00"]})
    assert zoned.created_after == datetime.datetime(2026, 1, 31, 11, tzinfo=datetime.UTC).timestamp()


def test_empty_filters_are_no_filters() -> None:
    assert r.list_request({"queue": [""], "state": [""]}) == p.ListJobs(limit=r.PAGE_SIZE)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": ["done"]}, "unknown state 'done'"),
        ({"queue": ["no spaces"]}, "queue name"),
        ({"limit": ["0"]}, "limit must be"),
        ({"limit": ["5000"]}, "limit must be"),
        ({"before": ["x"]}, "before must be a job id"),
        ({"before": ["0"]}, "before must be at least 1"),
        ({"since": ["yesterday"]}, "since must be a time"),
        ({"command": ["x" * 2000]}, "command must be at most"),
    ],
)
def test_bad_filters_say_why(query: dict[str, list[str]], message: str) -> None:
    with pytest.raises(r.BadRequest, match=message):
        r.list_request(query)


def test_the_wire_still_decodes_a_list_request_of_before() -> None:
    old = msgspec.msgpack.encode(
        {"op": "list", "states": ["dead"], "queue": None, "label": None, "ids": [], "limit": 5}
    )
    assert p.decode_request(old) == p.ListJobs(states=["dead"], limit=5)


def test_actions_become_requests() -> None:
    assert r.action_request("cancel", {}, [3, 4]) == p.CancelJobs(ids=[3, 4])
    assert r.action_request("retry", {"all_dead": True}, None) == p.RetryJobs(all_dead=True)
    assert r.action_request("retry", {}, [7]) == p.RetryJobs(ids=[7])
    assert r.action_request("purge-dead", {}, None) == p.CleanJobs(states=["dead"])
    assert r.action_request("queue-pause", {"queue": "q", "paused": False}, None) == p.PauseQueue(
        name="q", paused=False
    )
    assert r.action_request("scale", {"concurrency": 3}, None) == p.ScaleWorkers(concurrency=3)
    assert r.action_request(
        "queue-concurrency", {"queue": "gpu", "concurrency": 2}, None
    ) == p.SetQueueConcurrency(name="gpu", concurrency=2)
    assert r.action_request(
        "queue-concurrency", {"queue": "gpu", "concurrency": None}, None
    ) == p.SetQueueConcurrency(name="gpu", concurrency=None)


@pytest.mark.parametrize(
    ("name", "body", "ids", "message"),
    [
        ("add", {}, None, "unknown action 'add'"),  # no adding of jobs from the web
        ("cancel", {}, [], "nothing to cancel"),
        ("scale", {"concurrency": -1}, None, "concurrency must be at least 0"),
        ("scale", {"concurrency": "4"}, None, "concurrency must be a whole number"),
        ("queue-pause", {"queue": "../x"}, None, "queue name"),
        ("queue-concurrency", {"queue": "gpu"}, None, "name the queue's concurrency"),
        ("queue-concurrency", {"queue": "gpu", "concurrency": 0}, None, "concurrency must be at least 1"),
        ("queue-concurrency", {"queue": "gpu", "concurrency": 5000}, None, "at most 4,096"),
        ("queue-concurrency", {"queue": "gpu", "concurrency": "2"}, None, "whole number"),
        ("queue-concurrency", {"concurrency": 2}, None, "name"),
    ],
)
def test_bad_actions_say_why(name: str, body: dict[str, object], ids: list[int] | None, message: str) -> None:
    with pytest.raises(r.BadRequest, match=message):
        r.action_request(name, body, ids)


def test_ids_and_bulk_filters() -> None:
    assert r.job_ids({"ids": [3, 1, 3]}) == [1, 3]
    assert r.job_ids({"filter": {}}) is None
    for bad in ([], ["1"], [True], [0], "1"):
        with pytest.raises(r.BadRequest):
            r.job_ids({"ids": bad})
    assert r.filter_from_body({"filter": {"state": "dead", "queue": "q"}})["states"] == ["dead"]
    with pytest.raises(r.BadRequest, match="unknown filter 'id'"):
        r.filter_from_body({"filter": {"id": "1"}})
    with pytest.raises(r.BadRequest, match="expect"):
        r.expected_count({})
    assert r.expected_count({"expect": 12}) == 12


def test_job_detail_shows_environment_names_only() -> None:
    job = p.Job(
        id=1,
        command="x",
        state="pending",
        queue="default",
        priority=0,
        label=None,
        attempts=0,
        max_retries=0,
        backoff_base=2,
        timeout=None,
        exit_code=None,
        run_at=0,
        created_at=0,
        updated_at=0,
        depends_on=[],
        cwd="/",
    )
    detail = r.job_detail(p.JobDetail(job=job, runs=[], env={"TOKEN": "s3cret", "A": "b"}), [5])
    encoded = msgspec.json.encode(detail)
    assert b"s3cret" not in encoded and detail["env_keys"] == ["A", "TOKEN"] and detail["dependents"] == [5]


def test_error_codes_map_to_http_statuses() -> None:
    assert r.status_of(p.Error(code="not_found", message="")) == 404
    assert r.status_of(p.Error(code="invalid", message="")) == 409
    assert r.status_of(p.Ok()) == 200
