"""The web page's live streams (Server-Sent Events): the daemon's snapshots
(`/api/events`, one shared read per change, see live.Live) and a running
attempt's output as it is written (`/api/jobs/ID/output`, woken by inotify on
its log and by the supervisor's changes, never by a timer). A stream ends
when the client goes away; the app caps how many are open.
"""

from __future__ import annotations

import codecs
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from queued import lifecycle
from queued import protocol as p
from queued.web import http, requests
from queued.web.file_watch import FileWatch
from queued.web.live import Live

OUTPUT_CHUNK = 64 * 1024
OUTPUT_INTERVAL = 0.1  # at most ten output events a second per stream
STREAM_HEADERS = [(b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
Ask = Callable[[p.Request], Awaitable[p.Response]]


async def serve(receive: http.Receive, send: http.Send, body: Callable[[http.Send], Awaitable[None]]) -> None:
    """Answer with an event stream written by `body`, until it ends or the client leaves."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": http.headers("text/event-stream; charset=utf-8", STREAM_HEADERS),
            }
        )
        await body(send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


async def snapshots(live: Live, send: http.Send) -> None:
    """Every snapshot the viewers share, from the current one on."""
    seen = live.watch()
    try:
        while True:
            seen, snapshot = await live.next(seen)
            await send(event("snapshot", snapshot))
    finally:
        live.unwatch()


async def output(
    ask: Ask, next_change: Callable[[], trio.Event], job_id: int, query: dict[str, list[str]], send: http.Send
) -> None:
    """The attempt's output as it is written, then an `end` event (once the
    job started, for one that has not yet); `failed` with the reason if
    there is no such job or attempt."""
    try:
        wanted = http.log_request(job_id, query, limit=OUTPUT_CHUNK)
        while True:
            change = next_change()
            detail = await ask(p.GetJob(id=job_id))
            assert isinstance(detail, p.JobDetail)
            started = [r.attempt for r in detail.runs]
            if (wanted.attempt in started if wanted.attempt else started) or lifecycle.is_terminal(
                detail.job.state
            ):
                break
            await change.wait()
        chunk = await ask(wanted)
    except (http.Refusal, requests.BadRequest) as exc:
        await send(event("failed", http.encoder.encode({"error": str(exc)})))
        return
    assert isinstance(chunk, p.LogChunk)
    [run] = [r for r in detail.runs if r.attempt == chunk.attempt] or [None]
    path = None if run is None else run.stdout_path if wanted.stream == "stdout" else run.stderr_path
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with FileWatch(path) if path else _NoWatch() as watch:
        while True:
            if chunk.data:
                text = decoder.decode(chunk.data)
                await send(event("output", http.encoder.encode(http.log_json(chunk, text))))
            if not chunk.running and len(chunk.data) < OUTPUT_CHUNK:
                text = decoder.decode(b"", final=True)
                await send(event("end", http.encoder.encode(http.log_json(chunk, text))))
                return
            change = next_change()
            if len(chunk.data) < OUTPUT_CHUNK:  # all read: wait for more, or for the end
                async with trio.open_nursery() as either:
                    either.start_soon(_then_cancel, watch.wait, either.cancel_scope)
                    either.start_soon(_then_cancel, change.wait, either.cancel_scope)
                await trio.sleep(OUTPUT_INTERVAL)
            more = p.ReadLog(
                id=job_id,
                attempt=chunk.attempt,
                stream=wanted.stream,
                offset=chunk.offset,
                limit=OUTPUT_CHUNK,
            )
            try:
                found = await ask(more)
            except http.Refusal as exc:  # the job was removed meanwhile
                await send(event("failed", http.encoder.encode({"error": str(exc)})))
                return
            assert isinstance(found, p.LogChunk)
            chunk = found


def event(name: str, data: bytes) -> dict[str, Any]:
    return {
        "type": "http.response.body",
        "body": b"event: " + name.encode() + b"\ndata: " + data + b"\n\n",
        "more_body": True,
    }


class _NoWatch:
    """Where the log cannot be watched: a short sleep instead."""

    async def wait(self) -> None:
        await trio.sleep(0.25)

    def __enter__(self) -> _NoWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _until_disconnect(receive: http.Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
