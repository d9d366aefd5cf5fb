"""A user's session: the real queuectl against the real queued, command by command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Daemon, tool


def jobs(daemon: Daemon, *args: str) -> list[dict]:
    return json.loads(daemon.ok("ls", "--json", *args))


def test_add_show_logs_wait(daemon: Daemon, tmp_path: Path) -> None:
    out = daemon.ok("add", "--", "sh", "-c", "echo hello; echo oops >&2")
    assert out.strip() == "added job 1"
    assert (
        daemon.add("--label", "second", "--cwd", str(tmp_path), "--env", "WHO=world", "echo $WHO; pwd") == 2
    )
    assert daemon.ctl("wait", "1", "2").returncode == 0
    assert daemon.ok("logs", "2") == f"world\n{tmp_path}\n"
    both = daemon.ctl("logs", "1")
    assert both.stdout == "hello\n" and both.stderr == "oops\n"
    assert daemon.ok("logs", "--stderr", "1") == "oops\n"
    shown = json.loads(daemon.ok("show", "--json", "2"))
    for key in (
        "id",
        "command",
        "state",
        "queue",
        "priority",
        "label",
        "attempts",
        "max_retries",
        "exit_code",
        "run_at",
        "created_at",
        "updated_at",
        "depends_on",
        "runs",
    ):
        assert key in shown, key
    assert shown["state"] == "completed" and shown["label"] == "second" and shown["exit_code"] == 0
    assert shown["created_at"].endswith("Z") and shown["runs"][0]["attempt"] == 1
    for key in ("attempt", "pid", "started_at", "ended_at", "exit_code", "signal", "error"):
        assert key in shown["runs"][0], key
    human = daemon.ok("show", "2")
    assert "completed" in human and "echo $WHO; pwd" in human


@pytest.mark.parametrize(
    "args", [["--lable", "nightly", "--", "echo", "hi"], ["--bogus", "echo"], ["--max-retry", "2", "echo"]]
)
def test_add_refuses_an_unknown_option_and_adds_nothing(daemon: Daemon, args: list[str]) -> None:
    result = daemon.ctl("add", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert f"no such option: {args[0]}" in result.stderr and len(result.stderr.splitlines()) == 1
    assert jobs(daemon) == []


def test_add_gives_the_job_every_word_from_its_first(daemon: Daemon) -> None:
    daemon.ok("queue", "pause", "default")  # stored, not run: the command is what is checked
    lines = [
        ["ls", "-la", "/tmp"],
        ["ls", "-l", "/tmp"],
        ["env", "-e", "FOO=1"],
        ["grep", "-q", "foo", "FILE"],
    ]
    ids = [daemon.add(*line) for line in lines]
    for job_id, line in zip(ids, lines, strict=True):
        shown = json.loads(daemon.ok("show", "--json", str(job_id)))
        assert shown["command"] == " ".join(line)
        assert (shown["label"], shown["queue"]) == (None, "default")
    daemon.ok("queue", "resume", "default")
    env = daemon.add("--env", "FOO=1", "sh", "-c", "echo ${FOO:-unset}")
    plain = daemon.add("sh", "-c", "echo ${FOO:-unset}")
    daemon.ctl("wait", str(env), str(plain))
    assert (daemon.ok("logs", str(env)), daemon.ok("logs", str(plain))) == ("1\n", "unset\n")


def test_ls_filters_and_table(daemon: Daemon) -> None:
    daemon.ok("queue", "add", "batch", "--concurrency", "1")
    a = daemon.add("--queue", "batch", "--label", "x", "true")
    b = daemon.add("--max-retries", "0", "false")
    c = daemon.add("--delay", "1h", "true")
    daemon.ctl("wait", str(a), str(b))
    assert [j["id"] for j in jobs(daemon, "--state", "dead")] == [b]
    assert [j["id"] for j in jobs(daemon, "--state", "dead", "--state", "pending")] == [b, c]
    assert [j["id"] for j in jobs(daemon, "--queue", "batch")] == [a]
    assert [j["id"] for j in jobs(daemon, "--label", "x")] == [a]
    assert [j["id"] for j in jobs(daemon, "--limit", "1")] == [c]
    table = daemon.ok("ls")
    assert "STATE" in table.splitlines()[0].upper() and "completed" in table and "dead" in table
    assert daemon.ctl("ls", "--state", "sleeping").returncode == 2


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_queue_s_limit_changes_while_it_runs(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("queue", "add", "gpu", "--concurrency", "1")
    gate = tmp_path / "gate"
    ids = [daemon.add("--queue", "gpu", f"while [ ! -e {gate} ]; do sleep 0.05; done") for _ in range(3)]

    def running() -> int:
        return {q["name"]: q for q in json.loads(daemon.ok("queue", "ls", "--json"))}["gpu"]["running"]

    wait_for(lambda: running() == 1)
    said = daemon.ok("queue", "set", "gpu", "--concurrency", "2")  # the daemon's 2 slots
    assert said == "queue gpu: at most 2 at once\n"
    wait_for(lambda: running() == 2)  # the supervisor claimed by the new limit at once
    said = daemon.ok("queue", "set", "gpu", "-c", "1")
    assert said == "queue gpu: at most 1 at once (2 running go on; none starts while 1 or more run)\n"
    assert running() == 2  # a lower limit stops nothing
    assert daemon.ok("queue", "set", "gpu", "-c", "none") == "queue gpu: no limit but the global one\n"
    assert json.loads(daemon.ok("queue", "ls", "--json"))[1]["concurrency"] is None
    refused = daemon.ctl("queue", "set", "gpu", "-c", "0")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "not a limit" in refused.stderr
    assert json.loads(daemon.ok("queue", "ls", "--json"))[1]["concurrency"] is None  # unchanged
    gate.touch()
    daemon.ok("wait", *map(str, ids))


def test_bulk_add_from_file_and_stdin(daemon: Daemon, tmp_path: Path) -> None:
    lines = tmp_path / "jobs.txt"
    lines.write_text('# comment\necho one\n\n{"command": "echo two", "max_retries": 5, "label": "j"}\n')
    ids = [int(x) for x in daemon.ok("add", "--quiet", "--from", str(lines)).split()]
    assert len(ids) == 2
    shown = json.loads(daemon.ok("show", "--json", str(ids[1])))
    assert shown["max_retries"] == 5 and shown["label"] == "j"
    many = "".join(f"echo {i}\n" for i in range(2500))
    out = daemon.ok("add", "--quiet", "--from", "-", input=many)
    assert len(out.split()) == 2500
    bad = daemon.ctl("add", "--from", "-", input='echo fine\n{"command": 3}\n')
    assert bad.returncode == 2 and "2" in bad.stderr  # names the line
    assert len(jobs(daemon, "--limit", "10000")) == 2502  # nothing from the bad batch


def _lines_with(bad: str, count: int, at: int) -> str:
    """`count` job lines, line `at` (from 1) being `bad`, after a comment line."""
    return "# jobs\n" + "".join(bad + "\n" if n == at else f"echo {n}\n" for n in range(1, count + 1))


def test_add_from_checks_every_line_before_sending_any(daemon: Daemon) -> None:
    """A job the client can tell is wrong, past the first request's 10,000:
    nothing is added, and the message names its line (the file's, comment counted)."""
    daemon.ok("queue", "pause", "default")
    bad = daemon.ctl(
        "add", "--from", "-", input=_lines_with('{"command": "x", "label": "a\\u0000b"}', 10_005, 10_003)
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert "line 10004: label contains a NUL byte; nothing was added" in bad.stderr
    assert bad.stdout == "" and jobs(daemon) == []


def test_add_from_refused_after_a_first_request_says_which_lines_were_added(daemon: Daemon) -> None:
    daemon.ok("queue", "pause", "default")
    bad = daemon.ctl(
        "add", "--from", "-", input=_lines_with('{"command": "x", "queue": "nope"}', 10_005, 10_003)
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("queuectl: lines 10002-10006: unknown queue 'nope'")
    assert bad.stderr.rstrip().endswith(
        "the 10,000 jobs of the lines before line 10002 were added, none from it on"
    )
    assert bad.stdout == "added 10000 jobs (1-10000)\n"
    listed = jobs(daemon, "--all")
    assert len(listed) == 10_000 and listed[-1]["command"] == "echo 10000"
    first = daemon.ctl("add", "--from", "-", input="echo a\n# b\n" + '{"command": "x", "queue": "nope"}\n')
    assert first.returncode == 1 and "lines 1-3: unknown queue 'nope'" in first.stderr
    assert first.stderr.rstrip().endswith("; nothing was added") and len(jobs(daemon, "--all")) == 10_000


def test_output_into_pipes_whole_or_cut(daemon: Daemon) -> None:
    """queuectl leaves without the interpreter's teardown: what it printed must
    still arrive whole, and a reader that stops early is not an error."""
    daemon.ok("queue", "pause", "default")
    daemon.ok("add", "--from", "-", input="".join(f"echo {n}\n" for n in range(3000)))
    whole = subprocess.run(
        f"{tool('queuectl')} ls --all --json | cat",
        shell=True,
        env=daemon.env,
        capture_output=True,
        text=True,
    )
    assert whole.returncode == 0 and len(json.loads(whole.stdout)) == 3000
    cut = subprocess.run(
        f"{tool('queuectl')} ls --all | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        env=daemon.env,
        capture_output=True,
        text=True,
    )
    assert cut.returncode == 0 and cut.stdout.startswith("ID") and cut.stderr == ""


def test_add_imports_no_daemon_module(daemon: Daemon) -> None:
    script = (
        "import sys\nsys.argv = ['queuectl', 'add', 'true']\nfrom queuectl.cli import run\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\nprint(*sorted(sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], env=daemon.env, capture_output=True, text=True)
    modules = set(result.stdout.split())
    assert "queuectl.cli" in modules and "queued.protocol" in modules
    heavy = {
        "trio",
        "sqlite3",
        "queued.daemon",
        "queued.store",
        "queued.processes.supervisor",
        "queuectl.commands",
    }
    assert not heavy & modules


def test_enqueue_json(daemon: Daemon) -> None:
    out = daemon.ok("enqueue", '{"id": "job1", "command": "exit 1", "max_retries": 1, "backoff_base": 1}')
    job_id = int(out.split()[-1])
    assert daemon.ctl("wait", str(job_id)).returncode == 1
    shown = json.loads(daemon.ok("show", "--json", str(job_id)))
    assert shown["label"] == "job1" and shown["state"] == "dead" and shown["attempts"] == 2
    assert daemon.ctl("enqueue", "{not json").returncode == 2
    assert daemon.ctl("enqueue", '{"command": "true", "colour": "red"}').returncode == 2


def test_retries_dlq_and_retry(daemon: Daemon) -> None:
    job_id = daemon.add("--max-retries", "1", "--backoff-base", "1", "exit 4")
    assert daemon.ctl("wait", str(job_id)).returncode != 0
    dead = json.loads(daemon.ok("dlq", "ls", "--json"))
    assert [j["id"] for j in dead] == [job_id] and dead[0]["exit_code"] == 4
    daemon.ok("dlq", "retry", str(job_id))
    assert json.loads(daemon.ok("show", "--json", str(job_id)))["state"] in ("pending", "running", "failed")
    daemon.ctl("wait", str(job_id))
    daemon.ok("dlq", "retry", "--all")
    daemon.ctl("wait", str(job_id))
    daemon.ok("dlq", "purge")
    assert daemon.ctl("show", str(job_id)).returncode == 1
    other = daemon.add("true")
    daemon.ok("wait", str(other))
    daemon.ok("retry", str(other))
    daemon.ok("wait", str(other))
    assert len(json.loads(daemon.ok("show", "--json", str(other)))["runs"]) == 2


def test_cancel_rm_and_refusals(daemon: Daemon) -> None:
    sleeper = daemon.add("sleep 60")
    pending = daemon.add("--delay", "1h", "true")
    daemon.ok("cancel", str(sleeper), str(pending))
    result = daemon.ctl("wait", str(sleeper), str(pending))
    assert result.returncode == 1
    states = {j["id"]: j["state"] for j in jobs(daemon)}
    assert states == {sleeper: "canceled", pending: "canceled"}
    refused = daemon.ctl("cancel", str(sleeper))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "canceled" in refused.stderr
    assert daemon.ctl("cancel", "999").returncode == 1
    daemon.ok("rm", str(pending))
    assert daemon.ctl("show", str(pending)).returncode == 1
    running = daemon.add("sleep 60")
    time.sleep(0.3)
    assert daemon.ctl("rm", str(running)).returncode == 1
    daemon.ok("cancel", str(running))


def test_wait_exit_codes_and_timeout(daemon: Daemon) -> None:
    good = daemon.add("true")
    bad = daemon.add("--max-retries", "0", "false")
    assert daemon.ctl("wait", str(good)).returncode == 0
    assert daemon.ctl("wait", str(good), str(bad)).returncode == 1
    slow = daemon.add("sleep 30")
    start = time.monotonic()
    assert daemon.ctl("wait", "--timeout", "1", str(slow)).returncode not in (0, 1)
    assert time.monotonic() - start < 10
    daemon.ok("cancel", str(slow))
    assert daemon.ctl("wait", "424242").returncode == 1


def test_logs_follow_until_the_job_ends(daemon: Daemon) -> None:
    job_id = daemon.add("for i in 1 2 3; do echo line $i; sleep 0.3; done")
    result = daemon.ctl("logs", "-f", str(job_id), timeout=20)
    assert result.returncode == 0 and result.stdout == "line 1\nline 2\nline 3\n"


def test_status_workers_queues_config(daemon: Daemon) -> None:
    status = json.loads(daemon.ok("status", "--json"))
    assert status["concurrency"] == 2 and "counts" in status and status["pid"] == daemon.process.pid
    assert "pending" in daemon.ok("status")
    daemon.ok("workers", "scale", "3")
    assert json.loads(daemon.ok("workers", "ls", "--json"))["concurrency"] == 3
    assert daemon.ctl("workers", "scale", "-1").returncode == 2
    daemon.ok("queue", "add", "gpu", "--concurrency", "1")
    assert daemon.ctl("queue", "add", "gpu").returncode == 1
    daemon.ok("queue", "pause", "gpu")
    held = daemon.add("--queue", "gpu", "true")
    time.sleep(0.3)
    assert json.loads(daemon.ok("show", "--json", str(held)))["state"] == "pending"
    queues = {q["name"]: q for q in json.loads(daemon.ok("queue", "ls", "--json"))}
    assert queues["gpu"]["paused"] is True and queues["gpu"]["concurrency"] == 1
    daemon.ok("queue", "resume", "gpu")
    daemon.ok("wait", str(held))
    assert daemon.ctl("queue", "rm", "default").returncode == 1
    assert daemon.ctl("add", "--queue", "nope", "true").returncode == 1
    daemon.ok("config", "set", "max-retries", "7")
    assert json.loads(daemon.ok("config", "get", "--json"))["max-retries"] == 7
    assert "7" in daemon.ok("config", "get", "max-retries")
    assert json.loads(daemon.ok("show", "--json", str(daemon.add("true"))))["max_retries"] == 7
    assert daemon.ctl("config", "set", "max-retries", "-1").returncode == 2  # usage: checked before sending
    assert daemon.ctl("config", "set", "colour", "red").returncode == 2
    daemon.ok("config", "set", "timeout", "5m")
    assert json.loads(daemon.ok("config", "get", "--json", "timeout"))["timeout"] == 300


@pytest.mark.parametrize(
    ("key", "typed", "shown"),
    [
        ("timeout", "1h", "1h"),
        ("timeout", "90m", "1h30m"),
        ("log-max-size", "10M", "10M"),
        ("kill-grace", "2.5", "2.5s"),
    ],
)
def test_config_set_and_get_print_the_same_form(daemon: Daemon, key: str, typed: str, shown: str) -> None:
    assert daemon.ok("config", "set", key, typed) == f"{key} = {shown}\n"
    assert daemon.ok("config", "get", key).split() == [key, shown]
    assert f"{key}  " in daemon.ok("config", "get") and shown in daemon.ok("config", "get")


def test_clean(daemon: Daemon) -> None:
    done = daemon.add("true")
    failed = daemon.add("--max-retries", "0", "false")
    daemon.ctl("wait", str(done), str(failed))
    daemon.ok("clean", "--state", "dead")
    assert [j["id"] for j in jobs(daemon)] == [done]
    daemon.ok("clean", "--older-than", "1h")
    assert [j["id"] for j in jobs(daemon)] == [done]
    daemon.ok("clean")
    assert jobs(daemon) == []
    assert daemon.ctl("clean", "--older-than", "soon").returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ["add", "--delay", "five minutes", "true"],
        ["add", "--max-retries", "-1", "true"],
        ["add", "--timeout", "-5", "true"],
        ["add", "--at", "not-a-date", "true"],
        ["add"],
        ["show", "abc"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_without_traceback(daemon: Daemon, args: list[str]) -> None:
    result = daemon.ctl(*args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr


def test_refusals_exit_1_with_one_line(daemon: Daemon, tmp_path: Path) -> None:
    for args in (["show", "999"], ["add", "--cwd", str(tmp_path / "missing"), "true"], ["add", "   "]):
        result = daemon.ctl(*args)
        assert result.returncode in (1, 2), (args, result)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_shutdown_graceful(daemon: Daemon) -> None:
    job_id = daemon.add("sleep 1")
    time.sleep(0.3)
    daemon.ok("shutdown")
    assert daemon.process is not None and daemon.process.wait(timeout=15) == 0
    daemon.start()
    assert json.loads(daemon.ok("show", "--json", str(job_id)))["state"] == "completed"


def test_sdk_in_five_lines(daemon: Daemon) -> None:
    script = (
        "from queuectl import Client\n"
        "with Client() as queue:\n"
        "    job_id = queue.add('echo sdk', max_retries=2, timeout=600)\n"
        "    [job] = queue.wait(job_id).jobs\n"
        "    print(job.state, job.exit_code)\n"
    )
    python = str(Path(tool("queuectl")).parent / "python")
    result = subprocess.run(
        [python, "-c", script], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert result.stdout == "completed 0\n", result.stderr


def serving(path: Path) -> bool:
    """Someone answers at the socket `path`: a file a crashed daemon left is not a daemon."""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def test_serving_is_not_fooled_by_a_stale_socket_file(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    assert serving(path)
    listener.close()  # the file stays, as after a kill -9
    assert path.exists() and not serving(path)


def test_default_socket_without_xdg_runtime_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("QUEUED_SOCKET", "XDG_RUNTIME_DIR")}
    env["QUEUED_DATA_DIR"] = str(tmp_path / "data")
    socket_dir = Path(f"/tmp/queued-{os.getuid()}")
    if serving(socket_dir / "queued.sock"):
        pytest.skip(f"a queued already uses {socket_dir}")
    daemon = subprocess.Popen([tool("queued")], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = subprocess.run([tool("queuectl"), "status"], env=env, capture_output=True, text=True)
            if status.returncode == 0:
                break
            time.sleep(0.1)
        assert status.returncode == 0, status.stderr
        assert oct(socket_dir.stat().st_mode & 0o777) == "0o700"
        assert oct((socket_dir / "queued.sock").stat().st_mode & 0o777) == "0o600"
        subprocess.run([tool("queuectl"), "shutdown"], env=env, check=True, capture_output=True)
        assert daemon.wait(timeout=15) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_logs_follow_across_retries(daemon: Daemon, tmp_path: Path) -> None:
    """The first attempt ends only once the follower has printed its output:
    a follower started after it ended would begin at the latest attempt, as
    it should, and see only "second" (under load a CLI can take that long)."""
    marker, gate = tmp_path / "tried", tmp_path / "gate"
    os.mkfifo(gate)
    job_id = daemon.add(
        "--max-retries",
        "1",
        "--backoff-base",
        "1",
        f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; read _ < {gate}; exit 1; fi",
    )
    follower = subprocess.Popen(
        [tool("queuectl"), "logs", "-f", str(job_id)],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, follower.kill)  # a readline that never returns would hang the suite
    watchdog.start()
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"  # attempt 1 is still running: it waits at the gate
        with open(gate, "w") as opened:
            opened.write("go\n")
        out, err = follower.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert out == "second\n" and "--- attempt 2 ---" in err


def test_piped_output_is_never_cut(daemon: Daemon) -> None:
    daemon.ok("queue", "pause", "default")
    command = "echo " + "x" * 300
    job_id = daemon.add(command)
    for columns in (None, "80"):
        env = {k: v for k, v in daemon.env.items() if k != "COLUMNS"}
        if columns:
            env["COLUMNS"] = columns
        listed = subprocess.run([tool("queuectl"), "ls"], env=env, capture_output=True, text=True)
        assert command in listed.stdout and "…" not in listed.stdout
        shown = subprocess.run(
            [tool("queuectl"), "show", str(job_id)], env=env, capture_output=True, text=True
        )
        assert command in shown.stdout


def test_ls_says_what_a_job_waits_for_and_when_jobs_ran(daemon: Daemon) -> None:
    done = daemon.add("sleep 0.2")
    daemon.ok("wait", str(done))
    later = daemon.add("--delay", "1h", "true")
    waiting = daemon.add("--after", str(later), "--after", str(done), "true")
    rows = {line.split()[0]: line for line in daemon.ok("ls").splitlines()[1:]}
    assert f"after {later}" in rows[str(waiting)]
    assert jobs(daemon, "--state", "pending")[-1]["waiting_on"] == [later]
    table = daemon.ok("ls", "--columns", "id,started,ended,duration").splitlines()
    assert table[0].split() == ["ID", "STARTED", "ENDED", "DURATION"]
    row = table[1].split()
    assert row[0] == str(done) and row[-1].endswith(("ms", "s")) and "ago" in table[1]
    assert table[2].split() == [str(later), "-", "-", "-"]
    assert daemon.ctl("ls", "--columns", "id,nope").returncode == 2


def test_show_after_a_dlq_retry_counts_attempts_as_its_rows_do(daemon: Daemon) -> None:
    job_id = daemon.add("--max-retries", "1", "--backoff-base", "1", "exit 3")
    daemon.ctl("wait", str(job_id))
    daemon.ok("dlq", "retry", str(job_id))
    daemon.ctl("wait", str(job_id))
    shown = daemon.ok("show", str(job_id))
    assert "attempts:    2 of 2 since it was retried (4 runs in all)" in shown
    rows = [line.split()[:2] for line in shown[shown.index("RUN  ATTEMPT") :].splitlines()[1:5]]
    assert rows == [["1", "-"], ["2", "-"], ["3", "1/2"], ["4", "2/2"]]


def test_add_help_shows_the_daemons_defaults(daemon: Daemon) -> None:
    daemon.ok("config", "set", "max-retries", "7")
    daemon.ok("config", "set", "timeout", "90m")
    shown = " ".join(daemon.ok("add", "--help").split())
    assert "first attempt [7]" in shown and "after this long [1h30m]" in shown
    assert "queued's current settings" in shown


def test_status_and_its_json_count_in_the_same_words(daemon: Daemon) -> None:
    daemon.ok("queue", "pause", "default")
    daemon.add("true")
    counts = json.loads(daemon.ok("status", "--json"))["counts"]
    text = daemon.ok("status")
    for state, n in counts.items():
        assert f"{state} {n}" in text
    header = next(line for line in text.splitlines() if line.startswith("QUEUE"))
    assert header.split()[3:] == ["PENDING", "HELD", "RUNNING", "FAILED"]
