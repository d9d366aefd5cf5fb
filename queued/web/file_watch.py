"""Waiting for a log file to grow without polling it: inotify (Linux), read
through ctypes, its descriptor waited on by trio. Where inotify is missing
(or its limits are reached) `wait` falls back to a short sleep.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

import trio

IN_MODIFY, IN_CLOSE_WRITE, IN_DELETE_SELF, IN_MOVE_SELF = 0x2, 0x8, 0x400, 0x800
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
FALLBACK_SECONDS = 0.25

_libc = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - not on Linux
    _libc = None


class FileWatch:
    """Tells when a file was written to (or went away)."""

    def __init__(self, path: str) -> None:
        self.fd = -1
        if _libc is None:
            return
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
        if _libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            os.close(fd)
            return
        self.fd = fd

    async def wait(self) -> None:
        """Until the file changes (or FALLBACK_SECONDS, without inotify)."""
        if self.fd < 0:
            await trio.sleep(FALLBACK_SECONDS)
            return
        await trio.lowlevel.wait_readable(self.fd)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
