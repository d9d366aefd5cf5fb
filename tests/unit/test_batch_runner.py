"""When a batch runner is idle, and its flags' values."""

from __future__ import annotations

import pytest

from queued import config


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
