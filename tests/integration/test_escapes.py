"""Nothing a job started outlives it: processes that left the job's group
(setsid, setpgid, a double fork, a cleared environment) are stopped at the
job's end, timeout and cancel, and reaped. Checked in /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from queued import protocol as p

from .conftest import AsyncClient

TIMEOUT = 10
# Sleeps named by this run only: other test runs on the machine use the same numbers.
RUN = f".{os.getpid()}"


def in_proc(pid: int) -> bool:
    """Still in the process table: alive, or a zombie nobody reaped."""
    return os.path.exists(f"/proc/{pid}")


def find(argv: list[str]) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:-1] == [arg.encode() for arg in argv]:
                        pids.append(int(name))
            except OSError:
                pass
    return pids


async def read_pid(path: Path) -> int:
    with trio.fail_after(TIMEOUT):
        while not path.exists() or not path.read_text().strip():
            await trio.sleep(0.02)
    return int(path.read_text())


async def gone(pid: int) -> None:
    with trio.fail_after(TIMEOUT):
        while in_proc(pid):
            await trio.sleep(0.02)


async def test_a_setsid_child_is_stopped_and_reaped_when_its_job_completes(
    client: AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(f"setsid sleep 4646 & echo $! > {pidfile}; sleep 0.5")
    escaped = await read_pid(pidfile)
    [job] = await client.wait(job_id)
    assert job.state == "completed"
    await gone(escaped)


async def test_a_setsid_child_is_stopped_at_the_timeout(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(
        f"setsid sleep 4545 & echo $! > {pidfile}; sleep 300", timeout=0.5, max_retries=0
    )
    escaped = await read_pid(pidfile)
    [job] = await client.wait(job_id)
    assert job.state == "dead" and job.error == "timed out after 500ms"
    await gone(escaped)


async def test_a_double_forked_setsid_child_is_stopped_at_cancel(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # The subshell exits at once: the sleep is re-parented to the daemon while the job runs.
    job_id = await client.add(f"(setsid sleep 4848 & echo $! > {pidfile}); sleep 300")
    escaped = await read_pid(pidfile)
    await trio.sleep(0.2)
    await client.ok(p.CancelJobs(ids=[job_id]))
    [job] = await client.wait(job_id)
    assert job.state == "canceled"
    await gone(escaped)


async def test_a_trap_ignoring_escapee_is_killed_after_the_grace(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(f"setsid sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 300; :' & sleep 300")
    escaped = await read_pid(pidfile)
    await client.ok(p.CancelJobs(ids=[job_id]))
    await client.wait(job_id)
    await gone(escaped)  # the grace is 1 s in these tests


async def test_coreutils_timeout_in_a_job_does_not_outlive_the_jobs_timeout(client: AsyncClient) -> None:
    # `timeout` moves itself and its child into a process group of their own.
    job_id = await client.add(f"timeout 100 sleep 4949{RUN}; true", timeout=0.5, max_retries=0)
    with trio.fail_after(TIMEOUT):
        while not find(["sleep", f"4949{RUN}"]):
            await trio.sleep(0.02)
    escaped = find(["sleep", f"4949{RUN}"])
    [job] = await client.wait(job_id)
    assert job.state == "dead"
    for pid in escaped:
        await gone(pid)


async def test_an_orphan_that_cleared_its_environment_is_stopped_with_its_job(
    client: AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(f"(env -i setsid sleep 5050 & echo $! > {pidfile}); sleep 0.5")
    escaped = await read_pid(pidfile)
    [job] = await client.wait(job_id)
    assert job.state == "completed"
    await gone(escaped)


async def test_an_orphan_that_ended_first_is_no_lingering_zombie(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    job_id = await client.add(f"(sleep 0.1 & echo $! > {pidfile}); sleep 0.6")
    orphan = await read_pid(pidfile)
    await client.wait(job_id)
    await gone(orphan)


async def test_another_jobs_end_leaves_a_running_jobs_escapee_alone(
    client: AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    running = await client.add(f"(setsid sleep 5151 & echo $! > {pidfile}); sleep 300")
    escaped = await read_pid(pidfile)
    await trio.sleep(0.2)  # re-parented to the daemon by now
    for _ in range(3):
        await client.wait(await client.add("true"))
    assert in_proc(escaped)
    with open(f"/proc/{escaped}/stat") as f:
        assert f.read().rsplit(") ", 1)[1][0] != "Z"
    await client.ok(p.CancelJobs(ids=[running]))
    await client.wait(running)
    await gone(escaped)


async def test_a_chain_of_sessions_is_stopped_link_by_link(client: AsyncClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    inner = tmp_path / "inner.sh"  # a session leader whose child leaves for a session of its own
    inner.write_text(f"setsid sleep 6161 & echo $! > {pidfile}; sleep 6262{RUN}\n")
    job_id = await client.add(f"sh -c 'setsid sh {inner} &'; sleep 0.3")
    escaped = await read_pid(pidfile)
    [job] = await client.wait(job_id)
    assert job.state == "completed"
    await gone(escaped)
    assert not find(["sleep", f"6262{RUN}"])


async def test_orphans_that_end_while_their_job_runs_on_are_reaped_at_once(
    client: AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    job_id = await client.add(f"for i in 1 2 3; do (sleep 0.05 & echo $! >> {pidfile}); done; sleep 300")
    with trio.fail_after(TIMEOUT):
        while not pidfile.exists() or len(pidfile.read_text().split()) < 3:
            await trio.sleep(0.02)
    for pid in map(int, pidfile.read_text().split()):
        await gone(pid)  # no zombie while the job runs on
    await client.ok(p.CancelJobs(ids=[job_id]))
    await client.wait(job_id)


# Each way out of the job's group, by each way a job ends.
ESCAPES = {
    "setsid": "setsid sleep {n} & echo $! > {pidfile}",
    "double fork": "(setsid sh -c 'sleep {n} & echo $! > {pidfile}' &)",
    "setpgid": "timeout 100 sleep {n} & until pgrep -f -x 'sleep {n}' > {pidfile}.new; do sleep 0.05; done; "
    "mv {pidfile}.new {pidfile}",
}
ENDS = {
    "end": ("; sleep 0.4", {}),
    "timeout": ("; sleep 300", {"timeout": 0.6, "max_retries": 0}),
    "cancel": ("; sleep 300", {}),
}


@pytest.mark.parametrize("end", list(ENDS))
@pytest.mark.parametrize("escape", list(ESCAPES))
async def test_every_escape_is_stopped_at_every_end(
    client: AsyncClient, tmp_path: Path, escape: str, end: str
) -> None:
    pidfile = tmp_path / "pid"
    n = f"{7000 + 10 * list(ESCAPES).index(escape) + list(ENDS).index(end)}{RUN}"
    tail, fields = ENDS[end]
    job_id = await client.add(ESCAPES[escape].format(n=n, pidfile=pidfile) + tail, **fields)
    escaped = await read_pid(pidfile)
    leader = (await client.job(job_id)).runs[0].pid
    with trio.fail_after(TIMEOUT):  # it does leave the group (setsid runs after the fork)
        while in_proc(escaped) and os.getpgid(escaped) == leader:
            await trio.sleep(0.01)
    if end == "cancel":
        await client.ok(p.CancelJobs(ids=[job_id]))
    [job] = await client.wait(job_id)
    assert job.state == {"end": "completed", "timeout": "dead", "cancel": "canceled"}[end]
    await gone(escaped)
