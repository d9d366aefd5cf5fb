"""The wire protocol: Structs, framing and validation, without sockets."""

from __future__ import annotations

import re
import struct
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queued import protocol as p

JOB = p.Job(
    id=7,
    command="echo hi",
    state="failed",
    queue="default",
    priority=-1,
    label="nightly",
    attempts=2,
    max_retries=3,
    backoff_base=2.0,
    timeout=30.0,
    exit_code=1,
    run_at=1_700_000_010.5,
    created_at=1_700_000_000.0,
    updated_at=1_700_000_005.25,
    depends_on=[3, 4],
    cwd="/tmp",
    error="exited with status 1",
)
RUN = p.Run(
    attempt=1,
    pid=4242,
    started_at=1.0,
    ended_at=2.5,
    exit_code=None,
    signal=9,
    error="killed by SIGKILL",
    stdout_path="/var/lib/queued/logs/7.1.out",
    stderr_path=None,
)
QUEUE = p.QueueInfo(name="batch", concurrency=2, paused=True, running=1, pending=5)

REQUESTS: list[p.Request] = [
    p.Hello(protocol=p.PROTOCOL_VERSION, client="queuectl 0.1"),
    p.AddJobs(
        jobs=[
            p.JobSpec(command="true"),
            p.JobSpec(
                command="make -j4",
                queue="build",
                priority=3,
                max_retries=0,
                backoff_base=1.5,
                timeout=60.0,
                delay=5.0,
                after=[1, 2],
                label="ci",
                cwd="/src",
                env={"CC": "gcc"},
            ),
            p.JobSpec(command="later", run_at=1_800_000_000.0),
            p.JobSpec(command="train", slots=2, needs={"gpu": 1, "licence": 1}),
        ],
        cwd="/home/u",
        env={"PATH": "/usr/bin", "EMPTY": ""},
    ),
    p.GetJob(id=1),
    p.ListJobs(),
    p.ListJobs(states=["pending", "dead"], queue="q", label="l", ids=[1, 2], limit=10),
    p.CancelJobs(ids=[1, 2, 3]),
    p.RemoveJobs(ids=[4]),
    p.RetryJobs(ids=[5], all_dead=True),
    p.WaitJobs(ids=[1], timeout=2.5),
    p.WaitJobs(),
    p.ReadLog(id=3, attempt=2, stream="stderr", offset=100, limit=4096),
    p.GetStatus(),
    p.ListWorkers(),
    p.ScaleWorkers(concurrency=8),
    p.AddQueue(name="gpu", concurrency=1),
    p.AddQueue(name="cpu"),
    p.RemoveQueue(name="gpu"),
    p.ListQueues(),
    p.PauseQueue(name="cpu", paused=False),
    p.PauseQueue(name="cpu", jobs=True),
    p.SetQueueConcurrency(name="gpu", concurrency=2),
    p.SetQueueConcurrency(name="gpu", concurrency=None),
    p.HoldJobs(ids=[1, 2]),
    p.ReleaseJobs(ids=[1]),
    p.EditJob(id=3, changes=p.JobChanges(command="make", priority=-1, no_timeout=True, label="")),
    p.EditJob(id=3, changes=p.JobChanges(slots=2, needs={})),
    p.RestartJob(id=3),
    p.RestartJob(id=3, changes=p.JobChanges(queue="gpu", delay=5.0), hold=True),
    p.PauseJobs(ids=[4]),
    p.PauseJobs(all=True, paused=False),
    p.SignalJobs(ids=[4], signal=10),
    p.GetConfig(),
    p.GetConfig(key="timeout"),
    p.SetConfig(key="timeout", value="5m"),
    p.CleanJobs(older_than=86400.0, states=["completed", "canceled"]),
    p.Shutdown(mode="now"),
    p.AddSchedule(
        schedule="backup",
        expression="30 2 * * *",
        job=p.JobSpec(command="./backup.sh", queue="cpu", max_retries=2, env={"A": "1"}),
        cwd="/srv",
        env={"PATH": "/usr/bin"},
        tz="Europe/Berlin",
        no_overlap=True,
        catch_up="all",
    ),
    p.AddSchedule(schedule="tick", expression="@every 1s", job=p.JobSpec(command="true"), cwd="/"),
    p.ListSchedules(),
    p.RemoveSchedule(schedule="backup"),
    p.PauseSchedule(schedule="backup"),
    p.PauseSchedule(schedule="backup", paused=False),
    p.RunSchedule(schedule="backup"),
]

RESPONSES: list[p.Response] = [
    p.Welcome(protocol=p.PROTOCOL_VERSION, version="0.1.0", pid=123),
    p.Error(code="not_found", message="no job 9"),
    p.Ok(),
    p.Ok(message="done"),
    p.Added(ids=[1, 2, 3]),
    p.JobDetail(job=JOB, runs=[RUN], env={"A": "1"}),
    p.JobList(jobs=[JOB, JOB]),
    p.JobList(jobs=[]),
    p.Changed(ids=[7]),
    p.Waited(jobs=[JOB], timed_out=True),
    p.LogChunk(attempt=1, data=b"\x00\xffbinary\n", offset=9, size=9, running=False, job_state="completed"),
    p.Status(
        version="0.1.0",
        pid=1,
        started_at=1.0,
        counts={"pending": 1, "running": 0},
        running=0,
        concurrency=4,
        accepting=True,
        queues=[QUEUE],
        data_dir="/var/lib/queued",
        socket="/run/queued.sock",
    ),
    p.Status(
        version="0.1.0",
        pid=1,
        started_at=1.0,
        counts={},
        running=1,
        concurrency=4,
        accepting=True,
        queues=[],
        data_dir="/d",
        socket="/s",
        resources={
            "a": p.Resources(
                slots=4, slots_used=2, counts={"licence": 1}, counts_used={}, gpus=[0, 1], gpus_used=[1]
            ),
            "b": p.Resources(slots=2),
        },
    ),
    p.Workers(
        concurrency=2,
        slots=[p.Slot(job_id=7, attempt=1, queue="default", pid=99, started_at=1.0, command="sleep 1")],
    ),
    p.Queues(queues=[QUEUE, p.QueueInfo(name="default", concurrency=None, paused=False)]),
    p.ConfigValues(values={"max-retries": 3, "backoff-base": 2.0, "timeout": None, "label": "x"}),
    p.Cleaned(count=4),
    p.Schedules(schedules=[]),
    p.Schedules(
        schedules=[
            p.ScheduleInfo(
                name="backup",
                expression="30 2 * * *",
                tz="Europe/Berlin",
                command="./backup.sh",
                queue="default",
                priority=0,
                max_retries=3,
                timeout=None,
                cwd="/srv",
                no_overlap=False,
                catch_up="one",
                paused=False,
                created_at=1.0,
                next_run=2.0,
                last_run=None,
                last_job_id=7,
                last_job_state="completed",
            )
        ]
    ),
]


def _union_members(union: object) -> set[type]:
    return set(typing.get_args(union))


def test_samples_cover_every_request_and_response_type() -> None:
    assert {type(r) for r in REQUESTS} == _union_members(p.AnyRequest)
    assert {type(r) for r in RESPONSES} == _union_members(p.AnyResponse)


def _through_buffer(frame: bytes) -> bytes:
    buffer = p.FrameBuffer()
    buffer.feed(frame)
    body = buffer.next_frame()
    assert body is not None
    assert buffer.next_frame() is None
    assert buffer.pending == 0
    return body


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_request_round_trip(request_: p.Request) -> None:
    frame = p.encode_frame(request_)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - p.HEADER_SIZE
    decoded = p.decode_request(_through_buffer(frame))
    assert type(decoded) is type(request_)
    assert decoded == request_


@pytest.mark.parametrize("response", RESPONSES, ids=lambda r: type(r).__name__)
def test_response_round_trip(response: p.Response) -> None:
    decoded = p.decode_response(_through_buffer(p.encode_frame(response)))
    assert type(decoded) is type(response)
    assert decoded == response


def test_float_config_value_stays_float() -> None:
    decoded = p.decode_response(_through_buffer(p.encode_frame(p.ConfigValues(values={"x": 2.0}))))
    assert isinstance(decoded, p.ConfigValues)
    assert type(decoded.values["x"]) is float


def test_error_from_protocol_error() -> None:
    error = p.error_from(p.ProtocolError("too_large", "big"))
    assert error == p.Error(code="too_large", message="big")


# ----------------------------------------------------------------------------
# FrameBuffer


def test_frame_buffer_byte_by_byte() -> None:
    frame = p.encode_frame(REQUESTS[1])
    buffer = p.FrameBuffer()
    bodies = []
    for i in range(len(frame)):
        buffer.feed(frame[i : i + 1])
        body = buffer.next_frame()
        if body is not None:
            bodies.append((i, body))
    assert len(bodies) == 1
    index, body = bodies[0]
    assert index == len(frame) - 1  # complete only at the last byte
    assert p.decode_request(body) == REQUESTS[1]
    assert buffer.pending == 0


def test_frame_buffer_two_frames_in_one_feed() -> None:
    first, second = p.GetJob(id=1), p.CancelJobs(ids=[2, 3])
    buffer = p.FrameBuffer()
    buffer.feed(p.encode_frame(first) + p.encode_frame(second))
    one, two = buffer.next_frame(), buffer.next_frame()
    assert one is not None and two is not None
    assert p.decode_request(one) == first
    assert p.decode_request(two) == second
    assert buffer.next_frame() is None
    assert buffer.pending == 0


def test_frame_buffer_keeps_partial_second_frame() -> None:
    first, second = p.encode_frame(p.GetStatus()), p.encode_frame(p.GetJob(id=5))
    buffer = p.FrameBuffer()
    buffer.feed(first + second[:3])
    assert buffer.next_frame() is not None
    assert buffer.next_frame() is None
    assert buffer.pending == 3
    buffer.feed(second[3:])
    body = buffer.next_frame()
    assert body is not None and p.decode_request(body) == p.GetJob(id=5)


def test_frame_buffer_empty_body() -> None:
    buffer = p.FrameBuffer()
    buffer.feed(b"\x00\x00\x00\x00")
    assert buffer.next_frame() == b""
    assert buffer.pending == 0


def test_oversized_length_refused_from_the_header_alone() -> None:
    buffer = p.FrameBuffer()
    buffer.feed(struct.pack(">I", p.MAX_FRAME + 1))  # no body at all
    with pytest.raises(p.ProtocolError) as info:
        buffer.next_frame()
    assert info.value.code == "too_large"


def test_max_frame_length_itself_is_accepted() -> None:
    assert p.frame_length(struct.pack(">I", p.MAX_FRAME)) == p.MAX_FRAME
    buffer = p.FrameBuffer()
    buffer.feed(struct.pack(">I", p.MAX_FRAME) + b"abc")
    assert buffer.next_frame() is None  # waits for the rest


def test_frame_length_refuses_largest_header() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.frame_length(b"\xff\xff\xff\xff")
    assert info.value.code == "too_large"


def test_encode_frame_refuses_oversized_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(p, "MAX_FRAME", 64)
    with pytest.raises(p.ProtocolError) as info:
        p.encode_frame(p.AddJobs(jobs=[p.JobSpec(command="x" * 100)], cwd="/"))
    assert info.value.code == "too_large"


# ----------------------------------------------------------------------------
# Validation


def _bad(body: object) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(msgspec.msgpack.encode(body))
    assert info.value.code == "bad_request"
    return info.value


def _add(**job: object) -> dict[str, object]:
    return {"op": "add", "jobs": [{"command": "true", **job}], "cwd": "/tmp"}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_add(max_retries="3"), "$.jobs[0].max_retries"),
        (_add(priority=1.5), "$.jobs[0].priority"),
        (_add(after=["1"]), "$.jobs[0].after[0]"),
        (_add(env={"A": 1}), "$.jobs[0].env[...]"),
        (_add(timeout="5m"), "$.jobs[0].timeout"),
        ({"op": "add", "jobs": [{"command": "a"}, {"command": 5}], "cwd": "/"}, "$.jobs[1].command"),
        ({"op": "get", "id": "1"}, "$.id"),
        ({"op": "cancel", "ids": [1, "two"]}, "$.ids[1]"),
        ({"op": "list", "states": ["pending", "sleeping"]}, "$.states[1]"),
        ({"op": "scale", "concurrency": True}, "$.concurrency"),
    ],
)
def test_wrong_type_names_the_field(body: dict[str, object], path: str) -> None:
    error = _bad(body)
    assert _field(path) in error.message and "Expected" not in error.message, error.message


def _field(path: str) -> str:
    """The field a message names: the last name in a msgspec path."""
    return re.sub(r"\[[^]]*\]$", "", path).rpartition(".")[2]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_add(max_retries=-1), "$.jobs[0].max_retries"),
        (_add(command=""), "$.jobs[0].command"),
        (_add(priority=10**10), "$.jobs[0].priority"),
        (_add(backoff_base=0.5), "$.jobs[0].backoff_base"),
        (_add(timeout=0), "$.jobs[0].timeout"),
        (_add(delay=-1), "$.jobs[0].delay"),
        (_add(queue="no spaces"), "$.jobs[0].queue"),
        (_add(queue=""), "$.jobs[0].queue"),
        (_add(after=[0]), "$.jobs[0].after[0]"),
        ({"op": "add", "jobs": [], "cwd": "/tmp"}, "$.jobs"),
        ({"op": "add", "jobs": [{"command": "x"}], "cwd": ""}, "$.cwd"),
        ({"op": "get", "id": 0}, "$.id"),
        ({"op": "cancel", "ids": []}, "$.ids"),
        ({"op": "scale", "concurrency": -1}, "$.concurrency"),
        ({"op": "shutdown", "mode": "later"}, "$.mode"),
        ({"op": "clean", "states": ["pending"]}, "$.states[0]"),
    ],
)
def test_out_of_range_value_is_bad_request(body: dict[str, object], path: str) -> None:
    error = _bad(body)
    assert _field(path) in error.message and "Expected" not in error.message, error.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_add(command=""), "command must not be empty"),
        (_add(delay=99999 * 86400.0), "delay must be at most 10 years"),
        (_add(run_at=-5.0), "run_at must be a time after 1970"),
        (_add(run_at=1e12), "run_at must be a time before the year 10000"),
        (_add(max_retries="x"), "max_retries must be a whole number, not text"),
        (_add(slots=0), "slots must be at least 1"),
        (_add(slots=5000), "slots must be at most 4,096"),
        (_add(needs={"gpu": "1"}), "needs must be a whole number, not text"),
        (_add(needs={f"r{i}": 1 for i in range(33)}), "needs must be at most 32 entries"),
        ({"op": "queue_add", "name": "bad name"}, "a queue name must be 1 to 64 letters, digits"),
        ({"op": "add", "jobs": [{"command": "a"}, {"command": ""}], "cwd": "/"}, "job 2 of the request: "),
        ({"op": "get", "id": 0}, "id must be at least 1"),
        ({"op": "frobnicate"}, "unknown request 'frobnicate'"),
    ],
)
def test_a_schema_violation_is_explained_in_words(body: object, message: str) -> None:
    """Issue #11: not "Expected `str` of length >= 1 - at `$.jobs[0].command`"."""
    assert message in _bad(body).message


def test_missing_required_field() -> None:
    error = _bad({"op": "add", "jobs": [{"command": "x"}]})
    assert "cwd" in error.message
    error = _bad({"op": "add", "jobs": [{}], "cwd": "/"})
    assert "command" in error.message


def test_unknown_op_tag() -> None:
    error = _bad({"op": "format_disk"})
    assert "format_disk" in error.message


def test_missing_op_tag() -> None:
    error = _bad({"id": 1})
    assert "op" in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"op": "get", "id": 1, "verbose": True}, "verbose"),
        (_add(bogus=1), "bogus"),
        ({"op": "status", "x": None}, "x"),
    ],
)
def test_unknown_field_is_refused(body: dict[str, object], field: str) -> None:
    error = _bad(body)
    assert field in error.message


@pytest.mark.parametrize("body", [[1, 2], 5, "add", None, b"bytes"])
def test_non_object_body(body: object) -> None:
    _bad(body)


def test_response_is_not_a_request() -> None:
    frame = msgspec.msgpack.encode(p.Ok(message="hi"))
    with pytest.raises(p.ProtocolError):
        p.decode_request(frame)


@pytest.mark.parametrize("body", [b"\xc1", b"\x81", b"\x81\xa2op", b"\xdb\xff\xff\xff\xff", b""])
def test_undecodable_bytes(body: bytes) -> None:
    with pytest.raises(p.UndecodableFrame):
        p.decode_request(body)


def test_decode_response_garbage() -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_response(b"\xc1")
    with pytest.raises(p.ProtocolError):
        p.decode_response(msgspec.msgpack.encode({"kind": "nope"}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_raise_anything_else(body: bytes) -> None:
    try:
        p.decode_request(body)
    except (p.UndecodableFrame, p.ProtocolError):
        pass


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_ops = st.sampled_from(sorted(t.__struct_config__.tag for t in _union_members(p.AnyRequest)))


@settings(max_examples=300, deadline=None)
@given(
    _ops,
    st.dictionaries(
        st.sampled_from(["id", "ids", "jobs", "cwd", "env", "name", "key", "x"]), _msgpack_values
    ),
)
def test_random_well_formed_msgpack_is_accepted_or_bad_request(op: str, fields: dict[str, object]) -> None:
    body = msgspec.msgpack.encode({"op": op, **fields})
    try:
        request = p.decode_request(body)
    except p.ProtocolError as exc:
        assert exc.code == "bad_request"
    else:
        assert isinstance(request, p.Request)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(min_value=1, max_value=8), max_size=20))
def test_frame_buffer_any_chunking(payload: bytes, cuts: list[int]) -> None:
    frames = struct.pack(">I", len(payload)) + payload
    frames += frames
    buffer = p.FrameBuffer()
    bodies = []
    position = 0
    for size in [*cuts, len(frames)]:
        buffer.feed(frames[position : position + size])
        position += size
        while (body := buffer.next_frame()) is not None:
            bodies.append(body)
    assert bodies == [payload, payload]
    assert buffer.pending == 0


def test_infinite_run_at_is_bad_request() -> None:
    _bad(_add(run_at=float("inf")))
