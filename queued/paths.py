"""Where the socket, database and logs live by default. Shared with the client
(which must find the socket the daemon chose), so it imports nothing heavy."""

from __future__ import annotations

import os
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
