"""Resources end to end: GPUs found by a fake `nvidia-smi` on PATH, jobs
with `--needs gpu=1` on disjoint devices, `--slots 2` alone on a 2-slot
node, the anti-starvation rule, and nvidia-smi misbehaving (hanging,
garbage, exit 9): the daemon starts with no GPUs and says why."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon

TWO_GPUS = (
    "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-00000000-0000-0000-0000-000000000000)\n"
    "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-0000-0000-0000-000000000000)\n"
)


def with_fake_smi(root: Path, body: str, *extra: str, concurrency: int = 4) -> Daemon:
    """A daemon whose PATH finds `nvidia-smi` running `body` first."""
    tools = root / "tools"
    tools.mkdir(parents=True)
    smi = tools / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + body)
    smi.chmod(0o755)
    daemon = Daemon(root, *extra)
    daemon.flags = ["--data-dir", str(daemon.data_dir), "--concurrency", str(concurrency)]
    daemon.env["PATH"] = f"{tools}:{daemon.env['PATH']}"
    return daemon


def span_job(record: Path, name: str, seconds: float) -> str:
    """A command writing its start, CUDA_VISIBLE_DEVICES and end to `record`."""
    return (
        f'echo "start {name} $(date +%s.%N) ${{CUDA_VISIBLE_DEVICES-unset}}" >> {record}; '
        f'sleep {seconds}; echo "end {name} $(date +%s.%N)" >> {record}'
    )


def spans(record: Path) -> dict[str, tuple[float, float, str]]:
    """name -> (start, end, CUDA_VISIBLE_DEVICES) from a record."""
    starts: dict[str, tuple[float, str]] = {}
    ends: dict[str, float] = {}
    for line in record.read_text().splitlines():
        kind, name, at, *rest = line.split(" ")
        if kind == "start":
            starts[name] = (float(at), rest[0] if rest else "")
        else:
            ends[name] = float(at)
    return {name: (at, ends[name], seen) for name, (at, seen) in starts.items()}


def overlap(a: tuple[float, float, str], b: tuple[float, float, str]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture
def gpu_node(tmp_path: Path):
    node = with_fake_smi(tmp_path, f"cat <<'EOF'\n{TWO_GPUS}EOF\n").start()
    try:
        yield node
    finally:
        node.stop()


def test_gpu_jobs_get_disjoint_devices_while_they_overlap(gpu_node: Daemon, tmp_path: Path) -> None:
    record = tmp_path / "record"
    ids = [gpu_node.add("--needs", "gpu=1", span_job(record, f"g{i}", 1.0)) for i in range(3)]
    plain = gpu_node.add(span_job(record, "plain", 0.2))
    gpu_node.ok("wait", *map(str, [*ids, plain]))
    seen = spans(record)
    g0, g1, g2 = seen["g0"], seen["g1"], seen["g2"]
    assert overlap(g0, g1)  # two GPUs: the first two ran together...
    assert {g0[2], g1[2]} == {"0", "1"}  # ...each on its own
    assert not overlap(g2, g0) or not overlap(g2, g1)  # the third waited for one
    assert g2[2] in ("0", "1")
    assert seen["plain"][2] == ""  # no GPU held: none visible
    shown = json.loads(gpu_node.ok("show", "--json", str(ids[0])))
    assert shown["runs"][-1]["gpus"] in ([0], [1])
    assert "gpu=0,1" in gpu_node.log.read_text()  # the start's log line says what it found


def test_a_two_slot_job_runs_alone_on_a_two_slot_node(tmp_path: Path) -> None:
    record = tmp_path / "record"
    node = Daemon(tmp_path, "--resources", "gpu=0")  # --concurrency 2
    node.start()
    try:
        before = [node.add(span_job(record, f"a{i}", 0.3)) for i in range(3)]
        big = node.add("--slots", "2", span_job(record, "big", 0.5))
        after = [node.add(span_job(record, f"b{i}", 0.3)) for i in range(3)]
        node.ok("wait", *map(str, [*before, big, *after]))
    finally:
        node.stop()
    seen = spans(record)
    for name, span in seen.items():
        if name != "big":
            assert not overlap(span, seen["big"]), (name, span, seen["big"])


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones(tmp_path: Path) -> None:
    record = tmp_path / "record"
    node = Daemon(tmp_path, "--resources", "gpu=0", "--starvation-patience", "2")
    node.start()
    try:
        first = node.add(span_job(record, "first", 1.5))
        big = node.add("--slots", "2", span_job(record, "big", 0.1))
        # Small jobs behind it, more than the slots can run before its
        # patience is out: without the rule one of them always holds a slot.
        stream = tmp_path / "stream"
        stream.write_text("".join(span_job(record, f"s{i}", 0.5) + "\n" for i in range(16)))
        small = [int(line) for line in node.ok("add", "--quiet", "--from", str(stream)).split()]
        node.ok("wait", *map(str, [first, big, *small]))
    finally:
        node.stop()
    seen = spans(record)
    big_span = seen["big"]
    # Smaller jobs filled the gap first (backfill)...
    assert any(seen[f"s{i}"][0] < big_span[0] for i in range(16))
    # ...but it did not wait for them all: once it had waited its patience it
    # held the slot freed, and ran before the rest.
    assert sum(1 for i in range(16) if seen[f"s{i}"][0] > big_span[1]) >= 3
    for name, span in seen.items():
        if name != "big":
            assert not overlap(span, big_span), name


@pytest.mark.parametrize(
    ("body", "warning"),
    [
        ("sleep 60\n", "nvidia-smi -L did not answer within 5 s: no GPUs are used"),
        ("head -c 2000 /dev/urandom\n", "printed no GPU line we understand: no GPUs are used"),
        ("echo 'Failed to initialize NVML: Driver/library version mismatch' >&2; exit 9\n", "exit 9"),
    ],
    ids=["hangs", "garbage", "exit-9"],
)
def test_a_misbehaving_nvidia_smi_leaves_no_gpus_and_the_daemon_starts(
    tmp_path: Path, body: str, warning: str
) -> None:
    node = with_fake_smi(tmp_path, body)
    began = time.monotonic()
    node.start()
    try:
        assert time.monotonic() - began < 15
        assert warning in node.log.read_text()
        refused = node.ctl("add", "--needs", "gpu=1", "true")
        assert refused.returncode == 1
        assert refused.stderr == (
            "queuectl: needs gpu=1 but this daemon has no gpu; start queued with --resources gpu=N\n"
        )
        assert node.ctl("wait", str(node.add("true"))).returncode == 0
    finally:
        node.stop()


def test_what_a_daemon_lacks_is_refused_at_add(tmp_path: Path) -> None:
    node = Daemon(tmp_path, "--resources", "gpu=2,licence=1").start()
    try:
        cases = {
            ("--needs", "gpu=3"): "needs gpu=3 but this daemon has gpu=2",
            (
                "--needs",
                "tpu=1",
            ): "needs tpu=1 but this daemon has no tpu; start queued with --resources tpu=N",
            ("--slots", "3"): "takes 3 slots but this daemon has 2",
        }
        for args, reason in cases.items():
            refused = node.ctl("add", *args, "true")
            assert refused.returncode == 1, args
            assert refused.stderr.startswith(f"queuectl: {reason}"), refused.stderr
            assert refused.stderr.count("\n") == 1
        refused = node.ctl("schedule", "add", "nightly", "@daily", "--needs", "gpu=3", "--", "true")
        assert (refused.returncode, refused.stderr) == (
            1,
            "queuectl: needs gpu=3 but this daemon has gpu=2\n",
        )
        assert json.loads(node.ok("ls", "--json")) == []  # nothing was added
        assert node.ctl("wait", str(node.add("--needs", "gpu=2,licence=1", "true"))).returncode == 0
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("gpu=1025", "invalid count '1025' for gpu: at most 1,024"),
        ("licence=99999999", "invalid count '99999999' for licence"),
        ("gpu=-1", "invalid count '-1' for gpu"),
        ("slots=2", "'slots' is not a resource"),
    ],
)
def test_bad_resources_stop_the_start_in_one_line(tmp_path: Path, value: str, reason: str) -> None:
    node = Daemon(tmp_path, "--resources", value)
    node.start(wait=False)
    assert node.process is not None
    assert node.process.wait(timeout=30) == 1
    said = node.log.read_text()
    assert said.startswith("queued: ") and reason in said and said.count("\n") == 1, said


def test_many_counted_resources_are_fine(tmp_path: Path) -> None:
    node = Daemon(tmp_path, "--resources", "gpu=1024,seat=1000000").start()
    try:
        job = node.add("--needs", "gpu=1024,seat=1000000", "echo $CUDA_VISIBLE_DEVICES | tr , '\\n' | wc -l")
        assert node.ctl("wait", str(job)).returncode == 0
        assert node.ok("logs", str(job)).strip() == "1024"
    finally:
        node.stop()


def test_on_postgresql_gpu_jobs_run_only_on_the_node_with_a_gpu(tmp_path: Path, request) -> None:
    pytest.importorskip("psycopg")
    url = request.getfixturevalue("postgres_url")
    nodes = []
    try:
        for name, extra in (("plain", ()), ("gpu", ("--resources", "gpu=1"))):
            node = Daemon(tmp_path / name, "--store", url, "--node", name, *extra)
            node.flags = ["--data-dir", str(node.data_dir), "--concurrency", "2"]
            nodes.append(node.start())
        plain = nodes[0]
        record = tmp_path / "record"
        # Added on the node without a GPU: accepted, it waits for the other.
        ids = [plain.add("--needs", "gpu=1", span_job(record, f"g{i}", 0.3)) for i in range(3)]
        others = [plain.add(span_job(record, f"p{i}", 0.3)) for i in range(4)]
        plain.ok("wait", *map(str, [*ids, *others]))
        listed = {job["id"]: job for job in json.loads(plain.ok("ls", "--json"))}
        assert {listed[job_id]["node"] for job_id in ids} == {"gpu"}
        seen = spans(record)
        gpu_spans = [seen[f"g{i}"] for i in range(3)]
        assert all(span[2] == "0" for span in gpu_spans)
        # One GPU: never two GPU jobs at once.
        assert not any(overlap(a, b) for i, a in enumerate(gpu_spans) for b in gpu_spans[i + 1 :])
        # Pinned to the node without a GPU, it is refused as on SQLite.
        refused = plain.ctl("add", "--here", "--needs", "gpu=1", "true")
        assert refused.returncode == 1
        assert "needs gpu=1 but this daemon has no gpu" in refused.stderr
    finally:
        for node in nodes:
            node.stop()
