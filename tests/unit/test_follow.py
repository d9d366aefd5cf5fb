"""`queuectl logs` over a stand-in client: what it prints besides the output."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from queuectl.follow import print_logs
from queued import protocol as p

LOST = "stdout: 1,234 bytes lost: No space left on device"


class Logs:
    """A job's ended attempts, each with what its files hold."""

    def __init__(self, outputs: list[bytes], incomplete: list[str | None], state: str = "completed") -> None:
        self.outputs, self.incomplete, self.state = outputs, incomplete, state

    def get(self, job_id: int) -> SimpleNamespace:
        runs = [SimpleNamespace(attempt=n + 1, log_incomplete=why) for n, why in enumerate(self.incomplete)]
        return SimpleNamespace(runs=runs, job=SimpleNamespace(state=self.state))

    def read_log(self, job_id: int, *, attempt: int, stream: str, offset: int, **_: object) -> p.LogChunk:
        data = self.outputs[attempt - 1] if stream == "stdout" else b""
        return p.LogChunk(
            attempt=attempt,
            data=data[offset:],
            offset=len(data),
            size=len(data),
            running=False,
            job_state=self.state,
        )


def show(capsys: pytest.CaptureFixture[str], logs: Logs, **options: object) -> tuple[str, str]:
    settings: dict[str, object] = {"attempt": None, "streams": ("stdout", "stderr"), "follow": False}
    print_logs(logs, 7, interval=0.01, **{**settings, **options})  # type: ignore[arg-type]
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_logs_says_on_stderr_that_an_attempts_log_is_incomplete(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = show(capsys, Logs([b"partial\n"], [LOST]))
    assert out == "partial\n"
    assert err == f"queuectl: attempt 1's log is incomplete: {LOST}\n"


def test_logs_of_a_complete_log_says_nothing_more(capsys: pytest.CaptureFixture[str]) -> None:
    assert show(capsys, Logs([b"all\n"], [None])) == ("all\n", "")


def test_logs_of_an_earlier_attempt_names_that_one(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = show(capsys, Logs([b"one\n", b"two\n"], [LOST, None]), attempt=1)
    assert out == "one\n" and "attempt 1's log is incomplete" in err
    assert show(capsys, Logs([b"one\n", b"two\n"], [LOST, None]), attempt=2) == ("two\n", "")


def test_logs_follow_says_it_when_the_job_ends(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = show(capsys, Logs([b"one\n"], [LOST], state="dead"), follow=True)
    assert out == "one\n" and err == f"queuectl: attempt 1's log is incomplete: {LOST}\n"


class Retried(Logs):
    """Attempt 2 appears once attempt 1's end has been seen twice."""

    def __init__(self) -> None:
        super().__init__([b"one\n", b"two\n"], [LOST, None], state="failed")
        self.asked = 0

    def get(self, job_id: int) -> SimpleNamespace:
        self.asked += 1
        if self.asked >= 3:
            self.state = "completed"
            return super().get(job_id)
        return SimpleNamespace(runs=super().get(job_id).runs[:1], job=SimpleNamespace(state=self.state))


def test_logs_follow_says_it_of_an_attempt_before_the_next(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = show(capsys, Retried(), follow=True)
    assert out == "one\ntwo\n"
    assert err.splitlines() == [f"queuectl: attempt 1's log is incomplete: {LOST}", "--- attempt 2 ---"]
