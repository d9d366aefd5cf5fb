"""The web page's access rules (queued.web.security), without a server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from queued.web import security as s

LOOPBACK = s.BindAddress("127.0.0.1", 8080)
EVERYWHERE = s.BindAddress("0.0.0.0", 8080)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("8080", "127.0.0.1", 8080),
        (":0", "127.0.0.1", 0),
        ("[::1]:9000", "::1", 9000),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("localhost:1", "localhost", 1),
    ],
)
def test_bind_addresses_parse(text: str, host: str, port: int) -> None:
    assert s.parse_bind(text) == s.BindAddress(host, port)


@pytest.mark.parametrize(
    "text", ["", "127.0.0.1", "127.0.0.1:http", "::1:80", "[::1]80", "1.2.3.4:70000", "x:-1"]
)
def test_bad_bind_addresses_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"web address|port"):
        s.parse_bind(text)


def test_loopback_is_an_address_only_this_machine_reaches() -> None:
    assert s.is_loopback("127.0.0.1") and s.is_loopback("127.3.4.5") and s.is_loopback("::1")
    assert s.is_loopback("localhost")
    assert not s.is_loopback("0.0.0.0") and not s.is_loopback("::") and not s.is_loopback("192.168.1.2")
    assert not s.is_loopback("myhost.example")  # a name may resolve anywhere


@pytest.mark.parametrize(
    ("host", "bind", "names", "allowed"),
    [
        ("127.0.0.1:8080", LOOPBACK, set(), True),
        ("localhost:8080", LOOPBACK, set(), True),
        ("localhost:9999", LOOPBACK, set(), True),  # an SSH tunnel's local port
        ("[::1]:8080", LOOPBACK, set(), True),
        ("LOCALHOST", LOOPBACK, set(), True),
        ("evil.example:8080", LOOPBACK, set(), False),  # DNS rebinding
        ("localhost.evil.example", LOOPBACK, set(), False),
        ("localhost:8080", EVERYWHERE, set(), False),  # not loopback: localhost means nothing
        ("10.0.0.5:8080", EVERYWHERE, set(), True),
        ("queue.example.org", EVERYWHERE, {"queue.example.org"}, True),
        ("Queue.Example.Org.:443", EVERYWHERE, {"queue.example.org"}, True),
        ("other.example.org", EVERYWHERE, {"queue.example.org"}, False),
        ("", LOOPBACK, set(), False),
        (None, LOOPBACK, set(), False),
    ],
)
def test_host_header_must_name_this_server(
    host: str | None, bind: s.BindAddress, names: set[str], allowed: bool
) -> None:
    assert s.host_allowed(host, bind, frozenset(names)) is allowed


def test_names_parse_comma_or_space_separated() -> None:
    assert s.parse_names("a.example, B.example c.example.") == {"a.example", "b.example", "c.example"}
    assert s.parse_names(None) == frozenset() and s.parse_names("") == frozenset()


def test_bearer_tokens() -> None:
    assert s.bearer("Bearer abc") == "abc" and s.bearer("bearer   abc ") == "abc"
    assert s.bearer("Basic abc") is None and s.bearer("Bearer ") is None and s.bearer(None) is None
    assert s.token_matches("x" * 40, "x" * 40)
    assert not s.token_matches("y" * 40, "x" * 40) and not s.token_matches(None, "x" * 40)


def _refusal(**given: object) -> str | None:
    fields: dict[str, object] = {
        "method": "POST",
        "content_type": "application/json",
        "fetch_site": "same-origin",
        "origin": "http://127.0.0.1:8080",
        "host": "127.0.0.1:8080",
    }
    fields.update(given)
    return s.action_refusal(**fields)  # type: ignore[arg-type]


def test_actions_are_same_origin_json_posts() -> None:
    assert _refusal() is None
    assert _refusal(fetch_site=None, origin=None) is None  # curl with the token
    assert _refusal(content_type="application/json; charset=utf-8") is None
    assert "POST" in (_refusal(method="GET") or "")
    assert "JSON" in (_refusal(content_type="text/plain") or "")  # what a cross-site form can send
    assert "same-site" in (_refusal(fetch_site="same-site") or "")  # another port on 127.0.0.1
    assert "cross-site" in (_refusal(fetch_site="cross-site") or "")
    assert "Origin" in (_refusal(fetch_site=None, origin="http://127.0.0.1:9999") or "")
    assert "null" in (_refusal(fetch_site=None, origin="null") or "")


def test_token_is_created_once_private_and_long(tmp_path: Path) -> None:
    assert s.read_token(tmp_path) is None
    token = s.ensure_token(tmp_path)
    assert len(token) >= 43  # 32 bytes, URL-safe base64
    assert stat.S_IMODE(os.stat(tmp_path / s.TOKEN_FILE).st_mode) == 0o600
    assert s.ensure_token(tmp_path) == token == s.read_token(tmp_path)


def test_a_token_others_may_read_is_refused(tmp_path: Path) -> None:
    s.ensure_token(tmp_path)
    os.chmod(tmp_path / s.TOKEN_FILE, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        s.read_token(tmp_path)


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / s.TOKEN_FILE
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="too short"):
        s.read_token(tmp_path)


def test_headers_forbid_inline_code_and_framing() -> None:
    headers = dict(s.SECURITY_HEADERS)
    csp = headers[b"content-security-policy"].decode()
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"referrer-policy"] == b"no-referrer"
    assert s.ROBOTS_TXT == b"User-agent: *\nDisallow: /\n"


def test_the_rate_limit_allows_bursts_then_paces() -> None:
    limit = s.RateLimit(rate=10, burst=3)
    assert [limit.reserve(100.0, 1.0) for _ in range(3)] == [0, 0, 0]
    assert limit.reserve(100.0, 1.0) == pytest.approx(0.1)  # the fourth waits its turn
    assert limit.reserve(100.0, 1.0) == pytest.approx(0.2)  # and the fifth after it
    assert limit.reserve(100.0, 0.25) is None  # too far off: refused, and no turn taken
    assert limit.retry_after(0.25) == pytest.approx(0.05)
    assert limit.reserve(100.0, 0.3) == pytest.approx(0.3)
    assert limit.reserve(105.0, 0) == 0 and limit.reserve(105.0, 0) == 0 and limit.reserve(105.0, 0) == 0
    assert limit.reserve(105.0, 0) is None  # never more than the burst saved up
