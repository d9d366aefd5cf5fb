"""What every benchmark needs: a real `queued` in a temp dir, small C helpers,
process CPU and memory readings, and statistics.

Everything runs this checkout's code: the repository root goes first on
PYTHONPATH for the daemon and the CLI, as it does on sys.path here.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from queuectl import Client, QueuectlError  # noqa: E402

BIN = Path(sys.executable).parent
QUEUED = str(BIN / "queued") if (BIN / "queued").exists() else shutil.which("queued") or "queued"
QUEUECTL = str(BIN / "queuectl") if (BIN / "queuectl").exists() else shutil.which("queuectl") or "queuectl"
PY_SPY = str(BIN / "py-spy") if (BIN / "py-spy").exists() else shutil.which("py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def child_env(**extra: str) -> dict[str, str]:
    """Our environment with this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("QUEUED_SOCKET", None)
    env.pop("QUEUED_DATA_DIR", None)
    env.pop("QUEUED_CONCURRENCY", None)
    env.update(extra)
    return env


# ----------------------------------------------------------------------------
# statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ----------------------------------------------------------------------------
# processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, live or exited (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reaped_cpu_seconds(pid: int) -> float:
    """utime + stime of the children `pid` has reaped (and theirs): a node's jobs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def run_ns(pid: int) -> float:
    """Seconds on a CPU of the live threads of `pid`, from schedstat (ns
    resolution, unlike the 10 ms ticks of /proc/PID/stat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024  # the kernel's "kB" are KiB
    return values


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


class Daemon:
    """A real `queued` under `root` (data dir and socket), started and stopped
    the way a user would. `wrap` prefixes the command (e.g. py-spy record --)."""

    def __init__(
        self, root: Path, *, concurrency: int = 2, wrap: Sequence[str] = (), extra: Sequence[str] = ()
    ) -> None:
        self.root = root
        self.extra = list(extra)  # more flags (the web bench's --http)
        self.data = root / "data"
        self.socket = root / "queued.sock"
        self.concurrency = concurrency
        self.wrap = list(wrap)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.start_seconds = 0.0
        self._log = root / "queued.log"

    def start(self, timeout: float = 300.0) -> Daemon:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            *self.wrap,
            QUEUED,
            "--data-dir",
            str(self.data),
            "--socket",
            str(self.socket),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            "warning",
            *self.extra,
        ]
        t0 = time.monotonic()
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=child_env())
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"queued exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with Client(self.socket, timeout=5) as client:
                    self.pid = client.status().pid
                break
            except QueuectlError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"queued did not answer within {timeout} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.01)
        self.start_seconds = time.monotonic() - t0
        return self

    def client(self, timeout: float | None = 60.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def stop(self, timeout: float = 120.0) -> None:
        if self.proc is None:
            return
        try:
            with self.client() as client:
                client.shutdown()
            self.proc.wait(timeout=timeout)
        except (QueuectlError, subprocess.TimeoutExpired):
            self.kill()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:
            self.kill()


# ----------------------------------------------------------------------------
# helpers built with the system compiler


def compile_c(name: str, out_dir: Path, *, shared: bool = False) -> Path | None:
    """Build tests/bench/NAME.c into out_dir (a program, or with `shared` a
    library libNAME.so); None (with a note) when there is no cc."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print(f"note: no C compiler: {name}.c not built", file=sys.stderr)
        return None
    out = out_dir / (f"lib{name}.so" if shared else name)
    flags = ["-shared", "-fPIC", "-pthread"] if shared else []
    subprocess.run([cc, "-O2", *flags, "-o", str(out), str(HERE / f"{name}.c")], check=True)
    return out


def read_stamp(path: Path) -> float | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return float(text) if text else None


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "loadavg_at_start": os.getloadavg(),
    }
