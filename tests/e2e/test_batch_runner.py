"""A node used as a batch runner leaves by itself: `queued --exit-when-idle`
once nothing it could run is left, `--exit-after-jobs N` after N attempts;
and a node with concurrency 0 serves but runs nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon


def states(node: Daemon) -> dict[int, str]:
    return {job["id"]: job["state"] for job in json.loads(node.ok("ls", "--json"))}


def run_until_it_leaves(node: Daemon, *flags: str, timeout: float = 60) -> float:
    """Start `node` with `flags` added; seconds until it left by itself (exit 0)."""
    node.flags = ["--data-dir", str(node.data_dir), *flags]
    started = time.monotonic()
    node.start(wait=False)  # it may be gone before it could be asked
    assert node.process is not None
    assert node.process.wait(timeout=timeout) == 0, node.log.read_text()
    return time.monotonic() - started


def test_exit_when_idle_runs_everything_it_could_delayed_and_retried_ones_too(tmp_path: Path) -> None:
    node = Daemon(tmp_path)
    node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "0"]
    node.start()
    try:
        quick = [node.add("true") for _ in range(4)]
        delayed = node.add("--delay", "2s", "true")
        marker = tmp_path / "failed-once"
        retried = node.add(
            "--max-retries", "1", "--backoff-base", "1", f"test -e {marker} || {{ touch {marker}; exit 1; }}"
        )
        after = node.add("--after", str(retried), "true")
        held = node.add("--hold", "true")
        node.ok("queue", "add", "later")
        node.ok("queue", "pause", "later")
        paused = node.add("--queue", "later", "true")
        assert set(states(node).values()) == {"pending", "held"}  # concurrency 0: nothing ran
        node.ok("shutdown")
        assert node.process is not None and node.process.wait(timeout=30) == 0

        took = run_until_it_leaves(node, "--concurrency", "2", "--exit-when-idle")
        assert took >= 2  # it waited for the delayed job
        assert "nothing left to run here: leaving (--exit-when-idle)" in node.log.read_text()

        node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "0"]
        node.start()
        found = states(node)
        assert {found[job_id] for job_id in [*quick, delayed, retried, after]} == {"completed"}
        assert (found[held], found[paused]) == ("held", "pending")  # they wait for a person
    finally:
        node.stop()


def test_exit_when_idle_with_nothing_to_do_leaves_after_a_moment(tmp_path: Path) -> None:
    took = run_until_it_leaves(Daemon(tmp_path), "--exit-when-idle")
    assert took >= 1  # the grace that lets a script add its jobs first


def test_exit_after_jobs_starts_that_many_attempts_and_leaves_once_they_ended(tmp_path: Path) -> None:
    node = Daemon(tmp_path)
    node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "0"]
    node.start()
    try:
        ids = [node.add("sleep 0.2") for _ in range(5)]
        node.ok("shutdown")
        assert node.process is not None and node.process.wait(timeout=30) == 0
        run_until_it_leaves(node, "--concurrency", "2", "--exit-after-jobs", "3")
        assert "started 3 attempts (--exit-after-jobs): leaving once they end" in node.log.read_text()
        node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "0"]
        node.start()
        found = states(node)
        assert sorted(found[job_id] for job_id in ids) == ["completed"] * 3 + ["pending"] * 2
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--exit-after-jobs", "0"],
            "invalid value for exit-after-jobs: '0', give a whole number from 1 (from --exit-after-jobs)",
        ),
        (
            ["--exit-after-jobs", "many"],
            "invalid value for exit-after-jobs: 'many', give a whole number from 1 (from --exit-after-jobs)",
        ),
    ],
)
def test_a_bad_batch_runner_value_is_one_line_at_start(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    import subprocess

    from tests.e2e.conftest import tool

    result = subprocess.run(
        [tool("queued"), "--data-dir", str(tmp_path / "d"), "--socket", str(tmp_path / "s"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == f"queued: {message}\n"
