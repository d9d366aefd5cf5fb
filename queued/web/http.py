"""HTTP for the web page's ASGI app: the request as it needs it, refusals,
answers with the security headers, bodies read within their cap, and the
shapes the JSON API and the streams share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import msgspec

from queued import protocol as p
from queued.web import requests, security

MAX_BODY = 64 * 1024
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Dispatch = Callable[[p.Request], Awaitable[p.Response]]
encoder = msgspec.json.Encoder()  # answers in JSON


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


def job_id(text: str) -> int:
    job_id = int(text)
    if not 1 <= job_id <= p.MAX_JOB_ID:
        raise Refusal(404, f"no job {text}")
    return job_id


def log_request(job_id: int, query: dict[str, list[str]], *, limit: int) -> p.ReadLog:
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


def log_json(chunk: p.LogChunk, text: str) -> dict[str, Any]:
    return {
        "attempt": chunk.attempt,
        "text": text,
        "offset": chunk.offset,
        "size": chunk.size,
        "running": chunk.running,
        "job_state": chunk.job_state,
    }


def headers(content_type: str, extra: list[Any]) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), *security.SECURITY_HEADERS, *extra]


async def respond(send: Send, status: int, content_type: str, body: bytes, extra: list[Any]) -> None:
    found = headers(content_type, extra)
    if not any(name == b"cache-control" for name, _ in extra):
        found.append((b"cache-control", b"no-store"))
    found.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": found})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive: Receive) -> bytes:
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


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
