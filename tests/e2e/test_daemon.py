"""The `queued` command itself: flags, config, permissions, who may connect,
and refusing databases it cannot trust."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from queued import protocol as p

from .conftest import Daemon, tool


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_version() -> None:
    for name in ("queued", "queuectl"):
        result = subprocess.run([tool(name), "--version"], capture_output=True, text=True)
        assert result.returncode == 0 and "0.1.0" in result.stdout


def test_files_are_private(daemon: Daemon) -> None:
    daemon.ok("wait", str(daemon.add("echo secret")))
    assert mode(daemon.socket.parent) == 0o700 and mode(daemon.socket) == 0o600
    assert mode(daemon.data_dir) == 0o700
    for path in daemon.data_dir.rglob("*"):
        if path.is_file():
            assert mode(path) == 0o600, path


def test_jobs_get_stdin_stdout_stderr_and_no_other_descriptor(tmp_path: Path) -> None:
    inherited = os.pipe()  # queued inherits both ends, as from a careless parent
    daemon = Daemon(tmp_path).start(pass_fds=inherited)
    try:
        job = daemon.add("--cwd", "/tmp", "ls /proc/$$/fd; readlink /proc/$$/fd/0; pwd")
        daemon.ok("wait", str(job))
        assert daemon.ok("logs", str(job)).split() == ["0", "1", "2", "/dev/null", "/tmp"]
        assert Path.cwd() != Path("/tmp")
    finally:
        daemon.stop()
        for fd in inherited:
            os.close(fd)


def test_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "queued.toml"
    config.write_text('max-retries = 9\nbackoff-base = 3\ntimeout = "10m"\n')
    daemon = Daemon(tmp_path, "--config", str(config))
    daemon.env["QUEUED_CONCURRENCY"] = "5"
    daemon.extra = ("--config", str(config))
    # --concurrency on the command line wins over the environment
    daemon.start()
    try:
        values = __import__("json").loads(daemon.ok("config", "get", "--json"))
        assert values["max-retries"] == 9 and values["backoff-base"] == 3 and values["timeout"] == 600
        assert values["concurrency"] == 2
    finally:
        daemon.stop()


def test_environment_beats_config_set_beats_the_file(tmp_path: Path) -> None:
    """Every key from the environment; the file's data-dir, socket and log-level
    no longer beat QUEUED_DATA_DIR, QUEUED_SOCKET and QUEUED_LOG_LEVEL."""
    config = tmp_path / "queued.toml"
    config.write_text(
        f'data-dir = "{tmp_path / "from-file"}"\nsocket = "{tmp_path / "file.sock"}"\n'
        'log-level = "error"\nmax-retries = 9\ntimeout = "10m"\nkill-grace = 7\n'
    )
    daemon = Daemon(tmp_path, "--config", str(config))
    daemon.flags = []
    daemon.env |= {
        "QUEUED_DATA_DIR": str(daemon.data_dir),
        "QUEUED_LOG_LEVEL": "info",
        "QUEUED_MAX_RETRIES": "4",
        "QUEUED_KILL_GRACE": "2s",
    }
    daemon.start()
    try:
        status = json.loads(daemon.ok("status", "--json"))
        assert (status["data_dir"], status["socket"]) == (str(daemon.data_dir), str(daemon.socket))
        assert not (tmp_path / "from-file").exists() and not (tmp_path / "file.sock").exists()
        assert "queued serving" in daemon.log.read_text()  # info, as the environment says, not error
        values = json.loads(daemon.ok("config", "get", "--json"))
        assert (values["max-retries"], values["timeout"], values["kill-grace"]) == (4, 600, 2)
        said = daemon.ok("config", "set", "max-retries", "6")
        assert "QUEUED_MAX_RETRIES keeps it at 4" in said
        daemon.ok("config", "set", "timeout", "1h")  # config set beats the file
        values = json.loads(daemon.ok("config", "get", "--json"))
        assert (values["max-retries"], values["timeout"]) == (4, 3600)
        assert json.loads(daemon.ok("show", "--json", str(daemon.add("true"))))["max_retries"] == 4
    finally:
        daemon.stop()


def test_flags_start_beside_a_config_file_naming_the_same_keys(tmp_path: Path) -> None:
    config = tmp_path / "queued.toml"
    config.write_text(
        f'data-dir = "{tmp_path / "from-file"}"\nsocket = "{tmp_path / "file.sock"}"\nlog-level = "error"\n'
    )
    daemon = Daemon(tmp_path, "--config", str(config), "--socket", str(tmp_path / "run" / "queued.sock"))
    daemon.flags = ["--data-dir", str(daemon.data_dir), "--log-level", "info"]
    daemon.env["QUEUED_SOCKET"] = str(tmp_path / "run" / "queued.sock")
    daemon.start()
    try:
        assert json.loads(daemon.ok("status", "--json"))["data_dir"] == str(daemon.data_dir)
        assert not (tmp_path / "from-file").exists()
    finally:
        daemon.stop()


def test_python_m_runs_both_commands(daemon: Daemon) -> None:
    python = str(Path(tool("queued")).parent / "python")
    for module in ("queued", "queuectl"):
        result = subprocess.run(
            [python, "-m", module, "--version"], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0 and result.stdout.startswith(module), result
    result = subprocess.run(
        [python, "-m", "queuectl", "status", "--json"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and json.loads(result.stdout)["pid"] == daemon.process.pid


def test_workers_scale_0_starts_nothing_and_lets_running_jobs_finish(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    running = daemon.add(f"while [ ! -e {gate} ]; do sleep 0.05; done")
    deadline = time.monotonic() + 10
    while json.loads(daemon.ok("show", "--json", str(running)))["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "0" in daemon.ok("workers", "scale", "0")
    waiting = daemon.add("true")
    gate.touch()
    assert daemon.ctl("wait", str(running)).returncode == 0
    assert daemon.ctl("wait", "--timeout", "1", str(waiting)).returncode == 124  # never started
    assert json.loads(daemon.ok("show", "--json", str(waiting)))["state"] == "pending"
    daemon.ok("workers", "scale", "1")
    assert daemon.ctl("wait", "--timeout", "10", str(waiting)).returncode == 0


def test_bad_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "queued.toml"
    config.write_text("max-retries = -4\n")
    result = subprocess.run(
        [
            tool("queued"),
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "d"),
            "--socket",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0 and "max-retries" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated", "newer"])
def test_untrustworthy_database_stops_queued(tmp_path: Path, damage: str) -> None:
    daemon = Daemon(tmp_path).start()
    daemon.ok("wait", str(daemon.add("true")))
    daemon.stop()
    db = daemon.data_dir / "queue.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(64 * 1024))
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[: 4096 + 100])
    else:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
        conn.close()
    before = db.read_bytes()
    result = subprocess.run(
        [tool("queued"), "--data-dir", str(daemon.data_dir), "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1, result
    assert str(db) in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before


HELLO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect-error", e.errno); sys.exit(0)
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
except OSError:
    pass  # a refused peer may be cut off before its hello is read
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
    if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
        break
print("reply", data.hex())
"""


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_other_users_cannot_connect() -> None:
    root = Path(tempfile.mkdtemp(prefix="queued-access-"))
    try:
        os.chmod(root, 0o755)
        daemon = Daemon(root).start()
        hello = p.encode_frame(p.Hello(protocol=p.PROTOCOL_VERSION)).hex()

        def as_nobody() -> str:
            result = subprocess.run(
                [
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    HELLO_CLIENT,
                    str(daemon.socket),
                    hello,
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        try:
            assert as_nobody() == "connect-error 13"  # EACCES: the 0700 directory
            # Loosen every mode: SO_PEERCRED still refuses.
            os.chmod(daemon.socket.parent, 0o777)
            os.chmod(daemon.socket, 0o777)
            kind, _, payload = as_nobody().partition(" ")
            assert kind == "reply"
            reply = p.decode_response(bytes.fromhex(payload)[4:])
            assert isinstance(reply, p.Error) and reply.code == "forbidden" and "65534" in reply.message
            assert daemon.ctl("status").returncode == 0
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_jobs_start_when_queued_runs_in_a_directory_it_cannot_list(tmp_path: Path) -> None:
    """queued steps into each job's cwd for the spawn and back: a working
    directory it may enter but not read (mode 0311) must not stop it. Root
    reads any directory, so queued runs without the capabilities for that."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop the capabilities that bypass directory modes")
    unlistable = tmp_path / "unlistable"
    unlistable.mkdir()
    os.chmod(unlistable, 0o311)
    no_bypass = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    daemon = Daemon(tmp_path).start(wrap=no_bypass, cwd=unlistable)
    try:
        job = daemon.add("--cwd", "/tmp", "pwd")
        assert daemon.ctl("wait", str(job)).returncode == 0, daemon.ok("show", str(job))
        assert daemon.ok("logs", str(job)) == "/tmp\n"
    finally:
        daemon.stop()
