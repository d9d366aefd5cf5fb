"""The everyday commands of a pueue or tsp user, at the CLI level against a
fake daemon: what each sends, what it prints, its exit code."""

from __future__ import annotations

import msgspec
import pytest

from queuectl.follow import tail_offset
from queued import protocol as p

from . import test_client
from .test_client import JOB, run_cli

serve = test_client.serve  # the fake daemon's fixture


def job(job_id: int, **fields: object) -> p.Job:
    return msgspec.structs.replace(JOB, id=job_id, **fields)


def newest_is(job_id: int | None):  # type: ignore[no-untyped-def]
    """A daemon whose newest job is `job_id` (None: no jobs), answering everything else plainly."""

    def answer(request: p.Request) -> p.Response | None:
        if isinstance(request, p.ListJobs):
            assert request.limit == 1 and not request.states
            return p.JobList(jobs=[] if job_id is None else [job(job_id)])
        if isinstance(request, p.GetJob):
            return p.JobDetail(job=job(request.id), runs=[], env={})
        if isinstance(request, p.WaitJobs):
            return p.Waited(jobs=[job(i) for i in request.ids])
        if isinstance(request, p.AddJobs):
            return p.Added(ids=[99])
        return None

    return answer


# -- the latest job by default ------------------------------------------------------------


@pytest.mark.parametrize("args", [["show"], ["show", "last"], ["show", "--json"]])
def test_show_without_an_id_shows_the_newest_job(serve, monkeypatch, capsys, args) -> None:
    daemon = serve(newest_is(12))
    code, out, _ = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), *args)
    assert code == 0
    assert [r.id for r in daemon.of_type(p.GetJob)] == [12]
    assert "12" in out


def test_wait_without_an_id_waits_for_the_newest_job(serve, monkeypatch, capsys) -> None:
    daemon = serve(newest_is(5))
    assert run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "wait")[0] == 0
    assert [r.ids for r in daemon.of_type(p.WaitJobs)] == [[5]]


def test_wait_all_waits_for_every_unfinished_job(serve, monkeypatch, capsys) -> None:
    daemon = serve(newest_is(5))
    assert run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "wait", "--all")[0] == 0
    assert [r.ids for r in daemon.of_type(p.WaitJobs)] == [[]]
    assert not daemon.of_type(p.ListJobs)


def test_wait_all_with_ids_is_usage(serve, monkeypatch, capsys) -> None:
    daemon = serve(newest_is(5))
    code, _, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "wait", "--all", "3")
    assert code == 2 and "--all" in err


def test_add_after_last_depends_on_the_newest_job(serve, monkeypatch, capsys) -> None:
    daemon = serve(newest_is(41))
    code, out, _ = run_cli(
        monkeypatch, capsys, "--socket", str(daemon.path), "add", "--after", "last", "--", "echo", "hi"
    )
    assert (code, out) == (0, "added job 99\n")
    [request] = daemon.of_type(p.AddJobs)
    assert request.jobs[0].after == [41]


@pytest.mark.parametrize("args", [["show"], ["wait"], ["logs"], ["add", "--after", "last", "true"]])
def test_latest_when_there_are_no_jobs_exits_1(serve, monkeypatch, capsys, args) -> None:
    daemon = serve(newest_is(None))
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), *args)
    assert (code, out, err) == (1, "", "queuectl: there are no jobs yet\n")
    assert not daemon.of_type(p.AddJobs)


# -- logs: several jobs, the last lines ---------------------------------------------------------


class FakeLogs:
    """`read_log` over bytes in memory, as the daemon serves a file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read_log(self, job_id: int, *, attempt: int, stream: str, offset: int, limit: int) -> p.LogChunk:
        self.reads += 1
        piece = self.data[offset : offset + limit]
        return p.LogChunk(
            attempt=attempt, data=piece, offset=offset + len(piece), size=len(self.data), running=False,
            job_state="completed",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("data", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),  # a last line without its newline is a line
        (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"", 3, b""),
        (b"\n\n\n", 2, b"\n\n"),
    ],
)
def test_tail_offset_finds_the_last_lines(data: bytes, lines: int, expected: bytes) -> None:
    logs = FakeLogs(data)
    assert data[tail_offset(logs, 1, 1, "stdout", lines) :] == expected  # type: ignore[arg-type]


def test_tail_offset_reads_backwards_in_blocks(monkeypatch) -> None:
    monkeypatch.setattr("queuectl.follow.TAIL_BLOCK", 10)
    data = b"".join(b"line %03d\n" % i for i in range(1000))
    logs = FakeLogs(data)
    assert data[tail_offset(logs, 1, 1, "stdout", 3) :] == b"line 997\nline 998\nline 999\n"  # type: ignore[arg-type]
    assert logs.reads < 10  # not the whole file


def logs_daemon(outputs: dict[int, bytes]):  # type: ignore[no-untyped-def]
    run = p.Run(
        attempt=1, pid=1, started_at=1.0, ended_at=2.0, exit_code=0, signal=None, error=None,
        stdout_path=None, stderr_path=None,
    )  # fmt: skip

    def answer(request: p.Request) -> p.Response | None:
        if isinstance(request, p.ListJobs):
            return p.JobList(jobs=[job(max(outputs))])
        if isinstance(request, p.GetJob):
            if request.id not in outputs:
                return p.Error(code="not_found", message=f"no job {request.id}")
            return p.JobDetail(job=job(request.id), runs=[run], env={})
        if isinstance(request, p.ReadLog):
            data = outputs[request.id] if request.stream == "stdout" else b""
            piece = data[request.offset : request.offset + request.limit]
            return p.LogChunk(
                attempt=1, data=piece, offset=request.offset + len(piece), size=len(data), running=False,
                job_state="completed",
            )  # fmt: skip
        return None

    return answer


def test_logs_of_several_jobs_one_after_another(serve, monkeypatch, capsys) -> None:
    daemon = serve(logs_daemon({3: b"three\n", 4: b"four\nfour again\n"}))
    code, out, _ = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "3", "4")
    assert code == 0
    assert out == "==> job 3 <==\nthree\n\n==> job 4 <==\nfour\nfour again\n"


def test_logs_of_several_jobs_reports_each_it_cannot_show(serve, monkeypatch, capsys) -> None:
    daemon = serve(logs_daemon({3: b"three\n"}))
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "8", "3")
    assert code == 1
    assert out.endswith("==> job 3 <==\nthree\n") and err == "queuectl: no job 8\n"


def test_logs_tail_and_latest(serve, monkeypatch, capsys) -> None:
    daemon = serve(logs_daemon({3: b"x\n", 4: b"a\nb\nc\n"}))
    code, out, _ = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "--tail", "2")
    assert (code, out) == (0, "b\nc\n")


def test_logs_follow_several_is_usage(serve, monkeypatch, capsys) -> None:
    daemon = serve(logs_daemon({3: b"x\n", 4: b"y\n"}))
    code, _, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "-f", "3", "4")
    assert code == 2 and "one job" in err


# -- hold, release, edit, restart, pause, resume, kill ------------------------------------------


def answers(request: p.Request) -> p.Response | None:
    """A daemon that agrees to every change."""
    if isinstance(request, p.HoldJobs | p.ReleaseJobs):
        return p.Changed(ids=sorted(request.ids))
    if isinstance(request, p.EditJob):
        return p.Changed(ids=[request.id])
    if isinstance(request, p.RestartJob):
        return p.Added(ids=[50])
    if isinstance(request, p.PauseJobs):
        return p.Changed(ids=request.ids or [1, 2])
    if isinstance(request, p.SignalJobs):
        return p.Changed(ids=request.ids)
    if isinstance(request, p.PauseQueue):
        return p.Ok(message=f"queue {request.name} {'paused' if request.paused else 'resumed'}")
    if isinstance(request, p.SetQueueConcurrency):
        return p.Ok(message=f"queue {request.name}: limit {request.concurrency}")
    if isinstance(request, p.AddJobs):
        return p.Added(ids=[7])
    return None


@pytest.mark.parametrize(
    ("args", "sent", "printed"),
    [
        (["add", "--hold", "--", "make"], p.AddJobs, "added job 7"),
        (["hold", "3", "4"], p.HoldJobs(ids=[3, 4]), "holding jobs 3, 4"),
        (["release", "3"], p.ReleaseJobs(ids=[3]), "released job 3"),
        (
            ["edit", "3", "--priority", "-2", "--queue", "gpu", "--delay", "5m", "--timeout", "none"],
            p.EditJob(id=3, changes=p.JobChanges(priority=-2, queue="gpu", delay=300, no_timeout=True)),
            "edited job 3",
        ),
        (
            ["edit", "3", "-c", "make -j4", "-l", "", "-r", "2", "--timeout", "1h", "--backoff-base", "3"],
            p.EditJob(
                id=3,
                changes=p.JobChanges(
                    command="make -j4", label="", max_retries=2, timeout=3600, backoff_base=3
                ),
            ),
            "edited job 3",
        ),
        (["restart", "3"], p.RestartJob(id=3), "added job 50 (a copy of job 3)"),
        (
            ["restart", "3", "--hold", "--command", "true", "--quiet"],
            p.RestartJob(id=3, changes=p.JobChanges(command="true"), hold=True),
            "50",
        ),
        (["pause", "3"], p.PauseJobs(ids=[3]), "paused job 3"),
        (["resume", "3", "4"], p.PauseJobs(ids=[3, 4], paused=False), "resumed jobs 3, 4"),
        (["pause", "--all"], p.PauseJobs(all=True), "every queue paused, and jobs 1, 2"),
        (["resume", "-a"], p.PauseJobs(all=True, paused=False), "every queue resumed, and jobs 1, 2"),
        (["kill", "3"], p.SignalJobs(ids=[3], signal=15), "sent SIGTERM to job 3"),
        (["kill", "-s", "usr1", "3"], p.SignalJobs(ids=[3], signal=10), "sent SIGUSR1 to job 3"),
        (["kill", "-s", "SIGKILL", "3"], p.SignalJobs(ids=[3], signal=9), "sent SIGKILL to job 3"),
        (["kill", "--signal", "2", "3"], p.SignalJobs(ids=[3], signal=2), "sent SIGINT to job 3"),
        (["queue", "pause", "gpu", "--jobs"], p.PauseQueue(name="gpu", jobs=True), "queue gpu paused"),
        (["queue", "resume", "gpu"], p.PauseQueue(name="gpu", paused=False), "queue gpu resumed"),
        (
            ["queue", "set", "gpu", "-c", "3"],
            p.SetQueueConcurrency(name="gpu", concurrency=3),
            "queue gpu: limit 3",
        ),
        (
            ["queue", "set", "gpu", "--concurrency", "Unlimited"],
            p.SetQueueConcurrency(name="gpu", concurrency=None),
            "queue gpu: limit None",
        ),
        (
            ["queue", "set", "gpu", "--concurrency", "none"],
            p.SetQueueConcurrency(name="gpu", concurrency=None),
            "queue gpu: limit None",
        ),
    ],
)
def test_changing_commands_send_and_say(serve, monkeypatch, capsys, args, sent, printed) -> None:
    daemon = serve(answers)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), *args)
    assert (code, out, err) == (0, printed + "\n", "")
    requests = [r for r in daemon.requests if not isinstance(r, p.Hello)]
    if isinstance(sent, type):
        [request] = requests
        assert isinstance(request, sent) and request.jobs[0].hold and request.jobs[0].command == "make"
    else:
        assert requests == [sent]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["edit", "3"], "nothing to change"),
        (["edit", "3", "--delay", "1m", "--at", "2030-01-01T00:00"], "either --delay or --at"),
        (["edit", "3", "--timeout", "soon"], "--timeout"),
        (["edit"], "JOB_ID"),
        (["hold"], "JOB_IDS"),
        (["release", "x"], "x"),
        (["pause"], "name the jobs, or --all"),
        (["resume", "--all", "3"], "not both"),
        (["kill", "-s", "NOPE", "3"], "'NOPE' is not a signal"),
        (["kill", "-s", "99", "3"], "'99' is not a signal"),
        (["kill"], "JOB_IDS"),
    ],
)
def test_changing_commands_usage_errors(serve, monkeypatch, capsys, args, reason) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    daemon = serve(answers)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), *args)
    assert code == 2 and out == "" and reason in err, err
    assert len(err.strip().splitlines()) == 1
    assert [r for r in daemon.requests if not isinstance(r, p.Hello)] == []


def test_a_refused_change_exits_1_with_the_daemons_reason(serve, monkeypatch, capsys) -> None:
    reason = "job 3 is completed: only a job that has not started can be edited"
    daemon = serve(lambda r: p.Error(code="invalid", message=reason))
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "edit", "3", "-p", "1")
    assert (code, out, err) == (1, "", f"queuectl: {reason}\n")


def test_paused_jobs_say_so_in_tables(serve, monkeypatch, capsys) -> None:
    paused = job(4, state="running", paused=True)
    daemon = serve(
        lambda r: p.JobList(jobs=[paused, job(5, state="held")]) if isinstance(r, p.ListJobs) else None
    )
    code, out, _ = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "ls")
    assert code == 0
    rows = out.splitlines()
    assert "running (paused)" in rows[1] and " held " in rows[2]
    code, out, _ = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "ls", "--json")
    assert [(j["state"], j["paused"]) for j in __import__("json").loads(out)] == [
        ("running", True),
        ("held", False),
    ]


@pytest.mark.parametrize(
    ("editor", "printed", "sent"),
    [
        (
            "sed -i s/make/ninja/",
            "edited job 3",
            [p.EditJob(id=3, changes=p.JobChanges(command="ninja -C build"))],
        ),
        ("true", "job 3 unchanged", []),
    ],
)
def test_edit_without_options_opens_the_editor(serve, monkeypatch, capsys, editor, printed, sent) -> None:
    def answer(request: p.Request) -> p.Response | None:
        if isinstance(request, p.GetJob):
            return p.JobDetail(job=job(3, command="make -C build", state="pending"), runs=[], env={})
        return answers(request)

    daemon = serve(answer)
    monkeypatch.setenv("EDITOR", editor)
    monkeypatch.delenv("VISUAL", raising=False)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "edit", "3")
    assert (code, out, err) == (0, printed + "\n", "")
    assert daemon.of_type(p.EditJob) == sent
