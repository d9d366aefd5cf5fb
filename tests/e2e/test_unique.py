"""Unique jobs as users meet them: `queuectl add --unique KEY` against the
real daemon, on SQLite and on PostgreSQL (two nodes on one database), with
many adders at once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon, tool

ADDERS = 50


def jobs(daemon: Daemon) -> list[dict]:
    return json.loads(daemon.ok("ls", "--all", "--json"))


def add_at_once(daemons: list[Daemon], key: str) -> list[dict]:
    """ADDERS `queuectl add --unique KEY` processes started together, spread
    over `daemons`; each one's --json answer."""
    adders = [
        subprocess.Popen(
            [tool("queuectl"), "add", "--json", "--hold", "--unique", key, f"echo {n}"],
            env=daemons[n % len(daemons)].env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(ADDERS)
    ]
    answers = []
    try:
        for adder in adders:
            out, err = adder.communicate(timeout=120)
            assert adder.returncode == 0, err
            answers.append(json.loads(out))
    finally:
        for adder in adders:
            if adder.poll() is None:
                adder.kill()
                adder.wait()
    return answers


def assert_one_job(answers: list[dict], listed: list[dict], key: str) -> None:
    assert len({answer["id"] for answer in answers}) == 1, answers
    assert sorted(answer["existing"] for answer in answers) == [False] + [True] * (ADDERS - 1)
    assert [(job["id"], job["unique_key"]) for job in listed] == [(answers[0]["id"], key)]


def test_fifty_adders_of_one_key_at_once_add_one_job(daemon: Daemon) -> None:
    answers = add_at_once([daemon], "deploy")
    assert_one_job(answers, jobs(daemon), "deploy")


@pytest.fixture
def two_nodes(tmp_path: Path, postgres_empty_url: str) -> Iterator[list[Daemon]]:
    pytest.importorskip("psycopg")
    nodes = [Daemon(tmp_path / name, "--store", postgres_empty_url, "--node", name) for name in ("a", "b")]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.ok("shutdown", "--now") if node.process and node.process.poll() is None else None
            node.stop()


def test_fifty_adders_of_one_key_on_two_postgres_nodes_add_one_job(two_nodes: list[Daemon]) -> None:
    answers = add_at_once(two_nodes, "deploy")
    assert_one_job(answers, jobs(two_nodes[0]), "deploy")
    assert jobs(two_nodes[1]) == jobs(two_nodes[0])


def test_a_unique_add_as_a_user_meets_it(daemon: Daemon, tmp_path: Path) -> None:
    first = daemon.add("--unique", "nightly", "--hold", "echo one")
    assert (
        daemon.ok("add", "--unique", "nightly", "echo two")
        == f"existing job {first} (unique key 'nightly')\n"
    )
    assert daemon.add("-u", "nightly", "echo three") == first
    assert json.loads(daemon.ok("add", "--json", "--unique", "nightly", "true")) == {
        "id": first,
        "existing": True,
    }
    assert json.loads(daemon.ok("enqueue", "--json", '{"command": "x", "unique_key": "nightly"}')) == {
        "id": first,
        "existing": True,
    }
    shown = daemon.ok("show", str(first))
    assert "  unique key:  nightly\n" in shown and "echo one" in shown
    assert [job["unique_key"] for job in jobs(daemon)] == ["nightly"]
    assert "KEY" in daemon.ok("ls", "--columns", "id,key") and "nightly" in daemon.ok("ls", "-c", "id,key")

    # A bulk add of new and existing jobs: the ids in order, each line saying which.
    lines = "\n".join(
        [
            '{"command": "echo a", "unique_key": "nightly"}',
            "echo plain",
            '{"command": "echo b", "unique_key": "weekly"}',
            '{"command": "echo c", "unique_key": "weekly", "unique_for": "1h"}',
        ]
    )
    answers = [
        json.loads(line) for line in daemon.ok("add", "--json", "--from", "-", input=lines).splitlines()
    ]
    plain, weekly = answers[1]["id"], answers[2]["id"]
    assert answers == [
        {"id": first, "existing": True},
        {"id": plain, "existing": False},
        {"id": weekly, "existing": False},
        {"id": weekly, "existing": True},
    ]
    said = daemon.ok("add", "--from", "-", input='{"command": "x", "unique_key": "nightly"}\necho new\n')
    assert said.startswith("added job ") and said.endswith(f"; 1 found by unique key ({first})\n")

    # Once it completed, the key is free, unless the add gives a window.
    daemon.ok("release", str(first))
    assert daemon.ctl("wait", str(first)).returncode == 0
    assert daemon.add("--unique", "nightly", "--unique-for", "1h", "echo again") == first
    second = daemon.add("--unique", "nightly", "--hold", "echo again")
    assert second > first

    # Retry and restart keep to the key: refused in one line while another holds it.
    for verb in ("retry", "restart"):
        refused = daemon.ctl(verb, str(first))
        assert refused.returncode == 1, refused
        assert refused.stderr == (
            f"queuectl: cannot {verb} job {first}: its unique key 'nightly' is held by job {second}"
            " (held); wait for that one or cancel it\n"
        )
    daemon.ok("cancel", str(second))
    copy = int(daemon.ok("restart", "--quiet", "--hold", str(first)).strip())
    assert daemon.add("--unique", "nightly", "echo later") == copy  # the copy holds the key now

    # Bad keys and options: a one-line usage error, nothing added.
    before = jobs(daemon)
    for args, words in [
        (["--unique", "a\nb"], "holds a control character"),
        (["--unique", "k" * 201], "at most 200"),
        (["--unique", " "], "the unique key is empty"),
        (["--unique-for", "1h"], "--unique-for needs --unique KEY"),
        (["--unique", "k", "--unique-for", "soon"], "--unique-for"),
    ]:
        result = daemon.ctl("add", *args, "true")
        assert result.returncode == 2, (args, result)
        assert words in result.stderr, (args, result.stderr)
    assert jobs(daemon) == before
