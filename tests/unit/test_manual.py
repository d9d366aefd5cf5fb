"""The manual pages (man/, installed by pip, named by the systemd units) keep
up with the code: every command, flag and variable is in them."""

from __future__ import annotations

import re
from pathlib import Path

import click

from queued import config

MAN = Path(__file__).resolve().parents[2] / "systemd" / "man"


def words(page: str) -> set[str]:
    """The page's words with roff's escapes undone (`\\-\\-data\\-dir` -> `--data-dir`)."""
    text = re.sub(r"\\f[BIRP]", "", (MAN / page).read_text()).replace("\\-", "-")
    return set(re.findall(r"[\w-]+", text))


def test_queued_8_names_every_flag_and_variable() -> None:
    from queued.__main__ import build_parser

    flags = {o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")}
    page = words("queued.8")
    assert flags - {"--help"} <= page, flags - page
    variables = {config.env_variable(key) for key in config.KEYS} | {"QUEUED_CONFIG"}
    assert variables <= page, variables - page
    assert set(config.KEYS) <= page


def test_queuectl_1_names_every_command() -> None:
    from queuectl.cli import cli

    commands = set(cli.list_commands(click.Context(cli)))
    page = words("queuectl.1")
    assert commands <= page, commands - page
