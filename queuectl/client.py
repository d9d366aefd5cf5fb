"""`Client`: the synchronous Python SDK for queued, and the CLI's only way in.

One Unix-socket connection per Client, opened at the first call with a Hello
naming our protocol version, then one request and one response at a time.
Responses are the protocol's Structs; an `Error` response raises DaemonError.

Before the Hello, every connection asks the kernel who listens (see
`queuectl.trust`): a daemon that is neither ours, nor root's, nor a system
daemon in a directory only root could have given it, nor one named in
`trust_uids`, is sent nothing and raises UntrustedDaemon.
"""

from __future__ import annotations

import os
import re
import socket as stdsocket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import msgspec

from queued import __version__
from queued import protocol as p
from queued.paths import default_socket_path, fallback_socket_dir

from . import trust

R = TypeVar("R", bound=p.Response)
BATCH = 10_000


class QueuectlError(Exception):
    """Anything that went wrong talking to queued; str() is a one-line reason,
    `code` a machine-readable one: the protocol's error code (`ErrorCode` in
    queued.protocol: "not_found", "invalid", "bad_request", ...) when the
    daemon refused, else "unreachable", "untrusted", "timeout" or "client"."""

    code = "client"


class DaemonUnreachable(QueuectlError):
    """No daemon answers at the socket."""

    code = "unreachable"

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"cannot reach queued at {path} ({reason}); start it with `queued` "
            "(or `systemctl --user start queued.socket`), or point QUEUED_SOCKET / --socket at it"
        )
        self.path = path


class DaemonBusy(DaemonUnreachable):
    """The daemon is there, but takes no more connections now: as many
    clients are connected as it takes, or so many connect at once that its
    backlog is full. The CLI exits 3, as when no daemon answers: try again."""

    code = "busy"

    def __init__(self, path: Path, reason: str) -> None:
        QueuectlError.__init__(self, reason)
        self.path = path


class UntrustedDaemon(DaemonUnreachable):
    """Something listens at the socket, but not a daemon we have reason to
    trust (see Client): nothing was sent to it. The CLI exits 3, as when no
    daemon answers."""

    code = "untrusted"

    def __init__(self, path: Path, reason: str) -> None:
        QueuectlError.__init__(self, reason)
        self.path = path


class DaemonError(QueuectlError):
    """The daemon refused a request: `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidRequest(DaemonError):
    """A request the daemon would refuse, found before anything was sent: a
    job that could never run, a value out of range. `code` is "bad_request" or
    "invalid", as the daemon would have said; the CLI calls it a usage error."""


class PartlyDone(DaemonError):
    """A request on several jobs that did what it could: `done` lists the jobs
    it changed, `refused` maps each other job to the reason. Raised so that no
    caller takes a partial success for a whole one."""

    def __init__(self, done: list[int], refused: dict[int, str]) -> None:
        first = min(refused)
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        super().__init__("invalid", f"{refused[first]}{more}")
        self.done = done
        self.refused = refused


class PartlyAdded(DaemonError):
    """`add_jobs` sent its jobs in several requests and one was refused: the
    jobs of the requests before it were added (`added`, as add_jobs returns
    them) and none from job `first` (0-based) on. `job` is the job the refusal
    names (0-based, counted from the first of the call) or None when it names
    none (an unknown queue, say); `reason` is the refusal alone."""

    def __init__(self, code: str, reason: str, added: list[AddedJob], job: int | None) -> None:
        named = f"job {job + 1}: " if job is not None else ""
        super().__init__(code, f"{named}{reason} (the {len(added):,} jobs before it were added)")
        self.reason = reason
        self.added = added
        self.first = len(added)
        self.job = job


_NAMED_JOB = re.compile(r"job (\d+) of (?:the request|[\d,]+): ")


def named_job(message: str, count: int) -> tuple[int | None, str]:
    """The job (0-based) that an add's refusal names in its request of
    `count` jobs, and the reason alone."""
    if match := _NAMED_JOB.match(message):
        return int(match[1]) - 1, message[match.end() :]
    return (0 if count == 1 else None), message


class NoAnswer(QueuectlError):
    """The daemon did not answer within the Client's timeout."""

    code = "timeout"


class AddedJob(NamedTuple):
    """One job of `Client.add_jobs`: its id, and whether it was there already
    (its unique key was held by that job) rather than added."""

    id: int
    existing: bool


class Client:
    """A connection to queued. Use as a context manager, or call close().

    `socket` defaults to $QUEUED_SOCKET, else $XDG_RUNTIME_DIR/queued/queued.sock,
    else /tmp/queued-UID/queued.sock.

    Nothing is sent (not even the Hello; a job carries our whole environment)
    until the kernel has told who listens there (SO_PEERCRED), and it is one of:
    our own uid; root; a uid in `trust_uids` (default: $QUEUECTL_TRUST_UID,
    uids separated by spaces or commas); or a shared system daemon, that is a
    uid owning the socket's directory where every directory above is owned by
    root (or us) and writable by nobody else, a sticky /tmp only above a
    directory root or we own (so /run/queued passes and a directory another
    user made in /tmp does not). The fallback /tmp/queued-UID must be ours and
    mode 0700 before we connect at all. Otherwise the first request raises
    UntrustedDaemon (a DaemonUnreachable) naming the path, the uid and why.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        timeout: float | None = 30.0,
        *,
        trust_uids: Iterable[int] | None = None,
    ) -> None:
        """`socket`: the daemon's socket path (default: see above). `timeout`:
        seconds to wait for each answer before NoAnswer (None: for ever; `wait`
        always waits as long as it asked to). `trust_uids`: uids whose daemon
        we talk to besides ours, root's and a system daemon's (default:
        $QUEUECTL_TRUST_UID). Nothing connects until the first request."""
        self.path = Path(socket) if socket is not None else default_socket_path()
        self.timeout = timeout
        if trust_uids is None:
            try:
                trust_uids = trust.parse_trust_uids(os.environ.get(trust.TRUST_ENV, ""))
            except ValueError as exc:
                raise QueuectlError(str(exc)) from None
        self.trust_uids = frozenset(trust_uids)
        self._sock: stdsocket.socket | None = None
        self._frames = p.FrameBuffer()
        self.daemon_version: str | None = None

    # -- connection ---------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> None:
        if self.path.parent == fallback_socket_dir():
            refusal = trust.check_own_directory(str(self.path.parent))
            if refusal is not None:
                raise UntrustedDaemon(self.path, refusal)
        sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except BlockingIOError:  # EAGAIN: a Unix socket's backlog is full (a listener is there)
            sock.close()
            raise DaemonBusy(
                self.path,
                f"queued at {self.path} takes no more connections now (its backlog is full: "
                "too many clients at once); try again shortly",
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(self.path, exc.strerror or str(exc)) from None
        refusal = trust.check_listener(sock, str(self.path), self.trust_uids)
        if refusal is not None:
            sock.close()
            raise UntrustedDaemon(self.path, refusal)
        self._sock = sock
        self._frames = p.FrameBuffer()
        try:
            welcome = self._exchange(p.Hello(protocol=p.PROTOCOL_VERSION, client=f"queuectl/{__version__}"))
        except DaemonError as exc:
            if exc.code != "busy":
                raise
            self.close()
            raise DaemonBusy(self.path, exc.message) from None
        if not isinstance(welcome, p.Welcome):
            self.close()
            raise QueuectlError(f"unexpected answer to hello: {type(welcome).__name__}")
        self.daemon_version = welcome.version

    def _exchange(self, request: p.Request | bytes, timeout: float | None = ...) -> p.Response:  # type: ignore[assignment]
        """One request (or its frame, already encoded) and its response."""
        assert self._sock is not None
        self._sock.settimeout(self.timeout if timeout is ... else timeout)
        try:
            self._sock.sendall(request if isinstance(request, bytes) else p.encode_frame(request))
            while (body := self._frames.next_frame()) is None:
                data = self._sock.recv(1 << 20)
                if not data:
                    raise ConnectionResetError("queued closed the connection")
                self._frames.feed(data)
        except TimeoutError:
            self.close()
            raise NoAnswer(f"queued at {self.path} did not answer in time") from None
        except OSError as exc:
            self.close()
            raise DaemonUnreachable(self.path, exc.strerror or str(exc)) from None
        except p.ProtocolError as exc:  # an oversized frame: not a queued we can talk to
            self.close()
            raise QueuectlError(f"bad answer from {self.path}: {exc.message}") from None
        try:
            response = p.decode_response(body)
        except p.ProtocolError as exc:
            self.close()
            raise QueuectlError(f"bad answer from {self.path}: {exc.message}") from None
        if isinstance(response, p.Error):
            if response.code in ("version", "forbidden"):
                self.close()
            raise DaemonError(response.code, response.message)
        return response

    def request(self, request: p.Request, expect: type[R], *, timeout: float | None = ...) -> R:  # type: ignore[assignment]
        """Send one request and return its response, which must be of type `expect`.
        A request the daemon's schema refuses raises InvalidRequest before
        anything is sent (the daemon would check it again)."""
        frame = _checked_frame(request)
        if self._sock is None:
            self._connect()
        response = self._exchange(frame, timeout)
        if not isinstance(response, expect):
            raise QueuectlError(f"expected {expect.__name__} from queued, got {type(response).__name__}")
        return response

    # -- jobs -----------------------------------------------------------------------

    def add(
        self,
        command: str,
        *,
        queue: str = "default",
        priority: int = 0,
        max_retries: int | None = None,
        backoff_base: float | None = None,
        timeout: float | None = None,
        delay: float | None = None,
        run_at: float | None = None,
        after: Iterable[int] = (),
        label: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
        here: bool = False,
        node: str | None = None,
        slots: int = 1,
        needs: Mapping[str, int] | None = None,
    ) -> int:
        """Enqueue one shell command; returns its id once the job is durably stored.
        It runs in `cwd` (default: ours) with our environment plus `env`; only on
        the node that accepted it with `here`, only on node `node` if named; when
        `slots` of a node's slots and what it `needs` ({"gpu": 1, "licence": 1})
        are free there (a GPU job's CUDA_VISIBLE_DEVICES names the GPUs it holds).
        With `unique_key`, while a job with that key is unfinished (or, with
        `unique_for` seconds, completed less than that long ago) its id is
        returned instead and nothing is added (`add_jobs` tells which)."""
        spec = p.JobSpec(
            command=command,
            queue=queue,
            priority=priority,
            max_retries=max_retries,
            backoff_base=backoff_base,
            timeout=timeout,
            delay=delay,
            run_at=run_at,
            after=list(after),
            label=label,
            cwd=cwd,
            env=dict(env or {}),
            unique_key=unique_key,
            unique_for=unique_for,
            slots=slots,
            needs=dict(needs) if isinstance(needs, Mapping) else needs or {},  # type: ignore[arg-type]
        )
        return self.add_many([spec], here=here, node=node)[0]

    def add_many(
        self,
        specs: Iterable[p.JobSpec],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        batch: int = BATCH,
        here: bool = False,
        node: str | None = None,
    ) -> list[int]:
        """Enqueue many jobs, `batch` per request; each request is all-or-nothing.
        Every job gets our environment (or `env`) under its own `env` entries;
        `here` and `node` pin them (see `add`). The ids, in order (a job whose
        unique key was held: the holder's)."""
        return [
            added.id for added in self.add_jobs(specs, cwd=cwd, env=env, batch=batch, here=here, node=node)
        ]

    def add_jobs(
        self,
        specs: Iterable[p.JobSpec],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        batch: int = BATCH,
        here: bool = False,
        node: str | None = None,
    ) -> list[AddedJob]:
        """As `add_many`, saying of each job whether it was added or found:
        `existing` is True where its `unique_key` was held by the job of `id`.
        Given a sequence, every job is checked before the first request is
        sent (InvalidRequest names it); a request refused after others were
        added raises PartlyAdded, saying which were."""
        base_cwd = cwd or os.getcwd()
        base_env = dict(os.environ if env is None else env)
        pin = {"here": here, "node": node}
        checked = isinstance(specs, Sequence)
        if checked:
            _check_specs(specs)  # type: ignore[arg-type]
        added: list[AddedJob] = []
        chunk: list[p.JobSpec] = []

        def send() -> None:
            try:
                added.extend(self._add(chunk, base_cwd, base_env, checked=checked, **pin))
            except DaemonError as exc:
                if not added:
                    raise
                index, reason = named_job(exc.message, len(chunk))
                raise PartlyAdded(
                    exc.code, reason, added, None if index is None else len(added) + index
                ) from None

        for spec in specs:
            chunk.append(spec)
            if len(chunk) >= batch:
                send()
                chunk = []
        if chunk:
            send()
        return added

    def _add(
        self,
        specs: list[p.JobSpec],
        cwd: str,
        env: dict[str, str],
        here: bool = False,
        node: str | None = None,
        checked: bool = False,
    ) -> list[AddedJob]:
        if not checked:
            _check_specs(specs)
        if len(specs) == 1 and not _spec_is_utf8(specs[0]):
            # A job's own --cwd or --env that is not UTF-8 travels as the request's
            # (the same thing for one job: its env is laid over the request's).
            spec = specs[0]
            env, cwd = {**env, **spec.env}, spec.cwd or cwd
            specs = [msgspec.structs.replace(spec, env={}, cwd=None)]
        # Our cwd and environment may hold bytes that are not UTF-8: they travel as bytes.
        text_cwd, cwd_bytes = p.split_path(cwd)
        text_env, env_bytes = p.split_environment(env)
        request = p.AddJobs(
            jobs=specs,
            cwd=text_cwd,
            env=text_env,
            env_bytes=env_bytes,
            cwd_bytes=cwd_bytes,
            here=here,
            node=node,
        )
        answer = self.request(request, p.Added)
        existing = answer.existing or [False] * len(answer.ids)
        return [AddedJob(job_id, found) for job_id, found in zip(answer.ids, existing, strict=True)]

    def get(self, job_id: int) -> p.JobDetail:
        """One job with its attempts (`runs`) and environment."""
        return self.request(p.GetJob(id=job_id), p.JobDetail)

    def list(
        self,
        *,
        states: Sequence[str] = (),
        queue: str | None = None,
        label: str | None = None,
        ids: Sequence[int] = (),
        limit: int | None = None,
    ) -> list[p.Job]:
        """The newest `limit` jobs matching every filter, oldest first."""
        request = p.ListJobs(states=list(states), queue=queue, label=label, ids=list(ids), limit=limit)  # type: ignore[arg-type]
        return self.request(request, p.JobList).jobs

    def cancel(self, *ids: int) -> list[int]:
        """Cancel pending, failed or running jobs (a running one's process group is
        stopped); returns their ids. If some could not be canceled (finished, or
        unknown), the others still are, and PartlyDone says which and why."""
        changed = self.request(p.CancelJobs(ids=list(ids)), p.Changed)
        if changed.refused:
            raise PartlyDone(changed.ids, changed.refused)
        return changed.ids

    def remove(self, *ids: int) -> list[int]:
        """Delete finished jobs and their logs."""
        return self.request(p.RemoveJobs(ids=list(ids)), p.Changed).ids

    def retry(self, *ids: int, all_dead: bool = False) -> list[int]:
        """Run completed, dead or canceled jobs again with attempts reset."""
        return self.request(p.RetryJobs(ids=list(ids), all_dead=all_dead), p.Changed).ids

    def hold(self, *ids: int) -> list[int]:
        """Keep pending or failed jobs from starting until they are released."""
        return self.request(p.HoldJobs(ids=list(ids)), p.Changed).ids

    def release(self, *ids: int) -> list[int]:
        """Let held jobs run again (at once, unless they were delayed past now)."""
        return self.request(p.ReleaseJobs(ids=list(ids)), p.Changed).ids

    def edit(self, job_id: int, **changes: Any) -> None:
        """Change a job that has not started (pending, held, or failed awaiting its
        retry). `changes` are the fields of `queued.protocol.JobChanges`: command,
        queue, priority, max_retries, backoff_base, timeout (no_timeout=True
        removes it), delay or run_at, label ("" removes it)."""
        self.request(p.EditJob(id=job_id, changes=p.JobChanges(**changes)), p.Changed)

    def restart(self, job_id: int, *, hold: bool = False, **changes: Any) -> int:
        """Add a copy of any job (its command, queue, settings, cwd and
        environment) with `changes` as for `edit`; returns the new job's id."""
        request = p.RestartJob(id=job_id, changes=p.JobChanges(**changes), hold=hold)
        return self.request(request, p.Added).ids[0]

    def pause_jobs(self, *ids: int, every: bool = False) -> list[int]:
        """Stop running jobs' process groups (SIGSTOP); their timeouts wait too.
        `every`: every running job, and every queue is paused. Returns the jobs paused."""
        return self.request(p.PauseJobs(ids=list(ids), all=every, paused=True), p.Changed).ids

    def resume_jobs(self, *ids: int, every: bool = False) -> list[int]:
        """Continue paused jobs (SIGCONT); `every`: every paused job and every queue."""
        return self.request(p.PauseJobs(ids=list(ids), all=every, paused=False), p.Changed).ids

    def kill(self, *ids: int, signal: int = 15) -> list[int]:
        """Send `signal` (a number; default SIGTERM) to running jobs' process groups.
        The attempt ends as its process does: a job killed by a signal failed."""
        return self.request(p.SignalJobs(ids=list(ids), signal=signal), p.Changed).ids

    def wait(self, *ids: int, timeout: float | None = None) -> p.Waited:
        """Block until every job is completed, dead or canceled (no ids: every
        unfinished job), or until `timeout` seconds (then `timed_out` is set)."""
        return self.request(p.WaitJobs(ids=list(ids), timeout=timeout), p.Waited, timeout=None)

    def read_log(
        self,
        job_id: int,
        *,
        attempt: int | None = None,
        stream: str = "stdout",
        offset: int = 0,
        limit: int = 1024 * 1024,
        wait: float = 0.0,
    ) -> p.LogChunk:
        """Up to `limit` bytes of an attempt's output (default: the latest attempt) from `offset`.
        `wait`: when nothing is there past `offset` yet and the attempt runs, the
        daemon answers once its output grew or it ended (or after `wait` seconds)."""
        request = p.ReadLog(id=job_id, attempt=attempt, stream=stream, offset=offset, limit=limit, wait=wait)  # type: ignore[arg-type]
        timeout = self.timeout if self.timeout is None else self.timeout + wait  # its wait is no silence
        return self.request(request, p.LogChunk, timeout=timeout)

    # -- the daemon -------------------------------------------------------------------

    def status(self) -> p.Status:
        """Counts by state, slots in use, queues, version and uptime."""
        return self.request(p.GetStatus(), p.Status)

    def workers(self) -> p.Workers:
        """The global slot count and the attempts running in the slots."""
        return self.request(p.ListWorkers(), p.Workers)

    def scale(self, concurrency: int) -> None:
        """Change the global number of slots now (persisted)."""
        self.request(p.ScaleWorkers(concurrency=concurrency), p.Ok)

    def queue_add(self, name: str, concurrency: int | None = None) -> None:
        """Create a named queue, optionally with its own concurrency limit."""
        self.request(p.AddQueue(name=name, concurrency=concurrency), p.Ok)

    def queue_set(self, name: str, concurrency: int | None) -> str:
        """Change a queue's concurrency limit (None: no limit but the global one);
        returns the daemon's confirmation."""
        return self.request(p.SetQueueConcurrency(name=name, concurrency=concurrency), p.Ok).message

    def queue_remove(self, name: str) -> None:
        """Delete an empty named queue."""
        self.request(p.RemoveQueue(name=name), p.Ok)

    def queues(self) -> list[p.QueueInfo]:
        """Every queue with its limit, paused flag and job counts."""
        return self.request(p.ListQueues(), p.Queues).queues

    def pause(self, name: str, *, jobs: bool = False) -> str:
        """Stop starting jobs from a queue; with `jobs`, pause its running jobs too
        (otherwise they go on). Returns the daemon's confirmation."""
        return self.request(p.PauseQueue(name=name, paused=True, jobs=jobs), p.Ok).message

    def resume(self, name: str) -> str:
        """Start jobs from a paused queue again, and resume its paused jobs."""
        return self.request(p.PauseQueue(name=name, paused=False), p.Ok).message

    # -- schedules ------------------------------------------------------------------

    def schedule_add(
        self,
        name: str,
        expression: str,
        job: p.JobSpec | str,
        *,
        tz: str | None = None,
        no_overlap: bool = False,
        catch_up: str = "one",
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> p.ScheduleInfo:
        """Add a recurring job: `expression` is a cron ("30 2 * * *"), a macro
        ("@daily") or "@every 10m"; `job` the command (or a JobSpec with its
        queue, priority, retries, timeout, cwd and env), run in `cwd` (default:
        ours) with our environment (or `env`) under its own, as captured now.
        `tz` None: the daemon's local zone. Returns the schedule as stored."""
        from queued.validation import check_spec

        spec = p.JobSpec(command=job) if isinstance(job, str) else job
        try:
            check_spec(spec)
            if not p.is_utf8(spec.command):
                raise ValueError("the command holds bytes that are not UTF-8")
        except ValueError as exc:
            raise InvalidRequest("invalid", str(exc)) from None
        base_cwd, base_env = cwd or os.getcwd(), dict(os.environ if env is None else env)
        if not _spec_is_utf8(spec):  # its own cwd or env travels as the request's, as bytes
            base_env, base_cwd = {**base_env, **spec.env}, spec.cwd or base_cwd
            spec = msgspec.structs.replace(spec, env={}, cwd=None)
        text_cwd, cwd_bytes = p.split_path(base_cwd)
        text_env, env_bytes = p.split_environment(base_env)
        request = p.AddSchedule(
            schedule=name,
            expression=expression,
            job=spec,
            cwd=text_cwd,
            env=text_env,
            env_bytes=env_bytes,
            cwd_bytes=cwd_bytes,
            tz=tz,
            no_overlap=no_overlap,
            catch_up=catch_up,  # type: ignore[arg-type]  # checked on the way out
        )
        [added] = self.request(request, p.Schedules).schedules
        return added

    def schedules(self) -> list[p.ScheduleInfo]:
        """Every schedule with its next and last run and its latest job's state."""
        return self.request(p.ListSchedules(), p.Schedules).schedules

    def schedule_remove(self, name: str) -> str:
        """Delete a schedule (its jobs stay); the daemon's confirmation."""
        return self.request(p.RemoveSchedule(schedule=name), p.Ok).message

    def schedule_pause(self, name: str) -> str:
        """Add no more jobs from a schedule until it is resumed."""
        return self.request(p.PauseSchedule(schedule=name, paused=True), p.Ok).message

    def schedule_resume(self, name: str) -> str:
        """Fire a paused schedule again, from now on."""
        return self.request(p.PauseSchedule(schedule=name, paused=False), p.Ok).message

    def schedule_run(self, name: str) -> int:
        """Add the schedule's job once, now; its id."""
        [job_id] = self.request(p.RunSchedule(schedule=name), p.Added).ids
        return job_id

    def config_get(self, key: str | None = None) -> dict[str, Any]:
        """Persisted defaults (max-retries, backoff-base, backoff-max, timeout, concurrency, ...)."""
        return self.request(p.GetConfig(key=key), p.ConfigValues).values

    def config_set(self, key: str, value: str | float) -> str:
        """Change one default for new jobs (or the daemon); returns the daemon's confirmation."""
        return self.request(p.SetConfig(key=key, value=str(value)), p.Ok).message

    def clean(self, older_than: float | None = None, states: Sequence[str] = ()) -> int:
        """Delete finished jobs (optionally only those finished over `older_than` s ago)."""
        return self.request(p.CleanJobs(older_than=older_than, states=list(states)), p.Cleaned).count  # type: ignore[arg-type]

    def shutdown(self, mode: str = "graceful") -> str:
        """Stop the daemon: "graceful" lets running jobs finish, "now" interrupts them."""
        return self.request(p.Shutdown(mode=mode), p.Ok).message  # type: ignore[arg-type]


def _checked_frame(request: p.Request) -> bytes:
    """`request` as a frame, once the daemon's own schema accepts it. An id no
    job can have is "no job N", as the daemon says of any id it does not know."""
    for job_id in _named_ids(request):
        if not 1 <= job_id <= p.MAX_JOB_ID:
            raise DaemonError("not_found", f"no job {job_id}")
    if isinstance(request, p.AddJobs):
        for spec in request.jobs:
            for dep in spec.after:
                if dep > p.MAX_JOB_ID:
                    raise DaemonError("not_found", f"--after names unknown job {dep}")
    try:
        frame = p.encode_frame(request)
    except OverflowError:
        raise InvalidRequest("bad_request", "a number in the request is too large") from None
    except UnicodeEncodeError:
        raise InvalidRequest(
            "bad_request",
            "a job's --cwd or --env holds bytes that are not UTF-8: add such jobs one at a time",
        ) from None
    try:
        p.decode_request(memoryview(frame)[p.HEADER_SIZE :], type(request))
    except p.ProtocolError as exc:
        raise InvalidRequest(exc.code, exc.message) from None
    return frame


def _check_specs(specs: Sequence[p.JobSpec]) -> None:
    """InvalidRequest naming the first job the daemon would refuse whatever its state."""
    from queued.validation import check_spec

    for index, spec in enumerate(specs):
        try:
            check_spec(spec)
            if not (p.is_utf8(spec.command) and (spec.label is None or p.is_utf8(spec.label))):
                raise ValueError("the command or label holds bytes that are not UTF-8")
        except ValueError as exc:
            prefix = f"job {index + 1} of {len(specs)}: " if len(specs) > 1 else ""
            raise InvalidRequest("invalid", f"{prefix}{exc}") from None


def _spec_is_utf8(spec: p.JobSpec) -> bool:
    return (spec.cwd is None or p.is_utf8(spec.cwd)) and all(
        p.is_utf8(key) and p.is_utf8(value) for key, value in spec.env.items()
    )


def _named_ids(request: p.Request) -> list[int]:
    one = getattr(request, "id", None)
    return [*getattr(request, "ids", ()), *([one] if isinstance(one, int) else [])]
