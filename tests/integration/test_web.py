"""The web page's ASGI app against an in-process daemon: the JSON API reads
through the socket's handlers, the access rules hold, the live streams
update, actions act (with the token only)."""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from queued import protocol as p
from queued.daemon import Runner
from queued.web import security
from tests.integration.conftest import AsyncClient, DaemonHandle, make_config
from tests.web_client import events, get, http, post_json

SECRET = "hunter2-do-not-show"


class Web:
    def __init__(self, handle: DaemonHandle, client: AsyncClient) -> None:
        self.handle = handle
        self.client = client
        self.url = handle.runner.daemon.web_url.rstrip("/")
        self.token = security.read_token(handle.config.data_dir)
        self.app = handle.runner.web.app


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Web]:
    config = make_config(tmp_path)
    config.http = "127.0.0.1:0"
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(Runner(config).run)
        handle = DaemonHandle(runner, config)
        client = await handle.client()
        try:
            yield Web(handle, client)
        finally:
            await client.aclose()
            runner.request_shutdown("now")


async def add(web: Web, command: str, **fields: object) -> int:
    response = await web.client.ok(
        p.AddJobs(jobs=[p.JobSpec(command=command, **fields)], cwd=os.getcwd(), env={"SECRET_VALUE": SECRET})
    )
    assert isinstance(response, p.Added)
    return response.ids[0]


async def test_status_and_jobs_come_from_the_socket_handlers(web: Web) -> None:
    first = await add(web, "echo out; echo err >&2", label="nightly")
    await web.client.wait(first)
    second = await add(web, "exit 3", max_retries=0, queue="default")
    await web.client.wait(second)
    status = (await get(web.url + "/api/status")).json()["status"]
    assert status["counts"]["completed"] == 1 and status["counts"]["dead"] == 1
    assert status["web"] == web.url + "/"
    listed = (await get(web.url + "/api/jobs?state=dead")).json()
    assert [job["id"] for job in listed["jobs"]] == [second] and listed["next_before"] is None
    assert [j["id"] for j in (await get(web.url + "/api/jobs?label=nightly")).json()["jobs"]] == [first]
    assert [j["id"] for j in (await get(web.url + "/api/jobs?command=err")).json()["jobs"]] == [first]
    detail = (await get(web.url + f"/api/jobs/{first}")).json()
    assert detail["job"]["state"] == "completed" and "SECRET_VALUE" in detail["env_keys"]
    assert len(detail["runs"]) == 1
    log = (await get(web.url + f"/api/jobs/{first}/log?stream=stderr")).json()
    assert log["text"] == "err\n" and log["running"] is False
    assert web.app.reader.reads > 0  # reads ran on the web's own connection


async def test_environment_values_never_leave(web: Web) -> None:
    job = await add(web, "true")
    await web.client.wait(job)
    for path in (
        "/api/status",
        "/api/jobs",
        f"/api/jobs/{job}",
        f"/api/jobs/{job}/log",
        "/metrics",
        "/api/workers",
    ):
        answer = await get(web.url + path)
        assert answer.status == 200, (path, answer)
        assert SECRET.encode() not in answer.body, path


async def test_pages_go_back_by_id_without_gaps(web: Web) -> None:
    ids = [await add(web, "true", hold=True) for _ in range(7)]
    seen, before = [], ""
    while True:
        page = (await get(web.url + f"/api/jobs?state=held&limit=3{before}")).json()
        seen += [job["id"] for job in page["jobs"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"
    assert seen == sorted(ids, reverse=True)


async def test_bad_queries_are_400_with_a_reason(web: Web) -> None:
    answer = await get(web.url + "/api/jobs?state=done")
    assert answer.status == 400 and "unknown state" in answer.json()["error"]
    assert (await get(web.url + "/api/jobs/99999")).status == 404
    assert (await get(web.url + "/nothing")).status == 404
    assert (await http("DELETE", web.url + "/api/jobs")).status == 405


async def test_wrong_host_is_421(web: Web) -> None:
    answer = await get(web.url + "/api/jobs", headers={"Host": "attacker.example:1234"})
    assert answer.status == 421 and b"attacker.example" in answer.body
    assert (await get(web.url + "/api/jobs", headers={"Host": "localhost:1"})).status == 200


async def test_every_answer_carries_the_security_headers(web: Web) -> None:
    for path in ("/", "/static/app.js", "/api/status", "/nothing", "/robots.txt", "/healthz"):
        answer = await get(web.url + path)
        assert "default-src 'self'" in answer.headers["content-security-policy"], path
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert (await get(web.url + "/robots.txt")).body == b"User-agent: *\nDisallow: /\n"
    assert (await get(web.url + "/healthz")).json() == {"status": "ok", "problems": []}


async def test_actions_need_the_token_and_the_page_s_origin(web: Web) -> None:
    job = await add(web, "sleep 30")
    url = web.url + "/api/actions/cancel"
    assert (await post_json(url, {"ids": [job]})).status == 401
    assert (await post_json(url, {"ids": [job]}, token="x" * 43)).status == 403
    refused = await post_json(url, {"ids": [job]}, token=web.token, headers={"Sec-Fetch-Site": "same-site"})
    assert refused.status == 403 and "cross-origin" in refused.json()["error"]
    form = await http(
        "POST",
        url,
        headers={"Content-Type": "text/plain", "Authorization": f"Bearer {web.token}"},
        body=b"{}",
    )
    assert form.status == 403
    assert (await web.client.job(job)).job.state in ("pending", "running")  # nothing changed
    done = await post_json(url, {"ids": [job]}, token=web.token)
    assert done.status == 200 and done.json()["ids"] == [job]
    assert (await web.client.wait(job))[0].state == "canceled"


async def test_bulk_actions_apply_to_the_confirmed_count_only(web: Web) -> None:
    ids = [await add(web, "true", hold=True, label="bulk") for _ in range(3)]
    url = web.url + "/api/actions/cancel"
    body = {"filter": {"label": "bulk", "state": "held"}, "expect": 2}
    stale = await post_json(url, body, token=web.token)
    assert stale.status == 409 and stale.json()["count"] == 3
    count = (await get(web.url + "/api/jobs/count?label=bulk&state=held")).json()["count"]
    done = await post_json(url, {**body, "expect": count}, token=web.token)
    assert done.status == 200 and done.json()["ids"] == ids


async def test_queue_pause_scale_retry_and_purge(web: Web) -> None:
    actions = web.url + "/api/actions/"
    dead = await add(web, "exit 1", max_retries=0)
    await web.client.wait(dead)
    assert (await post_json(actions + "queue-pause", {"queue": "default"}, token=web.token)).status == 200
    queues = (await get(web.url + "/api/queues")).json()["queues"]
    assert queues[0]["paused"] is True
    assert (
        await post_json(actions + "queue-pause", {"queue": "default", "paused": False}, token=web.token)
    ).status == 200
    assert (await post_json(actions + "scale", {"concurrency": 3}, token=web.token)).status == 200
    assert (await get(web.url + "/api/status")).json()["status"]["concurrency"] == 3
    unknown = await post_json(actions + "queue-pause", {"queue": "nope"}, token=web.token)
    assert unknown.status == 404 and "no queue" in unknown.json()["error"]
    assert (await post_json(actions + "purge-dead", {}, token=web.token)).json()["count"] == 1
    assert (await get(web.url + f"/api/jobs/{dead}")).status == 404


async def test_a_queue_s_limit_changes_from_the_page(web: Web) -> None:
    url = web.url + "/api/actions/queue-concurrency"
    await web.client.ok(p.AddQueue(name="gpu", concurrency=1))

    async def limit() -> int | None:
        queues = {q["name"]: q for q in (await get(web.url + "/api/queues")).json()["queues"]}
        assert web.handle.runner.supervisor.queues["gpu"].concurrency == queues["gpu"]["concurrency"]
        return queues["gpu"]["concurrency"]

    for refused, status in (
        (await post_json(url, {"queue": "gpu", "concurrency": 3}), 401),
        (await post_json(url, {"queue": "gpu", "concurrency": 3}, token="wrong"), 403),
        (
            await post_json(
                url,
                {"queue": "gpu", "concurrency": 3},
                token=web.token,
                headers={"Sec-Fetch-Site": "same-site"},
            ),
            403,
        ),
        (await post_json(url, {"queue": "gpu", "concurrency": 0}, token=web.token), 400),
        (await post_json(url, {"queue": "gpu", "concurrency": "3"}, token=web.token), 400),
        (await post_json(url, {"queue": "gpu"}, token=web.token), 400),
        (await post_json(url, {"queue": "nope", "concurrency": 3}, token=web.token), 404),
    ):
        assert refused.status == status, refused.json()
        assert "\n" not in refused.json()["error"]
    assert await limit() == 1  # every refusal changed nothing
    done = await post_json(url, {"queue": "gpu", "concurrency": 3}, token=web.token)
    assert done.status == 200 and done.json()["message"] == "queue gpu: at most 3 at once"
    assert await limit() == 3  # committed, and the supervisor's list too
    cleared = await post_json(url, {"queue": "gpu", "concurrency": None}, token=web.token)
    assert cleared.json()["message"] == "queue gpu: no limit but the global one"
    assert await limit() is None


async def test_a_large_body_is_413(web: Web) -> None:
    answer = await post_json(web.url + "/api/actions/cancel", {"ids": [1] * 40_000}, token=web.token)
    assert answer.status == 413


async def test_live_snapshots_follow_the_supervisor(web: Web) -> None:
    with trio.fail_after(20):
        stream = events(web.url + "/api/events")
        name, first = await stream.__anext__()
        assert name == "snapshot" and first["status"]["counts"]["held"] == 0
        await add(web, "true", hold=True)
        while True:
            name, snapshot = await stream.__anext__()
            if snapshot["status"]["counts"]["held"] == 1:
                break
        assert snapshot["version"] > first["version"]
        await stream.aclose()


async def test_live_streams_are_capped(web: Web) -> None:
    web.app.max_streams = 2
    async with trio.open_nursery() as nursery:
        opened = trio.Semaphore(0)

        async def hold_one() -> None:
            stream = events(web.url + "/api/events")
            await stream.__anext__()
            opened.release()
            await trio.sleep_forever()

        for _ in range(2):
            nursery.start_soon(hold_one)
        for _ in range(2):
            await opened.acquire()
        third = await get(web.url + "/api/events")
        assert third.status == 503 and "live streams" in third.json()["error"]
        nursery.cancel_scope.cancel()


async def test_running_output_is_streamed_as_written(web: Web) -> None:
    gate = web.handle.config.data_dir.parent / "gate"
    job = await add(web, f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second")
    seen = ""
    with trio.fail_after(20):
        async for name, data in events(web.url + f"/api/jobs/{job}/output?attempt=1"):
            if name == "output":
                seen += data["text"]
                if seen == "first\n":
                    assert data["running"] is True
                    gate.touch()
            elif name == "end":
                break
    assert seen == "first\nsecond\n" and data["job_state"] in ("completed", "running")


async def test_metrics_match_status(web: Web) -> None:
    job = await add(web, "exit 2", max_retries=0)
    await web.client.wait(job)
    await add(web, "true", hold=True)
    await trio.sleep(0)
    text = (await get(web.url + "/metrics")).body.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    status = await web.client.ok(p.GetStatus())
    assert isinstance(status, p.Status)
    for state, n in status.counts.items():
        assert samples[("queued_jobs", (("queue", "default"), ("state", state)))] == n
    assert samples[("queued_slots", ())] == status.concurrency
    assert samples[("queued_attempts_ended_total", (("outcome", "failed"), ("queue", "default")))] == 1
    assert samples[("queued_store_commits_total", ())] >= 3  # the add, the start, the end at least
    assert 0 < samples[("queued_store_commit_seconds_total", ())] < 60


async def test_reads_beyond_the_web_s_share_wait_their_turn_then_are_429(web: Web) -> None:
    web.app.rate_limit = security.RateLimit(rate=2, burst=2)
    for _ in range(2):
        assert (await get(web.url + "/api/status")).status == 200
    started = trio.current_time()
    assert (await get(web.url + "/api/status")).status == 200  # its turn came half a second later
    assert trio.current_time() - started >= 0.4
    web.app.rate_limit = security.RateLimit(rate=1, burst=2)
    async with trio.open_nursery() as nursery:  # 2 now, 1 after a second, then none within a second
        answers = []

        async def ask() -> None:
            answers.append(await get(web.url + "/api/status"))

        for _ in range(4):
            nursery.start_soon(ask)
    assert sorted(a.status for a in answers) == [200, 200, 200, 429]
    refused = next(a for a in answers if a.status == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert (await get(web.url + "/healthz")).status == 200  # probes and the page's files are not paced
    assert (await get(web.url + "/static/app.js")).status == 200


async def test_the_heavy_work_runs_off_the_daemon_s_thread_and_charts_are_shared(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history, the charts, /metrics and long logs are worked on the web's
    own thread: a day of attempts must not hold the thread of the timers."""
    from queued.web import app as web_app
    from queued.web import live, metrics

    threads: dict[str, list[threading.Thread]] = collections.defaultdict(list)

    def spy(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            threads[name].append(threading.current_thread())
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(web_app, "CHART_SECONDS", 10**9)  # one time bucket for the whole test
    monkeypatch.setitem(web_app.CHARTS, "throughput.svg", spy("chart", web_app.CHARTS["throughput.svg"]))
    monkeypatch.setattr(live.History, "add", spy("history", live.History.add))
    monkeypatch.setattr(metrics, "exposition", spy("metrics", metrics.exposition))
    monkeypatch.setattr(web_app, "_log_answer", spy("log", web_app._log_answer))
    job = await add(web, "echo done")
    await web.client.wait(job)
    for _ in range(3):  # three viewers: one drawing
        assert (await get(web.url + "/charts/throughput.svg")).status == 200
    assert (await get(web.url + "/metrics")).status == 200
    assert (await get(web.url + f"/api/jobs/{job}/log")).json()["text"] == "done\n"
    assert set(threads) == {"chart", "history", "metrics", "log"}
    assert len(threads["chart"]) == 1
    assert all(t is not threading.main_thread() for found in threads.values() for t in found)


async def test_a_request_trickled_a_byte_at_a_time_is_cut_off(web: Web) -> None:
    """hypercorn's read timeout is per read, but its idle timeout (5 s) runs
    until a whole head has come: a client trickling a byte at a time cannot
    hold one of the page's connections (nor 64 of them, the page)."""
    host, port = web.url.removeprefix("http://").rsplit(":", 1)
    slow = await trio.open_tcp_stream(host, int(port))
    head = b"GET /api/status HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-Slow: " + b"a" * 2000
    try:
        with pytest.raises(trio.BrokenResourceError):  # cut off long before the 100 s it would take
            for byte in head:
                await slow.send_all(bytes([byte]))
                await trio.sleep(0.05)
    finally:
        await slow.aclose()
