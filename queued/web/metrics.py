"""/metrics in Prometheus's text format, through prometheus_client's
exposition with a collector of our own: the facts are read (asynchronously,
on the web's read connection) before the exposition runs, and the collector
only turns them into metric families, so nothing here starts a thread or
keeps a global registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from queued import lifecycle
from queued.protocol import QueueInfo
from queued.web.live import History

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Facts:
    """What one scrape reports, read just before it."""

    version: str
    started_at: float
    counts: dict[tuple[str, str], int]  # (queue, state) -> jobs
    queues: list[QueueInfo]
    running: int
    concurrency: int
    accepting: bool
    history: History
    streams: int = 0
    connections: int = 0
    reads: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class FactsCollector:
    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        f = self.facts
        yield InfoMetricFamily("queued", "The daemon's version", value={"version": f.version})
        started = GaugeMetricFamily("queued_start_time_seconds", "When this daemon started (Unix time)")
        started.add_metric([], f.started_at)
        yield started
        jobs = GaugeMetricFamily("queued_jobs", "Jobs by queue and state", labels=["queue", "state"])
        queue_names = sorted({q.name for q in f.queues} | {queue for queue, _ in f.counts})
        for queue in queue_names:
            for state in lifecycle.STATES:
                jobs.add_metric([queue, state], f.counts.get((queue, state), 0))
        yield jobs
        depth = GaugeMetricFamily(
            "queued_queue_depth",
            "Jobs waiting to run in each queue (pending or awaiting a retry)",
            labels=["queue"],
        )
        limit = GaugeMetricFamily(
            "queued_queue_concurrency",
            "Each queue's own limit of running jobs (absent: none)",
            labels=["queue"],
        )
        paused = GaugeMetricFamily("queued_queue_paused", "1 while a queue is paused", labels=["queue"])
        for queue in f.queues:
            depth.add_metric(
                [queue.name], sum(f.counts.get((queue.name, s), 0) for s in lifecycle.WAITING_STATES)
            )
            if queue.concurrency is not None:
                limit.add_metric([queue.name], queue.concurrency)
            paused.add_metric([queue.name], int(queue.paused))
        yield depth
        yield limit
        yield paused
        running = GaugeMetricFamily("queued_running_attempts", "Attempts running now")
        running.add_metric([], f.running)
        yield running
        slots = GaugeMetricFamily("queued_slots", "Job slots in all (the concurrency)")
        slots.add_metric([], f.concurrency)
        yield slots
        accepting = GaugeMetricFamily(
            "queued_accepting", "1 while the daemon accepts jobs (0: shutting down)"
        )
        accepting.add_metric([], int(f.accepting))
        yield accepting
        h = f.history
        ended = CounterMetricFamily(
            "queued_attempts_ended",
            "Attempts ended since this daemon started, by queue and outcome",
            labels=["queue", "outcome"],
        )
        for (queue, outcome), n in sorted(h.ended.items()):
            ended.add_metric([queue, outcome], n)
        yield ended
        delay = HistogramMetricFamily(
            "queued_dispatch_delay_seconds", "From a job's due time to its attempt's start (attempts ended)"
        )
        delay.add_metric([], h.delay.buckets(), h.delay.total)
        yield delay
        run_time = HistogramMetricFamily("queued_run_time_seconds", "How long attempts ran")
        run_time.add_metric([], h.run_time.buckets(), h.run_time.total)
        yield run_time
        commits = CounterMetricFamily("queued_store_commits", "Transactions the store's writer committed")
        commits.add_metric([], f.commits)
        yield commits
        commit_time = CounterMetricFamily(
            "queued_store_commit_seconds", "Seconds the writer's COMMITs took (the fsync), in all"
        )
        commit_time.add_metric([], f.commit_seconds)
        yield commit_time
        streams = GaugeMetricFamily("queued_web_streams", "Live streams the web page holds open")
        streams.add_metric([], f.streams)
        yield streams
        connections = GaugeMetricFamily("queued_web_connections", "HTTP connections the web page holds open")
        connections.add_metric([], f.connections)
        yield connections
        reads = CounterMetricFamily("queued_web_reads", "Reads on the web's own database connection")
        reads.add_metric([], f.reads)
        yield reads
        for name, value in sorted(f.extra.items()):
            gauge = GaugeMetricFamily(name, name.replace("_", " "))
            gauge.add_metric([], value)
            yield gauge


def exposition(facts: Facts) -> bytes:
    """The text of one scrape (the process's own metrics included, read from /proc)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactsCollector(facts))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return generate_latest(registry)
