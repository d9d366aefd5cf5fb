"""The spawn through libc (GIL let go) does what os.posix_spawn did: a new
session, stdin from /dev/null, the two output descriptors, the directory, the
exact environment, default SIGPIPE, and the same errors."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from queued.processes.job_environment import entries
from queued.processes.libc_spawn import LibcSpawn

SPAWN = LibcSpawn.load()
pytestmark = pytest.mark.skipif(SPAWN is None, reason="this libc has no posix_spawn_file_actions_addchdir_np")


def run(script: str, cwd: str | bytes = "/", env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """Exit code, stdout and pid of `sh -c script`."""
    assert SPAWN is not None
    out_r, out_w = os.pipe()
    try:
        pid = SPAWN.spawn(
            "/bin/sh", ["/bin/sh", "-c", script], entries(env or {}), cwd=cwd, stdout=out_w, stderr=out_w
        )
    finally:
        os.close(out_w)
    with os.fdopen(out_r) as out:
        text = out.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text, pid


def test_runs_in_a_session_of_its_own_with_exactly_its_environment(tmp_path: Path) -> None:
    code, text, pid = run(
        'echo "$$ $(ps -o sid= -p $$) $PWD $ONLY"; env | wc -l', str(tmp_path), {"ONLY": "x"}
    )
    first, count = text.splitlines()
    shown_pid, sid, pwd, only = first.split()
    assert code == 0
    assert int(shown_pid) == pid == int(sid)  # the leader of a new session
    assert pwd == str(tmp_path) and only == "x"
    assert int(count) <= 3  # ONLY, and what sh sets itself (PWD)
    assert os.getcwd() != str(tmp_path)  # the daemon's own directory never moved


def test_stdin_is_dev_null_and_signals_are_at_their_defaults() -> None:
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python has it
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        # exec: a shell that forks blocks signals meanwhile (dash does), so look at no fork's mask
        code, text, _ = run(
            "read -r line; echo stdin $?; exec grep -E '^(SigIgn|SigBlk)' /proc/self/status",
            env={"PATH": "/usr/bin:/bin"},
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGPIPE, previous)
    ignored = int(text.split("SigIgn:")[1].split()[0], 16)
    masked = int(text.split("SigBlk:")[1].split()[0], 16)
    assert code == 0
    assert "stdin 1" in text  # end of file at once: /dev/null
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert masked == 0


def test_a_missing_or_unusable_directory_is_named(tmp_path: Path) -> None:
    assert SPAWN is not None
    gone = tmp_path / "gone"
    with pytest.raises(FileNotFoundError) as missing:
        SPAWN.spawn("/bin/sh", ["/bin/sh", "-c", "true"], [], cwd=str(gone), stdout=1, stderr=2)
    assert missing.value.filename == str(gone)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError) as not_dir:
        SPAWN.spawn("/bin/sh", ["/bin/sh", "-c", "true"], [], cwd=str(a_file), stdout=1, stderr=2)
    assert not_dir.value.filename == str(a_file)


def test_a_missing_program_is_named() -> None:
    assert SPAWN is not None
    with pytest.raises(FileNotFoundError) as missing:
        SPAWN.spawn("/no/such/sh", ["sh"], [], cwd="/", stdout=1, stderr=2)
    assert missing.value.filename == "/no/such/sh"


@pytest.mark.parametrize(
    ("argv", "env", "cwd"),
    [
        (["/bin/sh", "-c", "echo \0"], {}, "/"),
        (["/bin/sh"], {"A": "b\0c"}, "/"),
        (["/bin/sh"], {"A=B": "c"}, "/"),
        (["/bin/sh"], {"": "c"}, "/"),
        (["/bin/sh"], {}, "/tmp\0x"),
    ],
)
def test_bad_strings_are_refused_as_os_posix_spawn_refuses_them(
    argv: list[str], env: dict[str, str], cwd: str
) -> None:
    assert SPAWN is not None
    with pytest.raises(ValueError):
        SPAWN.spawn("/bin/sh", argv, entries(env), cwd=cwd, stdout=1, stderr=2)


def test_too_long_an_environment_is_e2big() -> None:
    assert SPAWN is not None
    with pytest.raises(OSError) as big:
        SPAWN.spawn(
            "/bin/sh",
            ["/bin/sh", "-c", "true"],
            entries({"BIG": "x" * (4 << 20)}),
            cwd="/",
            stdout=1,
            stderr=2,
        )
    assert big.value.errno == errno.E2BIG


def test_a_failed_spawn_leaves_nothing_behind(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(FileNotFoundError):
            assert SPAWN is not None
            SPAWN.spawn("/bin/sh", ["/bin/sh"], [], cwd=str(tmp_path / "gone"), stdout=1, stderr=2)
    assert len(os.listdir("/proc/self/fd")) == before
