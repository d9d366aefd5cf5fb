"""Bad input at the command line: a sentence in the user's words and the right
exit code (1 refused, 2 usage), and what can run does. Issue #17 items 6, 8-11;
issue #11 section 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import Daemon, tool

HUGE = "99999999999999999999"


def refused(daemon: Daemon, *args: str, code: int = 1, input: str | None = None) -> str:
    result = daemon.ctl(*args, input=input)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "internal error" not in result.stderr and "Expected `" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    return result.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("enqueue", '{"command":"true","cwd":"/tmp\\u0000x"}'), 1, "cwd contains a NUL byte"),
        (("add", "--label", "a\tb", "-e", "A=1", "--", "true"), None, None),
        (("show", HUGE), 1, f"no job {HUGE}"),
        (("wait", HUGE), 1, f"no job {HUGE}"),
        (("cancel", HUGE), 1, f"no job {HUGE}"),
        (("ls", "--limit", HUGE), 2, "--limit"),
        (("add", "--after", HUGE, "true"), 1, f"--after names unknown job {HUGE}"),
        (("add", "--at", "10000-01-01", "true"), 2, "year up to 9999"),
        (("add", ""), 2, "the command is empty"),
        (("add", "   "), 2, "the command is empty"),
        (("add", "--delay", "99999d", "true"), 2, "longer than 10 years"),
        (("queue", "add", "bad name"), 2, "a queue name must be 1 to 64 letters, digits"),
        (("queue", "set", "nope", "--concurrency", "2"), 1, "no queue 'nope'"),
        (("queue", "set", "default", "--concurrency", "0"), 2, "'0' is not a limit: use 1 to 4096, or none"),
        (("queue", "set", "default", "-c", "-3"), 2, "is not a limit"),
        (
            ("config", "set", "max-retries", "abc"),
            2,
            "invalid value for max-retries: 'abc' is not a whole number",
        ),
        (("config", "set", "max-retries", HUGE), 2, "must be from 0 to 2,147,483,648"),
    ],
)
def test_bad_input_gets_a_sentence_and_its_exit_code(
    daemon: Daemon, args: tuple[str, ...], code: int | None, words: str | None
) -> None:
    if code is None:  # a control case: odd but fine input is taken
        daemon.ok(*args)
        return
    assert words in refused(daemon, *args, code=code)


def test_a_config_value_out_of_range_is_not_stored(daemon: Daemon) -> None:
    """Issue #17 item 8: it was stored, then every add failed with "internal error"."""
    daemon.ctl("config", "set", "max-retries", HUGE)
    job_id = daemon.add("true")
    assert daemon.ctl("wait", str(job_id)).returncode == 0
    assert daemon.ok("config", "get", "max-retries").split()[-1] == "3"
    assert daemon.ok("config", "set", "timeout", "0").strip() == "timeout = none"


def test_a_command_longer_than_one_exec_argument_is_refused_at_add(daemon: Daemon) -> None:
    words = " ".join(["x" * 1000] * 140)  # each word fits in queuectl's own argv; together they do not
    stderr = refused(daemon, "add", "--", *words.split())
    assert "131,071 bytes as one argument (MAX_ARG_STRLEN" in stderr
    assert "MAX_ARG_STRLEN" in refused(daemon, "add", "--from", "-", input=words + "\n")
    assert json.loads(daemon.ok("ls", "--json")) == []


def test_after_a_dead_job_is_refused_and_at_in_the_past_runs_now(daemon: Daemon) -> None:
    dead = daemon.add("--max-retries", "0", "false")
    daemon.ctl("wait", str(dead))
    assert f"--after {dead}: job {dead} is dead, so this job could never run" in refused(
        daemon, "add", "--after", str(dead), "true"
    )
    result = daemon.ctl("add", "--quiet", "--at", "2001-01-01T00:00", "true")
    assert result.returncode == 0 and "in the past: the job runs now" in result.stderr, result
    assert daemon.ctl("wait", result.stdout.strip(), "--timeout", "30").returncode == 0


def test_cancel_cancels_what_it_can_and_names_the_rest(daemon: Daemon) -> None:
    done = daemon.add("true")
    daemon.ctl("wait", str(done))
    waiting = [daemon.add("--delay", "1h", "true") for _ in range(2)]
    result = daemon.ctl("cancel", str(done), *map(str, waiting), "424242")
    assert result.returncode == 1, result
    assert result.stdout == f"canceled jobs {waiting[0]}, {waiting[1]}\n"
    assert result.stderr.splitlines() == [
        f"queuectl: job {done} is completed: only pending, held, failed or running jobs can be canceled",
        "queuectl: no job 424242",
    ]
    states = {job["id"]: job["state"] for job in json.loads(daemon.ok("ls", "--json"))}
    assert states == {done: "completed", waiting[0]: "canceled", waiting[1]: "canceled"}


def test_logs_with_both_stream_flags_shows_both_labelled(daemon: Daemon) -> None:
    job_id = daemon.add("echo out; echo err >&2; printf tail")
    daemon.ctl("wait", str(job_id))
    result = daemon.ctl("logs", "--stdout", "--stderr", str(job_id))
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == "==> stdout <==\nout\ntail\n==> stderr <==\nerr\n"
    assert daemon.ok("logs", "--stderr", str(job_id)) == "err\n"


def test_bytes_that_are_not_utf8_in_the_environment_and_cwd_reach_the_job(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Issue #17 item 9: "internal error: UnicodeEncodeError" on every add."""
    odd = tmp_path / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    out = tmp_path / "out"
    env = {**daemon.env, "X": os.fsdecode(b"caf\xe9 \xff"), os.fsdecode(b"N\xe9"): "v"}
    script = f'printf %s "$X" > {out}.x; pwd > {out}.pwd'
    result = subprocess.run(
        [tool("queuectl"), "add", "--quiet", script], env=env, cwd=odd, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result
    job_id = result.stdout.decode().strip()
    assert daemon.ctl("wait", job_id).returncode == 0
    assert Path(f"{out}.x").read_bytes() == b"caf\xe9 \xff"
    assert Path(f"{out}.pwd").read_bytes() == os.fsencode(odd) + b"\n"
    shown = json.loads(daemon.ok("show", "--json", job_id))
    assert shown["cwd"].endswith("caf\\xe9")  # readable, where it cannot be exact
    # (A shell drops a variable whose name is no identifier: only `show` can tell of it.)
    assert shown["env"]["N\\xe9"] == "v" and shown["env"]["X"] == "caf\\xe9 \\xff"
    # Stored as bytes: a copy made after a restart of the daemon runs with them too.
    for path in Path(tmp_path).glob("out.*"):
        path.unlink()
    daemon.stop()
    daemon.start()
    copy = daemon.ok("restart", "--quiet", job_id).strip()
    assert daemon.ctl("wait", copy).returncode == 0
    assert Path(f"{out}.x").read_bytes() == b"caf\xe9 \xff"
    assert Path(f"{out}.pwd").read_bytes() == os.fsencode(odd) + b"\n"


def test_a_saved_setting_out_of_range_is_ignored_with_a_warning(daemon: Daemon, tmp_path: Path) -> None:
    """Issue #17 item 8: a value an older queued stored must not keep the daemon from starting."""
    import sqlite3

    daemon.stop()
    with sqlite3.connect(next(tmp_path.rglob("queue.db"))) as db:
        db.execute("INSERT INTO config VALUES ('max-retries', ?)", (HUGE,))
    daemon.start()
    job_id = daemon.add("true")
    assert daemon.ctl("wait", str(job_id)).returncode == 0
    assert json.loads(daemon.ok("show", "--json", str(job_id)))["max_retries"] == 3
    assert f"ignoring the saved setting max-retries = {HUGE}" in daemon.log.read_text()


def test_a_jobs_own_cwd_and_env_that_are_not_utf8_work_too(daemon: Daemon, tmp_path: Path) -> None:
    odd = tmp_path / os.fsdecode(b"r\xe9p")
    odd.mkdir()
    out = tmp_path / "out"
    args = [
        "add",
        "--quiet",
        "--cwd",
        os.fsencode(odd),
        "-e",
        b"Y=\xff\xfe",
        f'printf %s "$Y" > {out}; pwd >> {out}',
    ]
    result = subprocess.run([tool("queuectl"), *args], env=daemon.env, capture_output=True, timeout=60)
    assert result.returncode == 0, result
    assert daemon.ctl("wait", result.stdout.decode().strip()).returncode == 0
    assert out.read_bytes() == b"\xff\xfe" + os.fsencode(odd) + b"\n"


REFUSALS = [
    (("enqueue", '{"command":"true","cwd":"/tmp\\u0000x"}'), 1, "cwd contains a NUL byte"),
    (("show", HUGE), 1, f"no job {HUGE}"),
    (("wait", HUGE), 1, f"no job {HUGE}"),
    (("cancel", HUGE), 1, f"no job {HUGE}"),
    (("rm", HUGE), 1, f"no job {HUGE}"),
    (("retry", HUGE), 1, f"no job {HUGE}"),
    (("add", "--after", HUGE, "true"), 1, f"--after names unknown job {HUGE}"),
    (("add", "--after", "1", "--after", "777", "true"), 1, "--after names unknown job 777"),
    (("add", "--queue", "nope", "true"), 1, "unknown queue 'nope'"),
    (("queue", "set", "nope", "--concurrency", "2"), 1, "no queue 'nope'"),
    (("queue", "rm", "default"), 1, "the default queue cannot be removed"),
    (("release", "1"), 1, "job 1"),
    (("edit", HUGE, "--priority", "5"), 1, f"no job {HUGE}"),
]


def test_refusals_with_postgres_as_the_store_change_nothing(tmp_path: Path, postgres_url: str) -> None:
    """The same bad input through a node on PostgreSQL: each refusal is one
    line with its exit code, and the store is as it was."""
    node = Daemon(tmp_path, "--store", postgres_url).start()
    try:
        node.ok("queue", "pause", "default")  # nothing runs: the store only changes by requests
        node.add("true")

        def store() -> tuple[str, str]:
            counts = json.loads(node.ok("status", "--json"))["counts"]
            return node.ok("ls", "--json"), json.dumps(counts, sort_keys=True)

        before = store()
        for args, code, words in REFUSALS:
            said = refused(node, *args, code=code)
            assert words in said, (args, said)
            assert store() == before, args
    finally:
        node.stop()
