"""The web page of the real `queued --http`, driven with the real `queuectl`
and plain HTTP: the address it reports, the start-up refusals, /metrics
against `queuectl status`, and nothing of it loaded without --http."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Daemon, tool


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def web_daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, "--http", "127.0.0.1:0").start()
    try:
        yield d
    finally:
        d.stop()


def web_url(d: Daemon) -> str:
    return json.loads(d.ok("status", "--json"))["web"]


def test_the_page_reports_its_address(web_daemon: Daemon) -> None:
    url = web_url(web_daemon)
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
    assert f"web:     {url}" in web_daemon.ok("status")
    assert f"web page at {url}" in web_daemon.log.read_text()
    status, body = fetch(url + "healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "problems": []})
    token = web_daemon.ok("web", "token").strip()
    assert len(token) >= 43 and (web_daemon.data_dir / "web-token").stat().st_mode & 0o777 == 0o600
    assert web_daemon.ok("web", "token", "--url").strip() == f"{url}#token={token}"


def test_metrics_match_queuectl_status(web_daemon: Daemon) -> None:
    done = web_daemon.add("true")
    failed = web_daemon.add("--max-retries", "0", "exit 4")
    web_daemon.ctl("wait", str(done), str(failed))
    web_daemon.add("--hold", "--queue", "default", "sleep 1")
    status = json.loads(web_daemon.ok("status", "--json"))
    code, text = fetch(web_url(web_daemon) + "metrics")
    assert code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    for state, n in status["counts"].items():
        assert samples[("queued_jobs", (("queue", "default"), ("state", state)))] == n, state
    assert samples[("queued_slots", ())] == status["concurrency"] == 2
    assert samples[("queued_attempts_ended_total", (("outcome", "completed"), ("queue", "default")))] == 1
    assert samples[("queued_attempts_ended_total", (("outcome", "failed"), ("queue", "default")))] == 1
    assert samples[("queued_queue_depth", (("queue", "default"),))] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0  # the daemon's own process
    assert samples[("queued_web_connections", ())] >= 1  # this scrape's own


def test_a_non_loopback_address_needs_a_token_first(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "--http", "0.0.0.0:0")
    d.start(wait=False)
    assert d.process is not None and d.process.wait(timeout=20) == 1
    said = d.log.read_text()
    assert "not a loopback address" in said and "queuectl web token" in said
    assert not (d.data_dir / "web-token").exists()
    token = d.ok("web", "token", "--data-dir", str(d.data_dir)).strip()
    d.start()
    try:
        url = web_url(d).replace("0.0.0.0", "127.0.0.1")
        assert fetch(url + "api/status")[0] == 401  # every read needs it off loopback
        assert fetch(url + "api/status", {"Authorization": f"Bearer {token}"})[0] == 200
        assert fetch(url + "healthz")[0] == 200 and fetch(url + "static/app.js")[0] == 200
    finally:
        d.stop()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:99999", "[::1]80"])
def test_a_bad_address_is_refused_before_anything_starts(tmp_path: Path, address: str) -> None:
    d = Daemon(tmp_path, "--http", address)
    d.start(wait=False)
    assert d.process is not None and d.process.wait(timeout=20) == 1
    assert "web address" in d.log.read_text()
    assert not d.data_dir.exists()  # refused before the data dir was touched


def test_an_address_in_use_is_refused_with_a_reason(web_daemon: Daemon, tmp_path: Path) -> None:
    port = web_url(web_daemon).rsplit(":", 1)[1].rstrip("/")
    other = Daemon(tmp_path / "other", "--http", f"127.0.0.1:{port}")
    other.start(wait=False)
    assert other.process is not None and other.process.wait(timeout=20) == 1
    assert "cannot serve the web page" in other.log.read_text()
    assert not other.socket.exists()  # nothing left behind


def test_the_environment_variable_turns_it_on(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.env["QUEUED_HTTP"] = "127.0.0.1:0"
    d.start()
    try:
        assert web_url(d).startswith("http://127.0.0.1:")
    finally:
        d.stop()


def test_without_http_nothing_of_the_page_is_loaded() -> None:
    code = (
        "import sys, queued.__main__, queued.daemon; "
        "print([m for m in sys.modules if m.startswith(('queued.web', 'hypercorn', 'prometheus_client'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd-socket-activate")
def test_systemd_can_pass_a_second_socket_for_the_page(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.socket.parent.mkdir(mode=0o700)
    with socket.socket() as probe:  # a free port for the activator to listen on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(d.socket),
            "-l",
            f"127.0.0.1:{port}",
            tool("queued"),
            "--data-dir",
            str(d.data_dir),
        ],
        env=d.env,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not d.socket.exists():
            assert time.monotonic() < deadline and activator.poll() is None
            time.sleep(0.05)
        assert d.ctl("status").returncode == 0  # this connection starts queued, with the page
        assert web_url(d) == f"http://127.0.0.1:{port}/"
        assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
        d.ok("shutdown")
        activator.wait(timeout=15)
    finally:
        if activator.poll() is None:
            os.killpg(activator.pid, signal.SIGKILL)
            activator.wait()


def _sockets(pid: int) -> int:
    found = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return found


def healthy(url: str) -> bool:
    """Whether the page answers /healthz; not yet while it is still busy with
    a flood's closed connections (under load a request waited out its 10 s)."""
    try:
        return fetch(url + "healthz")[0] == 200
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return False


@pytest.mark.skipif(not shutil.which("prlimit"), reason="prlimit (util-linux) is not installed")
def test_a_flood_of_idle_connections_leaves_the_jobs_their_descriptors(tmp_path: Path) -> None:
    from queued.web.server import MAX_CONNECTIONS

    d = Daemon(tmp_path, "--http", "127.0.0.1:0").start(wrap=("prlimit", "--nofile=256:256", "--"))
    flood: list[socket.socket] = []
    try:
        url = web_url(d)
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert d.process is not None
        before = _sockets(d.process.pid)
        for _ in range(400):  # more than the daemon's whole descriptor limit
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))  # the kernel's backlog completes them
            flood.append(sock)
        deadline = time.monotonic() + 10
        while _sockets(d.process.pid) < before + MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # had nothing capped them, more would be accepted by now
        assert _sockets(d.process.pid) <= before + MAX_CONNECTIONS
        job = d.add("echo still here")  # the socket, a job's pipes and logs: descriptors to spare
        d.ok("wait", str(job))
        assert d.ok("logs", str(job)) == "still here\n"
    finally:
        for sock in flood:
            sock.close()
    try:
        deadline = time.monotonic() + 30
        while not healthy(url):  # answered once the idle ones are closed
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "Too many open files" not in d.log.read_text()
    finally:
        d.stop()


def _bars(svg: bytes) -> list[str]:
    import xml.etree.ElementTree as ET

    svg_ns = "{http://www.w3.org/2000/svg}"
    return sorted(
        e.find(svg_ns + "title").text or ""  # type: ignore[union-attr]
        for e in ET.fromstring(svg).iter(svg_ns + "rect")
        if e.find(svg_ns + "title") is not None
    )


def test_the_charts_keep_their_history_across_a_restart(web_daemon: Daemon) -> None:
    """Drawn from the stored attempts (Flower forgets its history on restart)."""
    done = web_daemon.add("true")
    failed = web_daemon.add("--max-retries", "0", "exit 3")
    web_daemon.ctl("wait", str(done), str(failed))
    code, before = fetch(web_url(web_daemon) + "charts/throughput.svg?range=day")
    assert code == 200 and sum(int(t.split()[0]) for t in _bars(before)) == 2
    web_daemon.stop()
    web_daemon.start()
    code, after = fetch(web_url(web_daemon) + "charts/throughput.svg?range=day")
    assert code == 200 and _bars(after) == _bars(before)
    text = fetch(web_url(web_daemon) + "metrics")[1].decode()
    assert "queued_run_time_seconds_count 0.0" in text  # the counters are this process's own
