"""`queuectl`: the command line, a thin layer over `queuectl.Client`.

Exit codes: 0 success; 1 the daemon refused (one line on stderr); 2 usage;
3 the daemon is not reachable. Only click, msgspec and the protocol are
imported up front: every command pays for what it uses, nothing more.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any, NoReturn

import click

from queued import __version__
from queued.lifecycle import COMPLETED, DEAD, TERMINAL_STATES
from queued.protocol import JobSpec

from .client import Client, DaemonError, DaemonUnreachable, InvalidRequest, PartlyDone, QueuectlError
from .context import client, emit_json, ids_text
from .job_options import (
    AddCommand,
    check_job_options,
    command_text,
    job_context_options,
    job_settings_options,
    job_spec,
)
from .options import (
    CANCELABLE_JOB,
    COUNT,
    COUNT_FROM_1,
    DEAD_JOB,
    DURATION,
    FINISHED_JOB,
    FINISHED_STATE,
    JOB_ID,
    NODE,
    QUEUE,
    RETRYABLE_JOB,
    STATE,
    UNIQUE_KEY,
    Moment,
    json_option,
)

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 124
FOLLOW_INTERVAL = 0.2  # seconds between reads when following a log


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    prefix = "" if message.startswith("queuectl") else "queuectl: "
    click.echo(f"{prefix}{message}", err=True)
    sys.exit(code)


class Commands(click.Group):
    """queuectl's commands. Those about the daemon itself (status, workers,
    queue, config, shutdown, completion, web) live in `queuectl.commands`, those
    that change jobs already added in `queuectl.changing`: each gathers its
    own in a `registry` group, added here only when one of them runs or the
    whole list is wanted, so that `queuectl add` never imports them."""

    lazy_loaded = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and self._load_lazy_commands():
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_lazy_commands()
        return super().list_commands(ctx)

    def _load_lazy_commands(self) -> bool:
        """Add the commands of queuectl.commands and queuectl.changing; False if they were already."""
        if self.lazy_loaded:
            return False
        self.lazy_loaded = True
        from . import changing, commands, schedules

        for module in (commands, changing, schedules):
            for name, command in module.registry.commands.items():
                self.add_command(command, name)
        return True


@click.group(
    cls=Commands,
    invoke_without_command=True,  # `queuectl` alone: the help, whole (see the callback)
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--socket",
    envvar="QUEUED_SOCKET",
    metavar="PATH",
    help="queued's socket (env QUEUED_SOCKET; default: the runtime dir).",
)
@click.option(
    "--trust-uid",
    "trust_uids",
    type=click.IntRange(min=0),
    multiple=True,
    envvar="QUEUECTL_TRUST_UID",
    metavar="UID",
    help="Also talk to a daemon run by this uid (repeatable; env QUEUECTL_TRUST_UID). "
    "By default only yours, root's and a system daemon's: see README, Security.",
)
@click.version_option(__version__, prog_name="queuectl")
@click.pass_context
def cli(ctx: click.Context, socket: str | None, trust_uids: tuple[int, ...]) -> None:
    """Drive the queued job queue.

    \b
    Example:
      queuectl add --max-retries 5 -- ./backup.sh /srv && queuectl ls
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)
    ctx.obj = ctx.with_resource(Client(socket, trust_uids=trust_uids))


# -- adding jobs ----------------------------------------------------------------------


# Options end at the command's first word: `add ls -la` runs `ls -la`, as
# `tsp ls -la` and `pueue add ls -la` do; an unknown option before it is an error.
@cli.command(cls=AddCommand, context_settings={"allow_interspersed_args": False})
@job_settings_options
@click.option("--delay", type=DURATION, help="Start no earlier than this from now (90s, 5m, 2h).")
@click.option("--at", type=Moment(), help="Start no earlier than this ISO 8601 time.")
@click.option("--after", type=JOB_ID, multiple=True, help="Run once job ID completed (repeatable).")
@click.option("-l", "--label", help="A name to filter by.")
@job_context_options
@click.option("--from", "source", type=click.File("r"), help="One command or JSON job per line; - is stdin.")
@click.option("--hold", is_flag=True, help="Do not run it until `queuectl release ID`.")
@click.option(
    "-u",
    "--unique",
    type=UNIQUE_KEY,
    help="While a job with this key is unfinished, give its id instead of adding another.",
)
@click.option(
    "--unique-for", type=DURATION, help="With --unique: a job of the key completed this recently counts too."
)
@click.option("--here", is_flag=True, help="Run it only on the node that accepts it (files of this host).")
@click.option(
    "--node", "pin_node", type=NODE, metavar="NAME", help="Run it only on node NAME (see `queuectl status`)."
)
@click.option("--quiet", is_flag=True, help="Print the id alone.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": N, "existing": false} per job.')
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def add(command: tuple[str, ...], source: Any, quiet: bool, as_json: bool, **opts: Any) -> None:
    """Add a job: a shell command, run with /bin/sh -c in this directory and environment.

    \b
    Options go before the command: from its first word on, every word is the
    job's own (`queuectl add ls -la` runs `ls -la`). Several words are quoted
    as one command line; one word is used as is, so it may use the shell.
    Examples:
      queuectl add "make -C ~/src test > /tmp/test.log"
      queuectl add --max-retries 5 --timeout 2h -- ./backup.sh /srv
      queuectl add --from jobs.txt
      queuectl add --unique nightly-backup --unique-for 20h -- ./backup.sh /srv
      queuectl add --here -- ./train.sh data/local.bin
      queuectl add --needs gpu=1 -- python train.py   # CUDA_VISIBLE_DEVICES: its GPU
      queuectl add --slots 4 -- make -j4               # takes 4 of the node's slots
    """
    check_job_options(opts)
    if opts["unique_for"] is not None and opts["unique"] is None:
        raise click.UsageError("--unique-for needs --unique KEY")
    here, pin_node = opts.pop("here"), opts.pop("pin_node")
    if here and pin_node is not None:
        raise click.UsageError("give either --here or --node, not both")
    if pin_node is not None and not pin_node.strip():
        raise click.BadParameter("is empty", param_hint="--node")
    # Given only when asked: the plain add's call stays as it was.
    pin: dict[str, Any] = {"here": True} if here else {}
    if pin_node is not None:
        pin["node"] = pin_node
    if source is not None:
        if command:
            raise click.UsageError("give either --from or a command, not both")
        _add_from(source, quiet, as_json, job_spec(opts), pin)
        return
    spec = job_spec(opts, command_text(command))
    _print_added(client().add_jobs([spec], **pin), [spec], quiet, as_json)


def _print_added(added: list[Any], specs: list[JobSpec], quiet: bool, as_json: bool) -> None:
    """The ids of an add, in order: a job found by its unique key says so."""
    if as_json:
        import msgspec

        for job in added:
            click.echo(msgspec.json.encode({"id": job.id, "existing": job.existing}).decode())
    elif quiet:
        click.echo("\n".join(str(job.id) for job in added))
    elif len(added) == 1:
        [job], [spec] = added, specs
        if job.existing:
            click.echo(f"existing job {job.id} (unique key {spec.unique_key!r})")
        else:
            click.echo(f"added job {job.id}")
    else:
        new = [job.id for job in added if not job.existing]
        found = [job.id for job in added if job.existing]
        parts = []
        if len(new) > 1:
            parts.append(f"added {len(new)} jobs ({new[0]}-{new[-1]})")
        elif new:
            parts.append(f"added job {new[0]}")
        if found:
            kept = ", ".join(map(str, dict.fromkeys(found)))
            parts.append(f"{len(found)} found by unique key ({kept})")
        click.echo("; ".join(parts))


def _add_from(source: Any, quiet: bool, as_json: bool, defaults: JobSpec, pin: dict[str, Any]) -> None:
    """Every line checked before any is sent; then BATCH lines per request,
    each all-or-nothing. A refusal names its line (or the lines of its
    request), and says which lines were added before it, whose ids are printed."""
    from .client import BATCH, PartlyAdded, named_job
    from .jobfile import JobFileError, numbered_specs

    # A short-lived process making 100,000s of objects that form no cycles:
    # the collector would walk them all again and again (a third of its time).
    gc.disable()
    try:
        specs, lines = numbered_specs(source, defaults)
    except JobFileError as exc:
        raise click.UsageError(str(exc)) from None
    if not specs:
        raise click.UsageError("no jobs in the input")

    def where(job: int | None, first: int) -> str:
        if job is not None:
            return f"line {lines[job]}"
        last = min(first + BATCH, len(lines)) - 1
        return f"line {lines[first]}" if last == first else f"lines {lines[first]}-{lines[last]}"

    def refused(exc: DaemonError) -> bool:
        """The request was refused, so it changed nothing (a storage error may
        come after its commit was sent: then nobody knows)."""
        return exc.code not in ("storage", "internal")

    try:
        added = client().add_jobs(specs, **pin)
    except PartlyAdded as exc:
        _print_added(exc.added, specs, quiet, as_json)
        before = f"the {exc.first:,} jobs of the lines before line {lines[exc.first]} were added"
        after = ", none from it on" if refused(exc) else ""
        fail(f"{where(exc.job, exc.first)}: {exc.reason}; {before}{after}")
    except DaemonError as exc:  # the first request
        job, reason = named_job(exc.message, min(len(specs), BATCH))
        nothing = "; nothing was added" if refused(exc) and len(specs) > 1 else ""
        raise type(exc)(exc.code, f"{where(job, 0)}: {reason}{nothing}") from None
    _print_added(added, specs, quiet, as_json)


@cli.command()
@click.argument("job_json", metavar="JSON")
@click.option("--quiet", is_flag=True, help="Print the id alone.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": N, "existing": false}.')
def enqueue(job_json: str, quiet: bool, as_json: bool) -> None:
    """Add a job described by a JSON object (the seeds' form).

    \b
    Example:
      queuectl enqueue '{"command": "sleep 2", "max_retries": 3}'
    """
    from .jobfile import spec_from_json

    try:
        spec = spec_from_json(job_json, JobSpec(command="-"))
    except ValueError as exc:
        raise click.UsageError(f"invalid job: {exc}") from None
    _print_added(client().add_jobs([spec]), [spec], quiet, as_json)


# -- reading jobs ------------------------------------------------------------------------


@cli.command("ls")
@click.option("-s", "--state", "states", type=STATE, multiple=True, help="Only this state (repeatable).")
@click.option("-q", "--queue", type=QUEUE, help="Only this queue.")
@click.option("-l", "--label", help="Only this label.")
@click.option("-n", "--limit", type=COUNT, default=50, show_default=True, help="The newest N jobs.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Every matching job.")
@click.option(
    "-c",
    "--columns",
    metavar="A,B,...",
    callback=lambda ctx, param, value: _columns(value),
    help="The table's columns, from id, state, queue, priority, tries, exit, when, started, ended, "
    "duration, label, key, command [id,state,queue,priority,tries,exit,when,label,command].",
)
@json_option
def list_jobs(
    states: tuple[str, ...],
    queue: str | None,
    label: str | None,
    limit: int,
    show_all: bool,
    columns: tuple[str, ...] | None,
    as_json: bool,
) -> None:
    """List jobs, oldest first. WHEN is when a waiting job runs (or `after 3`:
    the jobs it waits for), else when it last changed.

    \b
    Examples:
      queuectl ls --state failed --state dead --limit 20
      queuectl ls --columns id,state,started,ended,duration,command
    """
    jobs = client().list(states=states, queue=queue, label=label, limit=None if show_all else limit)
    _print_jobs(jobs, as_json, limited=not show_all and len(jobs) == limit, columns=columns)


def _columns(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    from .output import parse_columns

    try:
        return parse_columns(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--columns") from None


def _print_jobs(
    jobs: list[Any], as_json: bool, limited: bool = False, columns: tuple[str, ...] | None = None
) -> None:
    from . import output

    if as_json:
        emit_json([output.job_json(job) for job in jobs])
        return
    if not jobs:
        click.echo("no jobs", err=True)
        return
    table = output.job_table(
        jobs,
        now=time.time(),
        width=output.terminal_width(),
        colour=output.use_colour(),
        columns=columns or output.default_columns(jobs),
    )
    click.echo(table)
    if limited:
        click.echo(f"(the newest {len(jobs)}; --limit N or --all for more)", err=True)


def _or_latest(job_id: int | None) -> int:
    """The id given, or that of the most recently added job (`tsp -t`, `pueue follow`)."""
    if job_id is not None:
        return job_id
    from .completion import latest_job_id

    return latest_job_id(click.get_current_context())


@cli.command()
@click.argument("job_id", type=JOB_ID, required=False)
@json_option
def show(job_id: int | None, as_json: bool) -> None:
    """Everything about one job, with its attempts (no id, or `last`: the latest job).

    \b
    Example:
      queuectl show 7 --json | jq '.runs[-1].error'
    """
    from . import output

    detail = client().get(_or_latest(job_id))
    if as_json:
        emit_json(output.detail_json(detail))
    else:
        click.echo(
            output.job_block(
                detail, now=time.time(), width=output.terminal_width(), colour=output.use_colour()
            )
        )


@cli.command()
@click.argument("job_ids", nargs=-1, type=JOB_ID)
@click.option("--attempt", type=COUNT_FROM_1, help="This attempt [the latest].")
@click.option("--stdout", "want_stdout", is_flag=True, help="Standard output (alone, unless --stderr too).")
@click.option(
    "--stderr", "want_stderr", is_flag=True, help="Standard error (both: one after the other, labelled)."
)
@click.option("-n", "--tail", "lines", type=COUNT, metavar="N", help="Only the last N lines of each stream.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing output until the job is finished.")
def logs(
    job_ids: tuple[int, ...],
    attempt: int | None,
    want_stdout: bool,
    want_stderr: bool,
    lines: int | None,
    follow: bool,
) -> None:
    """Print jobs' output: stdout to stdout, stderr to stderr (no id: the latest job).

    \b
    Several jobs are printed one after another, each under a `==> job ID <==` line.
    Examples:
      queuectl logs -f                   # follow the job added last
      queuectl logs --tail 20 7 8
    """
    from .follow import print_logs

    streams = tuple(s for s, wanted in (("stdout", want_stdout), ("stderr", want_stderr)) if wanted)
    streams = streams or ("stdout", "stderr")
    ids = job_ids or (_or_latest(None),)
    if follow and len(ids) > 1:
        raise click.UsageError("-f follows one job; name only one")
    refused = False
    for index, job_id in enumerate(ids):
        if len(ids) > 1:
            click.echo(("\n" if index else "") + f"==> job {job_id} <==")
        try:
            print_logs(
                client(),
                job_id,
                attempt=attempt,
                streams=streams,
                follow=follow,
                interval=FOLLOW_INTERVAL,
                tail=lines,
                labelled=want_stdout and want_stderr,
            )
        except DaemonError as exc:
            if len(ids) == 1:
                raise
            click.echo(f"queuectl: {exc.message}", err=True)  # the others are still shown
            refused = True
    if refused:
        sys.exit(EXIT_REFUSED)


@cli.command()
@click.argument("job_ids", nargs=-1, type=JOB_ID)
@click.option("-a", "--all", "every", is_flag=True, help="Every job not finished yet.")
@click.option("--timeout", type=DURATION, help="Give up after this long (exit 124).")
@json_option
def wait(job_ids: tuple[int, ...], every: bool, timeout: float | None, as_json: bool) -> None:
    """Wait until jobs finish; exit 0 only if every one completed.

    \b
    With no ids, wait for the job added last; with --all, for every job not finished yet.
    Examples:
      queuectl wait 3 4 && echo "all completed"
      queuectl add -- make test && queuectl wait && notify-send done
    """
    from . import output

    if every and job_ids:
        raise click.UsageError("give job ids or --all, not both")
    if not job_ids and not every:
        job_ids = (_or_latest(None),)

    if sys.stderr.isatty() and not as_json:
        from .progress import wait_with_progress

        result = wait_with_progress(client(), job_ids, timeout, sys.stderr)
    else:
        result = client().wait(*job_ids, timeout=timeout)
    if as_json:
        emit_json([output.job_json(job) for job in result.jobs])
    else:
        for job in result.jobs:
            if job.state != COMPLETED:
                reason = f": {job.error}" if job.error else ""
                click.echo(f"job {job.id} {job.state}{reason}", err=True)
    if result.timed_out:
        fail(
            f"timed out; {sum(j.state in TERMINAL_STATES for j in result.jobs)} of "
            f"{len(result.jobs)} jobs finished",
            EXIT_TIMEOUT,
        )
    if any(job.state != COMPLETED for job in result.jobs):
        sys.exit(EXIT_REFUSED)


# -- changing jobs -------------------------------------------------------------------------


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=CANCELABLE_JOB)
def cancel(job_ids: tuple[int, ...]) -> None:
    """Cancel pending, held, failed or running jobs (a running one's process group is stopped).

    \b
    Example:
      queuectl cancel 7 8
    """
    try:
        ids = client().cancel(*job_ids)
    except PartlyDone as exc:  # the others were canceled all the same
        if exc.done:
            click.echo(f"canceled {ids_text(exc.done)}")
        for job_id in sorted(exc.refused):
            click.echo(f"queuectl: {exc.refused[job_id]}", err=True)
        sys.exit(EXIT_REFUSED)
    click.echo(f"canceled {ids_text(ids)}")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=FINISHED_JOB)
def rm(job_ids: tuple[int, ...]) -> None:
    """Remove finished jobs and their logs.

    \b
    Example:
      queuectl rm 7
    """
    ids = client().remove(*job_ids)
    click.echo(f"removed {ids_text(ids)}")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=RETRYABLE_JOB)
def retry(job_ids: tuple[int, ...]) -> None:
    """Run completed, dead or canceled jobs again, attempts reset.

    \b
    Example:
      queuectl retry 7
    """
    ids = client().retry(*job_ids)
    click.echo(f"retrying {ids_text(ids)}")


@cli.group()
def dlq() -> None:
    """The dead-letter queue: jobs that used up their retries.

    \b
    Example:
      queuectl dlq ls && queuectl dlq retry --all
    """


@dlq.command("ls")
@click.option("-n", "--limit", type=COUNT, help="The newest N dead jobs.")
@json_option
def dlq_ls(limit: int | None, as_json: bool) -> None:
    """List dead jobs.

    \b
    Example:
      queuectl dlq ls --json
    """
    _print_jobs(client().list(states=[DEAD], limit=limit), as_json)


@dlq.command("retry")
@click.argument("job_ids", nargs=-1, type=DEAD_JOB)
@click.option("--all", "every", is_flag=True, help="Every dead job.")
def dlq_retry(job_ids: tuple[int, ...], every: bool) -> None:
    """Run dead jobs again, attempts reset.

    \b
    Example:
      queuectl dlq retry --all
    """
    if not job_ids and not every:
        raise click.UsageError("name the jobs to retry, or --all")
    ids = client().retry(*job_ids, all_dead=every)
    click.echo(f"retrying {ids_text(ids)}" if ids else "no dead jobs")


@dlq.command("purge")
def dlq_purge() -> None:
    """Delete every dead job and its logs.

    \b
    Example:
      queuectl dlq purge
    """
    count = client().clean(states=[DEAD])
    click.echo(f"purged {count} dead job{'s' * (count != 1)}")


@cli.command()
@click.option("--older-than", type=DURATION, help="Only jobs finished at least this long ago.")
@click.option(
    "-s",
    "--state",
    "states",
    type=FINISHED_STATE,
    multiple=True,
    help="Only this state (repeatable) [completed, dead, canceled].",
)
def clean(older_than: float | None, states: tuple[str, ...]) -> None:
    """Delete finished jobs and their logs.

    \b
    Example:
      queuectl clean --older-than 7d --state completed
    """
    count = client().clean(older_than=older_than, states=states)
    click.echo(f"removed {count} job{'s' * (count != 1)}")


# -- the daemon ----------------------------------------------------------------------------------


def run() -> None:
    """The command line: exit codes (as SystemExit), and one line instead of a traceback."""
    try:
        cli.main(prog_name="queuectl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            # `queuectl`, `queuectl dlq`: the help they ask for, whole, as --help prints it.
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        # One line, like every other error; --help has the long story.
        where = exc.ctx.command_path if exc.ctx else "queuectl"
        fail(f"{_usage_message(exc)} (see `{where} --help`)".replace("\n", " "), EXIT_USAGE)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    except DaemonUnreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except InvalidRequest as exc:  # found before sending: malformed is a usage error, a refused job is not
        fail(exc.message, EXIT_USAGE if exc.code == "bad_request" else EXIT_REFUSED)
    except DaemonError as exc:
        fail(exc.message)
    except QueuectlError as exc:
        fail(str(exc))
    except BrokenPipeError:
        sys.exit(0)  # `queuectl ls | head`
    except Exception as exc:  # a bug: still one line, and the details on request
        import os

        if os.environ.get("QUEUECTL_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (QUEUECTL_DEBUG=1 shows the traceback)")


def _usage_message(exc: click.UsageError) -> str:
    if isinstance(exc, click.NoSuchOption):
        guess = f"; did you mean {' or '.join(exc.possibilities)}?" if exc.possibilities else ""
        return f"no such option: {exc.option_name}{guess}"
    return exc.format_message()


def main() -> NoReturn:
    """The console script: `run`, then out without the interpreter's teardown,
    which costs a short-lived command about as much as all its own work (~9 ms
    here): the output is flushed, and nothing else is left to tidy."""
    import os

    try:
        run()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe (`queuectl ls | head`): nothing more to say
    os._exit(code)
