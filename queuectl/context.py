"""What a running command reaches for: the daemon's client that the root
command opened, and the two ways queuectl answers (JSON, a list of ids)."""

from __future__ import annotations

from typing import Any

import click

from .client import Client


def client() -> Client:
    """The client the `queuectl` group opened for this invocation."""
    return click.get_current_context().find_object(Client)  # type: ignore[return-value]


def emit_json(value: Any) -> None:
    """Indented JSON of plain values or protocol Structs."""
    import msgspec

    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2))


def ids_text(ids: list[int]) -> str:
    """`job 7` or `jobs 7, 8`."""
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(map(str, ids))
