"""What a job needs, as users meet it (#14): `queuectl add --needs gpu=1
--slots N`, JSON lines, `edit`, `schedule add`, and what `show`, `ls` and
`status` say of it, against the real daemon on SQLite and on PostgreSQL; bad
input refused with a one-line reason and the right exit code, changing nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queued import protocol as p
from tests.e2e.conftest import Daemon


def _one_line_error(result, code: int, words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--needs", "gpu=0"], "invalid count '0' for gpu: a whole number from 1 to 1,000,000"),
        (["--needs", "slots=1"], "'slots' is not a resource: use --slots N"),
        (["--needs", "gpu=1000001"], "invalid count '1000001' for gpu"),
        (["--needs", "gpu=" + "9" * 40], "for gpu: a whole number from 1 to 1,000,000"),
        (["--needs", "GPU 1=1"], "invalid resource name 'GPU 1'"),
        (["--needs", "gpu=1,gpu=1"], "names 'gpu' twice"),
        (["--needs", "=1"], "use NAME=COUNT"),
        (["--needs", "gpu=1;licence=1"], "invalid count '1;licence=1' for gpu"),
        (["--needs", "lïcence=1"], "invalid resource name 'lïcence'"),
        (["--slots", "0"], "0 is not in the range 1<=x<=4096"),
        (["--slots", "99999999999999999999"], "is not in the range 1<=x<=4096"),
        (["--slots", "-1"], "-1 is not in the range 1<=x<=4096"),
    ],
)
def test_bad_needs_and_slots_are_usage_errors_that_add_nothing(
    daemon: Daemon, args: list[str], words: str
) -> None:
    _one_line_error(daemon.ctl("add", *args, "--", "true"), 2, words)
    assert json.loads(daemon.ok("ls", "--all", "--json")) == []


def test_bad_needs_in_json_lines_name_the_line(daemon: Daemon) -> None:
    lines = '{"command": "a"}\n{"command": "b", "needs": {"gpu": 0}}\n'
    _one_line_error(daemon.ctl("add", "--from", "-", input=lines), 2, "line 2: invalid count 0 for gpu")
    lines = '{"command": "a", "needs": {"slots": 2}}\n'
    _one_line_error(daemon.ctl("add", "--from", "-", input=lines), 2, "line 1: 'slots' is not a resource")
    lines = '{"command": "a", "slots": 0}\n'
    _one_line_error(daemon.ctl("add", "--from", "-", input=lines), 2, "line 1: invalid slots 0")
    _one_line_error(daemon.ctl("enqueue", '{"command": "a", "needs": ["gpu"]}'), 2, "needs must map resource")
    assert json.loads(daemon.ok("ls", "--all", "--json")) == []


@pytest.fixture
def licensed(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon with a licence to hand out (one daemon alone refuses at add
    what it could never run), and no GPU: nvidia-smi is not asked."""
    daemon = Daemon(tmp_path, "--resources", "gpu=0,licence=1").start()
    try:
        yield daemon
    finally:
        daemon.ok("shutdown", "--now") if daemon.process and daemon.process.poll() is None else None
        daemon.stop()


def test_the_daemon_refuses_what_a_client_did_not_check(licensed: Daemon) -> None:
    """An SDK or a client of its own that sends bad needs is refused in one
    line (exit 1's "refused by the daemon"), and the daemon serves on."""
    from queuectl import Client, DaemonError

    cases = [
        ({"gpu": 0}, "invalid count 0 for gpu"),
        ({"slots": 1}, "'slots' is not a resource"),
        ({"a b": 1}, "invalid resource name 'a b'"),
        ({"gpu": 2**62}, "invalid count 4611686018427387904 for gpu"),
        ({f"r{i}": 1 for i in range(40)}, "needs must be at most 32 entries"),
    ]
    with Client(str(licensed.socket)) as client:
        for needs, words in cases:
            spec = p.JobSpec(command="true", needs=needs)
            with pytest.raises(DaemonError) as refused:
                client.request(p.AddJobs(jobs=[spec], cwd="/"), p.Added)
            assert words in str(refused.value) and "\n" not in str(refused.value)
        with pytest.raises(DaemonError, match="slots must be at least 1"):
            client.request(p.AddJobs(jobs=[p.JobSpec(command="true", slots=0)], cwd="/"), p.Added)
        assert client.list() == []
        assert client.add("true", slots=2, needs={"licence": 1}) == 1
        assert (client.get(1).job.slots, client.get(1).job.needs) == (2, {"licence": 1})


def _status(daemon: Daemon) -> dict:
    return json.loads(daemon.ok("status", "--json"))


def _until(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_show_ls_and_status_say_what_jobs_need_and_hold(licensed: Daemon) -> None:
    daemon = licensed
    plain = daemon.add("--", "sleep", "30")
    assert "NEEDS" not in daemon.ok("ls")  # nobody needs anything: the table stays as it was
    big = daemon.add("--slots", "2", "--needs", "licence=1", "--hold", "--", "sleep", "30")
    shown = daemon.ok("show", str(big))
    assert "  needs:       2 slots, licence=1\n" in shown
    header, *rows = daemon.ok("ls").splitlines()
    assert "NEEDS" in header.split()
    row = next(line for line in rows if line.split()[0] == str(big))
    assert " 2sl licence=1 " in row
    data = json.loads(daemon.ok("show", str(big), "--json"))
    assert (data["slots"], data["needs"], data["gpus"]) == (2, {"licence": 1}, [])
    assert _until(lambda: (s := _status(daemon))["resources"][s["node"]]["slots_used"] == 1)
    daemon.ok("edit", str(big), "--slots", "1", "--needs", "none")
    assert "needs:" not in daemon.ok("show", str(big))
    daemon.ok("edit", str(big), "--slots", "2")
    daemon.ok("cancel", str(plain))
    daemon.ok("release", str(big))
    status = _until(lambda: (s := _status(daemon))["resources"][s["node"]]["slots_used"] == 2 and s)
    assert status["resources"][status["node"]] == {
        "slots": 2,
        "slots_used": 2,
        "counts": {"licence": 1},
        "counts_used": {"licence": 0},
        "gpus": [],
        "gpus_used": [],
    }
    assert "  slots:   2 of 2 in use (1 job)" in daemon.ok("status")
    runs = json.loads(daemon.ok("show", str(big), "--json"))["runs"]
    assert [run["gpus"] for run in runs] == [[]]


def test_a_schedules_jobs_need_what_it_says(licensed: Daemon) -> None:
    daemon = licensed
    daemon.ok("schedule", "add", "retrain", "@weekly", "--needs", "licence=1", "--slots", "2", "--", "true")
    listed = json.loads(daemon.ok("schedule", "ls", "--json"))
    assert [(s["name"], s["slots"], s["needs"]) for s in listed] == [("retrain", 2, {"licence": 1})]
    daemon.ok("schedule", "run", "retrain")
    [job] = json.loads(daemon.ok("ls", "--all", "--json"))
    assert (job["label"], job["slots"], job["needs"]) == ("retrain", 2, {"licence": 1})
    _one_line_error(
        daemon.ctl("schedule", "add", "x", "@daily", "--needs", "gpu=0", "--", "true"), 2, "invalid count '0'"
    )


@pytest.fixture
def node(tmp_path: Path, postgres_empty_url: str) -> Iterator[Daemon]:
    pytest.importorskip("psycopg")
    daemon = Daemon(tmp_path / "a", "--store", postgres_empty_url, "--node", "a").start()
    try:
        yield daemon
    finally:
        daemon.ok("shutdown", "--now") if daemon.process and daemon.process.poll() is None else None
        daemon.stop()


def test_needs_on_a_postgresql_node(node: Daemon) -> None:
    """The same on PostgreSQL (jsonb columns): many jobs at once go in with COPY."""
    lines = "".join(
        json.dumps({"command": f"echo {n}", "needs": {"licence": 1 + n % 2}, "slots": 1 + n % 3}) + "\n"
        for n in range(100)
    )
    node.ok("add", "--hold", "--from", "-", input=lines)
    listed = json.loads(node.ok("ls", "--all", "--json"))
    assert [(j["slots"], j["needs"]) for j in listed] == [
        (1 + n % 3, {"licence": 1 + n % 2}) for n in range(100)
    ]
    job_id = node.add("--needs", "gpu=2,licence=1", "--slots", "2", "--hold", "--", "true")
    assert "  needs:       2 slots, gpu=2, licence=1\n" in node.ok("show", str(job_id))
    node.ok("edit", str(job_id), "--needs", "licence=3")
    assert json.loads(node.ok("show", str(job_id), "--json"))["needs"] == {"licence": 3}
    _one_line_error(node.ctl("add", "--needs", "gpu=0", "--", "true"), 2, "invalid count '0' for gpu")
    status = _status(node)
    assert status["resources"]["a"]["slots"] == 2
