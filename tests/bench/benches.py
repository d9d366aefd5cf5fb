"""The measurements B1-B7 and their baselines. Each function does one run and
returns plain numbers; run.py repeats them, interleaves them and takes medians."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
from harness import (
    HERE,
    QUEUECTL,
    Daemon,
    child_env,
    children,
    cpu_seconds,
    memory,
    percentile,
    read_stamp,
    run_ns,
)

from queued.protocol import JobSpec
from queued.store.sqlite import schema

MB = 1e6

# ----------------------------------------------------------------------------
# B1 drain


def b1_ours(root: Path, jobs: int, wrap: tuple[str, ...] = ()) -> dict[str, float]:
    """10,000 `true` jobs, added while the default queue is paused, then resumed
    and drained with 2 slots, every transition durable (the daemon's defaults).
    `store_rate` uses the attempts' own times (first claim to last recorded
    end, read from the database after the run); `wall_rate` the resume
    request's send to the wait's return."""
    with Daemon(root, wrap=wrap) as daemon, daemon.client(timeout=None) as client:
        client.pause("default")
        ids = client.add_many([JobSpec(command="true")] * jobs)
        cpu0 = cpu_seconds(daemon.pid)
        t0 = time.time()
        client.resume("default")
        # By its ids: a `wait` for every unfinished job, sent after the resume,
        # would miss the first jobs when they end before it is read.
        waited = client.wait(*ids)
        t1 = time.time()
        cpu = cpu_seconds(daemon.pid) - cpu0
        states = {job.state for job in waited.jobs}
        if len(waited.jobs) != jobs or states != {"completed"}:
            raise RuntimeError(f"B1: {len(waited.jobs)} jobs waited for, states {states}")
    conn = sqlite3.connect(f"file:{daemon.data / 'queue.db'}?mode=ro", uri=True)
    try:
        first, last, attempts = conn.execute(
            "SELECT min(started_at), max(ended_at), count(*) FROM attempts"
        ).fetchone()
    finally:
        conn.close()
    if attempts != jobs:
        raise RuntimeError(f"B1: {attempts} attempts recorded for {jobs} jobs")
    return {
        "store_rate": jobs / (last - first),
        "wall_rate": jobs / (t1 - t0),
        "store_seconds": last - first,
        "wall_seconds": t1 - t0,
        "daemon_cpu_ms_per_job": cpu / jobs * 1e3,  # utime+stime of queued during the drain
    }


def b1_c(spawn_loop: Path, jobs: int) -> float:
    return b1_c_cpu(spawn_loop, jobs)[0]


def b1_c_cpu(spawn_loop: Path, jobs: int) -> tuple[float, float]:
    """The C loop's rate, and the CPU seconds per job of the loop and its jobs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(spawn_loop), str(jobs), "2"], check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    n, seconds = out.stdout.split()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(n) / float(seconds), cpu / int(n)


def b1_python(jobs: int, script: str = "spawn_loop.py") -> float:
    out = subprocess.run(
        [sys.executable, str(HERE / script), str(jobs), "2"],
        check=True,
        capture_output=True,
        text=True,
        env=child_env(),
    )
    n, seconds = out.stdout.split()
    return int(n) / float(seconds)


# ----------------------------------------------------------------------------
# B2 dispatch latency


WARMUP = 5


def b2_ours(root: Path, stamp: Path, adds: int) -> list[float]:
    """Seconds from each add's acknowledgement to its job's process stamping
    the time, one add at a time on an otherwise idle daemon."""
    stamps = root / "stamps"
    stamps.mkdir(parents=True)
    latencies = []
    with Daemon(root) as daemon, daemon.client() as client:
        for i in range(adds + WARMUP):
            path = stamps / str(i)
            job_id = client.add(f"{stamp} {path}")
            acked = time.time()
            [job] = client.wait(job_id).jobs
            started = read_stamp(path)
            if job.state != "completed" or started is None:
                raise RuntimeError(f"B2: job {job_id} {job.state}, stamp {started}")
            if i >= WARMUP:
                latencies.append(started - acked)
            time.sleep(0.005)  # let the daemon finish its bookkeeping: measure it idle
    return latencies


def b2_floor(root: Path, stamp: Path, spawns: int) -> list[float]:
    """The same stamp job started directly with Popen: the spawn's own latency."""
    stamps = root / "floor"
    stamps.mkdir(parents=True)
    latencies = []
    for i in range(spawns + WARMUP):
        path = stamps / str(i)
        t0 = time.time()
        subprocess.Popen(["/bin/sh", "-c", f"{stamp} {path}"]).wait()
        started = read_stamp(path)
        if i >= WARMUP and started is not None:
            latencies.append(started - t0)
        time.sleep(0.005)
    return latencies


# ----------------------------------------------------------------------------
# B3 bulk add


def b3_ours(root: Path, commands: int) -> float:
    """Jobs/s of one `queuectl add --from -` of `commands` lines, whole process
    (interpreter start included). The default queue is paused first so that
    the daemon runs none of them while they are added."""
    lines = root / "jobs.txt"
    root.mkdir(parents=True)
    lines.write_text("".join(f"echo job {i}\n" for i in range(commands)))
    with Daemon(root) as daemon:
        with daemon.client() as client:
            client.pause("default")
        env = child_env(QUEUED_SOCKET=str(daemon.socket))
        with open(lines, "rb") as stdin:
            t0 = time.monotonic()
            subprocess.run(
                [QUEUECTL, "add", "--from", "-"], stdin=stdin, env=env, check=True, capture_output=True
            )
            seconds = time.monotonic() - t0
        with daemon.client() as client:
            pending = client.status().counts["pending"]
        if pending != commands:
            raise RuntimeError(f"B3: {pending} pending after adding {commands}")
    return commands / seconds


def b3_floor(root: Path, commands: int) -> float:
    """Rows/s of a bare executemany of the same jobs into the same schema in
    one synchronous=FULL transaction: the storage floor of a bulk add."""
    root.mkdir(parents=True)
    conn = schema.connect(root / "floor.db")
    try:
        now = time.time()
        cwd = os.getcwd()
        conn.execute("INSERT INTO queues (name, created_at) VALUES ('default', ?)", (now,))
        t0 = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        env_id = _insert_env(conn, dict(os.environ))
        conn.executemany(
            "INSERT INTO jobs (command, state, queue, priority, label, max_retries, backoff_base,"
            " timeout, run_at, created_at, updated_at, cwd, env_id, unmet, error)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                (
                    f"echo job {i}",
                    "pending",
                    "default",
                    0,
                    None,
                    3,
                    2.0,
                    None,
                    now,
                    now,
                    now,
                    cwd,
                    env_id,
                    0,
                    None,
                )
                for i in range(commands)
            ),
        )
        conn.execute("COMMIT")
        return commands / (time.monotonic() - t0)
    finally:
        conn.close()


def _insert_env(conn: sqlite3.Connection, env: dict[str, str]) -> int:
    """The environments row the daemon would make for `env` (same encoding and digest)."""
    data = msgspec.msgpack.Encoder(order="deterministic").encode(env)
    digest = hashlib.blake2b(data, digest_size=16).digest()
    conn.execute("INSERT OR IGNORE INTO environments (digest, data) VALUES (?, ?)", (digest, data))
    return conn.execute("SELECT id FROM environments WHERE digest = ?", (digest,)).fetchone()[0]


# ----------------------------------------------------------------------------
# B4 CLI cost

FLOOR_COMMAND = [sys.executable, "-c", "import click, msgspec"]


def b4_commands() -> dict[str, list[str]]:
    return {
        "add": [QUEUECTL, "add", "true"],
        "ls": [QUEUECTL, "ls", "--limit", "20"],
        "floor": FLOOR_COMMAND,
    }


def wall(command: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


# ----------------------------------------------------------------------------
# B5 scale


def load_finished(db: Path, jobs: int, data_dir: Path) -> float:
    """Append `jobs` completed jobs (each with one attempt) straight into the
    store in one transaction, keeping `counts` right by hand (jobs have no
    insert trigger: the daemon's add updates counts once per batch, and so do
    we). Returns the seconds it took. The daemon must not be running."""
    conn = sqlite3.connect(db, isolation_level=None)
    t0 = time.monotonic()
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        conn.execute("INSERT OR IGNORE INTO queues (name, created_at) VALUES ('default', ?)", (now,))
        env_id = _insert_env(conn, dict(os.environ))
        first = conn.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'jobs'"
        ).fetchone()[0]
        ids = range(first, first + jobs)
        span = 30 * 86400  # created over the last 30 days, oldest first
        cwd = os.getcwd()

        def when(job_id: int) -> float:
            return now - span + span * (job_id - first) / max(jobs, 1)

        conn.executemany(
            "INSERT INTO jobs (id, command, state, queue, priority, label, attempts, max_retries,"
            " backoff_base, timeout, exit_code, run_at, created_at, updated_at, cwd, env_id, unmet, error)"
            " VALUES (?,?,'completed','default',0,?,1,3,2.0,NULL,0,?,?,?,?,?,0,NULL)",
            (
                (
                    i,
                    f"./task.sh --item {i}",
                    "nightly" if i % 10 == 0 else None,
                    when(i),
                    when(i),
                    when(i) + 1,
                    cwd,
                    env_id,
                )
                for i in ids
            ),
        )
        logs = data_dir / "logs"
        conn.executemany(
            "INSERT INTO attempts (job_id, attempt, pid, started_at, ended_at, exit_code, signal, error,"
            " stdout_path, stderr_path) VALUES (?,1,?,?,?,0,NULL,NULL,?,?)",
            (
                (
                    i,
                    1000 + i % 30000,
                    when(i),
                    when(i) + 1,
                    f"{logs}/{i // 1000}/{i}.1.out",
                    f"{logs}/{i // 1000}/{i}.1.err",
                )
                for i in ids
            ),
        )
        conn.execute(
            "INSERT INTO counts VALUES ('default', 'completed', ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            (jobs,),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.monotonic() - t0


def b5_run(daemon: Daemon, expected: int, requests: int) -> dict[str, float]:
    """Start the daemon on its (loaded) store: RSS once it answers, then
    `status` and `list(limit=50)` request latencies over one SDK connection."""
    daemon.start()
    try:
        rss_start = memory(daemon.pid)["VmRSS"] / MB
        status_times, list_times = [], []
        with daemon.client() as client:
            completed = client.status().counts["completed"]
            if completed != expected:
                raise RuntimeError(f"B5: the daemon counts {completed} completed jobs, expected {expected}")
            for _ in range(5):
                client.status()
                client.list(limit=50)
            for _ in range(requests):
                t0 = time.perf_counter()
                client.status()
                t1 = time.perf_counter()
                jobs = client.list(limit=50)
                t2 = time.perf_counter()
                status_times.append(t1 - t0)
                list_times.append(t2 - t1)
            if len(jobs) != min(50, expected):
                raise RuntimeError(f"B5: list(limit=50) returned {len(jobs)} jobs")
        mem = memory(daemon.pid)
        return {
            "rss_start_mb": rss_start,
            "rss_after_mb": mem["VmRSS"] / MB,
            "hwm_mb": mem["VmHWM"] / MB,
            "start_seconds": daemon.start_seconds,
            "status_p50_ms": percentile(status_times, 50) * 1e3,
            "status_p99_ms": percentile(status_times, 99) * 1e3,
            "ls_p50_ms": percentile(list_times, 50) * 1e3,
            "ls_p99_ms": percentile(list_times, 99) * 1e3,
        }
    finally:
        daemon.stop()


# ----------------------------------------------------------------------------
# B6 timer accuracy


def b6_delays(jobs: int, spread: float, seed: int) -> list[float]:
    """Delays spread uniformly over `spread` seconds, starting 0.5 s out so the
    add itself is long done when the first is due."""
    rng = random.Random(seed)
    return [0.5 + rng.uniform(0, spread) for _ in range(jobs)]


def b6_ours(root: Path, stamp: Path, delays: list[float]) -> list[float]:
    """Lateness (s) of each delayed job's start (its process's stamp) vs its run_at."""
    stamps = root / "stamps"
    stamps.mkdir(parents=True)
    with Daemon(root) as daemon, daemon.client(timeout=None) as client:
        specs = [JobSpec(command=f"{stamp} {stamps / str(i)}", delay=d) for i, d in enumerate(delays)]
        ids = client.add_many(specs)
        due = {job.id: job.run_at for job in client.list(ids=ids)}
        jobs = client.wait(*ids).jobs
    if {job.state for job in jobs} != {"completed"}:
        raise RuntimeError("B6: not every delayed job completed")
    lateness = []
    for i, job_id in enumerate(ids):
        started = read_stamp(stamps / str(i))
        if started is None:
            raise RuntimeError(f"B6: job {job_id} left no stamp")
        lateness.append(started - due[job_id])
    return lateness


def b6_floor(root: Path, stamp: Path, delays: list[float]) -> list[float]:
    """The floor: one Python loop that sleeps until each due time and Popens
    the same stamp job (no store, no scheduler)."""
    stamps = root / "floor"
    stamps.mkdir(parents=True)
    t0 = time.time()
    due = sorted(t0 + d for d in delays)
    procs = []
    for i, at in enumerate(due):
        pause = at - time.time()
        if pause > 0:
            time.sleep(pause)
        procs.append(subprocess.Popen(["/bin/sh", "-c", f"{stamp} {stamps / str(i)}"]))
    for proc in procs:
        proc.wait()
    return [s - at for i, at in enumerate(due) if (s := read_stamp(stamps / str(i))) is not None]


# ----------------------------------------------------------------------------
# B7 idle


def b7_ours(root: Path, jobs: int, window: float, windows: int) -> list[dict[str, float]]:
    """CPU seconds the daemon (all threads) and its guardian use in each idle
    window, with `jobs` jobs scheduled an hour out."""
    with Daemon(root) as daemon:
        with daemon.client() as client:
            client.add_many([JobSpec(command="true", delay=3600)] * jobs)
            if client.status().counts["pending"] != jobs:
                raise RuntimeError("B7: the delayed jobs are not all pending")
        guardians = children(daemon.pid)
        time.sleep(1.0)  # let the add's aftermath settle
        results = []
        for _ in range(windows):
            cpu0, ns0 = cpu_seconds(daemon.pid), run_ns(daemon.pid)
            g0 = sum(cpu_seconds(g) for g in guardians)
            time.sleep(window)
            results.append(
                {
                    "cpu_seconds": cpu_seconds(daemon.pid) - cpu0,
                    "schedstat_seconds": run_ns(daemon.pid) - ns0,
                    "guardian_cpu_seconds": sum(cpu_seconds(g) for g in guardians) - g0,
                }
            )
    return results


# ----------------------------------------------------------------------------
# S1 schedule lateness, and B7 with schedules defined


def s1_ours(root: Path, stamp: Path, schedules: int, seconds: float) -> dict[str, list[float]]:
    """`schedules` schedules firing every second for `seconds`: the lateness
    (s) of each firing's job added (its created_at: negative, it is added
    ahead) and started (its process's stamp) vs the firing time (its run_at,
    anchor + k seconds)."""
    stamps = root / "stamps"
    stamps.mkdir(parents=True)
    with Daemon(root, concurrency=max(2, schedules)) as daemon, daemon.client(timeout=None) as client:
        spec = JobSpec(command=f"{stamp} {stamps}/$QUEUED_JOB_ID")
        anchors = {}
        for n in range(schedules):
            anchors[f"s1-{n}"] = client.schedule_add(f"s1-{n}", "@every 1s", spec).created_at
        time.sleep(seconds)
        for name in anchors:
            client.schedule_remove(name)
        jobs = [job for name in anchors for job in client.list(label=name)]
        done = client.wait(*[job.id for job in jobs]).jobs
    if {job.state for job in done} != {"completed"}:
        raise RuntimeError("S1: not every scheduled job completed")
    added, started = [], []
    for job in jobs:
        anchor = anchors[job.label or ""]
        firing = job.run_at  # due at its firing's time
        if abs((firing - anchor) - round(firing - anchor)) > 1e-6:
            raise RuntimeError(f"S1: job {job.id} is due at {firing}, off the schedule's grid")
        added.append(job.created_at - firing)
        stamped = read_stamp(stamps / str(job.id))
        if stamped is None:
            raise RuntimeError(f"S1: job {job.id} left no stamp")
        started.append(stamped - firing)
    return {"added": added, "started": started}


def b7_schedules(root: Path, schedules: int, window: float, windows: int) -> list[dict[str, float]]:
    """B7's idle windows with `schedules` schedules defined (each once a year,
    at different times: none fires in the windows) and no job."""
    with Daemon(root) as daemon:
        with daemon.client() as client:
            for n in range(schedules):
                client.schedule_add(f"idle-{n}", f"{n % 60} {n % 24} 1 1 *", "true", tz="UTC")
            if len(client.schedules()) != schedules:
                raise RuntimeError("B7S: the schedules are not all defined")
        time.sleep(1.0)
        results = []
        for _ in range(windows):
            cpu0, ns0 = cpu_seconds(daemon.pid), run_ns(daemon.pid)
            time.sleep(window)
            results.append(
                {"cpu_seconds": cpu_seconds(daemon.pid) - cpu0, "schedstat_seconds": run_ns(daemon.pid) - ns0}
            )
    return results
