"""The options that describe a new job, shared by `add` and `schedule add`,
and the job they make (`job_spec`)."""

from __future__ import annotations

import time
from typing import Any

import click

from queued.protocol import JobSpec

from .client import Client, QueuectlError
from .options import COUNT, DURATION, NEEDS, QUEUE, SLOTS


def job_spec(opts: dict[str, Any], command: str = "-") -> JobSpec:
    """The job the options describe (those a command lacks take their defaults)."""
    env = {}
    for item in opts["env"]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    import os

    cwd = os.path.abspath(opts["cwd"]) if opts["cwd"] else None
    if opts.get("at") is not None and opts["at"] < time.time():
        click.echo("queuectl: the --at time is in the past: the job runs now", err=True)
    return JobSpec(
        command=command,
        queue=opts["queue"],
        priority=opts["priority"],
        max_retries=opts["max_retries"],
        backoff_base=opts["backoff_base"],
        timeout=opts["timeout"],
        delay=opts.get("delay"),
        run_at=opts.get("at"),
        after=list(opts.get("after", ())),
        label=opts.get("label"),
        cwd=cwd,
        env=env,
        hold=opts.get("hold", False),
        unique_key=opts.get("unique"),
        unique_for=opts.get("unique_for"),
        slots=opts.get("slots") or 1,
        needs=opts.get("needs") or {},
    )


class AddCommand(click.Command):
    """`add`, whose --help shows the defaults the daemon would give a new job
    (its config): only --help asks, so adding a job costs no extra round trip."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from queued.settings import Settings, format_config_value, settings_as_config

        note = "[...]: queued's current settings (`queuectl config set` changes them)."
        daemon = ctx.find_object(Client) or Client()
        try:
            daemon.timeout = 2.0  # a hung daemon must not hang the help
            values = daemon.config_get()
        except QueuectlError:
            values = settings_as_config(Settings())
            note = "[...]: built-in defaults (queued is not reachable to tell its own)."
        originals = {}
        for param in self.params:
            if isinstance(param, click.Option) and param.help and "[{" in param.help:
                originals[param] = param.help
                key = param.help[param.help.index("[{") + 2 : param.help.index("}]")]
                param.help = param.help.replace(f"{{{key}}}", format_config_value(key, values.get(key)))
        try:
            super().format_help(ctx, formatter)
        finally:
            for param, text in originals.items():
                param.help = text
        formatter.write_paragraph()
        formatter.write_text(note)


def job_settings_options(f: Any) -> Any:
    """How a new job runs: the options `add` and `schedule add` share."""
    for option in reversed(
        (
            click.option(
                "-q", "--queue", type=QUEUE, default="default", show_default=True, help="Named queue."
            ),
            click.option(
                "-p", "--priority", type=click.IntRange(-(10**9), 10**9), default=0, help="Lower runs first."
            ),
            click.option(
                "-r", "--max-retries", type=COUNT, help="Retries after the first attempt [{max-retries}]."
            ),
            click.option(
                "--backoff-base",
                type=click.FloatRange(1, 3600),
                help="Wait base**k s before retry k [{backoff-base}].",
            ),
            click.option(
                "--timeout", type=DURATION, help="Kill the job's process group after this long [{timeout}]."
            ),
            click.option(
                "--needs",
                type=NEEDS,
                metavar="NAME=N,...",
                help="Run it only where and when these are free, e.g. gpu=1,licence=1 (see README).",
            ),
            click.option(
                "--slots", type=SLOTS, metavar="N", help="Take N of the node's slots (its concurrency) [1]."
            ),
        )
    ):
        f = option(f)
    return f


def job_context_options(f: Any) -> Any:
    """Where a new job runs: the options `add` and `schedule add` share."""
    f = click.option("-e", "--env", multiple=True, metavar="K=V", help="Extra environment (repeatable).")(f)
    return click.option(
        "--cwd", type=click.Path(exists=True, file_okay=False), help="Working directory [here]."
    )(f)


def check_job_options(opts: dict[str, Any]) -> None:
    """Usage errors in the shared job options that their types do not catch."""
    if opts["timeout"] is not None and opts["timeout"] <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--timeout")


def command_text(command: tuple[str, ...]) -> str:
    """The words after the options as one command line (one word: as is)."""
    if not command:
        raise click.UsageError("missing the command to run (queuectl add -- CMD...)")
    if len(command) == 1:
        text = command[0]
    else:
        import shlex

        text = shlex.join(command)
    if not text.strip():
        raise click.UsageError("the command is empty")
    return text
