"""Jobs that could never run are refused at add, in the user's words; one that
cannot be started anyway fails (at once, when trying again cannot help), and
the daemon goes on. Issue #17 items 6-8, issue #11 section 2."""

from __future__ import annotations

import os

import pytest

from queued import protocol as p
from queued import validation

from .conftest import AsyncClient, DaemonHandle
from .test_bad_input import snapshot


async def refused(client: AsyncClient, request: p.Request) -> p.Error:
    response = await client.request(request)
    assert isinstance(response, p.Error), response
    return response


@pytest.mark.parametrize(
    ("spec", "cwd", "words"),
    [
        (p.JobSpec(command="true", cwd="/tmp\0x"), "/", "cwd contains a NUL byte"),
        (p.JobSpec(command="true"), "/tmp\0x", "the working directory contains a NUL byte"),
        (p.JobSpec(command="true", label="a\0b"), "/", "label contains a NUL byte"),
        (p.JobSpec(command="true", env={"A": "\0"}), "/", "environment variable A contains a NUL byte"),
        (p.JobSpec(command="x" * (128 * 1024)), "/", "131,071 bytes as one argument (MAX_ARG_STRLEN"),
    ],
)
async def test_a_job_that_could_never_run_is_refused_at_add(
    client: AsyncClient, spec: p.JobSpec, cwd: str, words: str
) -> None:
    before = await snapshot(client)
    error = await refused(client, p.AddJobs(jobs=[spec], cwd=cwd, env={}))
    assert error.code == "invalid" and words in error.message, error
    assert await snapshot(client) == before


async def test_a_job_that_cannot_be_spawned_fails_and_the_daemon_goes_on(
    daemon: DaemonHandle, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL byte in a stored cwd (as an older queued accepted) made the spawn
    raise ValueError, which killed the daemon at every start."""
    monkeypatch.setattr(validation, "check_spec", lambda spec: None)
    bad = await client.add("true", cwd="/tmp\0x", max_retries=3)
    monkeypatch.undo()
    [job] = await client.wait(bad)
    assert job.state == "dead" and job.attempts == 1, job  # no retry can cure it
    assert job.error is not None and job.error.startswith("could not start: invalid job"), job.error
    [good] = await client.wait(await client.add("true"))
    assert good.state == "completed"


async def test_an_argument_list_too_long_is_dead_at_once(client: AsyncClient) -> None:
    """Each variable is under the kernel's one-string limit, together they are
    over its limit for all of them (ARG_MAX): E2BIG cannot change on its own."""
    size = validation.MAX_ARG_BYTES - 16
    count = os.sysconf("SC_ARG_MAX") // size + 2
    env = {f"BIG{n}": "v" * size for n in range(count)}
    job_id = await client.add("true", env=env, max_retries=3)
    [job] = await client.wait(job_id)
    assert job.state == "dead" and job.attempts == 1, job
    assert job.error is not None and "Argument list too long" in job.error, job.error


@pytest.mark.parametrize("state", ["dead", "canceled"])
async def test_after_a_job_that_will_never_complete_is_refused(client: AsyncClient, state: str) -> None:
    dep = await client.add("false", max_retries=0, delay=0 if state == "dead" else 3600)
    if state == "canceled":
        await client.ok(p.CancelJobs(ids=[dep]))
    [job] = await client.wait(dep)
    assert job.state == state
    before = await snapshot(client)
    error = await refused(client, p.AddJobs(jobs=[p.JobSpec(command="true", after=[dep])], cwd="/", env={}))
    assert error.code == "invalid" and f"job {dep} is {state}, so this job could never run" in error.message
    assert await snapshot(client) == before


async def test_a_chain_of_dependents_longer_than_the_recursion_limit(client: AsyncClient) -> None:
    """Issue #17 item 7: the cascade recursed per link; at ~1,000 links the
    failing job stayed `running` and the daemon could not restart. (The unit
    test in test_store_contract.py takes a chain of 100,000.)"""
    root = await client.add("false", max_retries=0, delay=0.3)
    links = 2_500
    response = await client.ok(
        p.AddJobs(jobs=[p.JobSpec(command="true", after=[root + n]) for n in range(links)], cwd="/", env={})
    )
    assert isinstance(response, p.Added) and response.ids[-1] == root + links
    jobs = await client.wait(root, response.ids[-1])
    assert [job.state for job in jobs] == ["dead", "canceled"]
    status = await client.ok(p.GetStatus())
    assert isinstance(status, p.Status) and status.counts["canceled"] == links


async def test_config_values_are_range_checked_before_they_are_stored(client: AsyncClient) -> None:
    """Issue #17 item 8: max-retries 99999999999999999999 was stored, and every add failed after."""
    before = await client.ok(p.GetConfig())
    for key, value in [
        ("max-retries", "99999999999999999999"),
        ("timeout", "99999d"),
        ("kill-grace", "1e400"),
    ]:
        error = await refused(client, p.SetConfig(key=key, value=value))
        assert error.code == "invalid" and error.message.startswith(f"invalid value for {key}: "), error
    assert await client.ok(p.GetConfig()) == before
    [job] = await client.wait(await client.add("true"))
    assert job.state == "completed" and job.max_retries == 3


async def test_config_set_says_what_it_set_in_words(client: AsyncClient) -> None:
    """Issue #11: `config set timeout 0` answered `timeout = None`."""
    response = await client.ok(p.SetConfig(key="timeout", value="0"))
    assert isinstance(response, p.Ok) and response.message == "timeout = none"
    response = await client.ok(p.SetConfig(key="max_retries", value=" 5 "))
    assert isinstance(response, p.Ok) and response.message == "max-retries = 5"
    error = await refused(client, p.SetConfig(key="max-retries", value="abc"))
    assert error.message == "invalid value for max-retries: 'abc' is not a whole number"
