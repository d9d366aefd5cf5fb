"""The benchmark suite of issue #3: every figure against a real `queued` in a
temp data dir, a table on stdout and JSON in a file.

    python tests/bench/run.py [--quick] [--json PATH] [--only B1,B5] [--profile DIR]

Each figure is the median of several runs, and each is also given as a ratio
to a baseline measured in the same invocation (this machine is shared and
noisy). See tests/bench/README.md for what each figure measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import benches
import harness
import peers
import pg_benches
import pg_store_benches
import rescue
from harness import Daemon, median, percentile


@dataclass
class Sizes:
    runs: int  # repetitions of B1 (and its baselines), B2, B3, B5, B6
    b1_jobs: int
    nq_jobs: int
    b2_adds: int
    b3_commands: int
    b4_rounds: int
    b5_jobs: int
    b5_small: int  # the baseline store size
    b5_requests: int
    b6_jobs: int
    b6_spread: float
    b7_jobs: int
    b7_window: float
    b7_windows: int
    s1_schedules: int = 3
    s1_seconds: float = 10.0
    b7_schedules: int = 1_000
    b8_jobs: int = 10_000
    b9_adds: int = 300


FULL = Sizes(3, 10_000, peers.NQ_JOBS, 500, 100_000, 15, 1_000_000, 1_000, 300, 200, 5.0, 10_000, 10.0, 3)
QUICK = Sizes(
    1, 2_000, 300, 100, 10_000, 5, 100_000, 1_000, 100, 50, 2.0, 10_000, 2.0, 1, 3, 4.0, 1_000, 2_000, 50
)


@dataclass
class Figure:
    key: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None
    ratio: float | None = None
    ratio_to: str = ""
    runs: list[Any] = field(default_factory=list)
    note: str = ""


class Suite:
    def __init__(self, sizes: Sizes, tmp: Path, profile: Path | None) -> None:
        self.sizes = sizes
        self.tmp = tmp
        self.profile = profile
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self._dirs = 0
        self.spawn_loop = harness.compile_c("spawn_loop", tmp)
        self.stamp = harness.compile_c("stamp", tmp)
        if self.stamp is None:
            raise SystemExit("B2 and B6 need a C compiler (cc) to build stamp.c")

    def fresh(self, name: str) -> Path:
        """A new directory for one run (short: a socket path must fit in 108 bytes)."""
        self._dirs += 1
        return self.tmp / f"{self._dirs}{name}"

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    # -- B1 ---------------------------------------------------------------------------

    def b1(self) -> None:
        s = self.sizes
        tsp, tsp_note = peers.ensure("tsp", "task-spooler")
        nq, nq_note = peers.ensure("nq", "nq")
        for note in (tsp_note, nq_note):
            if note:
                self.notes.append(f"B1 peer skipped: {note}")
        ours: list[dict[str, float]] = []
        c_rates: list[float] = []
        py_rates: list[float] = []
        trio_rates: list[float] = []
        tsp_rates: list[float] = []
        nq_rates: list[float] = []
        for run in range(s.runs):  # interleaved: every contender shares each stretch of noise
            progress(f"B1 run {run + 1}/{s.runs}")
            if self.spawn_loop is not None:
                c_rates.append(benches.b1_c(self.spawn_loop, s.b1_jobs))
            py_rates.append(benches.b1_python(s.b1_jobs))
            trio_rates.append(benches.b1_python(s.b1_jobs, "spawn_loop_trio.py"))
            ours.append(benches.b1_ours(self.fresh("b1"), s.b1_jobs))
            if tsp:
                tsp_rates.append(s.b1_jobs / peers.tsp_drain(tsp, self.fresh("tsp"), s.b1_jobs))
            if nq:
                nq_rates.append(s.nq_jobs / peers.nq_drain(nq, self.fresh("nq"), s.nq_jobs))
        if self.profile is not None:
            progress("B1 once more under py-spy (not counted)")
            out = self.profile / "b1-queued.txt"
            wrap = (str(harness.PY_SPY), "record", "-o", str(out), "-f", "raw", "--gil", "--")
            benches.b1_ours(self.fresh("b1p"), s.b1_jobs, wrap=wrap)
            self.notes.append(f"B1 py-spy profile (raw, --gil): {out}")

        c = median(c_rates) if c_rates else None
        py = median(py_rates)
        base, base_name = (c, "C spawn loop") if c else (py, "Python spawn loop")
        store = median([r["store_rate"] for r in ours])
        self.add(
            Figure(
                "B1",
                f"B1 drain {s.b1_jobs:,} x true, 2 slots (queued)",
                store,
                "jobs/s",
                ">= 0.70x C loop",
                store >= 0.70 * base if c else None,
                store / base,
                base_name,
                ours,
                "first claim to last recorded end (attempts table); synchronous=FULL",
            )
        )
        wall = median([r["wall_rate"] for r in ours])
        self.add(
            Figure(
                "B1.wall",
                "B1 drain, resume sent -> wait returned",
                wall,
                "jobs/s",
                ratio=wall / base,
                ratio_to=base_name,
                runs=[r["wall_rate"] for r in ours],
            )
        )
        cpu = median([r["daemon_cpu_ms_per_job"] for r in ours])
        self.add(
            Figure(
                "B1.cpu",
                "B1 queued's own CPU per job during the drain",
                cpu,
                "ms",
                runs=[r["daemon_cpu_ms_per_job"] for r in ours],
                note="utime+stime of queued (all threads, not its jobs) from resume to wait's return",
            )
        )
        if c:
            self.add(
                Figure(
                    "B1.c",
                    "B1 baseline: C posix_spawn loop",
                    c,
                    "jobs/s",
                    ratio=1.0,
                    ratio_to=base_name,
                    runs=c_rates,
                )
            )
        self.add(
            Figure(
                "B1.py",
                "B1 baseline: Python subprocess loop",
                py,
                "jobs/s",
                ratio=py / base,
                ratio_to=base_name,
                runs=py_rates,
            )
        )
        trio_rate = median(trio_rates)
        self.add(
            Figure(
                "B1.trio",
                "B1 baseline: bare trio loop (pipes, pidfd, no records)",
                trio_rate,
                "jobs/s",
                ratio=trio_rate / base,
                ratio_to=base_name,
                runs=trio_rates,
                note="spawn_loop_trio.py: what every attempt must do, with no database",
            )
        )
        if tsp_rates:
            t = median(tsp_rates)
            self.add(
                Figure(
                    "B1.tsp",
                    "B1 peer: task-spooler (tsp -S 2)",
                    t,
                    "jobs/s",
                    ratio=t / base,
                    ratio_to=base_name,
                    runs=tsp_rates,
                    note=f"{s.b1_jobs:,} jobs in chunks of {peers.CHUNK} (tsp holds ~1,000 queued); not durable",
                )
            )
        if nq_rates:
            n = median(nq_rates)
            self.add(
                Figure(
                    "B1.nq",
                    f"B1 peer: nq ({s.nq_jobs:,} jobs, serial)",
                    n,
                    "jobs/s",
                    ratio=n / base,
                    ratio_to=base_name,
                    runs=nq_rates,
                    note="nq runs one job at a time and each job locks every earlier one: fewer jobs",
                )
            )

    # -- B2 ---------------------------------------------------------------------------

    def b2(self) -> None:
        s = self.sizes
        assert self.stamp is not None
        ours, floor = [], []
        for run in range(s.runs):
            progress(f"B2 run {run + 1}/{s.runs}")
            floor.append(benches.b2_floor(self.fresh("b2f"), self.stamp, s.b2_adds))
            ours.append(benches.b2_ours(self.fresh("b2"), self.stamp, s.b2_adds))
        for q, limit in ((50, 5.0), (99, 20.0)):
            value = median([percentile(r, q) for r in ours]) * 1e3
            base = median([percentile(r, q) for r in floor]) * 1e3
            self.add(
                Figure(
                    f"B2.p{q}",
                    f"B2 dispatch latency p{q} (ack -> process start)",
                    value,
                    "ms",
                    f"<= {limit:g} ms",
                    value <= limit,
                    value / base,
                    f"Popen of the same job ({base:.2f} ms)",
                    [percentile(r, q) * 1e3 for r in ours],
                )
            )
        self.add(
            Figure(
                "B2.floor",
                "B2 baseline: Popen -> process start p50",
                median([percentile(r, 50) for r in floor]) * 1e3,
                "ms",
                runs=[[percentile(r, 50) * 1e3, percentile(r, 99) * 1e3] for r in floor],
                note="runs: [p50, p99]",
            )
        )

    # -- B3 ---------------------------------------------------------------------------

    def b3(self) -> None:
        s = self.sizes
        ours, floor = [], []
        for run in range(s.runs):
            progress(f"B3 run {run + 1}/{s.runs}")
            floor.append(benches.b3_floor(self.fresh("b3f"), s.b3_commands))
            ours.append(benches.b3_ours(self.fresh("b3"), s.b3_commands))
        value, base = median(ours), median(floor)
        self.add(
            Figure(
                "B3",
                f"B3 bulk add: {s.b3_commands:,} lines, one queuectl add --from -",
                value,
                "jobs/s",
                ">= 50,000 jobs/s",
                value >= 50_000,
                value / base,
                "bare executemany, one FULL commit",
                ours,
                "whole CLI process, interpreter start included; default queue paused",
            )
        )
        self.add(Figure("B3.floor", "B3 baseline: bare SQLite insert", base, "rows/s", runs=floor))

    # -- B4 ---------------------------------------------------------------------------

    def b4(self) -> None:
        s = self.sizes
        progress("B4")
        # As installed by pip: this checkout's modules byte-compiled (a checkout
        # run with PYTHONDONTWRITEBYTECODE would compile them on every start).
        subprocess.run(
            [
                sys.executable,
                "-m",
                "compileall",
                "-q",
                str(harness.REPO / "queued"),
                str(harness.REPO / "queuectl"),
            ],
            check=True,
        )
        with Daemon(self.fresh("b4")) as daemon:
            with daemon.client() as client:
                client.pause("default")  # the added jobs stay pending: nothing else runs
                client.add_many([benches.JobSpec(command="true")] * 50)
            env = harness.child_env(QUEUED_SOCKET=str(daemon.socket))
            commands = benches.b4_commands()
            times: dict[str, list[float]] = {name: [] for name in commands}
            for command in commands.values():  # warm the page cache
                benches.wall(command, env)
            for _ in range(s.b4_rounds):
                for name, command in commands.items():
                    times[name].append(benches.wall(command, env))
        floor = median(times["floor"]) * 1e3
        for name, label, target in (
            ("add", "B4 `queuectl add true` wall time", 1.2),
            ("ls", "B4 `queuectl ls --limit 20` wall time", None),
        ):
            value = median(times[name]) * 1e3
            self.add(
                Figure(
                    f"B4.{name}",
                    label,
                    value,
                    "ms",
                    f"<= {target}x import floor" if target else "",
                    value / floor <= target if target else None,
                    value / floor,
                    "python -c 'import click, msgspec'",
                    [t * 1e3 for t in times[name]],
                )
            )
        self.add(
            Figure(
                "B4.floor",
                "B4 baseline: python -c 'import click, msgspec'",
                floor,
                "ms",
                runs=[t * 1e3 for t in times["floor"]],
            )
        )

    # -- B5 ---------------------------------------------------------------------------

    def b5(self) -> None:
        s = self.sizes
        root = self.fresh("b5")
        daemon = Daemon(root)
        daemon.start()  # creates the schema and the default queue
        daemon.stop()
        db = daemon.data / "queue.db"
        progress(f"B5 baseline: {s.b5_small:,} jobs")
        small_load = benches.load_finished(db, s.b5_small, daemon.data)
        small = benches.b5_run(daemon, s.b5_small, s.b5_requests)
        progress(f"B5 loading {s.b5_jobs - s.b5_small:,} more finished jobs")
        load = benches.load_finished(db, s.b5_jobs - s.b5_small, daemon.data)
        size = sum(p.stat().st_size for p in daemon.data.glob("queue.db*"))
        runs = []
        for run in range(s.runs):
            progress(f"B5 run {run + 1}/{s.runs}")
            runs.append(benches.b5_run(daemon, s.b5_jobs, s.b5_requests))

        def med(key: str) -> float:
            return median([r[key] for r in runs])

        at = f"{s.b5_small:,} jobs"
        rss = med("rss_start_mb")
        self.add(
            Figure(
                "B5.rss",
                f"B5 RSS after start, {s.b5_jobs:,} finished jobs",
                rss,
                "MB",
                "<= 100 MB",
                rss <= 100,
                rss / small["rss_start_mb"],
                at,
                runs,
                f"VmRSS of queued (not its guardian); store {size / 1e6:,.0f} MB, loaded in {load:.1f} s "
                f"(+{small_load:.2f} s for the first {s.b5_small:,})",
            )
        )
        for key, label, limit in (
            ("status_p50_ms", "B5 status p50", 20.0),
            ("status_p99_ms", "B5 status p99", None),
            ("ls_p50_ms", "B5 ls --limit 50 p50 (SDK)", 20.0),
            ("ls_p99_ms", "B5 ls --limit 50 p99 (SDK)", None),
        ):
            value = med(key)
            self.add(
                Figure(
                    f"B5.{key[:-3]}",
                    f"{label}, {s.b5_jobs:,} jobs",
                    value,
                    "ms",
                    f"<= {limit:g} ms" if limit else "",
                    value <= limit if limit else None,
                    value / small[key],
                    f"{at} ({small[key]:.2f} ms)",
                )
            )
        start = med("start_seconds")
        self.add(
            Figure(
                "B5.start",
                f"B5 daemon start to first answer, {s.b5_jobs:,} jobs",
                start * 1e3,
                "ms",
                ratio=start / small["start_seconds"],
                ratio_to=f"{at} ({small['start_seconds'] * 1e3:.0f} ms)",
            )
        )

    # -- B3pg and B5pg: through PostgreSQL (pg_store_benches.py) ----------------------

    def b3pg(self) -> None:
        s = self.sizes
        with pg_store_benches.server() as pg:
            if pg is None:
                self.notes.append("B3pg skipped: PostgreSQL is not installed")
                return
            ours, floor = [], []
            for run in range(s.runs):
                progress(f"B3pg run {run + 1}/{s.runs}")
                floor.append(pg_store_benches.b3_floor(pg, s.b3_commands))
                ours.append(pg_store_benches.b3_ours(pg, self.fresh("b3p"), s.b3_commands))
        value, base = median(ours), median(floor)
        self.add(
            Figure(
                "B3pg",
                f"B3pg bulk add through PostgreSQL: {s.b3_commands:,} lines, one queuectl add --from -",
                value,
                "jobs/s",
                ">= 20,000 jobs/s",
                value >= 20_000,
                value / base,
                "bare unnest insert, one transaction",
                ours,
                "whole CLI process, interpreter start included; default queue paused",
            )
        )
        self.add(
            Figure("B3pg.floor", "B3pg baseline: bare PostgreSQL unnest insert", base, "rows/s", runs=floor)
        )

    def b5pg(self) -> None:
        s = self.sizes
        with pg_store_benches.server() as pg:
            if pg is None:
                self.notes.append("B5pg skipped: PostgreSQL is not installed")
                return
            url = pg_store_benches.durable_database(pg)
            daemon = Daemon(self.fresh("b5p"), extra=["--store", url])
            daemon.start()  # creates the schema and the default queue
            daemon.stop()
            progress(f"B5pg baseline: {s.b5_small:,} jobs")
            pg_store_benches.load_finished(url, s.b5_small)
            small = benches.b5_run(daemon, s.b5_small, s.b5_requests)
            progress(f"B5pg loading {s.b5_jobs - s.b5_small:,} more finished jobs")
            load = pg_store_benches.load_finished(url, s.b5_jobs - s.b5_small)
            runs = []
            for run in range(s.runs):
                progress(f"B5pg run {run + 1}/{s.runs}")
                runs.append(benches.b5_run(daemon, s.b5_jobs, s.b5_requests))
        at = f"{s.b5_small:,} jobs"
        for key, label, limit in (
            ("status_p50_ms", "B5pg status p50", 20.0),
            ("status_p99_ms", "B5pg status p99", None),
            ("ls_p50_ms", "B5pg ls --limit 50 p50 (SDK)", 20.0),
            ("ls_p99_ms", "B5pg ls --limit 50 p99 (SDK)", None),
        ):
            value = median([r[key] for r in runs])
            self.add(
                Figure(
                    f"B5pg.{key[:-3]}",
                    f"{label}, {s.b5_jobs:,} finished jobs in PostgreSQL",
                    value,
                    "ms",
                    f"<= {limit:g} ms" if limit else "",
                    value <= limit if limit else None,
                    value / small[key],
                    f"{at} ({small[key]:.2f} ms)",
                    runs if key == "status_p50_ms" else [],
                    f"loaded with COPY in {load:.1f} s" if key == "status_p50_ms" else "",
                )
            )

    # -- B6 ---------------------------------------------------------------------------

    def b6(self) -> None:
        s = self.sizes
        assert self.stamp is not None
        ours, floor = [], []
        for run in range(s.runs):
            progress(f"B6 run {run + 1}/{s.runs}")
            delays = benches.b6_delays(s.b6_jobs, s.b6_spread, seed=run)
            ours.append(benches.b6_ours(self.fresh("b6"), self.stamp, delays))
            floor.append(benches.b6_floor(self.fresh("b6f"), self.stamp, delays))
        for q, limit in ((50, None), (99, 10.0)):
            value = median([percentile(r, q) for r in ours]) * 1e3
            base = median([percentile(r, q) for r in floor]) * 1e3
            self.add(
                Figure(
                    f"B6.p{q}",
                    f"B6 timer lateness p{q}, {s.b6_jobs} jobs over {s.b6_spread:g} s",
                    value,
                    "ms",
                    f"<= {limit:g} ms" if limit else "",
                    value <= limit if limit else None,
                    value / base,
                    f"sleep+Popen loop ({base:.2f} ms)",
                    [percentile(r, q) * 1e3 for r in ours],
                )
            )
        self.add(
            Figure(
                "B6.floor",
                "B6 baseline: sleep+Popen loop lateness p99",
                median([percentile(r, 99) for r in floor]) * 1e3,
                "ms",
                runs=[[percentile(r, q) * 1e3 for q in (50, 99, 100)] for r in floor],
                note="runs: [p50, p99, max]",
            )
        )
        worst = ", ".join(f"{max(r) * 1e3:.1f}" for r in ours)
        self.notes.append(
            f"B6 worst lateness per run: {worst} ms (baseline: "
            + ", ".join(f"{max(r) * 1e3:.1f}" for r in floor)
            + " ms)"
        )

    # -- B7 ---------------------------------------------------------------------------

    def b7(self) -> None:
        s = self.sizes
        progress(f"B7: {s.b7_windows} x {s.b7_window:g} s idle")
        windows = benches.b7_ours(self.fresh("b7"), s.b7_jobs, s.b7_window, s.b7_windows)
        value = median([w["cpu_seconds"] for w in windows])
        self.add(
            Figure(
                "B7",
                f"B7 idle CPU in {s.b7_window:g} s, {s.b7_jobs:,} future jobs",
                value,
                "CPU s",
                "< 0.05 CPU s",
                value < 0.05,
                runs=windows,
                note="utime+stime of queued, all threads (10 ms ticks); schedstat and guardian in runs",
            )
        )
        self.add(
            Figure(
                "B7.schedstat",
                "B7 idle CPU, live threads' schedstat (ns resolution)",
                median([w["schedstat_seconds"] for w in windows]),
                "CPU s",
                runs=[w["schedstat_seconds"] for w in windows],
            )
        )

    # -- B10 --------------------------------------------------------------------------

    def b10(self) -> None:
        lease, jobs = 3.0, 4
        progress(f"B10: rescue after kill -9, lease {lease:g} s, {jobs} jobs x {self.sizes.runs} runs")
        results = rescue.measure(self.tmp, lease, jobs, self.sizes.runs)
        if isinstance(results, str):
            self.notes.append(results)
            return
        value = max(r["max"] for r in results)
        self.add(
            Figure(
                "B10",
                f"B10 rescue after kill -9 (lease {lease:g} s)",
                value,
                "s",
                f"<= {lease + 2:g} s",
                value <= lease + 2,
                runs=results,
                note="from SIGKILL of the node running the jobs to each job's next start on the other node",
            )
        )

    # -- S1, B7S: schedules (#14) -------------------------------------------------------

    def s1(self) -> None:
        s = self.sizes
        assert self.stamp is not None
        runs = []
        for run in range(s.runs):
            progress(
                f"S1 run {run + 1}/{s.runs}: {s.s1_schedules} schedules every 1 s for {s.s1_seconds:g} s"
            )
            runs.append(benches.s1_ours(self.fresh("s1"), self.stamp, s.s1_schedules, s.s1_seconds))
        # The target is on the start, as B6's: a firing's job is added ahead (negative lateness).
        for key, what in (("added", "job added"), ("started", "job started")):
            for q, limit in ((50, None), (99, 10.0 if key == "started" else None)):
                value = median([percentile(r[key], q) for r in runs]) * 1e3
                self.add(
                    Figure(
                        f"S1.{key}.p{q}",
                        f"S1 schedule lateness p{q} ({what}), {s.s1_schedules} x every 1 s",
                        value,
                        "ms",
                        f"<= {limit:g} ms" if limit else "",
                        value <= limit if limit else None,
                        runs=[percentile(r[key], q) * 1e3 for r in runs],
                    )
                )
        worst = ", ".join(f"{max(r['started']) * 1e3:.1f}" for r in runs)
        self.notes.append(f"S1 worst lateness of a job started per run: {worst} ms")

    def b7s(self) -> None:
        s = self.sizes
        progress(f"B7S: {s.b7_windows} x {s.b7_window:g} s idle, {s.b7_schedules:,} schedules")
        windows = benches.b7_schedules(self.fresh("b7s"), s.b7_schedules, s.b7_window, s.b7_windows)
        value = median([w["cpu_seconds"] for w in windows])
        self.add(
            Figure(
                "B7S",
                f"B7 idle CPU in {s.b7_window:g} s, {s.b7_schedules:,} schedules",
                value,
                "CPU s",
                "< 0.05 CPU s",
                value < 0.05,
                runs=windows,
                note="utime+stime of queued, all threads (10 ms ticks)",
            )
        )

    # -- B8, B9: nodes on PostgreSQL -----------------------------------------------------

    def b8(self) -> None:
        s = self.sizes
        with pg_benches.server() as pg:
            if pg is None:
                self.notes.append("B8 skipped: PostgreSQL is not installed")
                return
            one: list[dict[str, float]] = []
            three: list[dict[str, float]] = []
            c_rates: list[float] = []
            c_cpus: list[float] = []  # ms of CPU per job, the loop and its jobs
            sqlite_rates: list[float] = []
            for run in range(s.runs):
                progress(f"B8 run {run + 1}/{s.runs}")
                if self.spawn_loop is not None:
                    c_rate, c_cpu = benches.b1_c_cpu(self.spawn_loop, s.b8_jobs)
                    c_rates.append(c_rate)
                    c_cpus.append(c_cpu * 1e3)
                sqlite_rates.append(benches.b1_ours(self.fresh("b8s"), s.b8_jobs)["store_rate"])
                one.append(pg_benches.b8_drain(pg, [self.fresh("b8a")], s.b8_jobs))
                three.append(pg_benches.b8_drain(pg, [self.fresh(f"b8{n}") for n in "bcd"], s.b8_jobs))
        c = median(c_rates) if c_rates else None
        for key, label, runs, target in (
            ("B8.one", "one node, 2 slots", one, 0.5),
            ("B8.three", "three nodes, 2 slots each", three, None),
        ):
            rate = median([r["store_rate"] for r in runs])
            node_cpu = median([r["nodes_cpu_ms_per_job"] for r in runs])
            server_cpu = median([r["server_cpu_ms_per_job"] for r in runs])
            commits = median([r["commits_per_job"] for r in runs])
            self.add(
                Figure(
                    key,
                    f"B8 drain {s.b8_jobs:,} x true through PostgreSQL, {label}",
                    rate,
                    "jobs/s",
                    f">= {target:g}x C loop" if target and c else "",
                    rate >= target * c if target and c else None,
                    rate / c if c else None,
                    "C spawn loop, 2 slots" if c else "",
                    runs,
                    f"first claim to last recorded end; CPU per job: nodes {node_cpu:.2f} ms, "
                    f"PostgreSQL {server_cpu:.2f} ms (fsync off); {commits:.2f} commits per job",
                )
            )
        if c:
            self.add(
                Figure(
                    "B8.c",
                    "B8 baseline: C posix_spawn loop, 2 slots",
                    c,
                    "jobs/s",
                    runs=c_rates,
                    note=f"{median(c_cpus):.2f} ms of CPU per job (the loop and its jobs): "
                    f"{c * median(c_cpus) / 1e3:.2f} of {os.cpu_count()} cores busy",
                )
            )
            self._b8_bound(one, c)
        sqlite = median(sqlite_rates)
        self.add(
            Figure(
                "B8.sqlite",
                "B8 beside it: the same drain by one node on SQLite (B1)",
                sqlite,
                "jobs/s",
                ratio=sqlite / c if c else None,
                ratio_to="C spawn loop, 2 slots" if c else "",
                runs=sqlite_rates,
                note="starts from memory, records behind: no commit between an end and the next start",
            )
        )

    def _b8_bound(self, one: list[dict[str, float]], c: float) -> None:
        """The most one node could drain were every core busy all the time:
        the cores over the CPU each job costs in all (its own process, the
        node's and the server's, which share this machine's cores)."""
        jobs = median([r["jobs_cpu_ms_per_job"] for r in one])
        node = median([r["nodes_cpu_ms_per_job"] for r in one])
        server = median([r["server_cpu_ms_per_job"] for r in one])
        cores = os.cpu_count() or 1
        bound = cores / (jobs + node + server) * 1e3
        self.add(
            Figure(
                "B8.bound",
                "B8 one node's CPU bound on this machine",
                bound,
                "jobs/s",
                ratio=bound / c,
                ratio_to="C spawn loop, 2 slots",
                note=f"{cores} cores / CPU per job: the job {jobs:.2f} ms + node {node:.2f} + "
                f"PostgreSQL {server:.2f} = {jobs + node + server:.2f} ms; without the server's "
                f"share (a database on a machine of its own): {cores / (jobs + node) * 1e3 / c:.2f}x C",
            )
        )

    def b9(self) -> None:
        s = self.sizes
        assert self.stamp is not None
        with pg_benches.server() as pg:
            if pg is None:
                self.notes.append("B9 skipped: PostgreSQL is not installed")
                return
            runs = []
            alone = []
            for run in range(s.runs):
                progress(f"B9 run {run + 1}/{s.runs}")
                alone.append(benches.b2_ours(self.fresh("b9s"), self.stamp, s.b9_adds))
                runs.append(
                    pg_benches.b9_dispatch(pg, [self.fresh("b9a"), self.fresh("b9b")], self.stamp, s.b9_adds)
                )
        for q, limit in ((50, 10.0), (99, 50.0)):
            value = median([percentile(r, q) for r in runs]) * 1e3
            base = median([percentile(r, q) for r in alone]) * 1e3
            self.add(
                Figure(
                    f"B9.p{q}",
                    f"B9 cross-node dispatch p{q} (add on A -> started on B)",
                    value,
                    "ms",
                    f"<= {limit:g} ms",
                    value <= limit,
                    value / base,
                    f"B2 p{q} of this run: one node on SQLite ({base:.2f} ms)",
                    runs=[percentile(r, q) * 1e3 for r in runs],
                    note="A runs nothing (concurrency 0); B hears of the job by NOTIFY and claims it",
                )
            )


# ----------------------------------------------------------------------------
# output


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "CPU s":
        return f"{value:.3f} {unit}"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {unit}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "target", "result", "ratio to baseline")]
    for f in figures:
        result = "" if f.passed is None else ("pass" if f.passed else "MISS")
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x {f.ratio_to}"
        rows.append((f.name, fmt(f.value, f.unit), f.target, result, ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].ljust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


BENCHES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B3PG", "B5PG", "B8", "B9", "B10", "S1", "B7S")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one run each (for development)")
    parser.add_argument(
        "--json", type=Path, default=harness.HERE / "results.json", help="where the JSON goes"
    )
    parser.add_argument("--only", help="a comma-separated subset, e.g. B1,B5")
    parser.add_argument(
        "--profile", type=Path, help="also run B1 once under py-spy, writing its profile here"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data dirs, daemon logs)")
    args = parser.parse_args(argv)
    selected = BENCHES if not args.only else tuple(b.strip().upper() for b in args.only.split(","))
    unknown = set(selected) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.profile is not None:
        if harness.PY_SPY is None:
            parser.error("--profile needs py-spy on PATH")
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()

    sizes = QUICK if args.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="qbench-"))
    started = time.time()
    host = harness.machine()
    suite = Suite(sizes, tmp, args.profile)
    try:
        for name in selected:
            getattr(suite, name.lower())()
    finally:
        if args.keep:
            print(f"temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started

    print(table(suite.figures))
    for note in suite.notes:
        print(f"note: {note}")
    print(f"({'quick' if args.quick else 'full'} run, {elapsed:.0f} s, {host['cpu_model']})")
    report = {
        "issue": 3,
        "quick": args.quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(elapsed, 1),
        "machine": host,
        "sizes": asdict(sizes),
        "figures": [asdict(f) for f in suite.figures],
        "notes": suite.notes,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON: {args.json}")
    misses = [f.key for f in suite.figures if f.passed is False]
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
