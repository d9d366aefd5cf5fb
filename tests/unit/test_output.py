"""What queuectl prints: tables cut to the terminal, relative and ISO times,
and the JSON shape scripts rely on. Pure functions, a fixed `now`."""

from __future__ import annotations

import json

import msgspec
import pytest

from queuectl import output
from queued import protocol as p

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

JOB = p.Job(
    id=7,
    command="./backup.sh /srv --with a very long tail of arguments that will not fit in a narrow terminal",
    state="completed",
    queue="default",
    priority=-1,
    label="nightly",
    attempts=2,
    max_retries=3,
    backoff_base=2.0,
    timeout=60.0,
    exit_code=0,
    run_at=NOW - 600,
    created_at=NOW - 900.5,
    updated_at=NOW - 180,
    depends_on=[3],
    cwd="/srv",
)
RUN = p.Run(
    attempt=1,
    pid=4242,
    started_at=NOW - 300,
    ended_at=NOW - 290.5,
    exit_code=None,
    signal=9,
    error="killed by signal 9 (timeout)",
    stdout_path="/data/logs/7/1.out",
    stderr_path="/data/logs/7/1.err",
)


def job(**changes) -> p.Job:  # type: ignore[no-untyped-def]
    return msgspec.structs.replace(JOB, **changes)


# -- relative and absolute times ------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (NOW, "now"),
        (NOW - 20, "20s ago"),
        (NOW + 20, "in 20s"),
        (NOW - 180, "3m ago"),
        (NOW - 293, "4m53s ago"),
        (NOW + 3600, "in 1h"),  # not "in 60 min"
        (NOW + 7200, "in 2h"),
        (NOW - 3 * 86400, "3d ago"),
        (NOW - 2.2, "2s ago"),
        (None, "-"),
    ],
)
def test_relative(when: float | None, text: str) -> None:
    assert output.relative(when, NOW) == text


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (1_795_554_055.123, "2026-11-24T21:00:55.123Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_795_554_055.9996, "2026-11-24T21:00:56.000Z"),
        (None, None),
    ],
)
def test_iso(when: float | None, text: str | None) -> None:
    assert output.iso(when) == text


# -- tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 100, 120])
def test_table_fits_the_width_cutting_the_command(width: int) -> None:
    text = output.job_table([JOB, job(id=8, command="true")], now=NOW, width=width, colour=False)
    header, long_row, short_row = text.splitlines()
    assert all(len(line) <= width for line in text.splitlines())
    assert header.split()[:3] == ["ID", "STATE", "QUEUE"] and header.rstrip().endswith("COMMAND")
    assert long_row.endswith("…") and long_row.startswith("7 ")
    assert short_row.endswith("true")


def test_too_narrow_keeps_some_command() -> None:
    # Below the fixed columns' width the command keeps a readable stub (the line wraps).
    row = output.job_table([JOB], now=NOW, width=20, colour=False).splitlines()[1]
    assert row.endswith("…") and "./backup.s" in row


def test_table_columns() -> None:
    row = output.job_table([JOB], now=NOW, width=400, colour=False).splitlines()[1]
    assert row.split()[:8] == ["7", "completed", "default", "-1", "2/4", "0", "3m", "ago"]
    assert "nightly" in row and row.endswith(JOB.command)


def test_a_job_waiting_on_dependencies_says_which() -> None:
    waiting = job(state="pending", exit_code=None, depends_on=[3, 4, 5], waiting_on=[3, 5])
    row = output.job_table([waiting], now=NOW, width=400, colour=False).splitlines()[1]
    assert "after 3,5" in row


def test_columns_started_ended_duration_chosen() -> None:
    done = job(started_at=NOW - 300, ended_at=NOW - 290.5)
    running = job(id=8, state="running", started_at=NOW - 2.2, ended_at=None, exit_code=None)
    never = job(id=9, state="pending", started_at=None, ended_at=None, exit_code=None)
    columns = output.parse_columns("id, started,ended,DURATION")
    lines = output.job_table([done, running, never], now=NOW, width=400, colour=False, columns=columns)
    assert [line.split() for line in lines.splitlines()] == [
        ["ID", "STARTED", "ENDED", "DURATION"],
        ["7", "5m", "ago", "4m50s", "ago", "9.5s"],
        ["8", "2s", "ago", "-", "2.2s"],
        ["9", "-", "-", "-"],
    ]


@pytest.mark.parametrize("text", ["id,colour", "", " , "])
def test_unknown_columns_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="column"):
        output.parse_columns(text)


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("abc", 3),
        ("日本語", 6),
        ("🎉 done", 7),
        ("e\u0301", 1),
        ("a\u200bb", 2),
        ("\uff46\uff55\uff4c\uff4c", 8),
    ],
)
def test_display_width(text: str, width: int) -> None:
    assert output.display_width(text) == width


def test_wide_characters_keep_columns_aligned() -> None:
    jobs = [
        job(id=1, label="日本語ラベル", command="echo 完了"),
        job(id=2, label="plain", command="echo 🎉🎉"),
    ]
    lines = output.job_table(jobs, now=NOW, width=400, colour=False).splitlines()
    starts = {output.display_width(line[: line.index("echo")]) for line in lines[1:]}
    assert len(starts) == 1 and output.display_width(lines[0][: lines[0].index("COMMAND")]) in starts
    cut = output.job_table([job(command="日本語" * 40)], now=NOW, width=80, colour=False).splitlines()[1]
    assert output.display_width(cut) <= 80 and cut.endswith("…")


def test_when_is_run_at_for_waiting_jobs() -> None:
    pending = job(state="pending", run_at=NOW + 20, exit_code=None)
    row = output.job_table([pending], now=NOW, width=400, colour=False).splitlines()[1]
    assert "in 20s" in row


def test_multi_line_commands_stay_on_one_row() -> None:
    text = output.job_table([job(command="echo a\necho b")], now=NOW, width=200, colour=False)
    assert len(text.splitlines()) == 2


def test_colour_only_when_asked() -> None:
    plain = output.job_table([JOB], now=NOW, width=400, colour=False)
    coloured = output.job_table([JOB], now=NOW, width=400, colour=True)
    assert "\x1b[" not in plain and "\x1b[" in coloured
    # Escape codes do not count towards the width.
    assert all(
        len(output._plain(line)) <= 80
        for line in output.job_table([JOB], now=NOW, width=80, colour=True).splitlines()
    )


def test_no_color_and_pipes_mean_no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert output.use_colour(Tty()) and not output.use_colour(Pipe())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not output.use_colour(Tty())


def test_width_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.delenv("COLUMNS", raising=False)
    assert output.terminal_width(Pipe()) == output.UNLIMITED
    monkeypatch.setenv("COLUMNS", "80")  # a terminal's, inherited: a pipe is still not cut
    assert output.terminal_width(Pipe()) == output.UNLIMITED


def test_show_block() -> None:
    detail = p.JobDetail(
        job=JOB,
        runs=[RUN, msgspec.structs.replace(RUN, attempt=2, ended_at=None, error=None)],
        env={"PATH": "/bin"},
    )
    text = output.job_block(detail, now=NOW, width=100, colour=False)
    assert text.splitlines()[0] == "job 7: completed"
    assert "nightly" in text and "/srv" in text and output.absolute(JOB.created_at) in text
    assert "killed by signal 9" in text and "running" in text and "4242" in text


def test_show_numbers_attempts_as_its_header_counts_them_after_a_retry() -> None:
    runs = [msgspec.structs.replace(RUN, attempt=n) for n in range(1, 7)]
    detail = p.JobDetail(job=job(state="dead", attempts=3, max_retries=2), runs=runs, env={})
    text = output.job_block(detail, now=NOW, width=200, colour=False)
    assert "attempts:    3 of 3 since it was retried (6 runs in all)" in text
    table = text[text.index("RUN  ATTEMPT") :].splitlines()
    assert [line.split()[:2] for line in table[1:7]] == [
        ["1", "-"],
        ["2", "-"],
        ["3", "-"],
        ["4", "1/3"],
        ["5", "2/3"],
        ["6", "3/3"],
    ]
    assert "runs 1-3 came before the retry" in text


def test_show_indents_a_multi_line_command() -> None:
    detail = p.JobDetail(job=job(command="set -e\nmake\nmake install"), runs=[], env={})
    lines = output.job_block(detail, now=NOW, width=200, colour=False).splitlines()
    at = lines.index("  command:     set -e")
    assert lines[at + 1 : at + 3] == [" " * 15 + "make", " " * 15 + "make install"]


def test_status_uses_the_state_names_of_its_json() -> None:
    status = p.Status(
        version="1",
        pid=1,
        started_at=NOW - 293,
        counts={"pending": 4, "failed": 2, "running": 1},
        running=1,
        concurrency=2,
        accepting=True,
        queues=[p.QueueInfo(name="default", concurrency=None, paused=False, running=1, pending=4, failed=2)],
        data_dir="/d",
        socket="/s",
    )
    text = output.status_block(status, now=NOW)
    assert "up 4m53s" in text and "pending 4  held 0  running 1  failed 2" in text
    header, row = text.splitlines()[-2:]
    assert header.split() == ["QUEUE", "LIMIT", "STATUS", "PENDING", "HELD", "RUNNING", "FAILED"]
    assert row.split() == ["default", "-", "active", "4", "0", "1", "2"]
    assert set(output.status_json(status)["counts"]) <= {w.lower() for w in header.split()} | {
        "completed",
        "dead",
        "canceled",
    }


# -- JSON ----------------------------------------------------------------------------------------

JOB_KEYS = {
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
    "cwd",
    "timeout",
    "backoff_base",
    "error",
}


def test_job_json_shape() -> None:
    data = json.loads(json.dumps(output.job_json(JOB)))  # plain JSON, nothing exotic
    assert data.keys() >= JOB_KEYS
    assert data["id"] == 7 and data["state"] == "completed" and data["depends_on"] == [3]
    assert data["created_at"] == output.iso(JOB.created_at)
    assert data["created_at"].endswith("Z") and "." in data["created_at"]
    assert data["error"] is None and data["timeout"] == 60.0


def test_detail_json_adds_runs_and_env() -> None:
    data = output.detail_json(p.JobDetail(job=JOB, runs=[RUN], env={"A": "1"}))
    assert data.keys() >= JOB_KEYS and data["env"] == {"A": "1"}
    [run] = data["runs"]
    assert {
        "attempt",
        "pid",
        "started_at",
        "ended_at",
        "exit_code",
        "signal",
        "error",
        "stdout_path",
        "stderr_path",
    } <= run.keys()
    assert run["started_at"] == output.iso(RUN.started_at)
    still_running = output.detail_json(
        p.JobDetail(job=JOB, runs=[msgspec.structs.replace(RUN, ended_at=None)], env={})
    )
    assert still_running["runs"][0]["ended_at"] is None


def test_wait_progress_counts_waiting_jobs_too() -> None:
    from queuectl.progress import progress_line

    states = ["completed", "dead", "running", "pending", "pending", "failed", "canceled"]
    jobs = [job(id=n, state=state) for n, state in enumerate(states)]
    assert progress_line(jobs) == "3/7 done, 1 running, 3 waiting (1 to retry), 2 failed"
    assert progress_line(jobs[:1]) == "1/1 done, 0 running, 0 waiting, 0 failed"


# -- resources and weights (#14) -----------------------------------------------------------------


def test_show_says_what_a_job_needs_and_the_gpus_each_attempt_held() -> None:
    needy = job(state="running", slots=2, needs={"gpu": 1, "licence": 1}, gpus=[1])
    runs = [RUN, msgspec.structs.replace(RUN, attempt=2, ended_at=None, error=None, gpus=[1])]
    text = output.job_block(p.JobDetail(job=needy, runs=runs, env={}), now=NOW, width=200, colour=False)
    assert "  needs:       2 slots, gpu=1, licence=1 (holds GPU 1)" in text.splitlines()
    ended = output.job_block(
        p.JobDetail(job=job(needs={"gpu": 1}, gpus=[1]), runs=[], env={}), now=NOW, width=200, colour=False
    )
    assert "  needs:       gpu=1" in ended.splitlines()
    table = text[text.index("RUN  ATTEMPT") :].splitlines()
    assert table[0].split() == ["RUN", "ATTEMPT", "PID", "GPUS", "STARTED", "DURATION", "RESULT"]
    assert table[1].split()[3] == "-" and table[2].split()[3] == "1"
    plain = output.job_block(p.JobDetail(job=JOB, runs=[RUN], env={}), now=NOW, width=200, colour=False)
    assert "needs:" not in plain and "GPUS" not in plain


def test_ls_shows_what_jobs_need_only_when_one_does() -> None:
    plain = [job(id=1), job(id=2)]
    assert "needs" not in output.default_columns(plain)
    running = job(id=3, state="running", slots=2, needs={"gpu": 2, "licence": 1}, gpus=[0, 3])
    waiting = job(id=4, state="pending", needs={"gpu": 1})
    columns = output.default_columns([*plain, running, waiting])
    assert columns[columns.index("label") - 1] == "needs"
    text = output.job_table([*plain, running, waiting], now=NOW, width=200, colour=False, columns=columns)
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "2sl gpu:0,3 licence=1" in rows["3"]  # what it holds: its GPUs by index
    assert " gpu=1 " in rows["4"]  # what it waits for
    narrow = output.job_table([plain[0]], now=NOW, width=200, colour=False, columns=("id", "needs"))
    assert narrow.splitlines()[1].split() == ["1", "-"]


def test_job_json_says_what_a_job_needs_and_holds() -> None:
    data = output.job_json(job(state="running", slots=2, needs={"gpu": 1}, gpus=[3]))
    assert (data["slots"], data["needs"], data["gpus"]) == (2, {"gpu": 1}, [3])
    detail = output.detail_json(
        p.JobDetail(job=JOB, runs=[msgspec.structs.replace(RUN, gpus=[0, 1])], env={})
    )
    assert detail["runs"][0]["gpus"] == [0, 1] and (detail["slots"], detail["needs"]) == (1, {})


def _status(**fields) -> p.Status:  # type: ignore[no-untyped-def]
    return p.Status(
        version="1",
        pid=1,
        started_at=NOW - 10,
        counts={},
        running=2,
        concurrency=4,
        accepting=True,
        queues=[],
        data_dir="/d",
        socket="/s",
        node="a",
        **fields,
    )


def test_status_says_each_resources_use() -> None:
    only_slots = output.status_block(_status(resources={"a": p.Resources(slots=4, slots_used=2)}), now=NOW)
    assert "  slots:   2 of 4 in use" in only_slots.splitlines() and "resources" not in only_slots
    weighty = output.status_block(_status(resources={"a": p.Resources(slots=4, slots_used=3)}), now=NOW)
    assert "  slots:   3 of 4 in use (2 jobs)" in weighty.splitlines()
    gpus = p.Resources(slots=4, slots_used=3, counts={"licence": 1}, gpus=[0, 1], gpus_used=[1])
    lines = output.status_block(_status(resources={"a": gpus}), now=NOW).splitlines()
    assert lines[1:3] == ["  slots:   3 of 4 in use (2 jobs)", "  resources: gpu 1/2 (held: 1), licence 0/1"]
    several = {"a": gpus, "bb": p.Resources(slots=2, counts={"licence": 2}, counts_used={"licence": 1})}
    lines = output.status_block(_status(resources=several), now=NOW).splitlines()
    at = lines.index("  resources:")
    assert lines[at + 1 : at + 3] == [
        "    a   slots 3/4, gpu 1/2 (held: 1), licence 0/1",
        "    bb  slots 0/2, licence 1/2",
    ]
    data = output.status_json(_status(resources=several))
    assert data["resources"]["a"] == {
        "slots": 4,
        "slots_used": 3,
        "counts": {"licence": 1},
        "counts_used": {},
        "gpus": [0, 1],
        "gpus_used": [1],
    }
