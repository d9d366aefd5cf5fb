"""Each attempt's environment: the one captured at `add`, without the daemon's
own variables, plus the job's id, its attempt and the daemon's instance token.

Filtering and encoding (to the `NAME=value` bytes a spawn hands the kernel) are
done once per captured environment, not per attempt: the store hands out one
dict per distinct environment and most jobs share a few, while a job's
environment holds tens of variables and an attempt adds two or three.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from queued.processes.guardian import INSTANCE_VAR

# Variables that belong to the daemon's service manager, not to its jobs.
_PRIVATE_VARS = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    INSTANCE_VAR,
)
_KEEP = 64  # captured environments remembered at once


def entry(name: str, value: str) -> bytes:
    """`name=value` as the kernel takes it. ValueError as os.posix_spawn raises
    it: a NUL byte anywhere, or a name that is empty or holds `=`."""
    key = os.fsencode(name)
    if not key or b"=" in key:
        raise ValueError("illegal environment variable name")
    item = key + b"=" + os.fsencode(value)
    if b"\0" in item:
        raise ValueError("embedded null byte")
    return item


def entries(env: Mapping[str, str]) -> list[bytes]:
    return [entry(name, value) for name, value in env.items()]


class _Base:
    """A captured environment, filtered, and its entries once asked for."""

    __slots__ = ("_entries", "_positions", "captured", "variables")

    def __init__(self, captured: dict[str, str], instance: str) -> None:
        self.captured = captured
        self.variables = {k: v for k, v in captured.items() if k not in _PRIVATE_VARS}
        self.variables[INSTANCE_VAR] = instance
        self._entries: list[bytes] | None = None
        self._positions: dict[str, int] = {}

    def entries(self) -> tuple[list[bytes], dict[str, int]]:
        if self._entries is None:
            self._entries = entries(self.variables)  # raises for a bad one: every attempt will
            self._positions = {name: i for i, name in enumerate(self.variables)}
        return self._entries, self._positions


class AttemptEnvironment:
    """One attempt's environment: its job's (shared, see `_Base`) and its own
    variables, which win over the job's."""

    __slots__ = ("_base", "own")

    def __init__(self, base: _Base, own: dict[str, str]) -> None:
        self._base = base
        self.own = own

    def __setitem__(self, name: str, value: str) -> None:
        self.own[name] = value

    def update(self, **variables: str) -> None:
        self.own.update(variables)

    def as_dict(self) -> dict[str, str]:
        return {**self._base.variables, **self.own}

    def entries(self) -> list[bytes]:
        """Every `NAME=value`, each name once."""
        shared, positions = self._base.entries()
        result = shared.copy()
        for name, value in self.own.items():
            position = positions.get(name)
            if position is None:
                result.append(entry(name, value))
            else:
                result[position] = entry(name, value)
        return result


class JobEnvironments:
    """Makes each attempt's environment (see the module's doc)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._bases: dict[int, _Base] = {}

    def for_attempt(self, captured: dict[str, str], *, job_id: int, run: int) -> AttemptEnvironment:
        base = self._bases.get(id(captured))
        if base is None or base.captured is not captured:
            if len(self._bases) >= _KEEP:
                self._bases.clear()
            base = self._bases[id(captured)] = _Base(captured, self.instance)
        return AttemptEnvironment(base, {"QUEUED_JOB_ID": str(job_id), "QUEUED_ATTEMPT": str(run)})
