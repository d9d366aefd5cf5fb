"""What a SIGHUP reload reads and says: the file, and the changes in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from queued import signals
from queued.settings import Settings


def test_changes_name_each_key_with_old_and_new_values() -> None:
    before = signals.in_force(Settings(concurrency=2), "info")
    after = signals.in_force(Settings(concurrency=2, max_retries=5, timeout=3600.0), "debug")
    assert signals.changes(before, after) == [
        "max-retries 3 -> 5",
        "timeout none -> 1h",
        "log-level info -> debug",
    ]
    assert signals.changes(after, after) == []


def test_place_keys_changed_are_named() -> None:
    assert signals.changed_keys({"socket": "/a"}, {"socket": "/a"}) == ""
    assert signals.changed_keys({"socket": "/a"}, {"socket": "/b", "data-dir": "/d"}) == "data-dir, socket"


def test_reading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "queued.toml"
    assert signals.read_config_file(path, required=False) == {}
    with pytest.raises(ValueError, match="does not exist"):
        signals.read_config_file(path, required=True)
    path.write_text("max-retries = [")
    with pytest.raises(ValueError, match=f"cannot read config file {path}"):
        signals.read_config_file(path, required=False)
    path.write_text("max-retries = 2\n")
    assert signals.read_config_file(path, required=True) == {"max-retries": 2}


def test_signals_that_come_before_the_daemon_listens_are_remembered_once() -> None:
    import os
    import signal

    from queued import early_signals

    before = {signum: signal.getsignal(signum) for signum in early_signals.CAUGHT}
    try:
        early_signals.catch()
        for signum in (signal.SIGUSR2, signal.SIGHUP, signal.SIGHUP):
            os.kill(os.getpid(), signum)  # the default action would end this process
        assert early_signals.arrived() == [signal.SIGUSR2, signal.SIGHUP]
        assert early_signals.arrived() == []
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
