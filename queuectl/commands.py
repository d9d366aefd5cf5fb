"""queuectl's commands about the daemon itself: status, workers, queues, config,
shutdown, completion, web. Imported only when one of them runs (queuectl.cli adds
`registry`'s commands to its own)."""

from __future__ import annotations

import time

import click

from .completion import SHELLS, completion_script
from .context import client, emit_json
from .options import QUEUE, json_option

registry = click.Group()  # this module's commands; queuectl.cli adds them to its own group


@registry.command()
@json_option
def status(as_json: bool) -> None:
    """Counts by state, slots in use, queues, daemon version and uptime.

    \b
    Example:
      queuectl status --json | jq .counts
    """
    from . import output

    result = client().status()
    if as_json:
        emit_json(output.status_json(result))
    else:
        click.echo(output.status_block(result, now=time.time()))


@registry.group()
def workers() -> None:
    """The job slots.

    \b
    Example:
      queuectl workers scale 4
    """


@workers.command("ls")
@json_option
def workers_ls(as_json: bool) -> None:
    """The running attempts, one per slot in use.

    \b
    Example:
      queuectl workers ls
    """
    from . import output

    result = client().workers()
    if as_json:
        emit_json(result)
    else:
        click.echo(output.workers_table(result, now=time.time(), width=output.terminal_width()))


@workers.command("scale")
@click.argument("count", type=click.IntRange(min=0, max=4096))
def workers_scale(count: int) -> None:
    """Set the global number of slots now (persisted; running jobs are not stopped).

    \b
    0 starts no job until you scale up again: a pause of everything.
    Example:
      queuectl workers scale 8
    """
    from queued.protocol import Ok, ScaleWorkers

    click.echo(client().request(ScaleWorkers(concurrency=count), Ok).message)


@registry.group()
def queue() -> None:
    """Named queues, each with its own concurrency limit.

    \b
    Example:
      queuectl queue add gpu --concurrency 1
    """


@queue.command("add")
@click.argument("name")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1, max=4096),
    help="At most this many of its jobs at once [no limit but the global one].",
)
def queue_add(name: str, concurrency: int | None) -> None:
    """Create a queue.

    \b
    Example:
      queuectl queue add gpu --concurrency 1
    """
    client().queue_add(name, concurrency)
    click.echo(f"queue {name} added")


@queue.command("rm")
@click.argument("name", type=QUEUE)
def queue_rm(name: str) -> None:
    """Remove a queue that holds no jobs.

    \b
    Example:
      queuectl queue rm gpu
    """
    client().queue_remove(name)
    click.echo(f"queue {name} removed")


@queue.command("ls")
@json_option
def queue_ls(as_json: bool) -> None:
    """Every queue with its limit, state and job counts.

    \b
    Example:
      queuectl queue ls
    """
    from . import output

    queues = client().queues()
    if as_json:
        emit_json(queues)
    else:
        click.echo(output.queue_table(queues))


NO_LIMIT = ("none", "unlimited")


class QueueLimitType(click.ParamType):
    """A queue's concurrency: 1 to 4096, or none/unlimited for no limit of its own."""

    name = "N|none"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip().lower()
        if text in NO_LIMIT:
            return "none"
        if text.isdigit() and 1 <= int(text) <= 4096:
            return int(text)
        self.fail(f"{value!r} is not a limit: use 1 to 4096, or none for no limit of its own", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:  # type: ignore[type-arg]
        from click.shell_completion import CompletionItem

        return [CompletionItem(word) for word in NO_LIMIT if word.startswith(incomplete.lower())]


@queue.command("set")
@click.argument("name", type=QUEUE)
@click.option(
    "-c",
    "--concurrency",
    type=QueueLimitType(),
    required=True,
    help="At most this many of its jobs at once (1-4096); none or unlimited: no limit but the global one.",
)
def queue_set(name: str, concurrency: int | str) -> None:
    """Change a queue's concurrency limit now (persisted; running jobs are not stopped).

    \b
    Examples:
      queuectl queue set gpu --concurrency 2
      queuectl queue set gpu --concurrency none     # no limit but the global one
    """
    click.echo(client().queue_set(name, None if concurrency == "none" else int(concurrency)))


@queue.command("pause")
@click.argument("name", type=QUEUE)
@click.option("--jobs", is_flag=True, help="Pause its running jobs too (SIGSTOP).")
def queue_pause(name: str, jobs: bool) -> None:
    """Start no more jobs from a queue (running ones go on, unless --jobs).

    \b
    Examples:
      queuectl queue pause default
      queuectl queue pause gpu --jobs      # and stop its running jobs where they are
    """
    click.echo(client().pause(name, jobs=jobs))


@queue.command("resume")
@click.argument("name", type=QUEUE)
def queue_resume(name: str) -> None:
    """Start jobs from a paused queue again, and continue its paused jobs.

    \b
    Example:
      queuectl queue resume default
    """
    click.echo(client().resume(name))


@registry.group()
def config() -> None:
    """Persisted defaults: max-retries, backoff-base, backoff-max, timeout, concurrency,
    log-max-size, kill-grace, on-finish (a command run as each job ends).

    \b
    Examples:
      queuectl config set max-retries 5
      queuectl config set on-finish 'echo "$QUEUED_JOB_ID $QUEUED_JOB_STATE" >> ~/done.log'
    """


@config.command("get")
@click.argument("key", required=False)
@json_option
def config_get(key: str | None, as_json: bool) -> None:
    """Show one setting or all of them, in the form `config set` takes (1h, 10M).

    \b
    Example:
      queuectl config get backoff-base
    """
    values = client().config_get(key)
    if as_json:
        emit_json(values)
        return
    from queued.settings import format_config_value

    width = max(map(len, values))
    for name, value in values.items():
        click.echo(f"{name:<{width}}  {format_config_value(name, value)}")


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
def config_set(key: str, value: str) -> None:
    """Change a setting (durations: 90s, 5m, 2h; sizes: 10M), persisted.

    \b
    A flag or QUEUED_* variable the daemon was started with still wins while it
    runs; the setting is kept for when it no longer does.

    \b
    Example:
      queuectl config set timeout 2h
    """
    from queued.settings import parse_config_value

    try:
        parse_config_value(key, value)  # the daemon's own check: a mistake is a usage error
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(client().config_set(key, value))


@registry.command()
@click.option(
    "--graceful", "mode", flag_value="graceful", default=True, help="Let running jobs finish first (default)."
)
@click.option("--now", "mode", flag_value="now", help="Stop running jobs; they are retried later.")
def shutdown(mode: str) -> None:
    """Stop the daemon.

    \b
    Example:
      queuectl shutdown --now
    """
    click.echo(client().shutdown(mode))


@registry.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script (job ids and queue names come from the daemon).

    \b
    Example:
      source <(queuectl completion bash)     # or put it in ~/.bashrc
      queuectl completion fish > ~/.config/fish/completions/queuectl.fish
    """
    click.echo(completion_script(click.get_current_context().find_root().command, shell))


@registry.group()
def web() -> None:
    """The web page (`queued --http HOST:PORT`).

    \b
    Example:
      queuectl web token
    """


@web.command("token")
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="The daemon's data dir (default: ask the daemon)."
)
@click.option("--url", "as_url", is_flag=True, help="Print the page's address with the token, to open once.")
def web_token(data_dir: str | None, as_url: bool) -> None:
    """The token that allows actions on the web page, created if missing.

    It is 32 random bytes in `web-token` (mode 0600) in the data dir; the
    page sends it as `Authorization: Bearer`. A daemon serving the page on
    an address other than loopback needs it before it starts, and then for
    reads as well.

    \b
    Example:
      queuectl web token --url
    """
    from pathlib import Path

    from queued.paths import default_data_dir
    from queued.web.security import ensure_token

    from .client import DaemonUnreachable

    url = None
    if data_dir is None:
        try:
            status = client().status()
            data_dir, url = status.data_dir, status.web
        except DaemonUnreachable:
            data_dir = str(default_data_dir())
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise click.ClickException(f"no data dir {directory}: start queued once, or name it with --data-dir")
    try:
        token = ensure_token(directory)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_url:
        if url is None:
            raise click.ClickException("the daemon serves no web page: start it with --http HOST:PORT")
        click.echo(f"{url}#token={token}")
    else:
        click.echo(token)
