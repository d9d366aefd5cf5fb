"""What bulk changes of many jobs cost, on both engines: `cancel`, `retry`,
`hold`, `release`, `rm` and `clean` of N jobs at once, at the store (one
call in one transaction, as the writer runs it), whatever the CLI adds on
top being the same for every engine. Prints seconds per call and per job,
so that a cost growing faster than N shows.

    python tests/bench/bulk_changes.py                 # 1k, 10k, 100k, both engines
    python tests/bench/bulk_changes.py --sizes 1000,10000 --engines postgresql
    python tests/bench/bulk_changes.py --clean 1000000  # clean --older-than at 1M finished

PostgreSQL runs on a throwaway server (tests/postgres.py: fsync off).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import REPO

sys.path.insert(0, str(REPO))
from queued import lifecycle
from queued.protocol import JobSpec
from queued.store.contract import Engine
from queued.store.sqlite import SqliteStore
from tests.postgres import PostgresServer, binaries
from tests.store_harness import T0, Direct, new

OPERATIONS = ("cancel", "retry", "hold", "release", "cancel again", "rm", "clean")


@contextmanager
def engines(names: list[str]) -> Iterator[Callable[[], tuple[str, Engine]]]:
    """A factory of fresh stores of each engine named, round robin."""
    pg: PostgresServer | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bulk"))
    try:
        if "postgresql" in names:
            bin_dir = binaries()
            if bin_dir is None:
                raise SystemExit("PostgreSQL is not installed")
            pg = PostgresServer(bin_dir)
            pg.start()
        count = 0

        def make(name: str) -> Engine:
            nonlocal count
            count += 1
            if name == "sqlite":
                return SqliteStore.open(tmp / f"q{count}.db")
            from queued.store.postgres import PostgresStore

            assert pg is not None
            return PostgresStore.open(pg.url(pg.create_database()))

        make.pg = pg  # type: ignore[attr-defined]
        yield make  # type: ignore[misc]
    finally:
        if pg is not None:
            pg.close()


def close(engine: Engine) -> None:
    closing = getattr(engine, "close", None)
    if closing is not None:
        closing()
    else:
        engine.conn.close()  # type: ignore[attr-defined]


def timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def bulk(engine: Engine, size: int, verbose: bool = False) -> dict[str, float]:
    """Seconds of each bulk change of `size` pending jobs."""
    store = Direct(engine)
    store.recover(3600.0, T0)  # as a daemon's start: the default queue
    template = new("true")
    ids = store.add_jobs([template] * size, T0)
    seconds: dict[str, float] = {}

    def step(op: str, call: Callable[[], object]) -> None:
        seconds[op] = timed(call)
        if verbose:
            print(f"  {op} {size}: {seconds[op]:.3f}s", flush=True)

    step("cancel", lambda: store.cancel_what_can(ids, T0 + 1))
    step("retry", lambda: store.retry(ids, False, T0 + 2))
    step("hold", lambda: store.hold(ids, T0 + 3))
    step("release", lambda: store.release(ids, T0 + 4))
    step("cancel again", lambda: store.cancel_what_can(ids, T0 + 5))
    half = ids[: size // 2]
    step("rm", lambda: store.remove(half))
    step("clean", lambda: store.clean(["canceled"], None))
    assert store.counts().get("canceled", 0) == 0, store.counts()
    return seconds


def at_scale(name: str, make: Callable[[str], Engine], jobs: int, root: Path) -> None:
    """`clean`, `dlq purge` and `ls` with filters over `jobs` finished jobs
    (completed over the last 30 days, as B5 loads them; a tenth labeled)."""
    engine = make(name)
    if name == "sqlite":
        from benches import load_finished

        db = Path(engine.conn.execute("PRAGMA database_list").fetchone()[2])  # type: ignore[attr-defined]
        close(engine)
        loaded = load_finished(db, jobs, root)
        engine = SqliteStore.open(db)
    else:
        from pg_store_benches import load_finished as load_pg

        url = engine.url  # type: ignore[attr-defined]
        close(engine)
        loaded = load_pg(url, jobs)
        from queued.store.postgres import PostgresStore

        engine = PostgresStore.open(url)
    print(f"{name:10} {jobs} finished jobs loaded in {loaded:.1f}s", flush=True)
    store = Direct(engine)
    now = time.time()
    day = 86400.0
    try:

        def show(what: str, call: Callable[[], object], runs: int = 3) -> object:
            times, result = [], None
            for _ in range(runs):
                t0 = time.perf_counter()
                result = call()
                times.append(time.perf_counter() - t0)
            shown = result if isinstance(result, int) else len(result) if isinstance(result, list) else ""
            print(f"{name:10} {what:48} {min(times) * 1e3:9.1f} ms  ({shown})", flush=True)
            return result

        terminal = list(lifecycle.TERMINAL_STATES)
        show("clean --older-than 31d (removes none)", lambda: store.clean(terminal, now - 31 * day)[0])
        show("clean --state dead --older-than 31d", lambda: store.clean(["dead"], now - 31 * day)[0])
        show("dlq purge (no dead job)", lambda: store.clean(["dead"], None)[0])
        show("ls --state dead --limit 50 (none)", lambda: store.list_jobs(states=["dead"], limit=50))
        show("ls --state completed --limit 50", lambda: store.list_jobs(states=["completed"], limit=50))
        show("ls --label nightly --limit 50", lambda: store.list_jobs(label="nightly", limit=50))
        show("ls --queue default --limit 50", lambda: store.list_jobs(queue="default", limit=50))
        show("ls --label none --limit 50", lambda: store.list_jobs(label="none", limit=50))
        show("ls --command 'item 99999' --limit 50", lambda: store.list_jobs(command="item 99999", limit=50))
        show(
            "ls --since 1d --limit 50",
            lambda: store.list_jobs(created_after=now - day, limit=50),
        )
        show(
            "clean --older-than 29.9d (removes 1/300)", lambda: store.clean(terminal, now - 29.9 * day)[0], 1
        )
        show("clean --older-than 29d (removes 1/30)", lambda: store.clean(terminal, now - 29 * day)[0], 1)
        # A tenth dead, as a dead-letter queue grown over a month.
        conn = engine.conn  # type: ignore[attr-defined]
        tenth = [j.id for j in store.list_jobs(label="nightly")]
        with store.transaction():
            for start in range(0, len(tenth), 900):
                batch = tenth[start : start + 900]
                marks = ",".join(["?" if name == "sqlite" else "%s"] * len(batch))
                conn.execute(f"UPDATE jobs SET state = 'dead' WHERE id IN ({marks})", batch)
        show(f"dlq purge ({len(tenth)} dead)", lambda: store.clean(["dead"], None)[0], 1)
    finally:
        close(engine)


def through_daemon(name: str, size: int, root: Path, pg: PostgresServer | None) -> None:
    """`cancel`, `retry` and `rm` of `size` jobs at once as queuectl sends
    them: a real daemon (its writer, its news), one request each, timed at
    the SDK."""
    from harness import Daemon

    extra = ["--store", pg.url(pg.create_database())] if pg is not None else []
    with Daemon(root, extra=extra) as daemon, daemon.client() as client:
        client.pause("default")
        ids = client.add_many([JobSpec(command="true") for _ in range(size)])
        for what, call in (
            ("cancel", lambda: client.cancel(*ids)),
            ("retry", lambda: client.retry(*ids)),
            ("cancel again", lambda: client.cancel(*ids)),
            ("rm", lambda: client.remove(*ids)),
        ):
            t0 = time.perf_counter()
            call()
            print(f"{name:10} {size:>7}  queuectl {what}: {time.perf_counter() - t0:.3f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--scale", type=int, help="clean, dlq purge and ls over this many finished jobs")
    parser.add_argument("--daemon", action="store_true", help="cancel, retry and rm through a real daemon")
    parser.add_argument("-v", "--verbose", action="store_true", help="each step as it ends")
    parser.add_argument("--only", default=",".join(OPERATIONS), help="operations to show")
    args = parser.parse_args()
    names = args.engines.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.daemon:
        with engines(names) as make, tempfile.TemporaryDirectory() as root:
            pg = make.pg  # type: ignore[attr-defined]
            for name in names:
                for size in sizes:
                    where = Path(root) / f"{name}{size}"
                    through_daemon(name, size, where, pg if name == "postgresql" else None)
        return
    with engines(names) as make:
        if args.scale:
            for name in names:
                with tempfile.TemporaryDirectory() as root:
                    at_scale(name, make, args.scale, Path(root))  # type: ignore[arg-type]
            return
        for name in names:
            for size in sizes:
                engine = make(name)  # type: ignore[call-arg]
                try:
                    seconds = bulk(engine, size, args.verbose)
                finally:
                    close(engine)
                shown = "  ".join(
                    f"{op} {seconds[op]:.3f}s ({seconds[op] / size * 1e6:.0f}us/job)"
                    for op in OPERATIONS
                    if op in args.only.split(",")
                )
                print(f"{name:10} {size:>7}  {shown}", flush=True)


if __name__ == "__main__":
    main()
