"""Request handlers for schedules (recurring jobs): add, list, remove, pause,
resume and run one now. Each change is answered after it committed, then the
scheduler is told (`Daemon.schedules_changed`) so that it sleeps until the
right deadline. The rules are queued/schedules.py's."""

from __future__ import annotations

import os

from queued import protocol as p
from queued import schedules, validation
from queued.server.context import Daemon, Handler
from queued.store import Store
from queued.store.contract import StoredSchedule


async def _add(d: Daemon, r: p.AddSchedule) -> p.Response:
    now = d.clock()
    env = p.joined_environment(r.env, r.env_bytes)
    cwd = r.cwd if r.cwd_bytes is None else os.fsdecode(r.cwd_bytes)
    if r.job.delay is not None or r.job.run_at is not None:
        raise ValueError("a schedule's jobs run when it fires: leave out the delay and run_at")
    validation.check_environment(env)
    job = validation.new_job(r.job, cwd=cwd, env=env, settings=d.settings, now=now)
    if not d.shared_store and (job.slots != 1 or job.needs):
        reason = d.supervisor.could_never_run(job.slots, job.needs)
        if reason is not None:  # its jobs would wait for ever
            raise ValueError(reason)
    schedule = schedules.new_schedule(
        r.schedule,
        r.expression,
        r.tz if r.tz is not None else d.local_zone,
        job,
        no_overlap=r.no_overlap,
        catch_up=r.catch_up,
        now=now,
    )
    await d.db.write(Store.add_schedule, schedule, now)
    d.schedules_changed()
    added = [_info(d, s) for s in await d.db.read(Store.schedules) if s.name == r.schedule]
    return p.Schedules(schedules=added)


def _info(d: Daemon, stored: StoredSchedule) -> p.ScheduleInfo:
    next_run = None
    if not stored.paused:
        try:
            parsed = schedules.parse(stored.expression, stored.created_at)
        except ValueError:
            parsed = None
        if parsed is not None:
            next_run = schedules.upcoming(parsed, stored.tz, stored.since, stored.last_firing, d.clock())
    return p.ScheduleInfo(
        name=stored.name,
        expression=stored.expression,
        tz=stored.tz,
        command=stored.command,
        queue=stored.queue,
        priority=stored.priority,
        max_retries=stored.max_retries,
        timeout=stored.timeout,
        cwd=p.readable(stored.cwd),
        no_overlap=stored.no_overlap,
        catch_up=stored.catch_up,
        paused=stored.paused,
        created_at=stored.created_at,
        next_run=next_run,
        last_run=stored.last_run_at,
        last_job_id=stored.last_job_id,
        last_job_state=stored.last_job_state,
        slots=stored.slots,
        needs=stored.needs,
    )


async def _list(d: Daemon, r: p.ListSchedules) -> p.Response:
    return p.Schedules(schedules=[_info(d, stored) for stored in await d.db.read(Store.schedules)])


async def _remove(d: Daemon, r: p.RemoveSchedule) -> p.Response:
    await d.db.write(Store.remove_schedule, r.schedule)
    d.schedules_changed()
    return p.Ok(message=f"schedule {r.schedule} removed (its jobs stay: `queuectl ls -l {r.schedule}`)")


async def _pause(d: Daemon, r: p.PauseSchedule) -> p.Response:
    await d.db.write(Store.pause_schedule, r.schedule, r.paused, d.clock())
    d.schedules_changed()
    if r.paused:
        return p.Ok(message=f"schedule {r.schedule} paused: it adds no job until `queuectl schedule resume`")
    return p.Ok(message=f"schedule {r.schedule} resumed (firings missed while paused are not caught up)")


async def _run(d: Daemon, r: p.RunSchedule) -> p.Response:
    if not d.supervisor.accepting:
        return p.Error(code="shutting_down", message="queued is shutting down and accepts no new jobs")
    fired = await d.db.add(Store.fire_schedule, r.schedule, None, d.clock())
    d.supervisor.wake()
    assert fired.job_id is not None  # a run without a firing always adds its job, or is refused
    return p.Added(ids=[fired.job_id])


HANDLERS: dict[type, Handler] = {
    p.AddSchedule: _add,
    p.ListSchedules: _list,
    p.RemoveSchedule: _remove,
    p.PauseSchedule: _pause,
    p.RunSchedule: _run,
}
