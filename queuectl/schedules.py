"""queuectl's `schedule` commands: recurring jobs. Imported only when one of
them runs (queuectl.cli adds `registry`'s commands to its own)."""

from __future__ import annotations

import time
from typing import Any

import click

from .completion import ScheduleNameType
from .context import client, emit_json
from .job_options import (
    AddCommand,
    check_job_options,
    command_text,
    job_context_options,
    job_settings_options,
    job_spec,
)
from .options import json_option

registry = click.Group()  # this module's commands; queuectl.cli adds them to its own group
SCHEDULE = ScheduleNameType()


def _job_options(f: Any) -> Any:
    return job_settings_options(job_context_options(f))


@registry.group()
def schedule() -> None:
    """Recurring jobs: each firing adds an ordinary job labelled with the
    schedule's name (retries, logs, wait and the dead-letter queue as for any job).

    \b
    Examples:
      queuectl schedule add backup "30 2 * * *" -- ./backup.sh /srv
      queuectl schedule add poll --every 10m --no-overlap -- ./poll.sh
      queuectl schedule ls
    """


@schedule.command("add", cls=AddCommand)
@click.argument("name")
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar='["CRON"] -- COMMAND...')
@click.option("--every", metavar="DURATION", help="Fire every DURATION (30s, 10m, 2h, 1d) instead of a cron.")
@click.option("--tz", metavar="ZONE", help="The cron's time zone, e.g. Europe/Berlin [queued's local zone].")
@click.option("--no-overlap", is_flag=True, help="Skip a firing while the previous job is unfinished.")
@click.option(
    "--catch-up",
    type=click.Choice(["none", "one", "all"]),
    default="one",
    show_default=True,
    help="Firings missed while queued was down: none, the latest one, or all (the latest 10 at most).",
)
@_job_options
@json_option
def schedule_add(
    name: str,
    words: tuple[str, ...],
    every: str | None,
    tz: str | None,
    no_overlap: bool,
    catch_up: str,
    as_json: bool,
    **opts: Any,
) -> None:
    """Add a schedule NAME firing on a five-field cron (minute hour day month
    weekday, or @hourly, @daily, @weekly, @monthly, @yearly) or --every
    DURATION. Its job is the COMMAND after `--`, run as `queuectl add` would
    run it, in this directory and environment (captured now). A daily time
    that a daylight-saving change skips runs once, just after the change; one
    that happens twice runs once.

    \b
    Examples:
      queuectl schedule add backup "30 2 * * *" --tz Europe/Berlin -- ./backup.sh /srv
      queuectl schedule add report @daily --max-retries 3 -- make report
      queuectl schedule add poll --every 10m --no-overlap --catch-up none -- ./poll.sh
      queuectl schedule add retrain @weekly --needs gpu=1 -- python train.py
    """
    check_job_options(opts)
    if every is not None:
        expression = f"@every {every}"
        command = words
    else:
        if not words:
            raise click.UsageError('missing the cron expression (e.g. "30 2 * * *") or --every DURATION')
        expression, command = words[0], words[1:]
    if not command:
        raise click.UsageError("missing the command to run (queuectl schedule add NAME CRON -- CMD...)")
    try:
        from queued.cron import check_zone, parse_schedule

        parse_schedule(expression, anchor=time.time())
        if tz is not None:
            check_zone(tz)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    spec = job_spec(opts, command_text(command))
    added = client().schedule_add(name, expression, spec, tz=tz, no_overlap=no_overlap, catch_up=catch_up)
    if as_json:
        emit_json(_info_json(added))
        return
    from . import output

    nxt = "never" if added.next_run is None else output.absolute(added.next_run)
    click.echo(f"added schedule {name} ({added.expression}, {added.tz}): next run {nxt}")


@schedule.command("ls")
@json_option
def schedule_ls(as_json: bool) -> None:
    """Every schedule with its next and last run and its last job's state.

    \b
    Examples:
      queuectl schedule ls
      queuectl schedule ls --json | jq '.[] | {name, next_run}'
    """
    from . import output

    found = client().schedules()
    if as_json:
        emit_json([_info_json(info) for info in found])
        return
    if not found:
        click.echo("no schedules", err=True)
        return
    now = time.time()
    rows = []
    for info in found:
        last_job = (
            "-" if info.last_job_id is None else f"{info.last_job_id} {info.last_job_state or 'removed'}"
        )
        rows.append(
            [
                info.name,
                info.expression,
                info.tz,
                "paused" if info.paused else output.relative(info.next_run, now),
                output.relative(info.last_run, now),
                last_job,
                info.command,
            ]
        )
    headers = ["NAME", "SCHEDULE", "ZONE", "NEXT", "LAST", "LAST JOB", "COMMAND"]
    click.echo(output.table(headers, rows, width=output.terminal_width()))


def _info_json(info: Any) -> dict[str, Any]:
    import msgspec

    from . import output

    data = msgspec.to_builtins(info)
    for key in ("created_at", "next_run", "last_run"):
        data[key] = output.iso(data[key])
    return data


@schedule.command("rm")
@click.argument("name", type=SCHEDULE)
def schedule_rm(name: str) -> None:
    """Remove a schedule (the jobs it added stay).

    \b
    Example:
      queuectl schedule rm backup
    """
    click.echo(client().schedule_remove(name))


@schedule.command("pause")
@click.argument("name", type=SCHEDULE)
def schedule_pause(name: str) -> None:
    """Add no more jobs from a schedule until it is resumed.

    \b
    Example:
      queuectl schedule pause backup
    """
    click.echo(client().schedule_pause(name))


@schedule.command("resume")
@click.argument("name", type=SCHEDULE)
def schedule_resume(name: str) -> None:
    """Fire a paused schedule again, from now on (what it missed is not caught up).

    \b
    Example:
      queuectl schedule resume backup
    """
    click.echo(client().schedule_resume(name))


@schedule.command("run")
@click.argument("name", type=SCHEDULE)
@click.option("--quiet", is_flag=True, help="Print the id alone.")
def schedule_run(name: str, quiet: bool) -> None:
    """Add the schedule's job once, now (paused or not; its firings go on as before).

    \b
    Example:
      queuectl schedule run backup && queuectl logs -f
    """
    job_id = client().schedule_run(name)
    click.echo(job_id if quiet else f"added job {job_id}")
