"""A node's resources: GPUs found by nvidia-smi (absent, failing, hanging,
garbage), and what the supervisor's shell makes of the capacity."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from queued.processes.node_resources import NodeResources, detect_gpus
from queued.resources import Capacity

TWO_GPUS = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5f1a3c-0000-0000-0000-000000000000)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5f1a3c-1111-0000-0000-000000000000)
"""


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install an `nvidia-smi` script as the only one on PATH."""

    def install(body: str) -> Path:
        script = tmp_path / "nvidia-smi"
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        return script

    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return install


def test_two_gpus(fake_smi) -> None:
    fake_smi(f"cat <<'EOF'\n{TWO_GPUS}EOF\n")
    assert detect_gpus() == (0, 1)


def test_absent_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert detect_gpus() == ()
    assert not caplog.records  # no GPU tooling: nothing to warn about


def test_exit_9_is_a_warning(fake_smi, caplog) -> None:
    fake_smi("echo 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n")
    with caplog.at_level(logging.WARNING):
        assert detect_gpus() == ()
    [record] = caplog.records
    assert "nvidia-smi -L failed (exit 9: NVIDIA-SMI has failed" in record.getMessage()
    assert "no GPUs are used" in record.getMessage()


def test_garbage_is_a_warning(fake_smi, caplog) -> None:
    fake_smi("head -c 3000 /dev/urandom\n")
    with caplog.at_level(logging.WARNING):
        assert detect_gpus() == ()
    assert "no GPU line we understand" in caplog.text


def test_a_hang_is_cut_short_with_what_it_started(fake_smi, tmp_path: Path, caplog) -> None:
    # The shell waits for a child holding stdout: both must go at the timeout.
    fake_smi(f"sleep 30 &\necho $! > {tmp_path}/child\nwait\n")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert detect_gpus(timeout=0.5) == ()
    assert time.monotonic() - began < 5
    assert "did not answer within" in caplog.text
    child = int((tmp_path / "child").read_text())
    assert _gone(child)


def _gone(pid: int) -> bool:
    """Dead (a zombie waiting for its reaper counts) within 2 s."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    os.kill(pid, 9)
    return False


def test_unrunnable_is_a_warning(fake_smi, caplog) -> None:
    fake_smi("echo hi\n").chmod(0o644)  # found, not executable
    with caplog.at_level(logging.WARNING):
        assert detect_gpus() == ()
    assert "cannot run nvidia-smi -L" in caplog.text


def test_capacity_follows_the_slots() -> None:
    node = NodeResources.found({"licence": 1}, (0, 1))
    assert node.capacity(4) == Capacity(slots=4, counts={"licence": 1}, gpus=(0, 1))
    assert node.capacity(2).slots == 2  # `workers scale`
    assert not node.plain
    assert NodeResources().plain
    assert NodeResources.found(None, ()).plain
    assert node.describe() == ", gpu=0,1, licence=1"


def test_free_is_what_is_not_held() -> None:
    node = NodeResources.found({"gpu": 3, "licence": 2}, ())
    pool = node.free(1, {"licence": 1}, {1})
    assert (pool.slots, pool.counts, pool.gpus) == (1, {"licence": 1}, frozenset({0, 2}))


def test_detection_is_skipped_only_when_gpus_are_declared_none() -> None:
    assert NodeResources.wants_detection(None)
    assert NodeResources.wants_detection({"licence": 1})
    assert NodeResources.wants_detection({"gpu": 2})
    assert not NodeResources.wants_detection({"gpu": 0})
