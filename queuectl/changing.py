"""queuectl's commands that change jobs already added: hold and release, edit
and restart, pause, resume and kill (what pueue's stash, enqueue, edit,
restart, pause, start and kill do). Imported only when one of them runs
(queuectl.cli adds `registry`'s commands to its own)."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from queued.protocol import JobChanges

from .context import client, ids_text
from .options import (
    COUNT,
    DURATION,
    EDITABLE_JOB,
    HELD_JOB,
    HOLDABLE_JOB,
    JOB_ID,
    NEEDS_OR_NONE,
    QUEUE,
    RUNNING_JOB,
    SLOTS,
    Moment,
)

registry = click.Group()  # this module's commands; queuectl.cli adds them to its own group


class SignalType(click.ParamType):
    """A signal by name (TERM, SIGTERM, usr1) or number."""

    name = "signal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        import signal

        if isinstance(value, int):
            return value
        text = str(value).strip().upper()
        if text.isdigit() and 1 <= int(text) <= 64:
            return int(text)
        name = text if text.startswith("SIG") else f"SIG{text}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            self.fail(
                f"{value!r} is not a signal name or number (try TERM, INT, KILL, USR1, HUP)", param, ctx
            )


class TimeoutOrNone(click.ParamType):
    """A duration, or none (off, 0) for no timeout: then 0.0."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        if str(value).strip().lower() in ("none", "off", "0"):
            return 0.0
        seconds = DURATION.convert(value, param, ctx)
        if seconds <= 0:
            self.fail("must be more than 0 (or none)", param, ctx)
        return seconds


def change_options(f: Any) -> Any:
    """The options of `edit` and `restart`: what may change in a job."""
    options = [
        click.option("-c", "--command", help="The shell command."),
        click.option("-q", "--queue", type=QUEUE, help="Named queue."),
        click.option("-p", "--priority", type=click.IntRange(-(10**9), 10**9), help="Lower runs first."),
        click.option("-r", "--max-retries", type=COUNT, help="Retries after the first attempt."),
        click.option("--backoff-base", type=click.FloatRange(1, 3600), help="Wait base**k s before retry k."),
        click.option(
            "--timeout", type=TimeoutOrNone(), help="Kill its process group after this long; none: never."
        ),
        click.option("--delay", type=DURATION, help="Run no earlier than this from now (90s, 5m, 2h)."),
        click.option("--at", type=Moment(), help="Run no earlier than this ISO 8601 time."),
        click.option("-l", "--label", help='A name to filter by; "" removes it.'),
        click.option(
            "--needs",
            type=NEEDS_OR_NONE,
            metavar="NAME=N,...",
            help="What it needs instead (gpu=1,licence=1); none: nothing.",
        ),
        click.option("--slots", type=SLOTS, metavar="N", help="Take N of the node's slots."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _changes(opts: dict[str, Any]) -> JobChanges:
    timeout = opts["timeout"]
    if opts["delay"] is not None and opts["at"] is not None:
        raise click.UsageError("give either --delay or --at, not both")
    return JobChanges(
        command=opts["command"],
        queue=opts["queue"],
        priority=opts["priority"],
        max_retries=opts["max_retries"],
        backoff_base=opts["backoff_base"],
        timeout=timeout or None,
        no_timeout=timeout == 0.0,
        delay=opts["delay"],
        run_at=opts["at"],
        label=opts["label"],
        slots=opts["slots"],
        needs=opts["needs"],
    )


@registry.command()
@click.argument("job_ids", nargs=-1, required=True, type=HOLDABLE_JOB)
def hold(job_ids: tuple[int, ...]) -> None:
    """Keep pending or failed jobs from starting until `queuectl release` (pueue stash).

    \b
    Example:
      queuectl hold 7 8 && queuectl release 7
    """
    click.echo(f"holding {ids_text(client().hold(*job_ids))}")


@registry.command()
@click.argument("job_ids", nargs=-1, required=True, type=HELD_JOB)
def release(job_ids: tuple[int, ...]) -> None:
    """Let held jobs run (pueue enqueue); each waits for its time and dependencies as before.

    \b
    Example:
      queuectl add --hold -- ./deploy.sh && queuectl release last
    """
    click.echo(f"released {ids_text(client().release(*job_ids))}")


@registry.command()
@click.argument("job_id", type=EDITABLE_JOB)
@change_options
def edit(job_id: int, **opts: Any) -> None:
    """Change a job that has not started: pending, held, or failed and waiting for its retry.

    \b
    With no option, its command opens in $VISUAL or $EDITOR. A running or finished
    job cannot change; `queuectl restart ID` adds a changed copy.
    Examples:
      queuectl edit 7 --priority -10 --queue gpu
      queuectl edit 7 --command "make -j4 test" --timeout none
      queuectl edit 7 --needs gpu=2 --slots 2
      queuectl edit 7                     # the command, in your editor
    """
    changes = _changes(opts)
    if changes == JobChanges():
        command = _edit_command(job_id)
        if command is None:
            click.echo(f"job {job_id} unchanged")
            return
        changes = JobChanges(command=command)
    client().edit(job_id, **msgspec.structs.asdict(changes))
    click.echo(f"edited job {job_id}")


def _edit_command(job_id: int) -> str | None:
    """With no option, the job's command in $VISUAL or $EDITOR (pueue edit); None if unchanged."""
    import os
    import sys

    if not (os.environ.get("VISUAL") or os.environ.get("EDITOR")) and not sys.stdin.isatty():
        raise click.UsageError("nothing to change: give an option, or set EDITOR to edit the command")
    command = client().get(job_id).job.command
    edited = click.edit(command + "\n", extension=".sh")
    if edited is None or edited.strip() == command.strip():
        return None
    if not edited.strip():
        raise click.UsageError("the edited command is empty; the job is unchanged")
    return edited.strip("\n")


@registry.command()
@click.argument("job_id", type=JOB_ID)
@change_options
@click.option("--hold", is_flag=True, help="Hold the copy until `queuectl release`.")
@click.option("--quiet", is_flag=True, help="Print the new id alone.")
def restart(job_id: int, hold: bool, quiet: bool, **opts: Any) -> None:
    """Add a copy of any job: its command, queue, settings, cwd and environment, with changes.

    \b
    The job itself is left as it is. The copy has no dependencies and is due now.
    Examples:
      queuectl restart 7
      queuectl restart last --command "make test" --queue gpu
    """
    changes = _changes(opts)
    new_id = client().restart(
        job_id, hold=hold, **{f: getattr(changes, f) for f in changes.__struct_fields__}
    )
    click.echo(new_id if quiet else f"added job {new_id} (a copy of job {job_id})")


def _pause_or_resume(job_ids: tuple[int, ...], every: bool, paused: bool) -> None:
    if not job_ids and not every:
        raise click.UsageError("name the jobs, or --all")
    if job_ids and every:
        raise click.UsageError("give job ids or --all, not both")
    if paused:
        ids = client().pause_jobs(*job_ids, every=every)
    else:
        ids = client().resume_jobs(*job_ids, every=every)
    verb = "paused" if paused else "resumed"
    if every:
        click.echo(f"every queue {verb}" + (f", and {ids_text(ids)}" if ids else ""))
    else:
        click.echo(f"{verb} {ids_text(ids)}" if ids else f"nothing to do: already {verb}")


@registry.command()
@click.argument("job_ids", nargs=-1, type=RUNNING_JOB)
@click.option("-a", "--all", "every", is_flag=True, help="Every running job, and every queue.")
def pause(job_ids: tuple[int, ...], every: bool) -> None:
    """Pause running jobs: their process groups are stopped (SIGSTOP) and keep their slots.

    \b
    A paused job's timeout waits too. --all also pauses every queue, so nothing new starts.
    Examples:
      queuectl pause 7
      queuectl pause --all && queuectl resume --all
    """
    _pause_or_resume(job_ids, every, paused=True)


@registry.command()
@click.argument("job_ids", nargs=-1, type=RUNNING_JOB)
@click.option("-a", "--all", "every", is_flag=True, help="Every paused job, and every queue.")
def resume(job_ids: tuple[int, ...], every: bool) -> None:
    """Continue paused jobs (SIGCONT to their process groups).

    \b
    Example:
      queuectl resume 7
    """
    _pause_or_resume(job_ids, every, paused=False)


@registry.command()
@click.argument("job_ids", nargs=-1, required=True, type=RUNNING_JOB)
@click.option(
    "-s", "--signal", "sig", type=SignalType(), default="TERM", show_default=True, help="Name or number."
)
def kill(job_ids: tuple[int, ...], sig: int) -> None:
    """Send a signal to running jobs' process groups (pueue kill -s).

    \b
    The attempt ends as its process does: killed by a signal, it failed, and is
    retried while it has retries left (`queuectl cancel` stops a job for good).
    Examples:
      queuectl kill 7
      queuectl kill -s USR1 7
    """
    import signal

    ids = client().kill(*job_ids, signal=sig)
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    click.echo(f"sent {name} to {ids_text(ids)}")
