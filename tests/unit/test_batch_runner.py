"""When a batch runner is idle, and its flags' values."""

from __future__ import annotations

import pytest

from queued import config
from queued.batch_runner import nothing_waits
from queued.protocol import QueueInfo


def queue(name: str = "default", *, paused: bool = False, **counts: int) -> QueueInfo:
    return QueueInfo(name=name, concurrency=None, paused=paused, **counts)


def test_pending_and_retrying_jobs_keep_it_held_ones_and_paused_queues_do_not() -> None:
    assert nothing_waits([])
    assert nothing_waits([queue(held=3, running=2)])  # running elsewhere: not ours to wait for
    assert not nothing_waits([queue(pending=1)])
    assert not nothing_waits([queue(failed=1)])  # awaiting its retry
    assert nothing_waits([queue(pending=5, paused=True), queue("other", held=1)])
    assert not nothing_waits([queue(pending=5, paused=True), queue("other", pending=1)])


def values(flags: dict[str, object] | None = None, **environ: str) -> config.DaemonValues:
    sources = config.Sources.read(flags=flags or {}, environ=environ, file={})
    return config.daemon_values(sources)


def test_the_flags_come_from_flags_environment_and_file() -> None:
    assert (values().exit_when_idle, values().exit_after_jobs) == (False, None)
    assert values({"exit-when-idle": "true"}).exit_when_idle
    assert values(QUEUED_EXIT_WHEN_IDLE="yes").exit_when_idle
    assert not values({"exit-when-idle": "false"}, QUEUED_EXIT_WHEN_IDLE="1").exit_when_idle
    assert values(QUEUED_EXIT_AFTER_JOBS="12").exit_after_jobs == 12
    file = config.Sources.read(flags={}, environ={}, file={"exit_when_idle": True, "exit-after-jobs": 3})
    assert (config.daemon_values(file).exit_when_idle, config.daemon_values(file).exit_after_jobs) == (
        True,
        3,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"QUEUED_EXIT_WHEN_IDLE": "maybe"}, "invalid value for exit-when-idle: 'maybe', use true or false"),
        (
            {"QUEUED_EXIT_AFTER_JOBS": "-1"},
            "invalid value for exit-after-jobs: '-1', give a whole number from 1",
        ),
    ],
)
def test_a_bad_value_names_its_source(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        values(**environ)
    assert str(caught.value).startswith(message) and "QUEUED_EXIT_" in str(caught.value)
