"""Request handlers: one function per request type, from a decoded request to a
response. Mutations go through `Writer.run` (so they are answered after the
commit) and then tell the supervisor what changed."""

from __future__ import annotations

import math
import os

import msgspec
import trio

from queued import __version__, config, lifecycle, validation
from queued import protocol as p
from queued.server.context import Daemon, Handler, Waiter
from queued.settings import config_key, format_config_value, parse_config_value, settings_as_config
from queued.store import Store, StoreUnreachable


async def _add(d: Daemon, r: p.AddJobs) -> p.Response:
    if not d.supervisor.accepting:
        return p.Error(code="shutting_down", message="queued is shutting down and accepts no new jobs")
    now = d.clock()
    # Bytes that are not UTF-8 go on as the str os.fsdecode makes of them.
    env = p.joined_environment(r.env, r.env_bytes)
    cwd = r.cwd if r.cwd_bytes is None else os.fsdecode(r.cwd_bytes)
    try:
        validation.check_environment(env)
    except ValueError as exc:
        return p.Error(code="invalid", message=str(exc))
    jobs = []
    for index, spec in enumerate(r.jobs):
        try:
            jobs.append(validation.new_job(spec, cwd=cwd, env=env, settings=d.settings, now=now))
        except ValueError as exc:
            prefix = f"job {index + 1} of {len(r.jobs)}: " if len(r.jobs) > 1 else ""
            return p.Error(code="invalid", message=f"{prefix}{exc}")
    pinned = d.node.name if r.here else r.node
    if r.here and r.node is not None and r.node != d.node.name:
        return p.Error(code="invalid", message="give --here or --node, not both")
    if not d.shared_store or pinned == d.node.name:
        # Only this daemon could run them: refuse what it never could.
        for index, job in enumerate(jobs):
            if job.slots != 1 or job.needs:
                reason = d.supervisor.could_never_run(job.slots, job.needs)
                if reason is not None:
                    prefix = f"job {index + 1} of {len(r.jobs)}: " if len(r.jobs) > 1 else ""
                    return p.Error(code="invalid", message=f"{prefix}{reason}")
    if pinned is not None:
        if r.node is not None and not r.here:
            names = [node.name for node in await d.db.read(Store.nodes)]
            if r.node not in names:
                return p.Error(
                    code="not_found", message=f"unknown node {r.node!r} (the nodes are: {', '.join(names)})"
                )
        jobs = [msgspec.structs.replace(job, node=pinned) for job in jobs]
    ids = await d.db.add(Store.add_jobs, jobs, now)
    d.supervisor.wake()
    return p.Added(ids=list(ids), existing=ids.existing if any(ids.existing) else [])


async def _get(d: Daemon, r: p.GetJob) -> p.Response:
    job, runs, env = await d.db.read(Store.get_job, r.id)
    [job] = _with_paused(d, [job])
    return p.JobDetail(job=job, runs=[_with_live_facts(d, r.id, run) for run in runs], env=env)


def _with_paused(d: Daemon, jobs: list[p.Job]) -> list[p.Job]:
    """Jobs as stored, with `paused` set on those whose process group the
    supervisor stopped (a fact of the running process, not of the store)."""
    paused = d.supervisor.paused_ids()
    if not paused:
        return jobs
    return [
        msgspec.structs.replace(job, paused=True)
        if job.id in paused and job.state == lifecycle.RUNNING
        else job
        for job in jobs
    ]


def _with_live_facts(d: Daemon, job_id: int, run: p.Run) -> p.Run:
    """A run as stored, plus what the supervisor knows of it while it runs (the
    store learns the pid and log paths when the attempt ends)."""
    if run.stdout_path is not None:
        return run
    pid, out, err = d.supervisor.live_run(job_id, run.attempt)
    return msgspec.structs.replace(run, pid=run.pid if pid is None else pid, stdout_path=out, stderr_path=err)


async def _list(d: Daemon, r: p.ListJobs) -> p.Response:
    for name, value in (("label", r.label), ("command", r.command)):
        if value is not None and "\0" in value:  # PostgreSQL refuses NUL in text; no job holds one
            return p.Error(
                code="invalid", message=f"the {name} filter contains a NUL byte: no job's {name} has one"
            )
    jobs = await d.db.read(
        Store.list_jobs,
        states=r.states,
        queue=r.queue,
        label=r.label,
        ids=r.ids,
        limit=r.limit,
        before=r.before,
        command=r.command,
        created_after=r.created_after,
        created_before=r.created_before,
    )
    return p.JobList(jobs=_with_paused(d, jobs))


async def _cancel(d: Daemon, r: p.CancelJobs) -> p.Response:
    """Cancels what can be canceled; says why each other job was not."""
    running, canceled, refused = await d.db.write(Store.cancel_what_can, r.ids, d.clock())
    d.supervisor.stop_jobs(running, "cancel")
    d.supervisor.wake()
    return p.Changed(ids=canceled, refused=refused)


async def _remove(d: Daemon, r: p.RemoveJobs) -> p.Response:
    paths = await d.db.write(Store.remove, r.ids)
    _unlink(paths)
    return p.Changed(ids=sorted(set(r.ids)))


async def _retry(d: Daemon, r: p.RetryJobs) -> p.Response:
    if not r.ids and not r.all_dead:
        return p.Error(code="invalid", message="name the jobs to retry")
    ids = await d.db.add(Store.retry, r.ids, r.all_dead, d.clock())
    d.supervisor.wake()
    return p.Changed(ids=ids)


async def _wait(d: Daemon, r: p.WaitJobs) -> p.Response:
    ids = sorted(set(r.ids)) or await d.db.read(Store.unfinished_ids)
    waiter = Waiter(ids)
    d.watchers.watch(waiter)  # before reading, so that no finish slips between
    try:
        states = await d.db.read(Store.states, ids)
        missing = lifecycle.unknown_ids(ids, states)
        if missing:
            return p.Error(code="not_found", message=f"no job {missing[0]}")
        for job_id, state in states.items():
            if lifecycle.is_terminal(state):
                waiter.finished(job_id)
        timed_out = False
        if ids and waiter.remaining:
            with trio.move_on_after(r.timeout if r.timeout is not None else math.inf) as scope:
                await waiter.done.wait()
            timed_out = scope.cancelled_caught
        jobs = _with_paused(d, await d.db.read(Store.jobs_by_id, ids))
        return p.Waited(jobs=jobs, timed_out=timed_out)
    finally:
        d.watchers.unwatch(waiter)


# A reader waiting for output (`ReadLog.wait`) is woken by news of the job
# (`OutputNews`) where there is any; where there is none, it looks again this
# often: log files (SQLite) are read again as clients polled them before, and
# other nodes' output in the store at a few reads a second, until a listener
# brings their news.
FILES_PACE = 0.2
STORE_PACE = 0.5


async def _read_log(d: Daemon, r: p.ReadLog) -> p.Response:
    """A slice of an attempt's output; with `wait`, when there is nothing past
    `offset` yet and the attempt runs, after news of the job (or `wait`
    seconds): whatever the slice holds then."""
    if not r.wait:
        return await _log_chunk(d, r)
    with d.output_news.watch(r.id) as news:
        chunk = await _log_chunk(d, r)
        if not isinstance(chunk, p.LogChunk) or chunk.data or not chunk.running:
            return chunk
        if not d.db.engine.keeps_output:
            pace = FILES_PACE
        elif d.output_news.remote or d.supervisor.is_running(r.id):
            pace = math.inf  # every change of it is news
        else:
            pace = STORE_PACE
        with trio.move_on_after(min(r.wait, pace)):
            await news.wait()
    return await _log_chunk(d, r)


async def _log_chunk(d: Daemon, r: p.ReadLog) -> p.Response:
    job, runs, _ = await d.db.read(Store.get_job, r.id)
    runs = [_with_live_facts(d, r.id, run) for run in runs]
    if not runs:
        return p.Error(code="not_found", message=f"job {r.id} has not run yet")
    if r.attempt is None:
        run = runs[-1]
    else:
        matching = [x for x in runs if x.attempt == r.attempt]
        if not matching:
            return p.Error(
                code="not_found",
                message=f"job {r.id} has no attempt {r.attempt} "
                f"(it has {runs[0].attempt}..{runs[-1].attempt})",
            )
        run = matching[0]
    path = run.stdout_path if r.stream == "stdout" else run.stderr_path
    running = run.ended_at is None
    data, size = b"", 0
    if d.db.engine.keeps_output:
        data, size = await d.db.read(Store.read_output, r.id, run.attempt, r.stream, r.offset, r.limit)
        if size or running:
            path = None
    if path:
        # The log file: the only copy with a SQLite store; with a store that
        # keeps output, that of an attempt that kept none there (one run
        # before the store kept output), on the node that ran it.
        data, size = await trio.to_thread.run_sync(_read_range, path, r.offset, r.limit)
    return p.LogChunk(
        attempt=run.attempt,
        data=data,
        offset=r.offset + len(data),
        size=size,
        running=running,
        job_state=job.state,
    )


def _read_range(path: str, offset: int, limit: int) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset >= size:  # past the end: nothing yet (and lseek refuses huge offsets)
                return b"", size
            f.seek(offset)
            return f.read(limit), size
    except FileNotFoundError:
        return b"", 0


async def _status(d: Daemon, r: p.GetStatus) -> p.Response:
    try:
        counts = await d.db.read(Store.counts)
        queues = await d.db.read(Store.queues)
        nodes = [
            _this_node(d, node) if node.name == d.node.name else node for node in await d.db.read(Store.nodes)
        ]
    except StoreUnreachable:
        # What this node knows without the store: its own slots, and why.
        counts, queues, nodes = {}, [], []
    return p.Status(
        version=__version__,
        pid=os.getpid(),
        started_at=d.started_at,
        counts=counts,
        running=len(d.supervisor.running_in()),
        concurrency=d.settings.concurrency,
        accepting=d.supervisor.accepting,
        queues=queues,
        data_dir=d.data_dir,
        socket=d.socket_path,
        web=d.web_url,
        problems=d.problems(),
        store_unreachable_since=d.db.unreachable_since,
        nodes=nodes,
        node=d.node.name,
        resources=_resources(d, nodes),
    )


def _resources(d: Daemon, nodes: list[p.NodeInfo]) -> dict[str, p.Resources]:
    """Each live node's resources: this one's as the supervisor has them now,
    the others' as their latest heartbeat stored them."""
    found: dict[str, p.Resources] = {}
    for node in nodes:
        if node.resources is not None and node.state == "alive" and node.name != d.node.name:
            found[node.name] = node.resources
    found[d.node.name] = d.supervisor.resources()
    return dict(sorted(found.items()))


def _this_node(d: Daemon, node: p.NodeInfo) -> p.NodeInfo:
    """This node as the store has it, with what it knows better itself."""
    return msgspec.structs.replace(
        node,
        slots=d.settings.concurrency,
        running=len(d.supervisor.running_in()),
        resources=d.supervisor.resources(),
        queues=list(d.served) if d.served is not None else None,
        host=node.host or os.uname().nodename,
        pid=node.pid or os.getpid(),
        started_at=node.started_at or d.started_at,
        this=True,
    )


async def _workers(d: Daemon, r: p.ListWorkers) -> p.Response:
    return p.Workers(concurrency=d.settings.concurrency, slots=d.supervisor.slots())


def _check_descriptors(d: Daemon, concurrency: int) -> None:
    """A concurrency the descriptor limit cannot carry is refused (ValueError)."""
    why = d.supervisor.descriptor_shortfall(concurrency)
    if why is not None:
        raise ValueError(why)


async def _scale(d: Daemon, r: p.ScaleWorkers) -> p.Response:
    """`config set concurrency N` that also wins, for this run, over a flag or
    variable: the user asked the running daemon. 0 stops claiming. On a
    shared store (PostgreSQL) the slots are this node's alone: nothing is
    saved where every node would read it; --concurrency decides again at the
    node's next start."""
    _check_descriptors(d, r.concurrency)
    if d.shared_store:
        d.sources.flags["concurrency"] = str(r.concurrency)  # this run only
        d.reconfigure()
        note = " on this node until it stops (--concurrency decides at its next start)"
        if r.concurrency == 0:
            return p.Ok(message=f"concurrency is now 0{note}: no job starts here, running ones go on")
        return p.Ok(message=f"concurrency is now {r.concurrency}{note}")
    await d.db.write(Store.set_config, "concurrency", str(r.concurrency))
    d.sources.persisted["concurrency"] = str(r.concurrency)
    origin = d.sources.origin("concurrency")
    note = ""
    if origin in (config.FLAG, config.ENVIRONMENT):
        note = f" ({d.sources.describe('concurrency', origin)} applies again at the next start)"
        d.sources.flags.pop("concurrency", None)
        d.sources.environment.pop("concurrency", None)
    d.reconfigure()
    if r.concurrency == 0:
        return p.Ok(message=f"concurrency is now 0: no job starts, running ones go on{note}")
    return p.Ok(message=f"concurrency is now {r.concurrency}{note}")


async def _queue_add(d: Daemon, r: p.AddQueue) -> p.Response:
    await d.db.add(Store.add_queue, r.name, r.concurrency, d.clock())
    await d.queues_changed()
    return p.Ok(message=f"queue {r.name} added")


async def _queue_rm(d: Daemon, r: p.RemoveQueue) -> p.Response:
    await d.db.write(Store.remove_queue, r.name)
    await d.queues_changed()
    return p.Ok(message=f"queue {r.name} removed")


async def _queue_ls(d: Daemon, r: p.ListQueues) -> p.Response:
    return p.Queues(queues=await d.db.read(Store.queues))


async def _queue_pause(d: Daemon, r: p.PauseQueue) -> p.Response:
    await d.db.write(Store.set_paused, r.name, r.paused)
    await d.queues_changed()
    message = f"queue {r.name} {'paused' if r.paused else 'resumed'}"
    if r.jobs or not r.paused:  # resuming a queue resumes its paused jobs
        changed = d.supervisor.pause_jobs(d.supervisor.running_in(r.name), paused=r.paused)
        if changed:
            message += f", {'paused' if r.paused else 'resumed'} {_jobs(changed)}"
    return p.Ok(message=message)


async def _queue_set(d: Daemon, r: p.SetQueueConcurrency) -> p.Response:
    """A queue's limit, committed, then the supervisor's queue list: it claims
    by the new limit at once (a lower one stops nothing that runs)."""
    await d.db.write(Store.set_queue_concurrency, r.name, r.concurrency)
    queues = {q.name: q for q in await d.queues_changed()}
    limit = "no limit but the global one" if r.concurrency is None else f"at most {r.concurrency} at once"
    message = f"queue {r.name}: {limit}"
    running = queues[r.name].running if r.name in queues else 0
    if r.concurrency is not None and running > r.concurrency:
        message += f" ({running} running go on; none starts while {r.concurrency} or more run)"
    return p.Ok(message=message)


def _jobs(ids: list[int]) -> str:
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(map(str, ids))


async def _config_get(d: Daemon, r: p.GetConfig) -> p.Response:
    values = settings_as_config(d.settings)
    if r.key is not None:
        key = config_key(r.key)
        values = {key: values[key]}
    return p.ConfigValues(values=values)


async def _config_set(d: Daemon, r: p.SetConfig) -> p.Response:
    key = config_key(r.key)
    field, value = parse_config_value(key, r.value)
    if field == "concurrency":
        if d.shared_store:
            raise ValueError(
                "concurrency is each node's own with a shared store: "
                "`queuectl workers scale N` on that node, or --concurrency at its start"
            )
        _check_descriptors(d, int(value))  # type: ignore[arg-type]
    await d.db.write(Store.set_config, key, r.value.strip())
    d.sources.persisted[key] = r.value.strip()
    d.reconfigure()
    message = f"{key} = {format_config_value(key, value)}"
    origin = d.sources.origin(key)
    if origin in (config.FLAG, config.ENVIRONMENT):
        # Flags and environment rank above `config set`: saved, but not in force.
        in_force = format_config_value(key, getattr(d.settings, field))
        message += f" saved; {d.sources.describe(key, origin)} keeps it at {in_force} while this queued runs"
    return p.Ok(message=message)


async def _clean(d: Daemon, r: p.CleanJobs) -> p.Response:
    states = list(r.states) or list(lifecycle.TERMINAL_STATES)
    cutoff = d.clock() - r.older_than if r.older_than is not None else None
    count, paths = await d.db.write(Store.clean, states, cutoff)
    _unlink(paths)
    return p.Cleaned(count=count)


async def _shutdown(d: Daemon, r: p.Shutdown) -> p.Response:
    d.request_shutdown(r.mode)
    if r.mode == "now":
        return p.Ok(message="shutting down now")
    message = "shutting down once the running jobs finish"
    paused = sorted(d.supervisor.paused_ids())
    if paused:  # they finish only once resumed
        message += f" ({_jobs(paused)} paused: `queuectl resume --all`, or `queuectl shutdown --now`)"
    return p.Ok(message=message)


def _unlink(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# The requests that change jobs already added are in handlers_changes.py.
HANDLERS: dict[type, Handler] = {
    p.AddJobs: _add,
    p.GetJob: _get,
    p.ListJobs: _list,
    p.CancelJobs: _cancel,
    p.RemoveJobs: _remove,
    p.RetryJobs: _retry,
    p.WaitJobs: _wait,
    p.ReadLog: _read_log,
    p.GetStatus: _status,
    p.ListWorkers: _workers,
    p.ScaleWorkers: _scale,
    p.AddQueue: _queue_add,
    p.RemoveQueue: _queue_rm,
    p.ListQueues: _queue_ls,
    p.PauseQueue: _queue_pause,
    p.SetQueueConcurrency: _queue_set,
    p.GetConfig: _config_get,
    p.SetConfig: _config_set,
    p.CleanJobs: _clean,
    p.Shutdown: _shutdown,
}
