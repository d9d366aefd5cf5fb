"""The everyday commands of a pueue or tsp user, at the CLI level against a
fake daemon: what each sends, what it prints, its exit code."""

from __future__ import annotations

import msgspec
import pytest

from queuectl.follow import tail_offset
from queued import protocol as p

from .test_client import JOB, run_cli, serve  # noqa: F401  (a fixture)


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
