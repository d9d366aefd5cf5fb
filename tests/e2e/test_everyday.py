"""What a pueue or task-spooler user reaches for every day, as a session with
the real queuectl and queued: the latest job by default, several logs, the
last lines."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import Daemon


def until_running(daemon: Daemon, job_id: int) -> None:
    deadline = time.monotonic() + 10
    while (state := json.loads(daemon.ok("show", "--json", str(job_id)))["state"]) != "running":
        assert state not in ("completed", "dead", "canceled"), f"job {job_id} is {state}: it ended unseen"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_latest_job_by_default(daemon: Daemon) -> None:
    assert daemon.ctl("show").stderr == "queuectl: there are no jobs yet\n"
    first = daemon.add("--", "sh", "-c", "echo first")
    second = daemon.add("--after", "last", "--", "sh", "-c", "echo second")
    assert json.loads(daemon.ok("show", "--json"))["depends_on"] == [first]
    assert daemon.ok("wait") == ""  # the latest job, and its dependency before it
    assert json.loads(daemon.ok("show", "last", "--json"))["id"] == second
    assert daemon.ok("logs") == "second\n"
    assert daemon.ok("wait", "--all") == ""


def test_logs_of_several_jobs_and_their_last_lines(daemon: Daemon) -> None:
    a = daemon.add("seq 1 5")
    b = daemon.add("seq 10 12; echo oops >&2")
    daemon.ok("wait", "--all")
    assert daemon.ok("logs", "--tail", "2", str(a)) == "4\n5\n"
    both = daemon.ctl("logs", "-n", "1", str(a), str(b))
    assert both.returncode == 0
    assert both.stdout == f"==> job {a} <==\n5\n\n==> job {b} <==\n12\n"
    assert both.stderr == "oops\n"
    assert daemon.ok("logs", "--tail", "0", str(a)) == ""
    missing = daemon.ctl("logs", str(a), "999")
    assert missing.returncode == 1 and missing.stderr == "queuectl: no job 999\n"
    assert missing.stdout.startswith(f"==> job {a} <==\n1\n2\n")


def test_hold_release_edit_restart(daemon: Daemon, tmp_path) -> None:
    held = daemon.add("--hold", "--", "sh", "-c", "echo held ran")
    assert daemon.ctl("wait", "--timeout", "0.3").returncode == 124
    assert json.loads(daemon.ok("show", "--json"))["state"] == "held"
    assert " held " in daemon.ok("ls")
    assert daemon.ok("edit", str(held), "--command", "echo edited; pwd", "-p", "-5", "-l", "mine") == (
        f"edited job {held}\n"
    )
    assert daemon.ok("release", "last") == f"released job {held}\n"
    assert daemon.ok("wait") == ""
    assert daemon.ok("logs") == f"edited\n{Path.cwd()}\n"
    refused = daemon.ctl("edit", str(held), "--priority", "1")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"queuectl: job {held} is completed: only a job that has not started")
    copy = int(daemon.ok("restart", str(held), "--command", "echo copy", "--hold", "--quiet"))
    shown = json.loads(daemon.ok("show", "--json", str(copy)))
    assert (shown["state"], shown["label"], shown["priority"], shown["cwd"]) == (
        "held",
        "mine",
        -5,
        str(Path.cwd()),
    )
    later = daemon.add("--delay", "1h", "true")
    assert daemon.ok("hold", str(later)) == f"holding job {later}\n"
    assert daemon.ok("cancel", str(copy), str(later)) == f"canceled jobs {copy}, {later}\n"
    assert daemon.ctl("edit", str(later)).returncode == 2  # nothing to change


def test_pause_resume_kill(daemon: Daemon, tmp_path: Path) -> None:
    # The job ends once the test lets it (under load a `sleep 1` ended before
    # the pause came, or unseen by until_running); it is paused for longer
    # than its timeout, which counts only the time it runs: under load, the
    # second or two from its start to the pause.
    go = tmp_path / "go"
    job_id = daemon.add(
        "--timeout",
        "4",
        "--max-retries",
        "0",
        "--",
        "sh",
        "-c",
        f"until [ -e {go} ]; do sleep 0.05; done; echo done",
    )
    until_running(daemon, job_id)
    assert daemon.ok("pause", "last") == f"paused job {job_id}\n"
    assert "running (paused)" in daemon.ok("ls")
    assert json.loads(daemon.ok("ls", "--json"))[0]["paused"] is True
    assert "(paused)" in daemon.ok("workers", "ls")
    assert daemon.ctl("wait", "--timeout", "4.5").returncode == 124  # its timeout waits with it
    assert daemon.ok("resume", str(job_id)) == f"resumed job {job_id}\n"
    go.touch()
    assert daemon.ok("wait") == ""
    assert daemon.ok("logs") == "done\n"
    sleeper = daemon.add("--max-retries", "0", "sleep 60")
    until_running(daemon, sleeper)
    assert daemon.ok("kill", "-s", "KILL", str(sleeper)) == f"sent SIGKILL to job {sleeper}\n"
    waited = daemon.ctl("wait", str(sleeper))
    assert waited.returncode == 1 and "killed by SIGKILL" in waited.stderr
    refused = daemon.ctl("kill", str(sleeper))
    assert refused.returncode == 1
    assert refused.stderr == f"queuectl: job {sleeper} is dead: only running jobs can be signalled\n"
    assert daemon.ctl("kill", "-s", "NOSUCH", str(sleeper)).returncode == 2


def test_pause_a_queue_with_its_jobs_and_everything(daemon: Daemon) -> None:
    daemon.ok("queue", "add", "gpu")
    gpu = daemon.add("--queue", "gpu", "sleep 60")
    until_running(daemon, gpu)
    assert daemon.ok("queue", "pause", "gpu", "--jobs") == f"queue gpu paused, paused job {gpu}\n"
    assert daemon.ok("queue", "resume", "gpu") == f"queue gpu resumed, resumed job {gpu}\n"
    assert daemon.ok("pause", "--all") == f"every queue paused, and job {gpu}\n"
    waiting = daemon.add("true")
    assert daemon.ctl("wait", "--timeout", "0.3", str(waiting)).returncode == 124  # nothing new starts
    assert daemon.ok("resume", "--all") == f"every queue resumed, and job {gpu}\n"
    daemon.ok("wait", str(waiting))
    daemon.ok("cancel", str(gpu))


def test_on_finish_callback(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "notified"
    command = f'echo "$QUEUED_JOB_ID $QUEUED_JOB_STATE $QUEUED_JOB_EXIT_CODE $QUEUED_JOB_COMMAND" >> {out}'
    assert daemon.ok("config", "set", "on-finish", command) == f"on-finish = {command}\n"
    assert json.loads(daemon.ok("config", "get", "--json", "on-finish")) == {"on-finish": command}
    ok = daemon.add("true")
    failed = daemon.add("--max-retries", "0", "exit 2")
    daemon.ctl("wait", "--all")
    deadline = time.monotonic() + 10
    while not out.exists() or len(out.read_text().splitlines()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sorted(out.read_text().splitlines()) == sorted(
        [f"{ok} completed 0 true", f"{failed} dead 2 exit 2"]
    )
    daemon.ok("config", "set", "on-finish", "none")
    assert daemon.ok("config", "get", "on-finish").split() == ["on-finish", "none"]


def test_completion_offers_the_jobs_each_command_can_change(daemon: Daemon) -> None:
    from .test_terminal import complete

    held = daemon.add("--hold", "true")
    waiting = daemon.add("--delay", "1h", "true")
    running = daemon.add("sleep 60")
    until_running(daemon, running)
    assert complete(daemon, "queuectl release ") == [str(held)]
    assert complete(daemon, "queuectl hold ") == [str(waiting)]
    assert set(complete(daemon, "queuectl edit ")) == {str(held), str(waiting)}
    for command in ("pause", "resume", "kill"):
        assert complete(daemon, f"queuectl {command} ") == [str(running)]
    assert "last" in complete(daemon, "queuectl restart ")
    for command in ("hold", "release", "edit", "restart", "pause", "resume", "kill"):
        assert command in complete(daemon, "queuectl ")
    daemon.ok("cancel", str(running))
