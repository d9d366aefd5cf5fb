"""Where the socket may live: the rule that refuses a directory others could write
to, and what the daemon does to the directories it finds or makes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from queued import paths
from queued.paths import socket_dir_risk
from queued.server.connections import SocketInUse, prepare_socket_dir

ME, ROOT, OTHER = 1000, 0, 1001
DIR = stat.S_IFDIR


@pytest.mark.parametrize(
    ("mode", "owner"),
    [
        (0o700, ME),
        (0o755, ME),  # readable by others is fine: the socket itself is 0600
        (0o1777, ROOT),  # /tmp, /var/tmp: the sticky bit keeps our socket ours
        (0o1777, ME),
        (0o755, ROOT),  # /run as root
    ],
)
def test_safe_directories(mode: int, owner: int) -> None:
    assert socket_dir_risk(DIR | mode, owner, ME) is None


@pytest.mark.parametrize(
    ("mode", "owner", "reason"),
    [
        (0o777, ME, "others may write to it (mode 0777, no sticky bit)"),
        (0o770, ME, "others may write to it (mode 0770, no sticky bit)"),
        (0o757, ROOT, "others may write to it (mode 0757, no sticky bit)"),
        (0o700, OTHER, "it belongs to uid 1001, not to uid 1000 or root"),
        (0o1777, OTHER, "it belongs to uid 1001, not to uid 1000 or root"),
    ],
)
def test_unsafe_directories_are_named_with_the_reason(mode: int, owner: int, reason: str) -> None:
    assert socket_dir_risk(DIR | mode, owner, ME) == reason


def test_root_may_use_its_own_directories() -> None:
    assert socket_dir_risk(DIR | 0o700, ROOT, ROOT) is None
    assert socket_dir_risk(DIR | 0o700, ME, ROOT) == "it belongs to uid 1000, not to uid 0 or root"


def test_an_existing_directory_is_left_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    os.chmod(folder, 0o755)
    prepare_socket_dir(folder / "q.sock")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_the_fallback_directory_is_kept_private_as_queuectl_expects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = tmp_path / "queued-uid"
    monkeypatch.setattr(paths, "fallback_socket_dir", lambda: fallback)
    fallback.mkdir()
    os.chmod(fallback, 0o755)
    prepare_socket_dir(fallback / "queued.sock")
    assert stat.S_IMODE(fallback.stat().st_mode) == 0o700
    fallback.rmdir()
    (tmp_path / "file").touch()
    fallback.symlink_to(tmp_path / "file")
    with pytest.raises(SocketInUse, match="is not a directory"):
        prepare_socket_dir(fallback / "queued.sock")
    fallback.unlink()
    (tmp_path / "real").mkdir(mode=0o755)
    fallback.symlink_to(tmp_path / "real")  # our own link to a directory of ours, as queuectl allows
    prepare_socket_dir(fallback / "queued.sock")
    assert stat.S_IMODE((tmp_path / "real").stat().st_mode) == 0o700
    if os.getuid() == 0:
        os.lchown(fallback, 65534, 65534)
        with pytest.raises(SocketInUse, match="is a symbolic link of uid 65534"):
            prepare_socket_dir(fallback / "queued.sock")
