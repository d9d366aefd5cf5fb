"""What a job needs (#14, resources and weights): `--slots N` and `--needs
gpu=1,licence=1` on the command line, "slots" and "needs" in JSON lines and
the SDK, the daemon's checks (validation), each bad value a one-line reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from queuectl.cli import cli
from queuectl.jobfile import JobFileError, specs_from_lines
from queued import resources
from queued.protocol import JobChanges, JobSpec
from queued.settings import Settings
from queued.validation import RESOURCE_NAME, check_needs, check_spec, job_changes, new_job

DEFAULTS = JobSpec(command="-")


def _new(**spec: object):
    return new_job(JobSpec(command="true", **spec), cwd="/", env={}, settings=Settings(), now=1.0)  # type: ignore[arg-type]


def test_a_new_job_takes_one_slot_and_needs_nothing_unless_asked() -> None:
    plain = _new()
    assert (plain.slots, plain.needs) == (1, {})
    big = _new(slots=3, needs={"gpu": 2, "licence": 1})
    assert (big.slots, big.needs) == (3, {"gpu": 2, "licence": 1})


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"slots": 0}, "invalid slots 0: a whole number from 1 to 4,096"),
        ({"slots": 4097}, "invalid slots 4097: a whole number from 1 to 4,096"),
        ({"slots": True}, "invalid slots True"),
        ({"slots": 2.0}, "invalid slots 2.0"),
        ({"needs": {"gpu": 0}}, "invalid count 0 for gpu: a whole number from 1 to 1,000,000"),
        ({"needs": {"gpu": 10**7}}, "invalid count 10000000 for gpu"),
        ({"needs": {"gpu": 10**30}}, "invalid count 1000000000000000000000000000000 for gpu"),
        ({"needs": {"gpu": -1}}, "invalid count -1 for gpu"),
        ({"needs": {"gpu": True}}, "invalid count True for gpu"),
        ({"needs": {"gpu": "1"}}, "invalid count '1' for gpu"),
        ({"needs": {"slots": 1}}, "'slots' is not a resource"),
        ({"needs": {"": 1}}, "invalid resource name ''"),
        ({"needs": {"1gpu": 1}}, "invalid resource name '1gpu': a letter, then"),
        ({"needs": {"g pu": 1}}, "invalid resource name 'g pu'"),
        ({"needs": {"gpu\n": 1}}, "invalid resource name 'gpu\\n'"),
        ({"needs": {"x" * 65: 1}}, "invalid resource name"),
        ({"needs": {3: 1}}, "invalid resource name 3"),
        ({"needs": [("gpu", 1)]}, 'needs must map resource names to counts, e.g. {"gpu": 1}'),
    ],
)
def test_bad_slots_and_needs_are_refused_in_one_line(spec: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_spec(JobSpec(command="true", **spec))  # type: ignore[arg-type]
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_the_name_rule_is_the_one_of_the_command_line() -> None:
    """A mapping's names are checked by the rule `--needs` text is parsed with."""
    for name in ("gpu", "licence", "A.b-c_9", "x" * 64, "x" * 65, "9x", "-x", "ü", "a b", "a=b", "a,b"):
        try:
            resources.parse_needs(f"{name}=1")
            parsed = True
        except ValueError:
            parsed = False
        assert parsed == bool(RESOURCE_NAME.fullmatch(name)), name
        if parsed:
            check_needs({name: 1})


def test_an_edit_changes_slots_and_needs_checked_alike() -> None:
    assert job_changes(JobChanges(slots=2, needs={"gpu": 1}), now=1.0) == {"slots": 2, "needs": {"gpu": 1}}
    assert job_changes(JobChanges(needs={}), now=1.0) == {"needs": {}}
    with pytest.raises(ValueError, match="'slots' is not a resource"):
        job_changes(JobChanges(needs={"slots": 2}), now=1.0)
    with pytest.raises(ValueError, match="invalid slots 0"):
        job_changes(JobChanges(slots=0), now=1.0)


def test_json_lines_name_slots_and_needs() -> None:
    [spec, plain] = specs_from_lines(['{"command": "x", "slots": 2, "needs": {"gpu": 1}}', "y"], DEFAULTS)
    assert (spec.slots, spec.needs, plain.slots, plain.needs) == (2, {"gpu": 1}, 1, {})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"command": "x", "needs": {"gpu": 0}}', "line 1: invalid count 0 for gpu"),
        ('{"command": "x", "needs": {"slots": 2}}', "line 1: 'slots' is not a resource"),
        ('{"command": "x", "needs": "gpu=1"}', "line 1: needs must map resource names to counts"),
        ('{"command": "x", "needs": {"gpu": 1.5}}', "line 1: invalid count 1.5 for gpu"),
        ('{"command": "x", "slots": "2"}', "line 1: invalid slots '2'"),
        ('{"command": "x", "slots": 99999999999999999999}', "line 1: invalid slots 99999999999999999999"),
    ],
)
def test_bad_json_lines_say_which_line_and_why(line: str, reason: str) -> None:
    with pytest.raises(JobFileError) as refused:
        specs_from_lines([line], DEFAULTS)
    assert reason in str(refused.value)


@pytest.fixture
def invoke(tmp_path: Path):
    """The CLI against a socket nobody serves: a usage error exits 2 before any connection."""
    runner = CliRunner()
    socket = str(tmp_path / "unserved.sock")

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--socket", socket, *args], input=input)

    return run


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[JobSpec]:
    specs: list[JobSpec] = []

    def add_jobs(self, new, **pin):  # type: ignore[no-untyped-def]
        from queuectl import AddedJob

        specs.extend(new)
        return [AddedJob(n, False) for n in range(1, len(new) + 1)]

    monkeypatch.setattr("queuectl.client.Client.add_jobs", add_jobs)
    return specs


def test_add_needs_and_slots_reach_the_spec(invoke, sent: list[JobSpec]) -> None:
    result = invoke("add", "--needs", "gpu=1, licence=2", "--slots", "3", "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    assert (sent[-1].command, sent[-1].slots, sent[-1].needs) == (
        "python train.py",
        3,
        {"gpu": 1, "licence": 2},
    )
    assert invoke("add", "true").exit_code == 0
    assert (sent[-1].slots, sent[-1].needs) == (1, {})


def test_add_from_lines_starts_from_the_options_needs(invoke, sent: list[JobSpec]) -> None:
    lines = '{"command": "a"}\n{"command": "b", "needs": {"licence": 1}, "slots": 2}\nc\n'
    result = invoke("add", "--needs", "gpu=1", "--from", "-", input=lines)
    assert result.exit_code == 0, result.output
    assert [(s.command, s.slots, s.needs) for s in sent] == [
        ("a", 1, {"gpu": 1}),
        ("b", 2, {"licence": 1}),
        ("c", 1, {"gpu": 1}),
    ]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--needs", "gpu=0"], "invalid count '0' for gpu: a whole number from 1 to 1,000,000"),
        (["--needs", "slots=1"], "'slots' is not a resource: use --slots N"),
        (["--needs", "gpu=99999999999"], "invalid count '99999999999' for gpu"),
        (["--needs", "gpu=-1"], "invalid count '-1' for gpu"),
        (["--needs", "gpu"], "invalid item 'gpu': use NAME=COUNT"),
        (["--needs", ""], "is empty"),
        (["--needs", "gpu=1,gpu=2"], "names 'gpu' twice"),
        (["--needs", "g%u=1"], "invalid resource name 'g%u'"),
        (["--needs", "x" * 70 + "=1"], "invalid resource name"),
        (["--slots", "0"], "0 is not in the range 1<=x<=4096"),
        (["--slots", "5000"], "5000 is not in the range 1<=x<=4096"),
        (["--slots", "two"], "'two' is not a valid integer"),
    ],
)
def test_bad_needs_and_slots_are_a_one_line_usage_error(invoke, args: list[str], reason: str) -> None:
    result = invoke("add", *args, "--", "true")
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert reason in line


def test_edit_takes_needs_and_slots_and_none_clears(monkeypatch: pytest.MonkeyPatch, invoke) -> None:
    edits: list[dict[str, object]] = []
    monkeypatch.setattr("queuectl.client.Client.edit", lambda self, job_id, **changes: edits.append(changes))
    assert invoke("edit", "7", "--needs", "gpu=2", "--slots", "2").exit_code == 0
    assert (edits[-1]["needs"], edits[-1]["slots"]) == ({"gpu": 2}, 2)
    assert invoke("edit", "7", "--needs", "none").exit_code == 0
    assert (edits[-1]["needs"], edits[-1]["slots"]) == ({}, None)
    result = invoke("edit", "7", "--needs", "slots=2")
    assert result.exit_code == 2 and "'slots' is not a resource" in result.output


def test_schedule_add_takes_needs_and_slots(monkeypatch: pytest.MonkeyPatch, invoke) -> None:
    from queued.protocol import ScheduleInfo

    given: list[JobSpec] = []

    def schedule_add(self, name, expression, spec, **options):  # type: ignore[no-untyped-def]
        given.append(spec)
        return ScheduleInfo(
            name=name, expression=expression, tz="UTC", command=spec.command, queue="default", priority=0,
            max_retries=3, timeout=None, cwd="/", no_overlap=False, catch_up="one", paused=False,
            created_at=1.0, next_run=None, last_run=None,
        )  # fmt: skip

    monkeypatch.setattr("queuectl.client.Client.schedule_add", schedule_add)
    result = invoke(
        "schedule", "add", "retrain", "@weekly", "--needs", "gpu=1", "--slots", "2", "--", "train"
    )
    assert result.exit_code == 0, result.output
    assert (given[-1].needs, given[-1].slots) == ({"gpu": 1}, 2)


def test_help_shows_a_gpu_example(invoke) -> None:
    assert "--needs gpu=1" in invoke("add", "--help").output
    assert "--needs" in invoke("schedule", "add", "--help").output
    assert "--needs gpu=2" in invoke("edit", "--help").output


def test_needs_complete_to_the_resources_the_nodes_have(monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from queuectl.completion import NeedsType
    from queued.protocol import Resources, Status

    status = Status(
        version="1", pid=1, started_at=0.0, counts={}, running=0, concurrency=2, accepting=True, queues=[],
        data_dir="/d", socket="/s",
        resources={
            "a": Resources(slots=2, gpus=[0, 1]),
            "b": Resources(slots=2, counts={"licence": 1, "scratch": 4}),
        },
    )  # fmt: skip
    monkeypatch.setattr("queuectl.client.Client.status", lambda self: status)
    ctx = click.Context(click.Command("x"))
    complete = NeedsType().shell_complete

    def values(incomplete: str) -> list[str]:
        return [item.value for item in complete(ctx, None, incomplete)]  # type: ignore[arg-type]

    assert values("") == ["gpu=1", "licence=1", "scratch=1"]
    assert values("l") == ["licence=1"]
    assert values("gpu=2,") == ["gpu=2,licence=1", "gpu=2,scratch=1"]
    monkeypatch.setattr("queuectl.client.Client.status", lambda self: 1 / 0)
    assert values("") == []  # a daemon that cannot answer completes nothing
