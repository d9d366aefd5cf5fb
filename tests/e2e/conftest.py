"""End-to-end: the real `queued` in a temporary data dir, the real `queuectl`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e .")
    return found


class Daemon:
    """A `queued` process and a `queuectl` that talks to it."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.socket = root / "run" / "queued.sock"
        self.extra = extra
        self.flags: list[str] | None = None  # None: --data-dir DATA_DIR --concurrency 2
        self.env = {**os.environ, "QUEUED_SOCKET": str(self.socket), "NO_COLOR": "1", "COLUMNS": "200"}
        self.env.pop("XDG_RUNTIME_DIR", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "queued.log"

    def start(
        self,
        *,
        wait: bool = True,
        pass_fds: tuple[int, ...] = (),
        wrap: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> Daemon:
        """Start queued (`wrap` goes before it, e.g. setpriv; `cwd` is its own)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*wrap, tool("queued"), *self._flags(), *self.extra],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
                cwd=cwd,
            )
        if wait:
            self.wait_ready()
        return self

    def _flags(self) -> list[str]:
        if self.flags is not None:
            return self.flags
        return ["--data-dir", str(self.data_dir), "--concurrency", "2"]

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"queued exited {self.process.returncode}: {self.log.read_text()}")
            if self.ctl("status").returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"queued did not come up: {self.log.read_text()}")

    def ctl(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("queuectl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self.ctl(*args, input=input)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result.stdout

    def add(self, *args: str) -> int:
        return int(self.ok("add", "--quiet", *args).strip())

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path).start()
    try:
        yield d
    finally:
        d.ok("shutdown", "--now") if d.process and d.process.poll() is None else None
        d.stop()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
