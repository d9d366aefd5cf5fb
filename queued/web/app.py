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

import codecs
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import msgspec
import trio

from queued import __version__, lifecycle
from queued import protocol as p
from queued.store.sqlite import reports
from queued.web import charts, requests, security
from queued.web.file_watch import FileWatch
from queued.web.live import History, Live
from queued.web.reader import ReadConnection

log = logging.getLogger(__name__)
MAX_STREAMS = 32
MAX_BODY = 64 * 1024
REQUEST_SECONDS = 30.0
OUTPUT_CHUNK = 64 * 1024
OUTPUT_INTERVAL = 0.1  # at most ten output events a second per stream
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
PAGES = re.compile(r"^/(?:|jobs|job/\d+)$")
JOB_PATH = re.compile(r"^/api/jobs/(\d{1,19})(/log|/output)?$")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Dispatch = Callable[[p.Request], Awaitable[p.Response]]
_json = msgspec.json.Encoder()


class Refusal(Exception):
    """An answer other than 200, with its reason."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @classmethod
    def of(cls, scope: dict[str, Any]) -> Request:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers and key != "host" else text
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=False)
        return cls(scope["method"], scope["path"], query, headers)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files (package data), by name."""
    found = {}
    for entry in resources.files("queued.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in STATIC_TYPES:
            found[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return found


class WebApp:
    def __init__(
        self,
        *,
        dispatch: Dispatch,
        next_change: Callable[[], trio.Event],
        reader: ReadConnection,
        bind: security.BindAddress,
        names: frozenset[str],
        token: str,
        started_at: float,
        problems: Callable[[], list[str]],
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.dispatch = dispatch
        self.next_change = next_change  # the supervisor's change event (see live.Live)
        self.reader = reader
        self.bind = bind
        self.names = names
        self.token = token
        self.started_at = started_at
        self.problems = problems
        self.reads_need_token = not security.is_loopback(bind.host)
        self.max_streams = max_streams
        self.streams = 0
        self.changes_seen = 0  # see count_changes
        self.live = Live(next_change, self.read_facts)
        self.history = History(started_at)
        self.static = load_static()

    # -- ASGI -----------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
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
            with trio.fail_after(REQUEST_SECONDS):
                status, content_type, body, extra = await self._answer(request, receive)
        except Refusal as refusal:
            status, content_type, extra = refusal.status, "application/json", []
            body = _json.encode({"error": refusal.message, **refusal.extra})
        except trio.TooSlowError:
            status, content_type, extra = 503, "application/json", []
            body = _json.encode({"error": f"no answer within {REQUEST_SECONDS:g} seconds"})
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            status, content_type, extra = 500, "application/json", []
            body = _json.encode({"error": "internal error: the daemon logged the details"})
        await _respond(send, status, content_type, body, extra)

    def _check_host(self, request: Request) -> None:
        if not security.host_allowed(request.headers.get("host"), self.bind, self.names):
            raise Refusal(
                421,
                f"this server does not answer for host {request.headers.get('host', '(none)')!r}; "
                "add the name to http-names if it is yours",
            )

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
            return 200, "image/svg+xml", await self._chart(request), []
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
                job_id = _job_id(match[1])
                detail = await self.ask(p.GetJob(id=job_id))
                assert isinstance(detail, p.JobDetail)
                dependents = await self.reader.read(reports.dependents, job_id)
                return _json.encode(requests.job_detail(detail, dependents))
            if match and match[2] == "/log":
                chunk = await self.ask(_log_request(int(match[1]), query, limit=1024 * 1024))
                assert isinstance(chunk, p.LogChunk)
                return _json.encode(_log_json(chunk, chunk.data.decode("utf-8", "replace")))
        except requests.BadRequest as exc:
            raise Refusal(400, str(exc)) from None
        raise Refusal(404, f"nothing at {path}")

    async def _refresh_history(self) -> None:
        await self.history.refresh(self.reader.read, self.changes_seen)

    async def count_changes(self) -> None:
        """Count the supervisor's changes (at most two a second): the history
        reads the store again only after one."""
        while True:
            await self.next_change().wait()
            self.changes_seen += 1
            await trio.sleep(0.5)

    async def _chart(self, request: Request) -> bytes:
        name = request.path.removeprefix("/charts/")
        range_name = (request.query.get("range") or ["hour"])[-1]
        if range_name not in charts.RANGES:
            raise Refusal(400, f"range must be {' or '.join(charts.RANGES)}")
        await self._refresh_history()
        now = time.time()
        if name == "throughput.svg":
            return charts.throughput_svg(self.history.attempts, now, range_name).encode()
        if name == "latency.svg":
            return charts.latency_svg(self.history.attempts, now, range_name).encode()
        raise Refusal(404, f"no chart {name}")

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
            reads=self.reader.reads,
        )
        return metrics.exposition(facts)

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
        body = await _read_body(receive)
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

    # -- streams --------------------------------------------------------------

    async def _stream(self, request: Request, receive: Receive, send: Send) -> None:
        if request.method != "GET":
            raise Refusal(405, f"{request.method} is not allowed here")
        self._check_reader(request)
        if self.streams >= self.max_streams:
            raise Refusal(
                503, f"{self.max_streams} live streams are open already: close a page or use ?live=0"
            )
        self.streams += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": _headers(
                            "text/event-stream; charset=utf-8",
                            [(b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")],
                        ),
                    }
                )
                if request.path == "/api/events":
                    await self._events(send)
                else:
                    match = JOB_PATH.match(request.path)
                    assert match is not None
                    await self._output(_job_id(match[1]), request.query, send)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                nursery.cancel_scope.cancel()
        finally:
            self.streams -= 1

    async def _events(self, send: Send) -> None:
        seen = self.live.watch()
        try:
            while True:
                seen, snapshot = await self.live.next(seen)
                await send(_event("snapshot", snapshot))
        finally:
            self.live.unwatch()

    async def _output(self, job_id: int, query: dict[str, list[str]], send: Send) -> None:
        """The attempt's output as it is written, then an `end` event (once
        the job started, for one that has not yet)."""
        try:
            wanted = _log_request(job_id, query, limit=OUTPUT_CHUNK)
            while True:
                change = self.next_change()
                detail = await self.ask(p.GetJob(id=job_id))
                assert isinstance(detail, p.JobDetail)
                started = [r.attempt for r in detail.runs]
                if (wanted.attempt in started if wanted.attempt else started) or lifecycle.is_terminal(
                    detail.job.state
                ):
                    break
                await change.wait()
            first = await self.ask(wanted)
        except (Refusal, requests.BadRequest) as exc:
            await send(_event("failed", _json.encode({"error": str(exc)})))
            return
        assert isinstance(first, p.LogChunk)
        stream = (query.get("stream") or ["stdout"])[-1]
        [run] = [r for r in detail.runs if r.attempt == first.attempt] or [None]
        path = None if run is None else run.stdout_path if stream == "stdout" else run.stderr_path
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        chunk = first
        with FileWatch(path) if path else _NoWatch() as watch:
            while True:
                if chunk.data:
                    await send(_event("output", _json.encode(_log_json(chunk, decoder.decode(chunk.data)))))
                if not chunk.running and len(chunk.data) < OUTPUT_CHUNK:
                    await send(_event("end", _json.encode(_log_json(chunk, decoder.decode(b"", final=True)))))
                    return
                if len(chunk.data) < OUTPUT_CHUNK:
                    change = self.next_change()
                    async with trio.open_nursery() as either:
                        either.start_soon(_then_cancel, watch.wait, either.cancel_scope)
                        either.start_soon(_then_cancel, change.wait, either.cancel_scope)
                    await trio.sleep(OUTPUT_INTERVAL)
                request = p.ReadLog(
                    id=job_id, attempt=chunk.attempt, stream=stream, offset=chunk.offset, limit=OUTPUT_CHUNK
                )
                chunk = await self.ask(request)  # type: ignore[assignment]


class _NoWatch:
    async def wait(self) -> None:
        await trio.sleep(0.25)

    def __enter__(self) -> _NoWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _job_id(text: str) -> int:
    job_id = int(text)
    if not 1 <= job_id <= p.MAX_JOB_ID:
        raise Refusal(404, f"no job {text}")
    return job_id


def _log_request(job_id: int, query: dict[str, list[str]], *, limit: int) -> p.ReadLog:
    fields: dict[str, Any] = {"id": job_id, "limit": limit}
    for key in ("attempt", "offset"):
        value = (query.get(key) or [""])[-1]
        if value:
            if not value.isdigit():
                raise requests.BadRequest(f"{key} must be a whole number")
            fields[key] = int(value)
    stream = (query.get("stream") or ["stdout"])[-1]
    fields["stream"] = stream
    try:
        return msgspec.convert(fields, p.ReadLog)
    except msgspec.ValidationError as exc:
        raise requests.BadRequest(p.explain(exc)) from None


def _log_json(chunk: p.LogChunk, text: str) -> dict[str, Any]:
    return {
        "attempt": chunk.attempt,
        "text": text,
        "offset": chunk.offset,
        "size": chunk.size,
        "running": chunk.running,
        "job_state": chunk.job_state,
    }


def _short(response: p.Response) -> str:
    text = msgspec.json.encode(response).decode()
    return text if len(text) < 200 else text[:197] + "..."


def _event(name: str, data: bytes) -> dict[str, Any]:
    return {
        "type": "http.response.body",
        "body": b"event: " + name.encode() + b"\ndata: " + data + b"\n\n",
        "more_body": True,
    }


def _headers(content_type: str, extra: list[Any]) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), *security.SECURITY_HEADERS, *extra]


async def _respond(send: Send, status: int, content_type: str, body: bytes, extra: list[Any]) -> None:
    headers = _headers(content_type, extra)
    if not any(name == b"cache-control" for name, _ in extra):
        headers.append((b"cache-control", b"no-store"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "the client went away")
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise Refusal(413, f"the body is over {MAX_BODY // 1024} KiB")
        if not message.get("more_body"):
            return bytes(body)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
