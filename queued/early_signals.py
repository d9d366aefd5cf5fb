"""The signals an operator may send a daemon that has only just started,
before it listens for them: SIGHUP, SIGUSR1 and SIGUSR2 kill a process by
default, and `queued` needs half a second or more (imports, the data dir's
lock, the store) to reach its signal receiver. `systemctl reload` waits for
READY=1, which comes later still; but `kill -HUP` from a logrotate hook, or
`systemctl kill -s HUP` right after a restart, does not. So `catch()` is the
first thing `queued` does, and the daemon acts on what `arrived()` once it
listens (a reload read at start already finds the file as it is: harmless).

Caught, never SIG_IGN: exec resets a caught signal in a job's process, while
an ignored one would stay ignored there.
"""

from __future__ import annotations

import signal
from types import FrameType

CAUGHT = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_arrived: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    if signum not in _arrived:
        _arrived.append(signum)


def catch() -> None:
    """Remember these signals instead of dying of them, until the daemon listens."""
    for signum in CAUGHT:
        signal.signal(signum, _remember)


def arrived() -> list[int]:
    """The signals that came before the daemon listened, once each, in order;
    forgotten once told."""
    told = list(_arrived)
    _arrived.clear()
    return told
