"""An attempt's environment: the captured one less the daemon's own variables,
plus the attempt's, which win; encoded once per captured environment."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from queued.processes import job_process
from queued.processes.guardian import INSTANCE_VAR
from queued.processes.job_environment import JobEnvironments, entries, entry
from queued.processes.job_process import JobProcess


def test_the_attempts_own_variables_win_and_the_daemons_are_left_out() -> None:
    captured = {"PATH": "/bin", "QUEUED_JOB_ID": "7", "NOTIFY_SOCKET": "/run/x", INSTANCE_VAR: "theirs"}
    env = JobEnvironments("ours").for_attempt(captured, job_id=42, run=3)
    env["CUDA_VISIBLE_DEVICES"] = "1"
    expected = {
        "PATH": "/bin",
        "QUEUED_JOB_ID": "42",
        INSTANCE_VAR: "ours",
        "QUEUED_ATTEMPT": "3",
        "CUDA_VISIBLE_DEVICES": "1",
    }
    assert env.as_dict() == expected
    listed = env.entries()
    assert sorted(listed) == sorted(f"{k}={v}".encode() for k, v in expected.items())
    assert len(listed) == len({item.split(b"=", 1)[0] for item in listed})  # each name once


def test_attempts_of_one_environment_share_its_encoding_but_not_their_own_variables() -> None:
    environments = JobEnvironments("ours")
    captured = {"PATH": "/bin"}
    first = environments.for_attempt(captured, job_id=1, run=1)
    second = environments.for_attempt(captured, job_id=2, run=1)
    assert b"QUEUED_JOB_ID=1" in first.entries() and b"QUEUED_JOB_ID=2" in second.entries()
    assert b"QUEUED_JOB_ID=1" in first.entries()  # the shared part was not changed by the second


def test_a_bad_variable_is_refused_every_time() -> None:
    environments = JobEnvironments("ours")
    captured = {"A": "b\0c"}
    for run in (1, 2):
        with pytest.raises(ValueError):
            environments.for_attempt(captured, job_id=1, run=run).entries()


@pytest.mark.parametrize(("name", "value"), [("A=B", "c"), ("", "c"), ("A", "\0"), ("A\0", "c")])
def test_entries_refuse_what_the_kernel_would_misread(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        entry(name, value)


def test_non_utf8_bytes_survive_as_surrogates() -> None:
    assert entries({"A": "caf\udce9"}) == [b"A=caf\xe9"]


@pytest.mark.parametrize("through", ["libc", "os.posix_spawn"])
def test_a_job_process_gets_its_environment_and_directory_either_way(
    through: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where libc cannot spawn as libc_spawn.py needs, os.posix_spawn does the
    same (holding the GIL, stepping into the directory and back)."""
    if through == "os.posix_spawn":
        monkeypatch.setattr(job_process, "_LIBC_SPAWN", None)
    elif job_process._LIBC_SPAWN is None:
        pytest.skip("this libc has no posix_spawn_file_actions_addchdir_np")
    home = os.getcwd()
    env = JobEnvironments("ours").for_attempt({"PATH": "/usr/bin:/bin", "ONLY": "x"}, job_id=9, run=2)
    process = JobProcess(
        'echo "$PWD $ONLY $QUEUED_JOB_ID $QUEUED_ATTEMPT $QUEUED_INSTANCE"', cwd=str(tmp_path), env=env
    )
    with os.fdopen(process.stdout, "rb") as out:
        text = out.read().decode()
    os.close(process.stderr)
    select.select([process.pidfd], [], [], 10)
    assert process.reap() == 0
    assert text.split() == [str(tmp_path), "x", "9", "2", "ours"]
    assert os.getcwd() == home
