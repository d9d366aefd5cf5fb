"""The web page's figures (issue #13), apart from run.py's suite:

W1  B1's drain (10,000 `true` jobs, 2 slots) with `--http` and 32 live
    streams open, against the same drain without the page, interleaved run
    by run: the ratio must stay >= 0.97.
W2  GET /api/jobs (50 a page) at 1,000,000 jobs: p50 and p99, newest page,
    a page far back (`before`), a label filter and a state filter (target
    p50 <= 20 ms).
W3  Requests/s of the JSON API (/api/status and /api/jobs), 4 clients: the
    page's pace (100 a second, bursts of 50) caps it; the daemon's CPU per
    request (all its threads, from /proc) says what a request costs it.
W6  B6's timer lateness (200 delayed jobs over 5 s) while 2 clients keep
    asking /api/jobs as fast as they are answered, against B6 without them,
    interleaved run by run; medians of the runs' p50 and p99.

  python tests/bench/web.py [--quick] [--only W1,W2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import benches
from harness import Daemon, compile_c, cpu_seconds, machine, median, percentile

from queued.protocol import JobSpec


def url_of(daemon: Daemon) -> str:
    with daemon.client() as client:
        web = client.status().web
    assert web is not None, "the daemon serves no page"
    return web.rstrip("/")


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read()


class Streams:
    """`count` open /api/events streams, read by one thread as a browser would."""

    def __init__(self, url: str, count: int) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.selector = selectors.DefaultSelector()
        self.bytes = 0
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    self.bytes += len(key.fileobj.recv(65536))  # type: ignore[union-attr]
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.socks:
            sock.close()


def w1_drain(root: Path, jobs: int, streams: int) -> dict[str, float]:
    """One B1 drain with the page on and `streams` live streams open."""
    daemon = Daemon(root, extra=("--http", "127.0.0.1:0")).start()
    try:
        watchers = Streams(url_of(daemon), streams)
        try:
            with daemon.client(timeout=None) as client:
                client.pause("default")
                client.add_many([JobSpec(command="true")] * jobs)
                t0 = time.time()
                client.resume("default")
                client.wait()
                t1 = time.time()
        finally:
            watchers.close()
    finally:
        daemon.stop()
    return {"wall_rate": jobs / (t1 - t0), "stream_bytes": watchers.bytes}


def w2_latency(root: Path, jobs: int, requests: int) -> dict[str, float]:
    daemon = Daemon(root, extra=("--http", "127.0.0.1:0"))
    daemon.data.mkdir(parents=True, exist_ok=True)
    daemon.start()
    daemon.stop()  # the schema exists now
    benches.load_finished(daemon.data / "queue.db", jobs, daemon.data)
    daemon.start()
    try:
        base = url_of(daemon)
        figures = {}
        for name, path in (
            ("newest", "/api/jobs"),
            ("far_back", f"/api/jobs?before={jobs // 10}"),
            ("label", "/api/jobs?label=nightly"),
            ("state", "/api/jobs?state=completed&queue=default"),
        ):
            get(base + path)
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                body = get(base + path)
                times.append(time.perf_counter() - t0)
            if len(json.loads(body)["jobs"]) != 50:
                raise RuntimeError(f"W2: {path} did not answer 50 jobs")
            figures[f"{name}_p50_ms"] = percentile(times, 50) * 1e3
            figures[f"{name}_p99_ms"] = percentile(times, 99) * 1e3
        # The charts and /metrics read the attempts of the last day (a scan of
        # the attempts table the first time, then only what ended since).
        for name, path in (("metrics_first", "/metrics"), ("chart_day", "/charts/throughput.svg?range=day")):
            t0 = time.perf_counter()
            get(base + path)
            figures[f"{name}_ms"] = (time.perf_counter() - t0) * 1e3
        return figures
    finally:
        daemon.stop()


def w3_throughput(root: Path, seconds: float, clients: int) -> dict[str, float]:
    with Daemon(root, extra=("--http", "127.0.0.1:0")) as daemon:
        with daemon.client() as client:
            client.add_many([JobSpec(command="true", hold=True)] * 1000)
        base = url_of(daemon)
        figures = {}
        for name, path in (("status", "/api/status"), ("jobs", "/api/jobs")):
            done = [0] * clients
            stop = time.monotonic() + seconds

            def ask(index: int, path: str = path, stop: float = stop, done: list[int] = done) -> None:
                while time.monotonic() < stop:
                    get(base + path)
                    done[index] += 1

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
            cpu = cpu_seconds(daemon.pid)
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            figures[f"{name}_per_s"] = sum(done) / seconds
            figures[f"{name}_cpu_ms"] = (cpu_seconds(daemon.pid) - cpu) / sum(done) * 1e3
        return figures


class Load:
    """`clients` threads asking /api/jobs as fast as they are answered."""

    def __init__(self, base: str, clients: int) -> None:
        self.stop = threading.Event()
        self.count = 0
        self.refused = 0
        self.threads = [threading.Thread(target=self._ask, args=(base,), daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _ask(self, base: str) -> None:
        while not self.stop.is_set():
            try:
                get(base + "/api/jobs")
                self.count += 1
            except urllib.error.HTTPError as error:  # 429: the web's share is used up
                error.close()
                self.refused += 1

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def w6_lateness(root: Path, stamp: Path, delays: list[float], load: bool) -> list[float]:
    stamps = root / "stamps"
    stamps.mkdir(parents=True)
    with Daemon(root, extra=("--http", "127.0.0.1:0")) as daemon:
        pressure = Load(url_of(daemon), 2) if load else None
        cpu = cpu_seconds(daemon.pid)
        try:
            with daemon.client(timeout=None) as client:
                specs = [JobSpec(command=f"{stamp} {stamps / str(i)}", delay=d) for i, d in enumerate(delays)]
                ids = client.add_many(specs)
                due = {job.id: job.run_at for job in client.list(ids=ids)}
                client.wait(*ids)
        finally:
            cpu = cpu_seconds(daemon.pid) - cpu
            said = "no API load"
            if pressure is not None:
                pressure.close()
                said = f"{pressure.count} API answers, {pressure.refused} refused (429)"
            print(f"  W6 {said}: the daemon's CPU {cpu:.2f} s")
    lateness = []
    for i, job_id in enumerate(ids):
        started = float((stamps / str(i)).read_text())
        lateness.append(started - due[job_id])
    return lateness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--only", default="W1,W2,W3,W6")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    only = set(args.only.split(","))
    runs = 1 if args.quick else 3
    results: dict[str, object] = {"machine": machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="qweb-") as tmp:
        root = Path(tmp)
        if "W1" in only:
            jobs = 1000 if args.quick else 10_000
            plain, paged = [], []
            for run in range(runs):
                plain.append(benches.b1_ours(root / f"w1-plain-{run}", jobs)["wall_rate"])
                paged.append(w1_drain(root / f"w1-page-{run}", jobs, 32)["wall_rate"])
            results["W1"] = {"jobs": jobs, "without_page": plain, "with_32_streams": paged}
            print(
                f"W1 drain jobs/s: without the page {median(plain):.0f}, with 32 streams {median(paged):.0f}"
                f" (ratio {median(paged) / median(plain):.3f}, target >= 0.97)"
            )
        if "W2" in only:
            jobs = 100_000 if args.quick else 1_000_000
            figures = w2_latency(root / "w2", jobs, 50 if args.quick else 300)
            results["W2"] = {"jobs": jobs, **figures}
            print(
                f"W2 /api/jobs at {jobs:,} jobs (ms): "
                + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            )
        if "W3" in only:
            figures = w3_throughput(root / "w3", 3 if args.quick else 10, 4)
            results["W3"] = figures
            print(
                "W3 requests/s, 4 clients, and the daemon's CPU ms per request: "
                + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            )
        if "W6" in only:
            stamp = compile_c("stamp", root)
            assert stamp is not None, "W6 needs cc"
            delays = benches.b6_delays(200, 5.0, 6)
            quiet: list[list[float]] = []
            loaded: list[list[float]] = []
            for run in range(runs):
                quiet.append(w6_lateness(root / f"w6-quiet-{run}", stamp, delays, load=False))
                loaded.append(w6_lateness(root / f"w6-load-{run}", stamp, delays, load=True))
                print(
                    f"  W6 run {run + 1}: quiet p50 {percentile(quiet[-1], 50) * 1e3:.1f} p99 "
                    f"{percentile(quiet[-1], 99) * 1e3:.1f}, loaded p50 {percentile(loaded[-1], 50) * 1e3:.1f} "
                    f"p99 {percentile(loaded[-1], 99) * 1e3:.1f} ms"
                )
            results["W6"] = {
                f"{name}_{q}_ms": median([percentile(r, int(q[1:])) for r in runs_of]) * 1e3
                for name, runs_of in (("quiet", quiet), ("loaded", loaded))
                for q in ("p50", "p99")
            }
            print("W6 timer lateness (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in results["W6"].items()))  # type: ignore[union-attr]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
