"""posix_spawn called in libc through ctypes, so that the GIL is let go meanwhile.

`os.posix_spawn` holds the GIL while it waits for the child: a vfork stops
the calling thread until the child has exec'd, a third of a millisecond for
`/bin/sh` on a busy machine, and during all of it no other thread of the daemon
(the store's among them) runs any Python. A ctypes call lets the GIL go, so
that wait costs the store thread nothing. The working directory is a file
action of the spawn (`posix_spawn_file_actions_addchdir_np`, glibc 2.29 and
musl 1.1.24): the daemon's own directory never changes, which matters now that
other threads run while a job starts.

`LibcSpawn.load()` answers None where libc lacks any of it; the caller then
uses `os.posix_spawn`, as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import sys
from collections.abc import Iterable, Sequence

# <spawn.h> flags, the same in glibc and musl.
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
# Room for the opaque posix_spawn_file_actions_t (80 bytes in glibc x86-64),
# posix_spawnattr_t (336) and sigset_t (128), with margin for any libc.
_OPAQUE = 1024

_FUNCTIONS = (
    "posix_spawn",
    "posix_spawn_file_actions_init",
    "posix_spawn_file_actions_destroy",
    "posix_spawn_file_actions_addopen",
    "posix_spawn_file_actions_adddup2",
    "posix_spawn_file_actions_addchdir_np",
    "posix_spawnattr_init",
    "posix_spawnattr_setflags",
    "posix_spawnattr_setsigdefault",
    "posix_spawnattr_setsigmask",
    "sigemptyset",
    "sigaddset",
)


def _check(result: int) -> None:
    """The spawn.h functions return an error number, not -1 and errno."""
    if result:
        raise OSError(result, os.strerror(result))


class LibcSpawn:
    """One set of spawn attributes (a new session; `default_signals` at their
    defaults; no signal blocked), made once and used by every spawn."""

    def __init__(self, libc: ctypes.CDLL, default_signals: Iterable[int]) -> None:
        self._libc = libc
        self._attr = ctypes.create_string_buffer(_OPAQUE)
        _check(libc.posix_spawnattr_init(self._attr))
        defaults = ctypes.create_string_buffer(_OPAQUE)
        empty = ctypes.create_string_buffer(_OPAQUE)
        libc.sigemptyset(defaults)
        libc.sigemptyset(empty)
        for sig in default_signals:
            libc.sigaddset(defaults, int(sig))
        _check(libc.posix_spawnattr_setsigdefault(self._attr, defaults))
        # The spawning thread's mask is not necessarily the main thread's.
        _check(libc.posix_spawnattr_setsigmask(self._attr, empty))
        _check(libc.posix_spawnattr_setflags(self._attr, ctypes.c_short(_SETSID | _SETSIGDEF | _SETSIGMASK)))

    @classmethod
    def load(cls, default_signals: Iterable[int] = (signal.SIGPIPE, signal.SIGXFSZ)) -> LibcSpawn | None:
        """The spawner, or None where this libc cannot do all of it."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            for name in _FUNCTIONS:
                getattr(libc, name)
        except (OSError, AttributeError):
            return None
        libc.posix_spawn.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        libc.posix_spawn_file_actions_addopen.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint,
        ]
        libc.posix_spawn_file_actions_adddup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        libc.posix_spawn_file_actions_addchdir_np.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        try:
            return cls(libc, default_signals)
        except OSError:
            return None

    def spawn(
        self,
        path: str,
        argv: list[str],
        env: Sequence[bytes],
        *,
        cwd: str | bytes,
        stdout: int,
        stderr: int,
    ) -> int:
        """Start `argv` (`path` its program) in `cwd` with exactly `env` (its
        `NAME=value` entries, see job_environment.entries), stdin
        from /dev/null, stdout and stderr onto the given descriptors; its pid.
        Raises what `os.posix_spawn` would: ValueError for a NUL byte in an
        argument or the directory (the entries were checked when made),
        OSError with the error number (and `filename` set to `cwd` when the
        directory is what failed)."""
        arguments = [os.fsencode(arg) for arg in argv]
        directory = os.fsencode(cwd)
        if b"\0" in directory or any(b"\0" in arg for arg in arguments):
            raise ValueError("embedded null byte")
        libc = self._libc
        actions = ctypes.create_string_buffer(_OPAQUE)
        _check(libc.posix_spawn_file_actions_init(actions))
        try:
            _check(libc.posix_spawn_file_actions_addchdir_np(actions, directory))
            _check(libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0))
            _check(libc.posix_spawn_file_actions_adddup2(actions, stdout, 1))
            _check(libc.posix_spawn_file_actions_adddup2(actions, stderr, 2))
            pid = ctypes.c_int()
            # The GIL is let go for this call: other threads run while the child execs.
            error = libc.posix_spawn(
                ctypes.byref(pid), os.fsencode(path), actions, self._attr, _strings(arguments), _strings(env)
            )
        finally:
            libc.posix_spawn_file_actions_destroy(actions)
        if error:
            raise _failure(error, path, cwd)
        return pid.value


def _strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    """A NULL-terminated char *[] of `items`."""
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def _failure(error: int, path: str, cwd: str | bytes) -> OSError:
    """The spawn's error, with the file it is about. The child reports one
    number for all of its actions: the directory is to blame if it cannot be
    entered from here either, the program otherwise."""
    try:
        mode = os.stat(cwd).st_mode
    except OSError as exc:
        exc.filename = cwd
        return exc
    if not stat.S_ISDIR(mode):
        return OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), cwd)
    if error in (errno.EACCES, errno.EPERM) and not os.access(cwd, os.X_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), cwd)
    return OSError(error, os.strerror(error), path)
