"""Living under systemd: the units verify, socket activation starts queued on
the first command, and the notify protocol says READY, STATUS and STOPPING."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Daemon, tool

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted(p for p in (ROOT / "systemd").glob("*/queued.*") if p.suffix in (".service", ".socket"))
EXEC_PATHS = ("/usr/local/bin/queued", "%h/.local/bin/queued")


def test_every_unit_is_there() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in UNITS}
    assert names == {
        "user/queued.service",
        "user/queued.socket",
        "system/queued.service",
        "system/queued.socket",
    }


def installed_man_pages(prefix: Path) -> Path:
    """The manual pages laid out under `prefix` as pip installs them (pyproject's
    data-files); the man path they are then found in."""
    import tomllib

    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    for target, sources in data_files.items():
        (prefix / target).mkdir(parents=True, exist_ok=True)
        for source in sources:
            shutil.copy(ROOT / source, prefix / target)
    return prefix / "share" / "man"


def test_documentation_names_pages_pip_installs(tmp_path: Path) -> None:
    man = installed_man_pages(tmp_path)
    for unit in (ROOT / "systemd").glob("*/queued.service"):
        [line] = [line for line in unit.read_text().splitlines() if line.startswith("Documentation=")]
        for uri in line.removeprefix("Documentation=").split():
            name, section = uri.removeprefix("man:").rstrip(")").split("(")
            page = man / f"man{section}" / f"{name}.{section}"
            assert page.read_text().startswith(f".TH {name.upper()} {section} "), uri


@pytest.mark.parametrize("kind", ["user", "system"])
def test_reload_sends_sighup(kind: str) -> None:
    """`systemctl reload queued` reloads the config file (see queued/signals.py)."""
    text = (ROOT / "systemd" / kind / "queued.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in text


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("kind", ["user", "system"])
def test_units_verify(tmp_path: Path, kind: str) -> None:
    # The units name where queued is installed; point that at this checkout's queued.
    for unit in (ROOT / "systemd" / kind).iterdir():
        text = unit.read_text()
        for path in EXEC_PATHS:
            text = text.replace(path, tool("queued"))
        (tmp_path / unit.name).write_text(text)
    # verify runs `man` for each Documentation= page: those pip installs.
    man = installed_man_pages(tmp_path / "prefix")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "queued.service"), str(tmp_path / "queued.socket")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANPATH": str(man)},
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd-socket-activate")
def test_socket_activation_starts_queued_on_the_first_command(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.socket.parent.mkdir(mode=0o700)
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(daemon.socket),
            tool("queued"),
            "--data-dir",
            str(daemon.data_dir),
            "--log-level",
            "warning",
        ],
        env=daemon.env,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not daemon.socket.exists():
            assert time.monotonic() < deadline and activator.poll() is None
            time.sleep(0.05)
        assert not daemon.data_dir.exists()  # nothing started yet
        assert daemon.ctl("status").returncode == 0  # this connection starts queued
        job = daemon.add("echo activated")
        assert daemon.ok("wait", str(job)) == "" and daemon.ok("logs", str(job)) == "activated\n"
        daemon.ok("shutdown")
        activator.wait(timeout=15)
        assert daemon.socket.exists()  # the socket belongs to the activator, not to queued
    finally:
        if activator.poll() is None:
            os.killpg(activator.pid, signal.SIGKILL)
            activator.wait()


def test_notify_ready_status_stopping(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    daemon = Daemon(tmp_path)
    daemon.env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    daemon.start()
    try:
        ready = notify.recv(4096).decode().split("\n")
        assert "READY=1" in ready and any(f.startswith("STATUS=") for f in ready)
        daemon.ok("wait", str(daemon.add("true")))
        statuses = []
        while not any("1 completed" in s for s in statuses):
            statuses.append(notify.recv(4096).decode())
        assert all(s.startswith("STATUS=") for s in statuses)
        # The job must not see the daemon's notify socket.
        job = daemon.add("echo ${NOTIFY_SOCKET:-unset}")
        daemon.ok("wait", str(job))
        assert daemon.ok("logs", str(job)) == "unset\n"
        daemon.ok("shutdown")
        messages = []
        while not any("STOPPING=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
    finally:
        daemon.stop()


def test_journald_logs_carry_priorities(tmp_path: Path) -> None:
    log_path = tmp_path / "queued.log"
    with open(log_path, "wb") as log:
        info = os.fstat(log.fileno())
        daemon = Daemon(tmp_path)
        daemon.env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        daemon.log = log_path
        daemon.start()
        daemon.ok("shutdown")
        assert daemon.process is not None and daemon.process.wait(timeout=15) == 0
    lines = log_path.read_text().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines
    assert any(line.startswith("<6>queued.daemon: queued serving") for line in lines)


def test_watchdog_pings(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    daemon = Daemon(tmp_path)
    daemon.env.update({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
    daemon.start()
    try:
        pings = 0
        deadline = time.monotonic() + 10
        while pings < 3 and time.monotonic() < deadline:
            pings += notify.recv(4096) == b"WATCHDOG=1"
        assert pings == 3  # every 100 ms: half of WATCHDOG_USEC
    finally:
        daemon.stop()
