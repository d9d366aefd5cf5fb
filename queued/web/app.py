"""The web page's ASGI application: the page's files, the JSON API, the live
streams, the charts and /metrics.

Theory: every answer starts with the rules of security.py (Host, token,
origin) and carries its headers. Reads and actions are the socket's own
requests (protocol Structs, answered by the same handlers through
`dispatch`, whose reads run on the web's read connection) encoded as JSON.
The live streams (Server-Sent Events) share one snapshot per change
(live.Live), and a running attempt's output is sent as the file grows
(inotify), so no side polls. Open streams are capped (MAX_STREAMS, then
503), bodies (MAX_BODY, then 413) and answers' time (REQUEST_SECONDS).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from queued import __version__
from queued import protocol as p
from queued.store import StorageError, reports
from queued.web import charts, http, requests, security, streams
from queued.web.http import Dispatch, Receive, Refusal, Request, Send, load_static
from queued.web.live import History, Live
from queued.web.reader import ReadConnection, WriterReads

log = logging.getLogger(__name__)
MAX_STREAMS = 32
REQUEST_SECONDS = 30.0
# Reads and actions a second, in all (the page's own files, /healthz and
# robots.txt are not counted): beyond it a request waits its turn, up to
# API_QUEUE_SECONDS (then 429 with Retry-After).
API_RATE, API_BURST = 100.0, 50.0
API_QUEUE_SECONDS = 1.0
CHART_SECONDS = 5  # a chart is drawn again after this (or a change), and cached by browsers as long
CHARTS = {"throughput.svg": charts.throughput_svg, "latency.svg": charts.latency_svg}
PAGES = re.compile(r"^/(?:|jobs|job/\d+)$")
JOB_PATH = re.compile(r"^/api/jobs/(\d{1,19})(/log|/output)?$")
_json = http.encoder


class WebApp:
    def __init__(
        self,
        *,
        dispatch: Dispatch,
        next_change: Callable[[], trio.Event],
        writer: Any,
        reader: ReadConnection | WriterReads,
        bind: security.BindAddress,
        names: frozenset[str],
        token: str,
        started_at: float,
        problems: Callable[[], list[str]],
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.dispatch = dispatch
        self.next_change = next_change  # the supervisor's change event (see live.Live)
        self.writer = writer  # the store's writer: its commit count and time, for /metrics
        self.reader = reader
        self.bind = bind
        self.names = names
        self.token = token
        self.started_at = started_at
        self.problems = problems
        self.reads_need_token = not security.is_loopback(bind.host)
        self.max_streams = max_streams
        self.streams = 0
        self.connections: Any = None  # the server's CappedListener: how many are open
        self.rate_limit = security.RateLimit(API_RATE, API_BURST)
        self.changes_seen = 0  # see count_changes
        self.live = Live(next_change, self.read_facts)
        self.history = History(started_at, reports.attempts_ended)
        self._charts: dict[tuple[Any, ...], bytes] = {}
        self.static = load_static()

    # -- ASGI -----------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await http.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request.of(scope)
        try:
            self._check_host(request)
            if request.path.startswith("/api/events") or (
                request.path.endswith("/output") and JOB_PATH.match(request.path)
            ):
                await self._stream(request, receive, send)
                return
            await self._pace(request)
            with trio.fail_after(REQUEST_SECONDS):
                status, content_type, body, extra = await self._answer(request, receive)
        except Refusal as refusal:
            status, content_type, extra = refusal.status, "application/json", []
            body = _json.encode({"error": refusal.message, **refusal.extra})
            if "retry_after" in refusal.extra:
                extra = [(b"retry-after", str(math.ceil(refusal.extra["retry_after"])).encode())]
        except trio.TooSlowError:
            status, content_type, extra = 503, "application/json", []
            body = _json.encode({"error": f"no answer within {REQUEST_SECONDS:g} seconds"})
        except StorageError as exc:  # a read of the page's own (the store unreachable, say)
            status, content_type, extra = 503, "application/json", []
            body = _json.encode({"error": str(exc)})
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            status, content_type, extra = 500, "application/json", []
            body = _json.encode({"error": "internal error: the daemon logged the details"})
        await http.respond(send, status, content_type, body, extra)

    def _check_host(self, request: Request) -> None:
        if not security.host_allowed(request.headers.get("host"), self.bind, self.names):
            raise Refusal(
                421,
                f"this server does not answer for host {request.headers.get('host', '(none)')!r}; "
                "add the name to http-names if it is yours",
            )

    async def _pace(self, request: Request) -> None:
        """Hold a read or action until its turn in the web's share of the
        daemon's thread; refuse it (429) if that is too far off."""
        if not request.path.startswith(("/api/", "/metrics", "/charts/")):
            return
        wait = self.rate_limit.reserve(time.monotonic(), API_QUEUE_SECONDS)
        if wait is None:
            retry = self.rate_limit.retry_after(API_QUEUE_SECONDS)
            raise Refusal(429, "too many requests to the web page: try again in a moment", retry_after=retry)
        if wait > 0:
            await trio.sleep(wait)

    def _check_reader(self, request: Request) -> None:
        if self.reads_need_token:
            self._check_token(request)

    def _check_token(self, request: Request) -> None:
        given = security.bearer(request.headers.get("authorization"))
        if given is None:
            raise Refusal(401, "this needs the web token (queuectl web token), sent as Authorization: Bearer")
        if not security.token_matches(given, self.token):
            raise Refusal(403, "wrong web token (queuectl web token shows the right one)")

    async def _answer(self, request: Request, receive: Receive) -> tuple[int, str, bytes, list[Any]]:
        path, method = request.path, request.method
        if method == "POST" and path.startswith("/api/actions/"):
            return await self._action(request, path.removeprefix("/api/actions/"), receive)
        if method not in ("GET", "HEAD"):
            raise Refusal(405, f"{method} is not allowed here")
        if path == "/favicon.ico":
            body, kind = self.static["favicon.svg"]
            return 200, kind, body, []
        if path == "/robots.txt":
            return 200, "text/plain; charset=utf-8", security.ROBOTS_TXT, []
        if path == "/healthz":
            problems = self.problems()
            body = _json.encode({"status": "fail" if problems else "ok", "problems": problems})
            return (503 if problems else 200), "application/json", body, []
        if PAGES.match(path):
            body, kind = self.static["index.html"]
            return 200, kind, body, []
        if path.startswith("/static/"):
            found = self.static.get(path.removeprefix("/static/"))
            if found is None:
                raise Refusal(404, f"no file {path}")
            return 200, found[1], found[0], [(b"cache-control", b"no-cache")]
        if path == "/metrics":
            self._check_reader(request)
            return 200, "text/plain; version=0.0.4; charset=utf-8", await self.metrics(), []
        if path.startswith("/charts/"):
            self._check_reader(request)
            cache = f"private, max-age={CHART_SECONDS}".encode()
            return 200, "image/svg+xml", await self._chart(request), [(b"cache-control", cache)]
        if path.startswith("/api/"):
            self._check_reader(request)
            return 200, "application/json", await self._api(request), []
        raise Refusal(404, f"nothing at {path}")

    # -- reads ----------------------------------------------------------------

    async def ask(self, request: p.Request) -> p.Response:
        """A socket request answered by its handler; an Error becomes a Refusal."""
        response = await self.dispatch(request)
        if isinstance(response, p.Error):
            raise Refusal(requests.status_of(response), response.message, code=response.code)
        return response

    async def read_facts(self) -> dict[str, Any]:
        """What the overview shows, one read for every viewer (see live.Live)."""
        status = await self.ask(p.GetStatus())
        workers = await self.ask(p.ListWorkers())
        assert isinstance(workers, p.Workers)
        return {"status": status, "slots": workers.slots, "now": time.time()}

    async def _api(self, request: Request) -> bytes:
        path, query = request.path, request.query
        try:
            if path == "/api/status":
                return _json.encode(await self.read_facts())
            if path == "/api/auth":
                given = security.bearer(request.headers.get("authorization"))
                return _json.encode(
                    {"token": given is not None and security.token_matches(given, self.token)}
                )
            if path == "/api/jobs":
                wanted = requests.list_request(query)
                listed = await self.ask(wanted)
                assert isinstance(listed, p.JobList)
                jobs = sorted(listed.jobs, key=lambda job: -job.id)
                more = len(jobs) == wanted.limit
                return _json.encode({"jobs": jobs, "next_before": jobs[-1].id if more and jobs else None})
            if path == "/api/jobs/count":
                count = await self.reader.read(reports.count_jobs, **requests.filters(query))
                return _json.encode({"count": count})
            if path == "/api/queues":
                return _json.encode(await self.ask(p.ListQueues()))
            if path == "/api/workers":
                return _json.encode(await self.ask(p.ListWorkers()))
            match = JOB_PATH.match(path)
            if match and match[2] is None:
                job_id = http.job_id(match[1])
                detail = await self.ask(p.GetJob(id=job_id))
                assert isinstance(detail, p.JobDetail)
                dependents = await self.reader.read(reports.dependents, job_id)
                return _json.encode(requests.job_detail(detail, dependents))
            if match and match[2] == "/log":
                chunk = await self.ask(http.log_request(int(match[1]), query, limit=1024 * 1024))
                assert isinstance(chunk, p.LogChunk)
                return await self.reader.run(_log_answer, chunk)  # up to a MiB: off the daemon's thread
        except requests.BadRequest as exc:
            raise Refusal(400, str(exc)) from None
        raise Refusal(404, f"nothing at {path}")

    async def _refresh_history(self) -> None:
        await self.history.refresh(self.reader, self.changes_seen)

    async def count_changes(self) -> None:
        """Count the supervisor's changes (at most two a second): the history
        reads the store again only after one."""
        while True:
            await self.next_change().wait()
            self.changes_seen += 1
            await trio.sleep(0.5)

    async def _chart(self, request: Request) -> bytes:
        """A chart, drawn on the web's thread (a day's attempts can be many)
        at most once per CHART_SECONDS and history for every viewer."""
        name = request.path.removeprefix("/charts/")
        range_name = (request.query.get("range") or ["hour"])[-1]
        if range_name not in charts.RANGES:
            raise Refusal(400, f"range must be {' or '.join(charts.RANGES)}")
        draw = CHARTS.get(name)
        if draw is None:
            raise Refusal(404, f"no chart {name}")
        await self._refresh_history()
        now = time.time()
        key = (name, range_name, self.history.refreshed_at, math.floor(now / CHART_SECONDS))
        if key not in self._charts:
            svg = await self.reader.run(lambda: draw(self.history.attempts, now, range_name).encode())
            self._charts = {k: v for k, v in self._charts.items() if k[2:] == key[2:]}
            self._charts[key] = svg
        return self._charts[key]

    async def metrics(self) -> bytes:
        from queued.web import metrics

        await self._refresh_history()
        status = await self.ask(p.GetStatus())
        assert isinstance(status, p.Status)
        counts = await self.reader.read(reports.counts_by_queue)
        facts = metrics.Facts(
            version=__version__,
            started_at=self.started_at,
            counts=counts,
            queues=status.queues,
            running=status.running,
            concurrency=status.concurrency,
            accepting=status.accepting,
            history=self.history,
            streams=self.streams,
            connections=self.connections.open if self.connections is not None else 0,
            reads=self.reader.reads,
            commits=self.writer.commits,
            commit_seconds=self.writer.commit_seconds,
        )
        return await self.reader.run(metrics.exposition, facts)  # with the history, off the daemon's thread

    # -- streams --------------------------------------------------------------

    async def _stream(self, request: Request, receive: Receive, send: Send) -> None:
        if request.method != "GET":
            raise Refusal(405, f"{request.method} is not allowed here")
        self._check_reader(request)
        if self.streams >= self.max_streams:
            raise Refusal(
                503, f"{self.max_streams} live streams are open already: close a page or use ?live=0"
            )
        if request.path == "/api/events":

            async def body(send: Send) -> None:
                await streams.snapshots(self.live, send)
        else:
            match = JOB_PATH.match(request.path)
            assert match is not None
            job_id = http.job_id(match[1])

            async def body(send: Send) -> None:
                await streams.output(self.ask, self.next_change, job_id, request.query, send)

        self.streams += 1
        try:
            await streams.serve(receive, send, body)
        finally:
            self.streams -= 1

    # -- actions --------------------------------------------------------------

    async def _action(
        self, request: Request, name: str, receive: Receive
    ) -> tuple[int, str, bytes, list[Any]]:
        headers = request.headers
        refusal = security.action_refusal(
            method=request.method,
            content_type=headers.get("content-type"),
            fetch_site=headers.get("sec-fetch-site"),
            origin=headers.get("origin"),
            host=headers.get("host"),
        )
        if refusal is not None:
            raise Refusal(403, refusal)
        self._check_token(request)
        body = await http.read_body(receive)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise Refusal(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise Refusal(400, "the body is a JSON object")
        try:
            ids = requests.job_ids(data) if name in requests.ACTIONS_BY_FILTER else None
            if name in requests.ACTIONS_BY_FILTER and ids is None and not data.get("all_dead"):
                found = requests.filter_from_body(data)
                ids = await self.reader.read(reports.matching_ids, **found, cap=requests.MAX_BULK + 1)
                if len(ids) > requests.MAX_BULK:
                    raise Refusal(409, f"more than {requests.MAX_BULK:,} jobs match: narrow the filter")
                expect = requests.expected_count(data)
                if expect != len(ids):
                    raise Refusal(
                        409, f"{len(ids)} jobs match now, not {expect}: confirm again", count=len(ids)
                    )
            call = requests.action_request(name, data, ids)
        except requests.BadRequest as exc:
            raise Refusal(400, str(exc)) from None
        response = await self.ask(call)
        log.info("web: %s by the web page: %s", name, _short(response))
        return 200, "application/json", _json.encode(response), []


_thread_json = msgspec.json.Encoder()  # used on the web's own thread only


def _log_answer(chunk: p.LogChunk) -> bytes:
    return _thread_json.encode(http.log_json(chunk, chunk.data.decode("utf-8", "replace")))


def _short(response: p.Response) -> str:
    text = msgspec.json.encode(response).decode()
    return text if len(text) < 200 else text[:197] + "..."
