"""Where the socket, database and logs live by default. Shared with the client
(which must find the socket the daemon chose), so it imports nothing heavy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

APP = "queued"
SOCKET_NAME = "queued.sock"


def default_socket_path() -> Path:
    """$QUEUED_SOCKET, else the user's runtime dir, else a private dir in /tmp.

    XDG_RUNTIME_DIR is unset under cron, su and in many containers; platformdirs
    then names /run/user/UID, which may not exist. We fall back to
    /tmp/queued-UID (created 0700 and ownership-checked by the daemon).
    """
    explicit = os.environ.get("QUEUED_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return Path(runtime) / APP / SOCKET_NAME
    return fallback_socket_dir() / SOCKET_NAME


def fallback_socket_dir() -> Path:
    """/tmp/queued-UID: anyone may create it first, so both sides check its owner."""
    return Path("/tmp") / f"{APP}-{os.getuid()}"


def default_data_dir() -> Path:
    explicit = os.environ.get("QUEUED_DATA_DIR")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def default_config_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "queued.toml"


def socket_dir_risk(mode: int, owner: int, uid: int) -> str | None:
    """Why a directory (its st_mode and st_uid) is unsafe to hold the socket of a
    daemon running as `uid`, or None. Whoever can write to it could replace the
    socket with their own and read every request; the sticky bit (as on /tmp)
    stops that, and root could anyway."""
    if owner not in (uid, 0):
        return f"it belongs to uid {owner}, not to uid {uid} or root"
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        return f"others may write to it (mode {stat.S_IMODE(mode):04o}, no sticky bit)"
    return None
