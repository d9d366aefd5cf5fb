"""The charts and the history behind them and /metrics (queued.web.live, charts, metrics)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from prometheus_client.parser import text_string_to_metric_families

from queued.protocol import QueueInfo
from queued.store.reports import EndedAttempt
from queued.web import charts
from queued.web.live import Histogram, History
from queued.web.metrics import Facts, exposition

NOW = 1_800_000_000.0


def ended(
    at: float, job: int, outcome: str = "completed", waited: float | None = 0.01, ran: float = 1.0
) -> EndedAttempt:
    return EndedAttempt(at, job, 1, "default", outcome, waited, ran)


def test_history_counts_each_attempt_once_across_overlapping_reads() -> None:
    history = History(started_at=NOW - 100)
    history.add([ended(NOW - 200, 1), ended(NOW - 50, 2), ended(NOW - 2, 3)], NOW)
    # The next read overlaps the last LATE_RECORDS seconds, and brings one late record.
    history.add([ended(NOW - 2, 3), ended(NOW - 1, 4, "failed"), ended(NOW + 5, 5)], NOW + 10)
    assert [a.job_id for a in history.attempts] == [1, 2, 3, 4, 5]
    # Counters start with the daemon: job 1 ended before it.
    assert history.ended == {("default", "completed"): 3, ("default", "failed"): 1}
    assert history.run_time.counts[-1] == 0 and sum(history.run_time.counts) == 4


def test_history_forgets_what_is_older_than_a_day() -> None:
    history = History(started_at=0)
    history.add([ended(NOW - 90_000, 1), ended(NOW - 10, 2)], NOW)
    assert [a.job_id for a in history.attempts] == [2]


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 5):
        histogram.observe(value)
    assert histogram.buckets() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert histogram.total == 6.25


def test_charts_are_svg_with_a_bar_per_outcome_and_lines_for_latency() -> None:
    attempts = [ended(NOW - 30, 1), ended(NOW - 30, 2, "failed"), ended(NOW - 90, 3, waited=None, ran=120)]
    svg = charts.throughput_svg(attempts, NOW, "hour")
    root = ET.fromstring(svg)
    bars = [
        e
        for e in root.iter("{http://www.w3.org/2000/svg}rect")
        if e.find("{http://www.w3.org/2000/svg}title") is not None
    ]
    titles = sorted(b.find("{http://www.w3.org/2000/svg}title").text for b in bars)
    assert titles == ["1 completed", "1 completed", "1 failed"]  # two minutes, one stacked
    assert "style" not in svg  # the page's CSP allows no inline style
    latency = ET.fromstring(charts.latency_svg(attempts, NOW, "day"))
    assert latency.find("{http://www.w3.org/2000/svg}title").text.startswith("Wait and run time")
    assert charts.quantile([3, 1, 2], 0.5) == 2 and charts.quantile([], 0.5) is None


def test_empty_charts_still_draw_their_frame() -> None:
    for draw in (charts.throughput_svg, charts.latency_svg):
        ET.fromstring(draw([], NOW, "hour"))


def test_metrics_parse_back() -> None:
    history = History(started_at=0)
    history.add([ended(NOW - 5, 1), ended(NOW - 4, 2, "failed", waited=0.2, ran=3)], NOW)
    facts = Facts(
        version="9.9",
        started_at=NOW - 60,
        counts={("default", "pending"): 4, ("default", "failed"): 1, ("batch", "running"): 2},
        queues=[
            QueueInfo(name="default", concurrency=None, paused=False),
            QueueInfo(name="batch", concurrency=2, paused=True),
        ],
        running=2,
        concurrency=8,
        accepting=True,
        history=history,
    )
    families = {f.name: f for f in text_string_to_metric_families(exposition(facts).decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("queued_jobs", (("queue", "default"), ("state", "pending")))] == 4
    assert samples[("queued_queue_depth", (("queue", "default"),))] == 5
    assert samples[("queued_queue_concurrency", (("queue", "batch"),))] == 2
    assert samples[("queued_queue_paused", (("queue", "batch"),))] == 1
    assert samples[("queued_slots", ())] == 8 and samples[("queued_running_attempts", ())] == 2
    assert samples[("queued_attempts_ended_total", (("outcome", "failed"), ("queue", "default")))] == 1
    assert samples[("queued_dispatch_delay_seconds_count", ())] == 2
    assert samples[("queued_run_time_seconds_sum", ())] == 4
    assert "process_cpu_seconds" in families


async def test_live_reads_once_per_change_for_all_viewers_and_nothing_unwatched(
    autojump_clock: object,
) -> None:
    import trio

    from queued.web.live import MIN_INTERVAL, Live

    reads = 0
    change = trio.Event()

    def next_change() -> trio.Event:
        nonlocal change
        if change.is_set():
            change = trio.Event()
        return change

    async def read() -> dict[str, int]:
        nonlocal reads
        reads += 1
        return {"reads": reads}

    live = Live(next_change, read)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live.run)
        await trio.sleep(10)
        assert reads == 0  # no one watches: no read
        first, second = live.watch(), live.watch()
        version, snapshot = await live.next(first)
        assert (await live.next(second)) == (version, snapshot) and reads == 1  # one read for both
        for _ in range(5):  # a burst of changes within MIN_INTERVAL
            change.set()
            await trio.sleep(MIN_INTERVAL / 10)
        newer, _ = await live.next(version)
        await trio.sleep(10)
        assert reads == 2 and newer == version + 1  # coalesced into one update
        live.unwatch()
        live.unwatch()
        change.set()
        await trio.sleep(10)
        assert reads == 2  # no one watches: the change is not read
        before = reads
        returning = live.watch()  # the snapshot is stale: a fresh one comes at once
        assert returning == live.version
        await live.next(returning)
        assert reads == before + 1
        nursery.cancel_scope.cancel()
