"""queuectl as a terminal user meets it: completion in a real bash, colour and
width on a real pseudo-terminal (tmux, script), and nothing extra when piped."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from .conftest import Daemon, tool

needs_tmux = pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux")


def test_bash_completion_script_installs(daemon: Daemon) -> None:
    result = subprocess.run(
        ["bash", "-c", f"source <({tool('queuectl')} completion bash); complete -p queuectl"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and "_queuectl_completion" in result.stdout, result.stderr
    for shell in ("zsh", "fish"):
        assert "_QUEUECTL_COMPLETE" in daemon.ok("completion", shell)


def complete(daemon: Daemon, line: str) -> list[str]:
    words = line.split(" ")
    env = {
        **daemon.env,
        "_QUEUECTL_COMPLETE": "bash_complete",
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(words) - 1),
    }
    result = subprocess.run([tool("queuectl")], env=env, capture_output=True, text=True, timeout=30)
    return [item.split(",", 1)[1] for item in result.stdout.splitlines() if "," in item]


def test_completion_asks_the_daemon_for_ids_and_queues(daemon: Daemon) -> None:
    done = daemon.add("true")
    daemon.ok("wait", str(done))
    waiting = daemon.add("--delay", "1h", "true")
    daemon.ok("queue", "add", "gpu")
    assert set(complete(daemon, "queuectl show ")) == {str(done), str(waiting), "last"}
    assert complete(daemon, "queuectl cancel ") == [str(waiting)]  # only unfinished jobs
    assert complete(daemon, "queuectl retry ") == [str(done)]  # only finished jobs
    assert complete(daemon, "queuectl queue pause g") == ["gpu"]
    assert complete(daemon, "queuectl queue set g") == ["gpu"]
    assert complete(daemon, "queuectl queue set gpu --concurrency n") == ["none"]
    assert set(complete(daemon, "queuectl add --queue ")) == {"default", "gpu"}
    assert "status" in complete(daemon, "queuectl sta")


def test_completion_without_a_daemon_completes_nothing(tmp_path) -> None:
    daemon = Daemon(tmp_path)  # not started
    assert complete(daemon, "queuectl show ") == []


class Terminal:
    """A tmux server of its own (`-L`: never the user's, whose panes would carry
    the user's environment and reach the user's daemon), one session of a fixed
    size running one shell command with exactly the environment given."""

    def __init__(self, env: dict[str, str], width: int = 70) -> None:
        self.name = f"queuectl-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in env.items() if k != "TMUX"} | {"TERM": "xterm-256color"}
        self.width = width

    def tmux(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def run(self, command: str, until: str, timeout: float = 20) -> str:
        environment = [arg for key, value in self.env.items() for arg in ("-e", f"{key}={value}")]
        size = ["-x", str(self.width), "-y", "30"]
        try:
            self.tmux(
                "new-session",
                "-d",
                "-s",
                "main",
                *size,
                *environment,
                f"{command}; echo __END__; sleep 30",
                check=True,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                screen = self.tmux("capture-pane", "-p", "-e", "-t", "main").stdout
                if until in screen and "__END__" in screen:
                    return screen
                time.sleep(0.1)
            raise AssertionError(f"{until!r} never appeared:\n{screen}")
        finally:
            self.tmux("kill-server")


@needs_tmux
def test_a_terminal_never_joins_the_users_tmux(daemon: Daemon, tmp_path) -> None:
    """A tmux server already running (the user's) with another QUEUED_SOCKET."""
    users = {**daemon.env, "TMUX_TMPDIR": str(tmp_path), "QUEUED_SOCKET": "/nonexistent/users.sock"}
    users.pop("TMUX", None)
    subprocess.run(
        ["tmux", "-f", "/dev/null", "new-session", "-d", "-s", "user", "sleep 60"],
        env=users,
        check=True,
        timeout=30,
    )
    try:
        ours = {**daemon.env, "TMUX_TMPDIR": str(tmp_path)}
        screen = Terminal(ours, width=250).run("echo socket=$QUEUED_SOCKET", until="socket=")
        assert f"socket={daemon.socket}" in screen
    finally:
        subprocess.run(["tmux", "kill-server"], env=users, capture_output=True, timeout=30)


@needs_tmux
def test_colour_and_width_on_a_terminal(daemon: Daemon) -> None:
    long_command = "echo " + "x" * 200
    daemon.ok("wait", str(daemon.add(long_command)))
    env = {k: v for k, v in daemon.env.items() if k not in ("NO_COLOR", "COLUMNS")}
    screen = Terminal(env, width=70).run(f"{tool('queuectl')} ls", until="completed")
    assert "\x1b[" in screen  # coloured state
    table = [line for line in screen.splitlines() if "completed" in line or "COMMAND" in line]
    plain = [__import__("re").sub(r"\x1b\[[0-9;]*m", "", line) for line in table]
    assert all(len(line) <= 70 for line in plain) and "…" in plain[-1]
    screen = Terminal({**env, "NO_COLOR": "1"}).run(f"{tool('queuectl')} ls", until="completed")
    assert "\x1b[3" not in screen and "\x1b[9" not in screen


def test_no_colour_when_piped(daemon: Daemon) -> None:
    daemon.ok("wait", str(daemon.add("true")))
    env = {k: v for k, v in daemon.env.items() if k != "NO_COLOR"}
    result = subprocess.run([tool("queuectl"), "ls"], env=env, capture_output=True, text=True)
    assert "completed" in result.stdout and "\x1b" not in result.stdout


@needs_tmux
def test_wait_shows_progress_on_a_terminal_only(daemon: Daemon) -> None:
    ids = [str(daemon.add("sleep 1")) for _ in range(3)]
    screen = Terminal(daemon.env).run(f"{tool('queuectl')} wait {' '.join(ids)}", until="3/3 done")
    assert "0 failed" in screen
    ids = [str(daemon.add("sleep 0.5")) for _ in range(2)]
    piped = daemon.ctl("wait", *ids)
    assert piped.returncode == 0 and piped.stdout == "" and piped.stderr == ""


@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1)")
def test_relative_times_in_tables_absolute_in_show(daemon: Daemon) -> None:
    job = daemon.add("--delay", "20s", "true")
    assert __import__("re").search(r"in (20|1[0-9])s", daemon.ok("ls"))
    shown = daemon.ok("show", str(job))
    assert time.strftime("%Y-%m-%d") in shown
    tty = subprocess.run(
        ["script", "-qec", f"{tool('queuectl')} show {job}", "/dev/null"],
        env={k: v for k, v in daemon.env.items() if k != "NO_COLOR"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "pending" in tty.stdout and "\x1b[" in tty.stdout
