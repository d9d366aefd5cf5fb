"""Output across hosts: two real nodes on one PostgreSQL database (separate
data dirs and sockets); a job runs on B, and A, which never ran it and has
none of its files, shows its output with `logs` and follows it with `logs -f`."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon, tool

pytest.importorskip("psycopg")


@pytest.fixture
def nodes(tmp_path: Path, postgres_empty_url: str) -> Iterator[tuple[Daemon, Daemon]]:
    """A runs nothing (concurrency 0), B runs the jobs; both are up before any job is added."""
    a = Daemon(tmp_path / "a", "--store", postgres_empty_url, "--node", "a", "--concurrency", "0")
    b = Daemon(tmp_path / "b", "--store", postgres_empty_url, "--node", "b")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for node in (a, b):
            if node.process and node.process.poll() is None:
                node.ctl("shutdown", "--now")
            node.stop()


def run_on(node: Daemon, command: str) -> int:
    job_id = node.add(command)
    assert node.ctl("wait", str(job_id)).returncode == 0, node.log.read_text()
    return job_id


def log_file(node: Daemon, job_id: int, stream: str = "out", attempt: int = 1) -> Path:
    return node.data_dir / "logs" / str(job_id // 1000) / f"{job_id}.{attempt}.{stream}"


def test_logs_of_a_job_run_on_another_node(nodes: tuple[Daemon, Daemon]) -> None:
    a, b = nodes
    job_id = run_on(b, "echo out1; echo err1 >&2; printf 'out2\\nlast'; printf 'err2' >&2")
    # Its files are B's: without them, what A shows can only be the database's.
    moved = {
        stream: log_file(b, job_id, stream).rename(f"{log_file(b, job_id, stream)}.away")
        for stream in ("out", "err")
    }
    shown = a.ctl("logs", str(job_id))
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, "out1\nout2\nlast", "err1\nerr2")
    assert a.ok("logs", "--stderr", str(job_id)) == "err1\nerr2"
    assert a.ok("logs", "--stdout", "--attempt", "1", str(job_id)) == "out1\nout2\nlast"
    assert a.ok("logs", "--tail", "1", "--stdout", str(job_id)) == "last"
    assert (
        a.ok("logs", "--stdout", "--stderr", str(job_id))
        == "==> stdout <==\nout1\nout2\nlast\n==> stderr <==\nerr1\nerr2\n"
    )
    # B, which ran it, shows the same (from the database too), and kept its files as before.
    assert b.ok("logs", "--stdout", str(job_id)) == "out1\nout2\nlast"
    assert moved["out"].read_text() == "out1\nout2\nlast" and moved["err"].read_text() == "err1\nerr2"
    missing = a.ctl("logs", "--attempt", "2", str(job_id))
    assert missing.returncode == 1 and "has no attempt 2" in missing.stderr


def test_logs_follow_from_another_node_while_it_runs(nodes: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """Each line shows on A while the job, on B, waits for the test to have seen it."""
    a, b = nodes
    go = tmp_path / "go"
    job_id = b.add(f"echo first; while [ ! -e {go} ]; do sleep 0.02; done; echo second >&2; echo third")
    follower = subprocess.Popen(
        [tool("queuectl"), "logs", "-f", str(job_id)],
        env=a.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert _read_until(follower.stdout, b"first\n", timeout=30) == b"first\n"
        assert json.loads(a.ok("show", "--json", str(job_id)))["state"] == "running"
        go.touch()
        assert follower.wait(timeout=30) == 0  # it ends when the job ends
        assert follower.stdout is not None and follower.stderr is not None
        assert follower.stdout.read() == b"third\n"
        assert follower.stderr.read() == b"second\n"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def _read_until(stream, wanted: bytes, timeout: float) -> bytes:
    """What `stream` gives until it holds `wanted` (or the time is up)."""
    got = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while wanted not in got and time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                data = os.read(stream.fileno(), 4096)
                if not data:
                    break
                got += data
    return got


def test_big_output_is_capped_in_the_database_as_in_the_file(nodes: tuple[Daemon, Daemon]) -> None:
    a, b = nodes
    b.ok("config", "set", "log-max-size", "100K")
    job_id = run_on(b, "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2")
    shown = a.ctl("logs", "--stdout", str(job_id)).stdout
    kept = log_file(b, job_id).read_text()
    assert shown == kept
    assert kept.startswith(
        "x" * 102400 + "\n[queued: output truncated at 102400 bytes; 2897600 more dropped]"
    )
    assert a.ok("logs", "--stderr", str(job_id)) == "done\n"


def test_logs_of_an_attempt_whose_output_is_only_in_files(
    nodes: tuple[Daemon, Daemon], postgres_empty_url: str
) -> None:
    """An attempt that kept no output in the database (one run before it kept
    any: its row names its files) is shown from its files, on the node that has them."""
    import psycopg

    _, b = nodes
    job_id = run_on(b, "echo from the file; echo err >&2")
    with psycopg.connect(postgres_empty_url) as conn:
        conn.execute("DELETE FROM queued.output_chunks WHERE job_id = %s", (job_id,))
    shown = b.ctl("logs", str(job_id))
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, "from the file\n", "err\n")
    assert b.ok("logs", "--tail", "1", "--stdout", str(job_id)) == "from the file\n"
    # Gone from the disk too: nothing to show, as for an attempt that wrote nothing.
    log_file(b, job_id).unlink()
    assert b.ok("logs", "--stdout", str(job_id)) == ""


def test_rm_and_clean_remove_the_output_from_the_database(
    nodes: tuple[Daemon, Daemon], postgres_empty_url: str
) -> None:
    import psycopg

    def kept_of() -> set[int]:
        with psycopg.connect(postgres_empty_url) as conn:
            return {r[0] for r in conn.execute("SELECT DISTINCT job_id FROM queued.output_chunks")}

    a, b = nodes
    removed, cleaned = (run_on(b, f"echo job {n}") for n in range(2))
    dead = b.add("--max-retries", "0", "echo dead; exit 1")
    b.ctl("wait", str(dead))
    assert kept_of() == {removed, cleaned, dead}
    a.ok("rm", str(removed))
    assert kept_of() == {cleaned, dead}
    a.ok("clean", "--state", "completed")
    assert kept_of() == {dead}
    assert a.ok("logs", str(dead)) == "dead\n"


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_output_the_local_disk_refused_is_whole_in_the_database(nodes: tuple[Daemon, Daemon]) -> None:
    """B's logs folder on a 64 KiB tmpfs: its file loses most of the output,
    the database keeps it all, and the record says where it is missing."""
    a, b = nodes
    logs = b.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(logs)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        job_id = run_on(b, "seq 1 40000")
        shown = subprocess.run(
            [tool("queuectl"), "logs", "--stdout", str(job_id)], env=a.env, capture_output=True, timeout=60
        ).stdout
        assert shown == subprocess.run(["seq", "1", "40000"], capture_output=True).stdout
        assert log_file(b, job_id).stat().st_size < len(shown)
        [run] = json.loads(a.ok("show", "--json", str(job_id)))["runs"]
        assert (
            "bytes lost from its log file (the store has them): No space left on device"
            in run["log_incomplete"]
        )
    finally:
        subprocess.run(["umount", str(logs)], capture_output=True)


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("unshare"), reason="a mount namespace needs root")
def test_rm_and_clean_on_one_node_delete_the_log_files_another_host_holds(
    tmp_path: Path, postgres_empty_url: str
) -> None:
    """B's data dir is on a disk A cannot see (its own mount namespace: as
    another host): `rm` and `clean` on A deleted the jobs and left their log
    files on B's disk for ever; now B hears which jobs went and deletes its own."""
    a = Daemon(tmp_path / "a", "--store", postgres_empty_url, "--node", "a", "--concurrency", "0")
    private = tmp_path / "b-disk"
    private.mkdir()
    b = Daemon(tmp_path / "b", "--store", postgres_empty_url, "--node", "b")
    b.flags = ["--data-dir", str(private / "data")]
    own_disk = (
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs tmpfs "$0" && exec "$@"',
    )
    try:
        a.start()
        b.start(wrap=(*own_disk, str(private)))
        assert b.process is not None
        b_disk = Path(f"/proc/{b.process.pid}/root{private}/data/logs/0")  # B's view of its disk
        removed, cleaned = (run_on(b, f"echo job {n}") for n in range(2))
        kept = b.add("--max-retries", "0", "echo dead; exit 1")
        b.ctl("wait", str(kept))
        assert not (private / "data").exists()  # A's view: nothing there
        assert {f"{job_id}.1.out" for job_id in (removed, cleaned, kept)} <= {
            p.name for p in b_disk.iterdir()
        }
        a.ok("rm", str(removed))
        a.ok("clean", "--state", "completed")
        deadline = time.monotonic() + 10
        while any((b_disk / f"{job_id}.1.out").exists() for job_id in (removed, cleaned)):
            assert time.monotonic() < deadline, sorted(p.name for p in b_disk.iterdir())
            time.sleep(0.05)
        assert (b_disk / f"{kept}.1.out").read_text() == "dead\n"  # its job is still there
    finally:
        for node in (b, a):
            node.stop()
