"""What queuectl makes of its input, without a daemon: durations, times, job
files, `enqueue` JSON, and exit code 2 for anything malformed."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from queuectl.cli import cli
from queuectl.completion import JobIdType
from queuectl.jobfile import JobFileError, parse_time, spec_from_json, specs_from_lines
from queued import lifecycle
from queued.lifecycle import Event
from queued.protocol import JobSpec

DEFAULTS = JobSpec(command="-")


@pytest.fixture
def invoke(tmp_path: Path):
    """Runs the CLI against a socket nobody serves: a usage error exits 2 before
    any connection, anything that reached for the daemon would exit otherwise."""
    runner = CliRunner()
    socket = str(tmp_path / "unserved.sock")

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--socket", socket, *args], input=input)

    return run


# -- add: options before the command, the command verbatim ----------------------------------


@pytest.fixture
def added(monkeypatch: pytest.MonkeyPatch, invoke):
    """Runs `queuectl add ...` and returns the JobSpecs it would have sent."""
    sent: list[JobSpec] = []

    def add_jobs(self, specs):  # type: ignore[no-untyped-def]
        from queuectl import AddedJob

        sent.extend(specs)
        return [AddedJob(n, False) for n in range(1, len(sent) + 1)][-len(specs) :]

    monkeypatch.setattr("queuectl.client.Client.add_jobs", add_jobs)

    def run(*args: str) -> JobSpec:
        result = invoke("add", *args)
        assert result.exit_code == 0, result.output
        return sent[-1]

    return run


@pytest.mark.parametrize(
    ("args", "unknown", "suggested"),
    [
        (["--lable", "nightly", "--", "echo", "hi"], "--lable", "--label"),
        (["--bogus", "echo", "hi"], "--bogus", None),
        (["--max-retry", "2", "echo", "hi"], "--max-retry", "--max-retries"),
        (["-x", "ls"], "-x", None),
    ],
)
def test_an_unknown_option_before_the_command_is_usage(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    unknown: str,
    suggested: str | None,
) -> None:
    from queuectl import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["queuectl", "--socket", "/nonexistent/q.sock", "add", *args])
    with pytest.raises(SystemExit) as exited:
        cli_module.run()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"no such option: {unknown}" in error
    assert (f"did you mean {suggested}?" in error) if suggested else "did you mean" not in error


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["ls", "-la", "/tmp"], "ls -la /tmp"),
        (["ls", "-l", "/tmp"], "ls -l /tmp"),
        (["env", "-e", "FOO=1"], "env -e FOO=1"),
        (["grep", "-q", "foo", "FILE"], "grep -q foo FILE"),
        (["echo", "--label", "x", "--", "-q"], "echo --label x -- -q"),
        (["--", "ls", "-la"], "ls -la"),
        (["ls -la | wc -l"], "ls -la | wc -l"),
    ],
)
def test_everything_from_the_commands_first_word_is_the_jobs(added, args: list[str], command: str) -> None:
    spec = added(*args)
    assert spec.command == command
    assert (spec.label, spec.queue, spec.env, spec.max_retries) == (None, "default", {}, None)


def test_options_before_the_command_are_queuectls(added) -> None:
    spec = added("-l", "nightly", "-e", "A=1", "--max-retries", "2", "grep", "-q", "-e", "x", "f")
    assert spec.command == "grep -q -e x f"
    assert (spec.label, spec.env, spec.max_retries) == ("nightly", {"A": "1"}, 2)


def test_unique_options_reach_the_spec(added) -> None:
    spec = added("--unique", "deploy main", "--unique-for", "2h", "./deploy.sh")
    assert (spec.command, spec.unique_key, spec.unique_for) == ("./deploy.sh", "deploy main", 7200.0)
    assert (added("-u", "k", "true").unique_key, added("true").unique_key) == ("k", None)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--unique-for", "1h", "true"], "--unique-for needs --unique KEY"),
        (["--unique", "a\tb", "true"], "holds a control character"),
        (["--unique", "", "true"], "the unique key is empty"),
        (["--unique", "x" * 300, "true"], "the unique key is 300 characters; at most 200 are kept"),
        (["--unique", "k", "--unique-for", "later", "true"], "--unique-for"),
    ],
)
def test_bad_unique_options_are_a_one_line_usage_error(invoke, args: list[str], words: str) -> None:
    result = invoke("add", *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


def test_a_job_line_may_name_its_unique_key_and_window() -> None:
    [spec] = specs_from_lines(['{"command": "x", "unique_key": "k", "unique_for": "30m"}'], DEFAULTS)
    assert (spec.unique_key, spec.unique_for) == ("k", 1800.0)
    with pytest.raises(JobFileError, match=r"line 1: .*unique_key"):
        specs_from_lines(['{"command": "x", "unique_key": ""}'], DEFAULTS)


@pytest.mark.parametrize("args", [[], ["dlq"], ["config"], ["workers"], ["queue"]])
def test_a_group_without_its_command_prints_the_whole_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    from queuectl import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["queuectl", "--socket", "/nonexistent/q.sock", *args])
    try:
        cli_module.run()
    except SystemExit as exited:
        assert exited.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("Usage: queuectl") and "Commands:" in out and len(out.splitlines()) > 8


def test_add_help_without_a_daemon_shows_the_built_in_defaults(invoke) -> None:
    result = invoke("add", "--help")
    assert result.exit_code == 0
    assert "[3]" in result.output and "[none]" in result.output and "built-in defaults" in result.output


def test_ls_columns_must_be_known(invoke) -> None:
    result = invoke("ls", "--columns", "id,colour")
    assert result.exit_code == 2 and "colour" in result.output


# -- durations and times ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["90", "90s", "5m", "2h", "1d", "1h30m"])
def test_durations_are_accepted(invoke, text: str) -> None:
    # Parsing succeeds, so the command gets as far as the (absent) daemon.
    result = invoke("add", "--timeout", text, "--delay", text, "true")
    assert result.exit_code != 2, result.output


@pytest.mark.parametrize("text", ["soon", "5x", "-5", "1.2.3", ""])
def test_bad_durations_are_usage_errors(invoke, text: str) -> None:
    result = invoke("add", "--delay", text, "true")
    assert result.exit_code == 2
    assert "--delay" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["add", "--timeout", "0", "true"],
        ["add", "--max-retries", "-1", "true"],
        ["add", "--backoff-base", "0.5", "true"],
        ["add", "--after", "0", "true"],
        ["add", "--env", "NOEQUALS", "true"],
        ["add", "--at", "next tuesday", "true"],
        ["add"],
        ["ls", "--state", "sleeping"],
        ["ls", "--limit", "-1"],
        ["wait", "--timeout", "forever", "1"],
        ["cancel"],
        ["cancel", "x"],
        ["show", "0"],
        ["workers", "scale", "-1"],
        ["queue", "add", "gpu", "--concurrency", "0"],
        ["queue", "set", "gpu", "--concurrency", "0"],
        ["queue", "set", "gpu", "--concurrency", "4097"],
        ["queue", "set", "gpu", "--concurrency", "lots"],
        ["queue", "set", "gpu"],
        ["queue", "set", "--concurrency", "2"],
        ["clean", "--state", "running"],
        ["clean", "--older-than", "a week"],
        ["dlq", "retry"],
        ["nonsense"],
    ],
)
def test_malformed_commands_exit_2(invoke, args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output


def test_at_naive_is_local_and_z_is_utc() -> None:
    assert parse_time("2026-12-01T09:30:00Z") == datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp()
    assert parse_time("2026-12-01T09:30") == datetime(2026, 12, 1, 9, 30).timestamp()  # local
    assert parse_time("2026-12-01T09:30+02:00") == parse_time("2026-12-01T07:30Z")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("tomorrow")


# -- add --from ---------------------------------------------------------------------------------


def test_lines_skip_blanks_and_comments() -> None:
    lines = ["# nightly\n", "echo one\n", "\n", "   \n", "  ./two.sh --flag  \n"]
    assert [s.command for s in specs_from_lines(lines, DEFAULTS)] == ["echo one", "./two.sh --flag"]


def test_options_are_defaults_for_every_line() -> None:
    defaults = JobSpec(command="-", queue="gpu", priority=-3, max_retries=1, label="batch", env={"A": "1"})
    plain, custom = specs_from_lines(
        ["echo one", '{"command": "echo two", "queue": "cpu", "env": {"B": "2"}}'], defaults
    )
    assert (plain.queue, plain.priority, plain.max_retries, plain.label) == ("gpu", -3, 1, "batch")
    assert (custom.queue, custom.priority, custom.label) == ("cpu", -3, "batch")
    assert custom.env == {"A": "1", "B": "2"}


def test_json_lines_take_durations_and_times() -> None:
    [spec] = specs_from_lines(
        [
            '{"command": "x", "timeout": "10m", "delay": 30, "run_at": "2026-12-01T00:00:00Z", "after": [1, 2]}'
        ],
        DEFAULTS,
    )
    assert spec.timeout == 600 and spec.delay == 30
    assert spec.run_at == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert spec.after == [1, 2]
    [numeric] = specs_from_lines(['{"command": "x", "run_at": 1800000000, "timeout": 2.5}'], DEFAULTS)
    assert (numeric.run_at, numeric.timeout) == (1800000000, 2.5)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"command": "x", "colour": "red"}', "colour"),
        ('{"command": "x", "max_retries": -1}', "max_retries"),
        ('{"command": "x", "timeout": "soon"}', "soon"),
        ('{"command": "x", "run_at": "whenever"}', "whenever"),
        ('{"command": "x",', "JSON"),
        ('{"queue": "gpu"}', "command"),
        ('{"command": ""}', "command"),
    ],
)
def test_bad_lines_name_their_number(line: str, reason: str) -> None:
    with pytest.raises(JobFileError) as caught:
        specs_from_lines(["# header", "echo fine", line], DEFAULTS)
    assert str(caught.value).startswith("line 3:")
    assert reason in str(caught.value)


def test_from_file_with_a_bad_line_exits_2_before_sending(invoke, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("echo one\necho two\n{not json}\necho four\n")
    result = invoke("add", "--from", str(jobs))
    # 2, not 3: the file was refused before queuectl reached for the daemon.
    assert result.exit_code == 2
    assert "line 3" in result.output


def test_from_stdin_is_read(invoke) -> None:
    result = invoke("add", "--from", "-", input='echo a\n{"command": 5}\n')
    assert result.exit_code == 2 and "line 2" in result.output


def test_from_and_a_command_together_is_usage(invoke, tmp_path: Path) -> None:
    (tmp_path / "j").write_text("true\n")
    assert invoke("add", "--from", str(tmp_path / "j"), "true").exit_code == 2


def test_from_missing_file_is_usage(invoke, tmp_path: Path) -> None:
    assert invoke("add", "--from", str(tmp_path / "missing.txt")).exit_code == 2


def test_from_reads_a_stream() -> None:
    assert [s.command for s in specs_from_lines(io.StringIO("a\nb\n"), DEFAULTS)] == ["a", "b"]


# -- enqueue --------------------------------------------------------------------------------------


def test_enqueue_maps_the_seed_form() -> None:
    spec = spec_from_json('{"id": "job1", "command": "sleep 2", "max_retries": 5}', DEFAULTS)
    assert (spec.command, spec.max_retries, spec.label) == ("sleep 2", 5, "job1")


def test_enqueue_label_beats_id() -> None:
    spec = spec_from_json('{"id": 7, "label": "mine", "command": "true"}', DEFAULTS)
    assert spec.label == "mine"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"command": "true", "retries": 3}', "retries"),
        ('{"command": "true", "priority": "high"}', "priority"),
        ('["true"]', "object"),
    ],
)
def test_enqueue_bad_json_is_usage_naming_the_field(invoke, text: str, named: str) -> None:
    result = invoke("enqueue", text)
    assert result.exit_code == 2
    assert named in result.output


# -- help ---------------------------------------------------------------------------------------------


def _commands(group, prefix=()):  # type: ignore[no-untyped-def]
    """Every command path, as `--help` lists them (the daemon's are loaded on demand)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        yield (*prefix, name)
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_commands(cli)], ids=" ".join)
def test_every_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "queuectl " in result.output.split("Example", 1)[-1], result.output
    assert "Example" in result.output


# -- the states a command takes: lifecycle's, and its help says them ------------------------------

_STATE_ARGUMENTS = {
    ("cancel",): lifecycle.states_that_can(Event.CANCEL),
    ("hold",): lifecycle.states_that_can(Event.HOLD),
    ("release",): lifecycle.states_that_can(Event.RELEASE),
    ("retry",): lifecycle.states_that_can(Event.RETRY),
    ("dlq", "retry"): (lifecycle.DEAD,),
    ("edit",): lifecycle.EDITABLE_STATES,
    ("rm",): lifecycle.TERMINAL_STATES,
    ("pause",): (lifecycle.RUNNING,),
    ("kill",): (lifecycle.RUNNING,),
}


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.get_command(click.Context(command), name)  # type: ignore[assignment]
    return command


@pytest.mark.parametrize("path", list(_STATE_ARGUMENTS), ids=" ".join)
def test_job_ids_complete_to_the_states_the_daemon_accepts(path: tuple[str, ...]) -> None:
    [argument] = [p for p in _command(path).params if isinstance(p.type, JobIdType)]
    assert set(argument.type.states) == set(_STATE_ARGUMENTS[path])  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", [("cancel",), ("hold",), ("release",), ("retry",), ("edit",)], ids=" ".join)
def test_help_names_every_state_the_command_takes(path: tuple[str, ...]) -> None:
    """`Cancel pending, failed or running jobs` left held ones out, which cancel takes too."""
    summary = _command(path).help.split("\n")[0]  # type: ignore[union-attr]
    named = {state for state in lifecycle.STATES if re.search(rf"\b{state}\b", summary)}
    assert named == set(_STATE_ARGUMENTS[path]), summary


def test_the_lazy_commands_import_nothing_above_them() -> None:
    """queuectl.commands and queuectl.changing stand below queuectl.cli (no circle):
    importing them imports no queuectl.cli."""
    script = "import sys, queuectl.commands, queuectl.changing\nprint('queuectl.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_lone_surrogate_escape_in_a_json_job_is_named_not_called_truncated() -> None:
    for text, named in (('{"command": "echo \\ud800"}', "\\ud800"), ('{"command": "\\udc00 x"}', "\\udc00")):
        with pytest.raises(ValueError) as refused:
            spec_from_json(text, DEFAULTS)
        assert (
            str(refused.value)
            == f"not valid JSON: {named} is half of a UTF-16 surrogate pair, not a character"
        )
    assert spec_from_json('{"command": "echo \\ud83d\\ude00"}', DEFAULTS).command == "echo \U0001f600"
