"""Handlers of the requests that change jobs already added: hold and release,
edit and restart (through the store, answered after the commit), pause,
resume and signal running jobs (the supervisor's processes; nothing stored but
the queues that `pause --all` pauses)."""

from __future__ import annotations

from queued import lifecycle, validation
from queued import protocol as p
from queued.server.context import Daemon, Handler
from queued.store import Refused, Store


async def _hold(d: Daemon, r: p.HoldJobs) -> p.Response:
    return p.Changed(ids=await d.db.write(Store.hold, r.ids, d.clock()))


async def _release(d: Daemon, r: p.ReleaseJobs) -> p.Response:
    ids = await d.db.add(Store.release, r.ids, d.clock())
    d.supervisor.wake()
    return p.Changed(ids=ids)


async def _edit(d: Daemon, r: p.EditJob) -> p.Response:
    now = d.clock()
    await d.db.write(Store.edit, r.id, validation.job_changes(r.changes, now=now), now)
    d.supervisor.wake()
    return p.Changed(ids=[r.id])


async def _restart(d: Daemon, r: p.RestartJob) -> p.Response:
    if not d.supervisor.accepting:
        return p.Error(code="shutting_down", message="queued is shutting down and accepts no new jobs")
    now = d.clock()
    job_id = await d.db.add(Store.restart, r.id, validation.job_changes(r.changes, now=now), r.hold, now)
    d.supervisor.wake()
    return p.Added(ids=[job_id])


async def _running(d: Daemon, ids: list[int], doing: str) -> list[int]:
    """`ids`, refused unless every one is running (a rejected request changes nothing)."""
    ids = sorted(set(ids))
    states = await d.db.read(Store.states, ids)
    missing = lifecycle.unknown_ids(ids, states)
    if missing:
        raise Refused("not_found", f"no job {missing[0]}")
    for job_id in ids:
        state = states[job_id]
        if state != lifecycle.RUNNING or not d.supervisor.is_running(job_id):  # e.g. canceled, in its grace
            hint = (
                f"; `queuectl hold {job_id}` keeps it from starting"
                if lifecycle.can(state, lifecycle.Event.HOLD)
                else ""
            )
            if state == lifecycle.RUNNING:
                await _refuse_if_elsewhere(d, job_id, doing)
                state = "ending"  # its process is gone here, its end not yet recorded
            raise Refused("invalid", f"job {job_id} is {state}: only running jobs can be {doing}{hint}")
    return ids


# What a refusal asks the user to do, by what `_running` was asked to do.
_ASKED = {"paused": "pause", "resumed": "resume", "signalled": "signal"}


async def _refuse_if_elsewhere(d: Daemon, job_id: int, doing: str) -> None:
    """A job running on another node sharing the store: only that node holds
    its process. Refused with the node's name."""
    if not d.shared_store:
        return
    _, runs, _ = await d.db.read(Store.get_job, job_id)
    node = runs[-1].node if runs and runs[-1].ended_at is None else None
    if node is not None and node != d.node.name:
        raise Refused(
            "invalid",
            f"job {job_id} runs on node {node}: only that node can {_ASKED.get(doing, doing)} it;"
            f" run queuectl there",
        )


async def _pause(d: Daemon, r: p.PauseJobs) -> p.Response:
    if not r.ids and not r.all:
        return p.Error(code="invalid", message="name the jobs to pause or resume, or all of them")
    verb = "paused" if r.paused else "resumed"
    ids = await _running(d, r.ids, verb)
    if r.all:
        await d.db.write(Store.set_all_paused, r.paused)
        await d.queues_changed()
        ids = d.supervisor.running_in()
    return p.Changed(ids=d.supervisor.pause_jobs(ids, paused=r.paused))


async def _signal(d: Daemon, r: p.SignalJobs) -> p.Response:
    ids = await _running(d, r.ids, "signalled")
    d.supervisor.signal_jobs(ids, r.signal)
    return p.Changed(ids=ids)


HANDLERS: dict[type, Handler] = {
    p.HoldJobs: _hold,
    p.ReleaseJobs: _release,
    p.EditJob: _edit,
    p.RestartJob: _restart,
    p.PauseJobs: _pause,
    p.SignalJobs: _signal,
}
