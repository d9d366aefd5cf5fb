"""End-to-end, as root: the real `queuectl` against listeners run as other
uids (setpriv). An impostor that answers like queued is sent nothing; a system
daemon in a directory root gave it, the user's own daemon and root's are used."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from queued import protocol as p

from .conftest import Daemon, tool

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)

NOBODY = 65534
SECRET = "tr0ub4dor-" + os.urandom(6).hex()  # in the client's environment only

# A listener that speaks like queued without being it: it records every byte it
# receives, and answers the n-th frame of a connection with the n-th answer
# (the last one again after that). Plain python3: it needs nothing installed.
LISTENER = r"""
import os, socket, sys
path, record, *answers = sys.argv[1:]
answers = [bytes.fromhex(a) for a in answers]
os.umask(0)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(8)
print("ready", flush=True)
with open(record, "ab", buffering=0) as log:
    while True:
        conn, _ = listener.accept()
        print("accepted", flush=True)
        with conn:
            data, answered = b"", 0
            while chunk := conn.recv(65536):
                log.write(chunk)
                data += chunk
                while len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                    data = data[4 + int.from_bytes(data[:4], "big"):]
                    conn.sendall(answers[min(answered, len(answers) - 1)])
                    answered += 1
"""

WELCOME = p.encode_frame(p.Welcome(protocol=p.PROTOCOL_VERSION, version="9.9-impostor", pid=1)).hex()
ADDED = p.encode_frame(p.Added(ids=[41])).hex()


def as_uid(uid: int) -> tuple[str, ...]:
    return ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups") if uid else ()


class Listener:
    """LISTENER run as `uid` at `path`; stop() says how many connections it
    accepted, and received() what they sent."""

    def __init__(self, path: Path, uid: int, answers: tuple[str, ...] = (WELCOME, ADDED)) -> None:
        self.path = path
        self.record = path.parent / "received.bin"
        self.process = subprocess.Popen(
            [*as_uid(uid), "/usr/bin/python3", "-c", LISTENER, str(path), str(self.record), *answers],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "ready\n"
        self.accepted = 0

    def stop(self) -> None:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        self.accepted = out.count("accepted")

    def received(self) -> bytes:
        return self.record.read_bytes() if self.record.exists() else b""


def queuectl(*args: str, uid: int = 0, socket: Path | None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("QUEUED_SOCKET", "XDG_RUNTIME_DIR")}
    environment.pop("QUEUECTL_TRUST_UID", None)
    environment.update(NO_COLOR="1", SECRET_TOKEN=SECRET, **env)
    if socket is not None:
        environment["QUEUED_SOCKET"] = str(socket)
    return subprocess.run(
        [*as_uid(uid), tool("queuectl"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp",
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory root makes in /tmp, 0755 so that other uids reach into it."""
    path = Path(tempfile.mkdtemp(prefix="queued-trust-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def owned_dir(path: Path, uid: int, mode: int = 0o755) -> Path:
    path.mkdir()
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


def test_an_impostor_in_a_directory_it_made_in_tmp_is_sent_nothing() -> None:
    # A directory made by uid 65534 straight in the world-writable /tmp, a
    # socket bound by 65534 in it, answering the Hello with a valid Welcome.
    folder = Path(tempfile.mkdtemp(prefix="queued-impostor-"))
    try:
        os.chown(folder, NOBODY, NOBODY)
        sock = folder / "queued.sock"
        impostor = Listener(sock, NOBODY)
        try:
            add = queuectl("add", "--", "echo", "hello", socket=sock)
            commands = [
                queuectl(*args, socket=sock)
                for args in (("ls",), ("wait", "1"), ("logs", "-f", "1"), ("status",), ("cancel", "1"))
            ]
            completion = queuectl(
                socket=sock, _QUEUECTL_COMPLETE="bash_complete", COMP_WORDS="queuectl cancel ", COMP_CWORD="2"
            )
        finally:
            impostor.stop()
        expected = (
            f"queuectl: {sock} is owned by uid 65534, not by you or root, and /tmp (mode 1777) lets users "
            f"other than root create {folder} in it: not sending it anything "
            "(if uid 65534 is a daemon you trust: --trust-uid 65534)\n"
        )
        assert (add.returncode, add.stdout, add.stderr) == (3, "", expected)
        for result in commands:
            assert (result.returncode, result.stdout, result.stderr) == (3, "", expected)
        assert completion.returncode == 0 and completion.stdout.strip() == ""  # nothing to complete
        # Seven connections, and not one byte on any: not even the Hello.
        assert impostor.accepted == 7
        assert impostor.received() == b""
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_link_another_user_left_in_tmp_does_not_lead_to_a_trusted_place(scratch: Path) -> None:
    # 65534's own directory in a root-owned 0755 one would pass on its own (the
    # system layout); reached through a link 65534 made in /tmp, it does not:
    # where a link lives is checked like any directory on the way (ssh, which
    # resolves the path first, would not see the link).
    folder = owned_dir(scratch / "nobody", NOBODY)
    link = Path(tempfile.mktemp(prefix="queued-link-"))
    listener = Listener(folder / "queued.sock", NOBODY)
    try:
        subprocess.run([*as_uid(NOBODY), "ln", "-s", str(folder), str(link)], check=True)
        through_link = queuectl("add", "--", "echo", "hello", socket=link / "queued.sock")
        direct = queuectl("add", "--", "echo", "hello", socket=folder / "queued.sock")
    finally:
        listener.stop()
        link.unlink(missing_ok=True)
    assert (through_link.returncode, through_link.stdout) == (3, "")
    assert f"/tmp (mode 1777) lets users other than root create {link} in it" in through_link.stderr
    assert (direct.returncode, direct.stdout) == (0, "added job 41\n"), direct.stderr
    assert listener.received().count(SECRET.encode()) == 1  # the direct one's


def test_trust_uid_is_the_deliberate_way_past() -> None:
    folder = Path(tempfile.mkdtemp(prefix="queued-impostor-"))
    try:
        os.chown(folder, NOBODY, NOBODY)
        sock = folder / "queued.sock"
        listener = Listener(sock, NOBODY)
        try:
            by_option = queuectl("--trust-uid", str(NOBODY), "add", "--", "echo", "hello", socket=sock)
            by_env = queuectl("add", "--", "echo", "hello", socket=sock, QUEUECTL_TRUST_UID=str(NOBODY))
        finally:
            listener.stop()
        assert (by_option.returncode, by_option.stdout) == (0, "added job 41\n"), by_option.stderr
        assert (by_env.returncode, by_env.stdout) == (0, "added job 41\n"), by_env.stderr
        assert listener.received().count(SECRET.encode()) == 2  # what the check keeps from an impostor
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_fallback_directory_made_by_another_user_is_not_even_connected_to() -> None:
    # The user (some uid of no account) has no daemon, no QUEUED_SOCKET, no
    # XDG_RUNTIME_DIR: queuectl falls back to /tmp/queued-UID, which uid 65534
    # made first, and where it listens.
    user = random.randrange(200_000, 300_000)
    folder = Path(f"/tmp/queued-{user}")
    try:
        owned_dir(folder, NOBODY)
        impostor = Listener(folder / "queued.sock", NOBODY)
        try:
            result = queuectl("add", "--", "echo", "hello", uid=user, socket=None)
        finally:
            impostor.stop()
        assert (result.returncode, result.stdout) == (3, "")
        assert result.stderr == (
            f"queuectl: {folder} is owned by uid 65534, not by you: not sending anything to the socket in it "
            "(have root remove it, or point QUEUED_SOCKET / --socket elsewhere)\n"
        )
        assert impostor.accepted == 0 and impostor.received() == b""
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_system_daemon_in_a_directory_root_gave_it_is_used(scratch: Path) -> None:
    # The system units' layout: the real queued runs as its own user (here
    # 65534) with its socket in a directory that user owns, inside a directory
    # only root may write (here a 0755 one root made in /tmp).
    owned_dir(scratch / "run", NOBODY)
    owned_dir(scratch / "data", NOBODY, 0o700)
    daemon = Daemon(scratch)
    daemon.env.update(HOME=str(scratch / "data"), XDG_CONFIG_HOME=str(scratch / "data"))  # not root's
    # The capability only lets queued re-exec a Python installed under a
    # private /root (its guardian); the peer's uid is 65534 all the same.
    reads_python = ("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
    daemon.start(wrap=(*as_uid(NOBODY), *reads_python))  # waits for root's `queuectl status`
    try:
        job = daemon.add("--cwd", "/tmp", "--", "id", "-u")
        assert daemon.ctl("wait", str(job)).returncode == 0, daemon.ok("show", str(job))
        assert daemon.ok("logs", str(job)) == f"{NOBODY}\n"
    finally:
        daemon.stop()


def test_the_users_own_daemon_and_roots_are_used(scratch: Path) -> None:
    # 65534's own listener, even in a directory it made in /tmp ...
    own = Path(tempfile.mkdtemp(prefix="queued-own-"))
    try:
        os.chown(own, NOBODY, NOBODY)
        listener = Listener(own / "queued.sock", NOBODY)
        try:
            result = queuectl("add", "--", "echo", "hello", uid=NOBODY, socket=own / "queued.sock")
        finally:
            listener.stop()
        assert (result.returncode, result.stdout) == (0, "added job 41\n"), result.stderr
        assert SECRET.encode() in listener.received()
    finally:
        shutil.rmtree(own, ignore_errors=True)
    # ... and root's, wherever it is.
    folder = owned_dir(scratch / "root", 0)
    listener = Listener(folder / "queued.sock", 0)
    try:
        result = queuectl("add", "--", "echo", "hello", uid=NOBODY, socket=folder / "queued.sock")
    finally:
        listener.stop()
    assert (result.returncode, result.stdout) == (0, "added job 41\n"), result.stderr
