"""The wire protocol between queued and its clients: pure data and framing, no I/O.

Theory of operation: a client opens the Unix socket and sends a `Hello` naming
the protocol version it speaks; the daemon answers `Welcome` or an `Error` with
code "version". After that each request frame gets exactly one response frame,
in order. A frame is a 4-byte big-endian body length followed by a msgpack body
(one Struct of the `Request` or `Response` union, told apart by its tag).

The Structs below are the schema: msgspec validates every field on decode, so a
handler never sees a wrong type or an out-of-range number. Both sides import
this module, so it must stay light: msgspec, the standard library and the
pure `lifecycle` (whose state names the wire carries) only.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

# The state names are lifecycle's; the wire carries them.
from queued.lifecycle import JobState, TerminalState

PROTOCOL_VERSION = 1
HEADER_SIZE = 4
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


ErrorCode = Literal[
    "bad_request",  # the frame decoded but is not a valid request
    "version",  # protocol versions differ
    "not_found",  # an id or name that does not exist
    "invalid",  # a value the daemon refuses (state, range, conflict)
    "forbidden",  # peer credentials refused
    "too_large",  # frame over MAX_FRAME
    "storage",  # the database refused the write (disk full, I/O error)
    "shutting_down",  # the daemon no longer accepts this request
    "busy",  # as many clients are connected as the daemon takes: try again shortly
    "internal",  # a bug: the daemon logged the details
]

MAX_JOB_ID = 2**62
MAX_RETRIES = 2**31
MAX_CONCURRENCY = 4096
MAX_SECONDS = 10 * 365 * 86400  # every duration: ten years
MAX_MOMENT = 253_402_300_799.0  # every time: up to 9999-12-31T23:59:59Z
JobId = Annotated[int, Meta(ge=1, le=MAX_JOB_ID)]
Count = Annotated[int, Meta(ge=0, le=MAX_RETRIES)]
Seconds = Annotated[float, Meta(ge=0, le=MAX_SECONDS)]
Priority = Annotated[int, Meta(ge=-(10**9), le=10**9)]
QueueName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Command = Annotated[str, Meta(min_length=1, max_length=1024 * 1024)]
BackoffBase = Annotated[float, Meta(ge=1, le=3600)]
Timeout = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
Moment = Annotated[float, Meta(ge=0, le=MAX_MOMENT)]
Signal = Annotated[int, Meta(ge=1, le=64)]
Label = Annotated[str, Meta(max_length=256)]
MAX_UNIQUE_KEY = 200  # characters: a key is a name, not a document
UniqueKey = Annotated[str, Meta(min_length=1, max_length=MAX_UNIQUE_KEY)]
Path = Annotated[str, Meta(min_length=1, max_length=4096)]
Environment = dict[str, str]
# A job's share of a node: how many of its slots (`--slots N`, tsp -N), and
# counted resources by name (`--needs gpu=1,licence=1`); validation.check_needs
# says what a name and a count may be, in the user's words.
Slots = Annotated[int, Meta(ge=1, le=MAX_CONCURRENCY)]
MAX_NEEDS = 32  # resources one job names
Needs = Annotated[dict[str, int], Meta(max_length=MAX_NEEDS)]
ScheduleName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
CatchUp = Literal["none", "one", "all"]

MAX_JOBS_PER_ADD = 100_000


class ProtocolError(Exception):
    """A frame or body that cannot be accepted; `code` is the wire error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


# ----------------------------------------------------------------------------
# Shared records


class JobSpec(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One job as a client asks for it. Unset fields take the daemon's defaults."""

    command: Command
    queue: QueueName = "default"
    priority: Priority = 0
    max_retries: Count | None = None
    backoff_base: BackoffBase | None = None
    timeout: Timeout | None = None
    delay: Seconds | None = None
    run_at: Moment | None = None
    after: list[JobId] = []
    label: Label | None = None
    cwd: Path | None = None
    env: Environment = {}
    hold: bool = False  # held until released (`queuectl release`)
    # While a job with this key is unfinished, an add with it returns that job
    # (`Added.existing`); `unique_for` extends that to a job with the key that
    # completed less than this many seconds ago (see lifecycle.UNIQUE_WINDOW_STATES).
    unique_key: UniqueKey | None = None
    unique_for: Seconds | None = None
    slots: Slots = 1  # how many of the node's slots it takes
    needs: Needs = {}  # counted resources it holds while it runs ("gpu": 1)


class JobChanges(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What `edit` changes in a waiting job, or `restart` in its copy; unset
    fields stay as they are. An empty label removes the label; `no_timeout`
    removes the timeout; a delay or run_at sets when it runs next."""

    command: Command | None = None
    queue: QueueName | None = None
    priority: Priority | None = None
    max_retries: Count | None = None
    backoff_base: BackoffBase | None = None
    timeout: Timeout | None = None
    no_timeout: bool = False
    delay: Seconds | None = None
    run_at: Moment | None = None
    label: Label | None = None
    slots: Slots | None = None
    needs: Needs | None = None  # replaces its needs ({}: none)


class Job(Struct, kw_only=True):
    """A job as the daemon reports it. Times are Unix seconds (UTC)."""

    id: int
    command: str
    state: JobState
    queue: str
    priority: int
    label: str | None
    attempts: int
    max_retries: int
    backoff_base: float
    timeout: float | None
    exit_code: int | None
    run_at: float
    created_at: float
    updated_at: float
    depends_on: list[int]
    cwd: str
    error: str | None = None
    paused: bool = False  # a running job whose process group is stopped (`queuectl pause`)
    # The dependencies a waiting job still waits for (not completed yet).
    waiting_on: list[int] = []
    # The latest attempt's start and end (None: never started, still running).
    started_at: float | None = None
    ended_at: float | None = None
    unique_key: str | None = None  # `add --unique KEY`
    node: str | None = None  # the node of its latest attempt (None: never started)
    pinned: str | None = None  # the only node that may run it (`add --here`, `add --node`), or any
    slots: int = 1  # how many of a node's slots it takes
    needs: dict[str, int] = {}  # counted resources it needs ("gpu": 1)
    gpus: list[int] = []  # the GPU indices its latest attempt holds (held: while it runs)


class Run(Struct, kw_only=True):
    """One attempt of a job: a process that was (or failed to be) started."""

    attempt: int
    pid: int | None
    started_at: float
    ended_at: float | None
    exit_code: int | None
    signal: int | None
    error: str | None
    stdout_path: str | None
    stderr_path: str | None
    # What its logs miss because the disk refused it ("stdout: 1,234 bytes lost: No space left on device").
    log_incomplete: str | None = None
    node: str | None = None  # the node that ran it (None: recorded before nodes had names)
    gpus: list[int] = []  # the GPU indices it held (CUDA_VISIBLE_DEVICES)


class QueueInfo(Struct, kw_only=True):
    name: str
    concurrency: int | None
    paused: bool
    # Its jobs by state, named as everywhere else (`failed`: awaiting a retry).
    running: int = 0
    pending: int = 0
    held: int = 0
    failed: int = 0


class Resources(Struct, kw_only=True):
    """A node's resources: what it has and what its running jobs hold now.
    Stored as JSON in `nodes.resources` (PostgreSQL: each node's, kept by its
    heartbeat) and reported by `status`."""

    slots: int  # its concurrency
    slots_used: int = 0  # the slots its running jobs take
    counts: dict[str, int] = {}  # counted resources other than GPUs (licence=1)
    counts_used: dict[str, int] = {}
    gpus: list[int] = []  # the GPU indices it has
    gpus_used: list[int] = []  # those its running jobs hold


class NodeInfo(Struct, kw_only=True):
    """A node sharing the store: a `queued` with a name (one, on SQLite)."""

    name: str
    slots: int  # its concurrency
    running: int  # attempts it runs now
    queues: list[str] | None = None  # the queues it serves (None: all)
    host: str = ""
    pid: int | None = None
    started_at: float | None = None  # this incarnation's start (Unix seconds)
    last_heartbeat: float | None = None  # None: it keeps no lease (SQLite)
    lease: float | None = None  # seconds
    # "alive" (its lease holds), "lost" (its lease ran out: its attempts are
    # rescued) or "stopped" (it left cleanly).
    state: str = "alive"
    this: bool = False  # the node that answered
    # Its resources as its latest heartbeat stored them (a store shared by nodes).
    resources: Resources | None = None


class Slot(Struct, kw_only=True):
    """A running job attempt."""

    job_id: int
    attempt: int
    queue: str
    pid: int | None
    started_at: float
    command: str
    paused: bool = False


class ScheduleInfo(Struct, kw_only=True):
    """A schedule as the daemon reports it. Times are Unix seconds (UTC)."""

    name: str
    expression: str  # "30 2 * * *", "@daily" or "@every 10m"
    tz: str
    command: str
    queue: str
    priority: int
    max_retries: int
    timeout: float | None
    cwd: str
    no_overlap: bool
    catch_up: str
    paused: bool
    created_at: float
    next_run: float | None  # None: paused, or no firing before the year 10000
    last_run: float | None  # when its latest job was added
    last_job_id: int | None = None
    last_job_state: JobState | None = None  # None: no job yet, or it was removed
    slots: int = 1  # each job's share of a node (as `add --slots`, `--needs`)
    needs: dict[str, int] = {}


ConfigValue = int | float | str | None


# ----------------------------------------------------------------------------
# Requests


class Request(Struct, tag_field="op", forbid_unknown_fields=True):
    pass


class Hello(Request, tag="hello"):
    protocol: int
    client: Annotated[str, Meta(max_length=200)] = ""


class AddJobs(Request, tag="add", omit_defaults=True):
    """Add jobs atomically: all are stored, or none. Each spec's env is laid
    over the request's env, and its cwd (if unset) is the request's cwd.

    Unix paths and environments are bytes; msgpack text must be UTF-8. So the
    variables that are not (name or value) travel in `env_bytes`, laid over
    `env`, and a cwd that is not travels in `cwd_bytes`, with `cwd` a readable
    form of it (see `split_environment`, `split_path`)."""

    jobs: Annotated[list[JobSpec], Meta(min_length=1, max_length=MAX_JOBS_PER_ADD)]
    cwd: Path
    env: Environment = {}
    env_bytes: dict[bytes, bytes] = {}
    cwd_bytes: Annotated[bytes, Meta(min_length=1, max_length=4096)] | None = None
    # Pinned: only the node that accepted them (`here`), or the node named, may run them.
    here: bool = False
    node: Annotated[str, Meta(min_length=1, max_length=63)] | None = None


class GetJob(Request, tag="get"):
    id: JobId


class ListJobs(Request, tag="list", omit_defaults=True):
    """The newest `limit` jobs matching every filter, returned in id order.
    `before` pages back by id (the next page starts below the smallest id
    shown), `command` matches part of the command, `created_after` and
    `created_before` bound when the job was added."""

    states: list[JobState] = []
    queue: QueueName | None = None
    label: Label | None = None
    ids: list[JobId] = []
    limit: Count | None = None
    before: JobId | None = None
    command: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    created_after: Moment | None = None
    created_before: Moment | None = None


class CancelJobs(Request, tag="cancel"):
    ids: Annotated[list[JobId], Meta(min_length=1)]


class RemoveJobs(Request, tag="rm"):
    ids: Annotated[list[JobId], Meta(min_length=1)]


class RetryJobs(Request, tag="retry"):
    """Run finished jobs again with attempts reset; `all_dead` adds every dead job."""

    ids: list[JobId] = []
    all_dead: bool = False


class WaitJobs(Request, tag="wait"):
    """Answer once every job is completed, dead or canceled (or at `timeout`).
    No ids means every job that is not finished when the request arrives."""

    ids: list[JobId] = []
    timeout: Seconds | None = None


# Defaults are left out: a daemon older than `wait` answers every read that does not wait.
class ReadLog(Request, tag="log", omit_defaults=True):
    id: JobId
    attempt: Annotated[int, Meta(ge=1)] | None = None
    stream: Literal["stdout", "stderr"] = "stdout"
    offset: Annotated[int, Meta(ge=0)] = 0
    limit: Annotated[int, Meta(ge=1, le=8 * 1024 * 1024)] = 1024 * 1024
    # Seconds to wait, when nothing past `offset` is there yet and the attempt
    # runs, for its output to grow or its end, before answering (`logs -f`).
    wait: Annotated[float, Meta(ge=0, le=60)] = 0.0


class GetStatus(Request, tag="status"):
    pass


class ListWorkers(Request, tag="workers"):
    pass


class ScaleWorkers(Request, tag="scale"):
    concurrency: Annotated[int, Meta(ge=0, le=4096)]  # 0: start no job, running ones go on


class AddQueue(Request, tag="queue_add"):
    name: QueueName
    concurrency: Annotated[int, Meta(ge=1, le=4096)] | None = None


class RemoveQueue(Request, tag="queue_rm"):
    name: QueueName


class ListQueues(Request, tag="queue_ls"):
    pass


class SetQueueConcurrency(Request, tag="queue_set"):
    """Change a queue's limit of jobs running at once; None: no limit but the
    global one. Running jobs go on; a lower limit starts no more until they
    are under it."""

    name: QueueName
    concurrency: Annotated[int, Meta(ge=1, le=4096)] | None


class PauseQueue(Request, tag="queue_pause"):
    """Stop (or resume) claiming from a queue; with `jobs`, its running jobs are
    paused too. Resuming a queue resumes its paused jobs."""

    name: QueueName
    paused: bool = True
    jobs: bool = False


class HoldJobs(Request, tag="hold"):
    """Keep waiting jobs from starting until they are released."""

    ids: Annotated[list[JobId], Meta(min_length=1)]


class ReleaseJobs(Request, tag="release"):
    ids: Annotated[list[JobId], Meta(min_length=1)]


class EditJob(Request, tag="edit"):
    """Change a job that has not started (pending, held, or failed awaiting its retry)."""

    id: JobId
    changes: JobChanges


class RestartJob(Request, tag="restart"):
    """Add a copy of any job (same command, queue, settings, cwd and environment), with `changes`."""

    id: JobId
    changes: JobChanges = msgspec.field(default_factory=JobChanges)
    hold: bool = False


class PauseJobs(Request, tag="pause"):
    """Stop (SIGSTOP) or continue (SIGCONT) running jobs' process groups; `all`
    adds every running job, and then pauses (or resumes) every queue as well."""

    ids: list[JobId] = []
    all: bool = False
    paused: bool = True


class SignalJobs(Request, tag="signal"):
    """Send a signal to running jobs' process groups."""

    ids: Annotated[list[JobId], Meta(min_length=1)]
    signal: Signal


class GetConfig(Request, tag="config_get"):
    key: Annotated[str, Meta(max_length=64)] | None = None


class SetConfig(Request, tag="config_set"):
    key: Annotated[str, Meta(max_length=64)]
    value: Annotated[str, Meta(max_length=256)]


class CleanJobs(Request, tag="clean"):
    """Delete finished jobs (default: every terminal state) and their logs."""

    older_than: Seconds | None = None
    states: list[TerminalState] = []


class Shutdown(Request, tag="shutdown"):
    mode: Literal["graceful", "now"] = "graceful"


class AddSchedule(Request, tag="schedule_add", omit_defaults=True):
    """A recurring job: `expression` is a five-field cron, a macro (@daily) or
    "@every 10m"; `job` is what each firing adds (no delay, run_at, after or
    hold; its label is the schedule's name), its cwd and env completed from
    the request's as for AddJobs. `tz` None: the daemon's local zone."""

    schedule: ScheduleName
    expression: Annotated[str, Meta(min_length=1, max_length=256)]
    job: JobSpec
    cwd: Path
    env: Environment = {}
    env_bytes: dict[bytes, bytes] = {}
    cwd_bytes: Annotated[bytes, Meta(min_length=1, max_length=4096)] | None = None
    tz: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    no_overlap: bool = False
    catch_up: CatchUp = "one"


class ListSchedules(Request, tag="schedule_ls"):
    pass


class RemoveSchedule(Request, tag="schedule_rm"):
    schedule: ScheduleName


class PauseSchedule(Request, tag="schedule_pause"):
    """Pause a schedule, or resume it (firings count again from then)."""

    schedule: ScheduleName
    paused: bool = True


class RunSchedule(Request, tag="schedule_run"):
    """Add the schedule's job once, now."""

    schedule: ScheduleName


AnyRequest = (
    Hello
    | AddJobs
    | GetJob
    | ListJobs
    | CancelJobs
    | RemoveJobs
    | RetryJobs
    | WaitJobs
    | ReadLog
    | GetStatus
    | ListWorkers
    | ScaleWorkers
    | AddQueue
    | RemoveQueue
    | ListQueues
    | PauseQueue
    | SetQueueConcurrency
    | HoldJobs
    | ReleaseJobs
    | EditJob
    | RestartJob
    | PauseJobs
    | SignalJobs
    | GetConfig
    | SetConfig
    | CleanJobs
    | Shutdown
    | AddSchedule
    | ListSchedules
    | RemoveSchedule
    | PauseSchedule
    | RunSchedule
)


# ----------------------------------------------------------------------------
# Responses


class Response(Struct, tag_field="kind"):
    pass


class Welcome(Response, tag="welcome"):
    protocol: int
    version: str
    pid: int


class Error(Response, tag="error"):
    code: ErrorCode
    message: str


class Ok(Response, tag="ok"):
    message: str = ""


class Added(Response, tag="added", omit_defaults=True):
    """The ids of the jobs asked for, in order. `existing`, when any job of a
    unique key was already there: one flag per id, True for a job found, not added."""

    ids: list[int]
    existing: list[bool] = []


class JobDetail(Response, tag="job"):
    job: Job
    runs: list[Run]
    env: Environment


class JobList(Response, tag="jobs"):
    jobs: list[Job]


class Changed(Response, tag="changed", omit_defaults=True):
    ids: list[int]
    refused: dict[int, str] = {}  # jobs left as they were, and why (a cancel does what it can)


class Waited(Response, tag="waited"):
    jobs: list[Job]
    timed_out: bool = False


class LogChunk(Response, tag="log"):
    attempt: int
    data: bytes
    offset: int  # where the next read starts
    size: int  # bytes in the file now
    running: bool  # the attempt may still write more
    job_state: JobState


class Status(Response, tag="status"):
    version: str
    pid: int
    started_at: float
    counts: dict[str, int]
    running: int
    concurrency: int
    accepting: bool
    queues: list[QueueInfo]
    data_dir: str
    socket: str
    # The web page's address when `queued --http` serves one.
    web: str | None = None
    # Sentences about what is wrong with the daemon itself (its database file
    # deleted under it, ...): empty while all is well.
    problems: list[str] = []
    # Since when (epoch seconds) the job store cannot be reached (a PostgreSQL
    # server down, a network cut), or None. Meanwhile counts and queues are
    # empty: only the store knows them.
    store_unreachable_since: float | None = None
    nodes: list[NodeInfo] = []  # every node sharing the store (this one on SQLite)
    node: str = ""  # the name of the node that answered
    # Each node's resources, capacity and use, by node name: this daemon's on
    # SQLite, every live node's on PostgreSQL (as their heartbeats stored them).
    resources: dict[str, Resources] = {}


class Workers(Response, tag="workers"):
    concurrency: int
    slots: list[Slot]


class Queues(Response, tag="queues"):
    queues: list[QueueInfo]


class ConfigValues(Response, tag="config"):
    values: dict[str, ConfigValue]


class Cleaned(Response, tag="cleaned"):
    count: int


class Schedules(Response, tag="schedules"):
    schedules: list[ScheduleInfo]


AnyResponse = (
    Welcome
    | Error
    | Ok
    | Added
    | JobDetail
    | JobList
    | Changed
    | Waited
    | LogChunk
    | Status
    | Workers
    | Queues
    | ConfigValues
    | Cleaned
    | Schedules
)


# ----------------------------------------------------------------------------
# Text that is not UTF-8
#
# Python holds such bytes of the environment and of paths as lone surrogates
# (the "surrogateescape" handler of os.fsdecode); msgpack cannot carry them as
# text, so they travel as the bytes they are, and os.fsdecode restores the
# very same str on the other side.


def is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(text: str | bytes) -> str:
    """A form of a path or value that any message can carry: bytes that are not
    UTF-8 appear as \\xNN escapes."""
    if isinstance(text, str):
        if is_utf8(text):
            return text
        text = os.fsencode(text)
    return text.decode("utf-8", "backslashreplace")


def split_environment(env: Mapping[str, str]) -> tuple[dict[str, str], dict[bytes, bytes]]:
    """(the UTF-8 variables, the others as bytes), for AddJobs.env and env_bytes."""
    text: dict[str, str] = {}
    raw: dict[bytes, bytes] = {}
    for key, value in env.items():
        if is_utf8(key) and is_utf8(value):
            text[key] = value
        else:
            raw[os.fsencode(key)] = os.fsencode(value)
    return text, raw


def split_path(path: str) -> tuple[str, bytes | None]:
    """(a readable path, its bytes when it is not UTF-8), for AddJobs.cwd and cwd_bytes."""
    return (path, None) if is_utf8(path) else (readable(path), os.fsencode(path))


def joined_environment(env: dict[str, str], raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """The environment `split_environment` split, each variable exactly as it was."""
    if not raw:
        return env
    return {**env, **{os.fsdecode(key): os.fsdecode(value) for key, value in raw.items()}}


# ----------------------------------------------------------------------------
# Framing

_encoder = msgspec.msgpack.Encoder()


@functools.cache
def _decoder(union: object) -> msgspec.msgpack.Decoder:
    """Built on first use: each side decodes only one of the unions, and a
    client command should not pay for compiling the other at start-up."""
    return msgspec.msgpack.Decoder(union)


def encode_frame(message: Request | Response) -> bytes:
    """One message as a length-prefixed frame."""
    buffer = bytearray(HEADER_SIZE)
    _encoder.encode_into(message, buffer, HEADER_SIZE)
    length = len(buffer) - HEADER_SIZE
    if length > MAX_FRAME:
        raise ProtocolError("too_large", f"message of {length} bytes exceeds {MAX_FRAME}")
    _HEADER.pack_into(buffer, 0, length)
    return bytes(buffer)


def frame_length(header: bytes) -> int:
    """The body length a 4-byte header announces; refuses lengths over MAX_FRAME
    before anyone reads (or allocates) the body."""
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError("too_large", f"frame of {length} bytes exceeds the {MAX_FRAME} limit")
    return length


class FrameBuffer:
    """Accumulates bytes from a stream and yields complete frame bodies."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete body, or None when more bytes are needed."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        length = frame_length(bytes(self._buffer[:HEADER_SIZE]))
        end = HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        return body

    @property
    def pending(self) -> int:
        return len(self._buffer)


def decode_request(body: bytes, kind: object = AnyRequest) -> Request:
    """A request from a frame body. Msgpack that does not fit the schema raises
    ProtocolError("bad_request") naming the field, which can be answered; bytes
    that are not msgpack at all raise UndecodableFrame, and the caller closes
    the connection. `kind` narrows the schema to one request type (a client
    checking what it is about to send compiles only that one's)."""
    try:
        return _decoder(kind).decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError("bad_request", explain(exc)) from None
    except msgspec.DecodeError as exc:
        raise UndecodableFrame(str(exc)) from None


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_JOB = re.compile(r"^\.jobs\[(\d+)\]")
_QUEUE_NAME_RULE = "1 to 64 letters, digits, '.', '_', ':' or '-'"
_DURATIONS = frozenset({"delay", "timeout", "older_than"})


def explain(exc: msgspec.ValidationError) -> str:
    """A schema violation in a user's words: "delay must be at most 10 years",
    not "Expected `float` <= 315360000.0 - at `$.jobs[0].delay`". The field
    keeps its protocol name (SDK callers know it); a job after the first is
    named by its place in the request."""
    text = str(exc)
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    what, path = match["what"], match["path"] or ""
    prefix = ""
    if job := _JOB.match(path):
        index = int(job[1])
        prefix = f"job {index + 1} of the request: " if index else ""
        path = path[job.end() :]
    field = re.sub(r"\[[^]]*\]$", "", path).rpartition(".")[2]
    return prefix + _explained(field, what)


def _explained(field: str, what: str) -> str:
    name = field or "request"
    if match := re.fullmatch(r"Expected `(\w+)` (>=|<=|>|<) (-?[\d.e+]+)", what):
        kind, op, limit = match.groups()
        number = float(limit)
        if field in _DURATIONS and number == MAX_SECONDS:
            shown = "10 years"
        elif field == "run_at" and number == MAX_MOMENT:
            return "run_at must be a time before the year 10000"
        elif field == "run_at":
            return "run_at must be a time after 1970"
        else:
            shown = f"{number:g}" if kind == "float" else f"{int(number):,}"
        words = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}[op]
        return f"{name} must be {words} {shown}"
    if match := re.fullmatch(r"Expected `(str|array|object)` of length (>=|<=) (\d+)", what):
        kind, op, limit = match.groups()
        if op == ">=" and limit == "1":
            return f"{name} must not be empty"
        unit = {"str": "characters", "array": "items", "object": "entries"}[kind]
        return f"{name} must be at most {int(limit):,} {unit}"
    if what.startswith("Expected `str` matching regex"):
        if field == "schedule":
            return f"a schedule name must be {_QUEUE_NAME_RULE}"
        return (
            f"a queue name must be {_QUEUE_NAME_RULE}"
            if field in ("name", "queue")
            else f"{name} is not well formed"
        )
    if match := re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", what):
        wanted = match[1].replace(" | null", "")
        words = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false"}
        return f"{name} must be {words.get(wanted, wanted)}, not {words.get(match[2], match[2])}"
    if match := re.fullmatch(r"Object contains unknown field `([^`]*)`", what):
        return f"unknown field {match[1]!r}" + (f" in {name}" if field else "")
    if match := re.fullmatch(r"Object missing required field `([^`]*)`", what):
        return f"missing field {match[1]!r}"
    if match := re.fullmatch(r"Invalid value (.*)", what):
        return f"unknown request {match[1]}" if field == "op" else f"{name}: invalid value {match[1]}"
    return f"invalid request: {what}" + (f" (in {field})" if field else "")


class UndecodableFrame(Exception):
    """The body is not msgpack at all: there is no request to answer."""


def decode_response(body: bytes) -> Response:
    try:
        return _decoder(AnyResponse).decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_request", f"invalid response from daemon: {exc}") from None


def error_from(exc: ProtocolError) -> Error:
    return Error(code=exc.code, message=exc.message)
