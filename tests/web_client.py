"""A small HTTP/1.1 client for the web page's tests (trio, one request per
connection), and the Server-Sent Events it streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: trio.SocketStream | None = field(default=None, repr=False)
    rest: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def _request(
    method: str, url: str, headers: dict[str, str] | None, body: bytes | None
) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    given = {k.lower() for k in (headers or {})}
    lines = [f"{method} {path} HTTP/1.1", "Connection: close"]
    if "host" not in given:
        lines.append(f"Host: {parts.netloc}")
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body is not None and "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    return parts.hostname, parts.port, raw


async def _head(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = await stream.receive_some(65536)
        if not more:
            raise ConnectionError(f"connection closed before the headers: {data!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


async def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30,
) -> Answer:
    host, port, raw = _request(method, url, headers, body)
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(raw)
            status, found, rest = await _head(stream)
            while more := await stream.receive_some(65536):
                rest += more
    if found.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return Answer(status, found, rest)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


async def get(url: str, **kw: Any) -> Answer:
    return await http("GET", url, **kw)


async def post_json(
    url: str, payload: Any, *, token: str | None = None, headers: dict[str, str] | None = None
) -> Answer:
    sent = {"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return await http("POST", url, headers=sent, body=json.dumps(payload).encode())


async def events(url: str, *, headers: dict[str, str] | None = None) -> AsyncIterator[tuple[str, Any]]:
    """(event name, decoded data) for each event of a stream; 503 and other
    refusals raise AssertionError with the answer."""
    host, port, raw = _request("GET", url, headers, None)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(raw)
        status, found, buffer = await _head(stream)
        assert status == 200, (status, buffer)
        chunked = found.get("transfer-encoding") == "chunked"
        text = b""
        while True:
            if chunked:
                while True:  # take whole chunks from the buffer
                    size_line, sep, after = buffer.partition(b"\r\n")
                    if not sep:
                        break
                    size = int(size_line.split(b";")[0], 16)
                    if len(after) < size + 2:
                        break
                    if size == 0:
                        return
                    text += after[:size]
                    buffer = after[size + 2 :]
            else:
                text, buffer = text + buffer, b""
            while b"\n\n" in text:
                block, _, text = text.partition(b"\n\n")
                name, data = "message", b""
                for line in block.split(b"\n"):
                    if line.startswith(b"event: "):
                        name = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data += line[6:]
                yield name, json.loads(data) if data else None
            more = await stream.receive_some(65536)
            if not more:
                return
            buffer += more
