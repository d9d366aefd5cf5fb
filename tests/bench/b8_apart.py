"""B8 with PostgreSQL on a core of its own: what one node drains when the
database does not share its machine, as the issue's users have it.

On this machine the server, the node and the jobs share 2 cores, and the C
loop (B8's baseline) keeps both busy with jobs alone, so B8's ratio is bounded
by the CPU every job costs in all (`run.py` prints that bound, B8.bound). Here
the server is pinned to the last core and the node, its jobs and the C loop to
the others: the ratio is then the node's against the C loop on the same cores,
with the server's work off them.

Usage: python tests/bench/b8_apart.py [JOBS] [RUNS]  (defaults: 3000 jobs, 3 runs)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import benches
import pg_benches
from harness import children, compile_c, median


def pin_server(pg: pg_benches.PostgresServer, core: int) -> None:
    """The server and every process it has (backends fork from it: they inherit it)."""
    assert pg.process is not None
    for pid in [pg.process.pid, *children(pg.process.pid)]:
        try:
            os.sched_setaffinity(pid, {core})
        except ProcessLookupError:
            pass


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("b8_apart.py needs 2 cores at least")
    server_core, worker_cores = cores[-1], set(cores[:-1])
    with tempfile.TemporaryDirectory(prefix="qapart") as tmp, pg_benches.server() as pg:
        if pg is None:
            sys.exit("PostgreSQL is not installed")
        exe = compile_c("spawn_loop", Path(tmp))
        if exe is None:
            sys.exit("b8_apart.py needs cc")
        pin_server(pg, server_core)
        os.sched_setaffinity(0, worker_cores)  # inherited by the C loop, the node and its jobs
        c_rates, node_rates, node_cpu, server_cpu = [], [], [], []
        for run in range(runs):
            c_rates.append(benches.b1_c(exe, jobs))
            result = pg_benches.b8_drain(pg, [Path(tmp) / f"node{run}"], jobs)
            node_rates.append(result["store_rate"])
            node_cpu.append(result["nodes_cpu_ms_per_job"])
            server_cpu.append(result["server_cpu_ms_per_job"])
            pin_server(pg, server_core)  # the node's new connections: backends forked meanwhile
    c, ours = median(c_rates), median(node_rates)
    print(f"{jobs:,} x true, 2 slots; PostgreSQL on core {server_core}, the rest on {sorted(worker_cores)}")
    print(f"  C spawn loop       {c:>7,.0f} jobs/s   runs: {', '.join(f'{r:,.0f}' for r in c_rates)}")
    print(
        f"  one node (B8)      {ours:>7,.0f} jobs/s   runs: {', '.join(f'{r:,.0f}' for r in node_rates)}"
        f"   = {ours / c:.2f}x C"
    )
    print(f"  CPU per job: node {median(node_cpu):.2f} ms, PostgreSQL {median(server_cpu):.2f} ms")


if __name__ == "__main__":
    main()
