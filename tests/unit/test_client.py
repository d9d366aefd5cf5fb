"""queuectl.Client and the CLI's exit codes against a fake daemon: a thread
serving a real Unix socket with the real protocol framing, no queued."""

from __future__ import annotations

import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from queuectl import Client, DaemonError, DaemonUnreachable, PartlyDone, QueuectlError
from queuectl.cli import run
from queued import protocol as p

# What the fake answers: a Response, or None to close the connection unanswered.
Handler = Callable[[p.Request], p.Response | None]

JOB = p.Job(
    id=1,
    command="true",
    state="completed",
    queue="default",
    priority=0,
    label=None,
    attempts=1,
    max_retries=3,
    backoff_base=2.0,
    timeout=None,
    exit_code=0,
    run_at=1.0,
    created_at=1.0,
    updated_at=2.0,
    depends_on=[],
    cwd="/",
)


def welcome(request: p.Request) -> p.Response | None:
    return p.Welcome(protocol=p.PROTOCOL_VERSION, version="0.0-fake", pid=os.getpid())


class FakeDaemon:
    """Accepts connections one after another and answers each frame with `handler`."""

    def __init__(self, path: Path, handler: Handler, hello: Handler = welcome) -> None:
        self.path = path
        self.handler = handler
        self.hello = hello
        self.requests: list[p.Request] = []
        self.connections = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed by stop()
            self.connections += 1
            with conn:
                self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        frames = p.FrameBuffer()
        while True:
            body = frames.next_frame()
            if body is None:
                data = conn.recv(65536)
                if not data:
                    return
                frames.feed(data)
                continue
            request = p.decode_request(body)
            self.requests.append(request)
            answer = (self.hello if isinstance(request, p.Hello) else self.handler)(request)
            if answer is None:
                return
            conn.sendall(p.encode_frame(answer))

    def stop(self) -> None:
        # shutdown() wakes the accept() blocked in the thread; close() alone may not.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=5)

    def of_type(self, kind: type[p.Request]) -> list[p.Request]:
        return [r for r in self.requests if isinstance(r, kind)]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Handler], FakeDaemon]]:
    daemons: list[FakeDaemon] = []

    def start(handler: Handler, hello: Handler = welcome, kind: type[FakeDaemon] = FakeDaemon) -> FakeDaemon:
        daemon = kind(tmp_path / "q.sock", handler, hello)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The console script as a user runs it: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["queuectl", *args])
    monkeypatch.setenv("NO_COLOR", "1")
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


# -- the SDK ---------------------------------------------------------------------------


def test_handshake_then_requests_share_one_connection(serve) -> None:
    daemon = serve(lambda r: p.JobList(jobs=[JOB]) if isinstance(r, p.ListJobs) else None)
    with Client(daemon.path) as client:
        assert client.list(states=["completed"]) == [JOB]
        assert client.list(limit=1) == [JOB]
    hello = daemon.requests[0]
    assert isinstance(hello, p.Hello)
    assert hello.protocol == p.PROTOCOL_VERSION and hello.client.startswith("queuectl/")
    assert daemon.connections == 1
    assert [r.states for r in daemon.of_type(p.ListJobs)] == [["completed"], []]


def test_connects_lazily(tmp_path: Path) -> None:
    Client(tmp_path / "nothing-here.sock").close()  # no daemon, and no error until a request


def test_version_mismatch_raises_the_daemons_message(serve) -> None:
    def refuse(request: p.Request) -> p.Response | None:
        return p.Error(code="version", message="queued speaks protocol 9; upgrade queuectl")

    daemon = serve(lambda r: None, hello=refuse)
    with Client(daemon.path) as client, pytest.raises(DaemonError) as caught:
        client.status()
    assert caught.value.code == "version"
    assert "upgrade queuectl" in str(caught.value)


def test_error_response_raises_daemon_error(serve) -> None:
    daemon = serve(lambda r: p.Error(code="not_found", message="no job 99"))
    with Client(daemon.path) as client:
        with pytest.raises(DaemonError) as caught:
            client.get(99)
        assert (caught.value.code, caught.value.message) == ("not_found", "no job 99")
        assert isinstance(caught.value, QueuectlError)
        with pytest.raises(DaemonError):  # the connection survives a refusal
            client.cancel(99)
    assert daemon.connections == 1


def test_missing_socket_is_unreachable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.sock"
    with pytest.raises(DaemonUnreachable) as caught:
        Client(path).status()
    message = str(caught.value)
    assert str(path) in message and "queued" in message and "start" in message


def test_socket_without_listener_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # the file exists, nobody listens: ECONNREFUSED
    try:
        with pytest.raises(DaemonUnreachable, match="refused"):
            Client(path).status()
    finally:
        stale.close()


def test_daemon_closing_mid_request(serve) -> None:
    daemon = serve(lambda r: None)  # hangs up on the first real request
    with Client(daemon.path) as client, pytest.raises(QueuectlError) as caught:
        client.status()
    assert "closed" in str(caught.value)


def test_add_captures_cwd_and_environment(serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUEUECTL_TEST_VAR", "from-env")
    daemon = serve(lambda r: p.Added(ids=[7]) if isinstance(r, p.AddJobs) else None)
    with Client(daemon.path) as client:
        assert client.add("make", env={"EXTRA": "1"}, max_retries=5, after=[3]) == 7
    [request] = daemon.of_type(p.AddJobs)
    assert request.cwd == str(tmp_path)
    assert request.env["QUEUECTL_TEST_VAR"] == "from-env"
    [spec] = request.jobs
    assert (spec.command, spec.max_retries, spec.after, spec.env) == ("make", 5, [3], {"EXTRA": "1"})


def test_add_many_sends_batches(serve) -> None:
    counter = iter(range(1, 1000))

    def added(request: p.Request) -> p.Response | None:
        if isinstance(request, p.AddJobs):
            return p.Added(ids=[next(counter) for _ in request.jobs])
        return None

    daemon = serve(added)
    specs = [p.JobSpec(command=f"echo {i}") for i in range(25)]
    with Client(daemon.path) as client:
        assert client.add_many(specs, batch=10) == list(range(1, 26))
    assert [len(r.jobs) for r in daemon.of_type(p.AddJobs)] == [10, 10, 5]


def test_add_jobs_says_which_jobs_were_found_by_their_unique_key(serve) -> None:
    def added(request: p.Request) -> p.Response | None:
        if isinstance(request, p.AddJobs):
            found = [spec.unique_key == "held" for spec in request.jobs]
            return p.Added(ids=[5 if f else 10 + i for i, f in enumerate(found)], existing=found)
        return None

    daemon = serve(added)
    specs = [p.JobSpec(command="a", unique_key="held"), p.JobSpec(command="b"), p.JobSpec(command="c")]
    with Client(daemon.path) as client:
        assert client.add_jobs(specs) == [(5, True), (11, False), (12, False)]
        assert client.add_jobs([p.JobSpec(command="d")])[0].existing is False
        assert client.add("e", unique_key="held", unique_for=60.0) == 5
    spec = daemon.of_type(p.AddJobs)[-1].jobs[0]
    assert (spec.unique_key, spec.unique_for) == ("held", 60.0)


def test_an_old_daemons_added_without_existing_means_every_job_is_new(serve) -> None:
    daemon = serve(lambda r: p.Added(ids=[3, 4]) if isinstance(r, p.AddJobs) else None)
    with Client(daemon.path) as client:
        assert client.add_jobs([p.JobSpec(command="a"), p.JobSpec(command="b")]) == [(3, False), (4, False)]


def test_cli_add_unique_prints_the_existing_id_as_asked(serve, monkeypatch, capsys) -> None:
    daemon = serve(lambda r: p.Added(ids=[5], existing=[True]) if isinstance(r, p.AddJobs) else None)
    sock = str(daemon.path)
    cli = ("--socket", sock, "add", "--unique", "nightly")
    assert run_cli(monkeypatch, capsys, *cli, "true")[:2] == (0, "existing job 5 (unique key 'nightly')\n")
    assert run_cli(monkeypatch, capsys, *cli, "--quiet", "true")[:2] == (0, "5\n")
    assert run_cli(monkeypatch, capsys, *cli, "--json", "true")[:2] == (0, '{"id":5,"existing":true}\n')
    assert [r.jobs[0].unique_key for r in daemon.of_type(p.AddJobs)] == ["nightly"] * 3


def test_wait_outlasts_the_client_timeout(serve) -> None:
    def slow(request: p.Request) -> p.Response | None:
        if isinstance(request, p.WaitJobs):
            time.sleep(0.5)
            return p.Waited(jobs=[JOB])
        return None

    daemon = serve(slow)
    with Client(daemon.path, timeout=0.1) as client:
        assert client.wait(1).jobs == [JOB]


# -- the CLI's exit codes ----------------------------------------------------------------


def test_cli_unreachable_exits_3_naming_the_socket(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "nope.sock"
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(path), "status")
    assert code == 3 and out == ""
    assert str(path) in err and "start it" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_a_full_backlog_is_busy_not_missing_and_exits_3(monkeypatch, capsys, tmp_path: Path) -> None:
    """A daemon flooded with connections (its listen backlog full: EAGAIN)
    is there: `queuectl` says so, not "start it with `queued`"."""
    path = tmp_path / "full.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)  # never accepts
    filling: list[socket.socket] = []
    try:
        while True:
            sock = socket.socket(socket.AF_UNIX)
            sock.setblocking(False)
            filling.append(sock)
            try:
                sock.connect(str(path))
            except BlockingIOError:
                break
        code, out, err = run_cli(monkeypatch, capsys, "--socket", str(path), "status")
        assert code == 3 and out == ""
        assert "takes no more connections now" in err and "try again" in err and "start it" not in err
        assert len(err.strip().splitlines()) == 1
    finally:
        for sock in filling:
            sock.close()
        listener.close()


def test_cli_honours_queued_socket_env(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "env.sock"
    monkeypatch.setenv("QUEUED_SOCKET", str(path))
    code, _, err = run_cli(monkeypatch, capsys, "ls")
    assert code == 3 and str(path) in err


def test_cli_refusal_exits_1_with_one_line(serve, monkeypatch, capsys) -> None:
    daemon = serve(lambda r: p.Error(code="not_found", message="no job 99"))
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "show", "99")
    assert (code, out, err) == (1, "", "queuectl: no job 99\n")


def test_cli_daemon_closing_mid_request_is_one_line(serve, monkeypatch, capsys) -> None:
    daemon = serve(lambda r: None)
    code, _, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "status")
    assert code in (1, 3)
    assert err.startswith("queuectl: ") and "Traceback" not in err


def test_cli_add_joins_words_and_prints_the_id(serve, monkeypatch, capsys) -> None:
    daemon = serve(lambda r: p.Added(ids=[41 + len(daemon.of_type(p.AddJobs))]))
    sock = str(daemon.path)
    assert run_cli(monkeypatch, capsys, "--socket", sock, "add", "--", "echo", "a b", "$HOME")[:2] == (
        0,
        "added job 42\n",
    )
    assert run_cli(monkeypatch, capsys, "--socket", sock, "add", "--quiet", "echo $HOME | wc")[:2] == (
        0,
        "43\n",
    )
    first, second = (r.jobs[0].command for r in daemon.of_type(p.AddJobs))
    assert first == shlex.join(["echo", "a b", "$HOME"])
    assert second == "echo $HOME | wc"


@pytest.mark.parametrize(
    ("states", "timed_out", "expected"),
    [
        (["completed", "completed"], False, 0),
        (["completed", "dead"], False, 1),
        (["completed", "running"], True, 124),
    ],
)
def test_cli_wait_exit_codes(serve, monkeypatch, capsys, states, timed_out, expected) -> None:
    jobs = [
        p.Job(**{**{f: getattr(JOB, f) for f in JOB.__struct_fields__}, "id": i, "state": s})
        for i, s in enumerate(states, 1)
    ]
    daemon = serve(lambda r: p.Waited(jobs=jobs, timed_out=timed_out))
    code, _, _ = run_cli(
        monkeypatch, capsys, "--socket", str(daemon.path), "wait", "1", "2", "--timeout", "5s"
    )
    assert code == expected
    [request] = daemon.of_type(p.WaitJobs)
    assert (request.ids, request.timeout) == ([1, 2], 5.0)


def test_cli_logs_follow_across_retries(serve, monkeypatch, capsys) -> None:
    # Attempt 1 fails and the job goes back to wait; attempt 2 completes it.
    def run(attempt: int) -> p.Run:
        return p.Run(
            attempt=attempt, pid=1, started_at=1.0, ended_at=2.0, exit_code=attempt - 1,
            signal=None, error=None, stdout_path=None, stderr_path=None,
        )  # fmt: skip

    gets = 0

    def daemon_side(request: p.Request) -> p.Response | None:
        nonlocal gets
        if isinstance(request, p.GetJob):
            gets += 1
            return p.JobDetail(job=JOB, runs=[run(1)] if gets == 1 else [run(1), run(2)], env={})
        if isinstance(request, p.ReadLog):
            text = f"{request.stream} {request.attempt}\n".encode() if request.offset == 0 else b""
            state = "failed" if request.attempt == 1 else "completed"
            end = request.offset + len(text)
            return p.LogChunk(
                attempt=request.attempt or 2, data=text, offset=end, size=end, running=False, job_state=state
            )
        return None

    daemon = serve(daemon_side)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "-f", "1")
    assert code == 0
    assert out == "stdout 1\nstdout 2\n"
    assert err == "stderr 1\n--- attempt 2 ---\nstderr 2\n"


class GrowingLog:
    """A daemon whose job runs with "a\n" written; a waiting read (`wait`) is
    answered once "b\n" followed and the attempt ended. `waits`: False for a
    daemon older than waiting reads (it refuses the field)."""

    def __init__(self, waits: bool = True) -> None:
        self.waits = waits
        self.ended = False
        self.waiting_reads: list[p.ReadLog] = []

    def __call__(self, request: p.Request) -> p.Response | None:
        run = p.Run(
            attempt=1, pid=1, started_at=1.0, ended_at=2.0 if self.ended else None, exit_code=None,
            signal=None, error=None, stdout_path=None, stderr_path=None,
        )  # fmt: skip
        state = "completed" if self.ended else "running"
        if isinstance(request, p.GetJob):
            return p.JobDetail(job=msgspec.structs.replace(JOB, state=state), runs=[run], env={})
        if isinstance(request, p.ReadLog):
            if request.wait:
                if not self.waits:
                    return p.Error(code="bad_request", message="unknown field 'wait'")
                self.waiting_reads.append(request)
                self.ended = True
                state = "completed"
            elif not self.waits and self.ended is False and request.offset == 2:
                self.ended = True  # the old way: it ends between two polls
            text = (b"a\nb\n" if self.ended else b"a\n") if request.stream == "stdout" else b""
            data = text[request.offset :]
            return p.LogChunk(
                attempt=1,
                data=data,
                offset=request.offset + len(data),
                size=len(text),
                running=not self.ended,
                job_state=state,
            )
        return None


def test_cli_logs_follow_waits_in_the_daemon_not_in_sleeps(serve, monkeypatch, capsys) -> None:
    """While the attempt runs and has written nothing new, `logs -f` asks the
    daemon to answer when there is something (a waiting read), never polls."""
    log = GrowingLog()
    daemon = serve(log)

    def no_sleep(seconds: float) -> None:
        raise AssertionError("logs -f slept between reads")

    monkeypatch.setattr("queuectl.follow.time.sleep", no_sleep)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "-f", "1")
    assert (code, out, err) == (0, "a\nb\n", "")
    [waiting] = log.waiting_reads
    assert (waiting.stream, waiting.offset, waiting.wait) == ("stdout", 2, 1.0)
    assert all(r.wait == 0 for r in daemon.of_type(p.ReadLog) if r is not waiting)


def test_cli_logs_follow_polls_a_daemon_older_than_waiting_reads(serve, monkeypatch, capsys) -> None:
    log = GrowingLog(waits=False)
    daemon = serve(log)
    slept: list[float] = []
    monkeypatch.setattr("queuectl.follow.time.sleep", slept.append)
    code, out, err = run_cli(monkeypatch, capsys, "--socket", str(daemon.path), "logs", "-f", "1")
    assert (code, out, err) == (0, "a\nb\n", "")
    assert slept == [0.2]  # it polled, as before
    assert len([r for r in daemon.of_type(p.ReadLog) if r.wait]) == 1  # asked once, then never again


def test_garbage_from_the_daemon_is_a_queuectl_error(serve) -> None:
    class Garbage(FakeDaemon):
        def _converse(self, conn: socket.socket) -> None:
            frames = p.FrameBuffer()
            while (body := frames.next_frame()) is None:
                frames.feed(conn.recv(65536))
            conn.sendall(p.encode_frame(welcome(p.decode_request(body))))  # type: ignore[arg-type]
            conn.recv(65536)
            conn.sendall(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # a frame that is not msgpack

    daemon = serve(lambda r: None, kind=Garbage)
    with Client(daemon.path) as client, pytest.raises(QueuectlError):
        client.status()


# -- refused before sending (issue #11 section 2, issue #17 items 9-10) ------------------


def test_errors_carry_a_machine_readable_code(serve, tmp_path: Path) -> None:
    daemon = serve(lambda r: p.Error(code="not_found", message="no job 5"))
    with Client(daemon.path) as client, pytest.raises(DaemonError) as refused:
        client.get(5)
    assert (refused.value.code, refused.value.message) == ("not_found", "no job 5")
    with pytest.raises(QueuectlError) as unreachable:
        Client(tmp_path / "nobody.sock").status()
    assert unreachable.value.code == "unreachable"


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (lambda c: c.get(10**20), "not_found", f"no job {10**20}"),
        (lambda c: c.wait(3, 10**20), "not_found", f"no job {10**20}"),
        (lambda c: c.add("true", after=[10**20]), "not_found", f"--after names unknown job {10**20}"),
        (lambda c: c.list(limit=2**40), "bad_request", "limit must be at most 2,147,483,648"),
        (lambda c: c.list(limit=10**20), "bad_request", "a number in the request is too large"),
        (lambda c: c.queue_add("bad name"), "bad_request", "a queue name must be 1 to 64 letters"),
        (lambda c: c.add("true", delay=10**9), "bad_request", "delay must be at most 10 years"),
        (lambda c: c.add(""), "invalid", "command is empty"),
        (lambda c: c.add("true", cwd="/tmp\0x"), "invalid", "cwd contains a NUL byte"),
        (lambda c: c.add("x" * 200_000), "invalid", "MAX_ARG_STRLEN"),
    ],
)
def test_what_the_daemon_would_refuse_is_refused_before_sending(serve, call, code: str, message: str) -> None:
    daemon = serve(lambda r: p.Ok())
    with Client(daemon.path) as client, pytest.raises(DaemonError) as refused:
        call(client)
    assert refused.value.code == code and message in refused.value.message, refused.value.message
    assert not [r for r in daemon.requests if not isinstance(r, p.Hello)]  # nothing sent


def test_bytes_that_are_not_utf8_travel_as_bytes(
    serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    odd = tmp_path / os.fsdecode(b"d\xe9")
    odd.mkdir()
    monkeypatch.chdir(odd)
    monkeypatch.setenv("QUEUECTL_ODD", os.fsdecode(b"caf\xe9"))
    daemon = serve(lambda r: p.Added(ids=[1]) if isinstance(r, p.AddJobs) else None)
    with Client(daemon.path) as client:
        assert client.add("true") == 1
    [request] = daemon.of_type(p.AddJobs)
    assert request.env_bytes == {b"QUEUECTL_ODD": b"caf\xe9"} and "QUEUECTL_ODD" not in request.env
    assert request.cwd_bytes == os.fsencode(odd) and request.cwd == str(tmp_path) + "/d\\xe9"
    assert p.joined_environment(request.env, request.env_bytes)["QUEUECTL_ODD"] == os.fsdecode(b"caf\xe9")


def test_cancel_does_what_it_can_and_says_what_it_could_not(
    serve, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reasons = {20: "job 20 is completed: only pending, held, failed or running jobs can be canceled"}
    daemon = serve(
        lambda r: p.Changed(ids=[26, 32], refused=reasons) if isinstance(r, p.CancelJobs) else None
    )
    monkeypatch.setenv("QUEUED_SOCKET", str(daemon.path))
    code, out, err = run_cli(monkeypatch, capsys, "cancel", "20", "26", "32")
    assert (code, out) == (1, "canceled jobs 26, 32\n")
    assert err == f"queuectl: {reasons[20]}\n"
    with Client(daemon.path) as client, pytest.raises(PartlyDone) as partly:
        client.cancel(20, 26, 32)
    assert (partly.value.done, partly.value.refused, partly.value.code) == ([26, 32], reasons, "invalid")
