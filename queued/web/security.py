"""The web page's access rules, as pure functions: where it may bind, which
`Host` it answers, who may act, and the headers every answer carries.

Theory: the page serves a daemon that runs arbitrary commands, so reading is
the most it gives without the token, and only on a loopback address; acting
(cancel, retry, pause, scale) needs the token (`Authorization: Bearer`, never
a cookie, so no other site's page can make a browser send it) and a POST a
browser would only send from the page itself (a JSON body, `Sec-Fetch-Site:
same-origin` where the browser sends that header). A `Host` header naming
anything but an IP address, `localhost` on a loopback bind, or a name the
operator configured is answered 421: a DNS-rebinding page (its own name
pointed at 127.0.0.1) cannot read the job list.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = "web-token"
DEFAULT_HOST = "127.0.0.1"

# Every answer carries these; the page needs nothing else (no inline script or
# style, no asset from elsewhere, no frame around it).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
ROBOTS_TXT = b"User-agent: *\nDisallow: /\n"


@dataclass(frozen=True)
class BindAddress:
    host: str  # an IP address or a name, without brackets
    port: int

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def url(self, port: int | None = None) -> str:
        return f"http://{self.url_host}:{self.port if port is None else port}/"


def parse_bind(text: str) -> BindAddress:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (loopback), ValueError otherwise."""
    text = text.strip()
    if not text:
        raise ValueError("the web address is empty: give HOST:PORT, e.g. 127.0.0.1:8080")
    if text.isdigit():
        host, port_text = DEFAULT_HOST, text
    elif text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid web address {text!r}: give [IPV6]:PORT, e.g. [::1]:8080")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid web address {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
        if ":" in host:
            raise ValueError(f"invalid web address {text!r}: write an IPv6 address in brackets, [::1]:8080")
        host = host or DEFAULT_HOST
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in web address {text!r}: give 0 to 65535 (0 picks a free one)")
    return BindAddress(host=host, port=int(port_text))


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than
    localhost may resolve anywhere, so it does not count)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_part(header: str) -> str:
    """The name or address of a Host header, without port or brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") > 1:  # a bare IPv6 address, which browsers never send
        return header
    return header.rpartition(":")[0] if ":" in header else header


def host_allowed(header: str | None, bind: BindAddress, names: frozenset[str]) -> bool:
    """Whether a request's Host header names this server: an IP address (no
    DNS can rebind it), `localhost` when bound to loopback (an SSH tunnel's
    local port differs, so ports are not compared), or a configured name."""
    if not header:
        return False
    host = _host_part(header).rstrip(".")
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if host == "localhost":
        return is_loopback(bind.host)
    return host in names


def parse_names(text: str | None) -> frozenset[str]:
    """The configured names (`http-names`: comma or space separated), lower case."""
    if not text:
        return frozenset()
    return frozenset(name.strip().lower().rstrip(".") for name in text.replace(",", " ").split())


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def action_refusal(
    *, method: str, content_type: str | None, fetch_site: str | None, origin: str | None, host: str | None
) -> str | None:
    """Why a request may not act (None: it may, token aside): a POST of JSON,
    from the page's own origin where the browser says where it comes from."""
    if method != "POST":
        return "actions are POST requests"
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        return "an action's body is JSON (Content-Type: application/json)"
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        return f"cross-origin action refused (Sec-Fetch-Site: {fetch_site})"
    if origin is not None and origin != "null" and host is not None:
        origin_host = origin.partition("://")[2].rstrip("/")
        if origin_host.lower() != host.strip().lower():
            return f"cross-origin action refused (Origin {origin} is not this page)"
    elif origin == "null":
        return "cross-origin action refused (Origin: null)"
    return None


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def read_token(data_dir: Path) -> str | None:
    """The token, or None when there is none yet. A file others may read is
    refused (ValueError): it would give them every action."""
    path = token_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read the web token {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            raise ValueError(
                f"the web token {path} is readable by others (mode {mode & 0o777:o}): chmod 600 it"
            )
        token = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if len(token) < 32:
        raise ValueError(f"the web token {path} is too short: remove it and run `queuectl web token`")
    return token


def ensure_token(data_dir: Path) -> str:
    """The token, created (32 random bytes, URL-safe, mode 0600) if missing."""
    token = read_token(data_dir)
    if token is not None:
        return token
    path = token_path(data_dir)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # another process made it first: theirs stands
        found = read_token(data_dir)
        assert found is not None
        return found
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return token


class RateLimit:
    """A token bucket: `rate` requests a second, bursts of `burst`. The web
    answers in the daemon's own thread, so its reads are paced to keep the
    daemon's timers and dispatch on time under any load of requests: a
    request beyond the pace waits its turn (its connection idle, costing
    the thread nothing) rather than being refused at once, which a client
    that retries at once would turn into more work than the answers."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def reserve(self, now: float, longest: float) -> float | None:
        """The seconds until a request may go (0: now), its turn taken; None
        (nothing taken) if that would be more than `longest` seconds."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        wait = max(0.0, (1 - self._tokens) / self.rate)
        if wait > longest:
            return None
        self._tokens -= 1
        return wait

    def retry_after(self, longest: float) -> float:
        """When a request refused for want of a turn may come back."""
        return max(0.0, (1 - self._tokens) / self.rate - longest)
