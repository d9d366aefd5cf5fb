"""The pure rules of queued.lifecycle: transitions, retries, exits, settings, new jobs."""

from __future__ import annotations

import math
import signal

import pytest

from queued import lifecycle, validation
from queued.lifecycle import (
    STATES,
    Event,
    InvalidTransition,
    after_attempt,
    backoff_delay,
    can,
    classify_exit,
    dependency_verdict,
    next_state,
)
from queued.protocol import JobChanges, JobSpec
from queued.settings import (
    CONFIG_KEYS,
    Settings,
    config_key,
    format_config_value,
    parse_config_value,
    settings_as_config,
    settings_with,
)
from queued.validation import new_job

# ----------------------------------------------------------------------------
# The transition table, drawn the way DESIGN.md draws it (rows: state, columns:
# event, "." = refused). Written out by hand so that a change to TRANSITIONS
# must be a deliberate change here too.

EXPECTED_TABLE = """
          add      add-held  claim     succeed    fail     exhaust   cancel    retry     hold   release  unclaim
new       pending  held      .         .          .        .         .         .         .      .        .
pending   .        .         running   .          .        .         canceled  .         held   .        .
held      .        .         .         .          .        .         canceled  .         .      pending  .
running   .        .         .         completed  failed   dead      canceled  .         .      .        pending
completed .        .         .         .          .        .         .         pending   .      .        .
failed    .        .         running   .          .        .         canceled  .         held   .        .
dead      .        .         .         .          .        .         .         pending   .      .        .
canceled  .        .         .         .          .        .         .         pending   .      .        .
"""


def _expected() -> dict[tuple[str, Event], str | None]:
    lines = [line.split() for line in EXPECTED_TABLE.strip().splitlines()]
    events = [Event(name) for name in lines[0]]
    table: dict[tuple[str, Event], str | None] = {}
    for state, *cells in lines[1:]:
        assert len(cells) == len(events)
        for event, cell in zip(events, cells, strict=True):
            table[(state, event)] = None if cell == "." else cell
    return table


EXPECTED = _expected()


def test_expected_table_covers_every_state_and_event() -> None:
    assert {state for state, _ in EXPECTED} == {*STATES, lifecycle.NEW}
    assert {event for _, event in EXPECTED} == set(Event)


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=lambda k: (k[0], k[1].value)))
def test_transition(state: str, event: Event) -> None:
    expected = EXPECTED[(state, event)]
    if expected is None:
        assert not can(state, event)  # type: ignore[arg-type]
        with pytest.raises(InvalidTransition) as info:
            next_state(state, event)  # type: ignore[arg-type]
        assert info.value.state == state
        assert info.value.event is event
        assert state in str(info.value) and event.value in str(info.value)
    else:
        assert can(state, event)  # type: ignore[arg-type]
        assert next_state(state, event) == expected  # type: ignore[arg-type]


def test_transitions_table_has_nothing_beyond_the_expected_table() -> None:
    allowed = {key: value for key, value in EXPECTED.items() if value is not None}
    assert dict(lifecycle.TRANSITIONS) == allowed


def test_invalid_transition_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="a completed job cannot cancel"):
        next_state("completed", Event.CANCEL)


# ----------------------------------------------------------------------------
# The dependents cascade, drawn the same way: what each transition of the table
# does to the unstarted jobs that wait for this one.

EXPECTED_CASCADES = {
    ("running", "completed"): "recount",  # its dependents may run
    ("running", "dead"): "cancel",
    ("pending", "canceled"): "cancel",
    ("held", "canceled"): "cancel",
    ("failed", "canceled"): "cancel",
    ("running", "canceled"): "cancel",
    ("completed", "pending"): "recount",  # retried: its dependents wait again
}


@pytest.mark.parametrize(
    ("key", "new"), sorted(lifecycle.TRANSITIONS.items(), key=lambda kv: (kv[0][0], kv[0][1].value))
)
def test_every_transition_has_its_cascade_rule(key: tuple[str, Event], new: str) -> None:
    old, _ = key
    rule = lifecycle.cascade(old, new)  # type: ignore[arg-type]
    expected = EXPECTED_CASCADES.get((old, new))
    assert (rule.value if rule else None) == expected
    assert lifecycle.CASCADES.get((old, new)) == rule  # type: ignore[arg-type]


def test_cascades_table_has_nothing_beyond_the_expected_one() -> None:
    assert {k: v.value for k, v in lifecycle.CASCADES.items()} == EXPECTED_CASCADES


def test_a_cascade_cancel_applies_to_every_unstarted_state() -> None:
    for state in lifecycle.UNSTARTED_STATES:
        assert next_state(state, lifecycle.DEPENDENT_CANCEL_EVENT) == "canceled"


def test_the_named_sets() -> None:
    assert lifecycle.WAITING_STATES == ("pending", "failed")
    assert lifecycle.UNFINISHED_STATES == ("pending", "held", "running", "failed")
    assert lifecycle.EDITABLE_STATES == ("pending", "held", "failed")
    assert lifecycle.UNSTARTED_STATES == ("pending", "held")
    assert set(lifecycle.TERMINAL_STATES) | set(lifecycle.UNFINISHED_STATES) == set(STATES)
    assert set(lifecycle.ENDED_BADLY_STATES) < set(lifecycle.TERMINAL_STATES)


def test_initial_state_is_an_event_of_the_table() -> None:
    assert lifecycle.initial_state(hold=False) == "pending"
    assert lifecycle.initial_state(hold=True) == "held"


@pytest.mark.parametrize(
    ("state", "latest", "run", "counts"),
    [
        ("running", 3, 3, True),
        ("running", 4, 3, False),  # retried and started again: an older attempt ends late
        ("canceled", 3, 3, False),  # canceled while it ran
        ("pending", 3, 3, False),
        (None, None, 3, False),  # removed while it ran
    ],
)
def test_a_stale_attempt_changes_only_its_own_record(state, latest, run, counts) -> None:
    assert lifecycle.attempt_counts(job_state=state, latest_run=latest, run=run) is counts


@pytest.mark.parametrize("state", [*STATES, None])
def test_an_undone_claim_makes_a_running_job_wait_again(state: str | None) -> None:
    expected = Event.UNCLAIM if state == "running" else None
    assert lifecycle.after_unclaim(state) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (Event.CANCEL, "job 7 is dead: only pending, held, failed or running jobs can be canceled"),
        (Event.RETRY, "job 7 is dead: only completed, dead or canceled jobs can be retried"),
        (Event.HOLD, "job 7 is dead: only pending or failed jobs can be held"),
        (Event.RELEASE, "job 7 is dead: only held jobs can be released"),
    ],
)
def test_refusals_name_the_states_the_event_applies_to(event: Event, text: str) -> None:
    assert lifecycle.refusal(7, "dead", event) == text


def test_terminal_states() -> None:
    assert {s for s in STATES if lifecycle.is_terminal(s)} == {"completed", "dead", "canceled"}
    # Only terminal states can be retried, and no terminal state can be claimed.
    for state in STATES:
        assert can(state, Event.RETRY) == lifecycle.is_terminal(state)  # type: ignore[arg-type]
        if lifecycle.is_terminal(state):
            assert not can(state, Event.CLAIM)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Backoff


@pytest.mark.parametrize(("retry", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)])
def test_backoff_base_two(retry: int, expected: float) -> None:
    assert backoff_delay(retry, 2.0, 3600.0) == expected


def test_backoff_other_base() -> None:
    assert backoff_delay(1, 3.0, 3600.0) == 3.0
    assert backoff_delay(2, 3.0, 3600.0) == 9.0
    assert backoff_delay(5, 1.0, 3600.0) == 1.0


def test_backoff_is_capped() -> None:
    assert backoff_delay(5, 2.0, 10.0) == 10.0
    assert backoff_delay(3, 2.0, 8.0) == 8.0
    assert backoff_delay(12, 2.0, 3600.0) == 3600.0


def test_backoff_before_first_retry_is_zero() -> None:
    assert backoff_delay(0, 2.0, 60.0) == 0.0
    assert backoff_delay(-1, 2.0, 60.0) == 0.0


@pytest.mark.parametrize("retry", [1024, 10_000, 10**6, 2**31])
def test_backoff_huge_exponent_does_not_overflow(retry: int) -> None:
    delay = backoff_delay(retry, 2.0, 3600.0)
    assert delay == 3600.0
    assert math.isfinite(delay)
    assert backoff_delay(retry, 3600.0, 7.0) == 7.0


def test_backoff_int_base_with_large_exponent() -> None:
    assert backoff_delay(5000, 2, 60.0) == 60.0


# ----------------------------------------------------------------------------
# The retry policy


def _after(
    attempts: int, max_retries: int, *, succeeded: bool = False, now: float = 1000.0, cap: float = 3600.0
):
    return after_attempt(
        succeeded=succeeded,
        attempts=attempts,
        max_retries=max_retries,
        backoff_base=2.0,
        backoff_max=cap,
        now=now,
    )


def test_success_completes() -> None:
    outcome = _after(1, 3, succeeded=True)
    assert (outcome.event, outcome.state, outcome.run_at) == (Event.SUCCEED, "completed", None)
    # Even the last allowed attempt, or one past it, completes when it succeeds.
    assert _after(4, 3, succeeded=True).state == "completed"
    assert _after(1, 0, succeeded=True).state == "completed"


def test_max_retries_zero_means_one_attempt() -> None:
    outcome = _after(1, 0)
    assert (outcome.event, outcome.state, outcome.run_at) == (Event.EXHAUST, "dead", None)


def test_max_retries_one_means_two_attempts() -> None:
    first = _after(1, 1, now=100.0)
    assert (first.event, first.state, first.run_at) == (Event.FAIL, "failed", 102.0)
    second = _after(2, 1, now=200.0)
    assert (second.event, second.state, second.run_at) == (Event.EXHAUST, "dead", None)


def test_max_retries_three_backs_off_2_4_8_then_dies() -> None:
    outcomes = [_after(k, 3, now=1000.0) for k in (1, 2, 3, 4)]
    assert [o.state for o in outcomes] == ["failed", "failed", "failed", "dead"]
    assert [o.run_at for o in outcomes] == [1002.0, 1004.0, 1008.0, None]
    assert [o.event for o in outcomes] == [Event.FAIL, Event.FAIL, Event.FAIL, Event.EXHAUST]


def test_retry_delay_is_capped_by_backoff_max() -> None:
    assert _after(3, 5, now=0.0, cap=5.0).run_at == 5.0


def test_outcome_events_agree_with_transition_table() -> None:
    for succeeded, attempts in ((True, 1), (False, 1), (False, 4)):
        outcome = _after(attempts, 3, succeeded=succeeded)
        assert next_state("running", outcome.event) == outcome.state


# ----------------------------------------------------------------------------
# Exits


def test_classify_exit_zero() -> None:
    assert classify_exit(0) == lifecycle.Exit(True, 0, None, None)


def test_classify_exit_nonzero() -> None:
    exit = classify_exit(3)
    assert not exit.succeeded
    assert (exit.exit_code, exit.signal) == (3, None)
    assert exit.error == "exited with status 3"


def test_classify_exit_signal() -> None:
    exit = classify_exit(-9)
    assert not exit.succeeded
    assert (exit.exit_code, exit.signal) == (None, 9)
    assert exit.error is not None and "SIGKILL" in exit.error


def test_classify_exit_unknown_signal_number() -> None:
    exit = classify_exit(-200)
    assert exit.signal == 200
    assert exit.error is not None and "200" in exit.error


def test_classify_exit_timeout_killed() -> None:
    exit = classify_exit(-int(signal.SIGTERM), timed_out_after=5.0)
    assert not exit.succeeded
    assert (exit.exit_code, exit.signal) == (None, int(signal.SIGTERM))
    assert exit.error == "timed out after 5s"


def test_classify_exit_timeout_is_a_failure_even_with_status_zero() -> None:
    exit = classify_exit(0, timed_out_after=90.0)
    assert not exit.succeeded
    assert exit.signal is None
    assert exit.error == "timed out after 1m30s"


def test_classify_exit_timeout_with_exit_status() -> None:
    exit = classify_exit(143, timed_out_after=2.0)
    assert not exit.succeeded
    assert (exit.exit_code, exit.signal) == (143, None)
    assert exit.error is not None and exit.error.startswith("timed out")


def test_a_lasting_spawn_failure_is_never_retried() -> None:
    """Issue #11: "Argument list too long" cannot change on its own: dead at once."""
    lasting = lifecycle.spawn_failure("Argument list too long", lasting=True)
    assert not lasting.retryable and lifecycle.spawn_failure("no such directory").retryable
    outcome = after_attempt(
        succeeded=False,
        attempts=1,
        max_retries=5,
        backoff_base=2,
        backoff_max=60,
        now=0,
        retryable=lasting.retryable,
    )
    assert (outcome.event, outcome.state) == (Event.EXHAUST, "dead")


def test_spawn_failure_and_interrupted() -> None:
    exit = lifecycle.spawn_failure("no such directory: /nope")
    assert not exit.succeeded and exit.exit_code is None and exit.signal is None
    assert exit.error == "could not start: no such directory: /nope"
    assert not lifecycle.INTERRUPTED.succeeded
    assert lifecycle.INTERRUPTED.error is not None and "interrupted" in lifecycle.INTERRUPTED.error


# ----------------------------------------------------------------------------
# New jobs

NOW = 1_700_000_000.0


def _new(
    spec: JobSpec, *, cwd: str = "/tmp", env: dict[str, str] | None = None, settings: Settings | None = None
):
    return new_job(spec, cwd=cwd, env=env or {}, settings=settings or Settings(), now=NOW)


def test_new_job_defaults_from_settings() -> None:
    settings = Settings(max_retries=7, backoff_base=3.0, timeout=60.0)
    job = _new(JobSpec(command="echo hi"), settings=settings)
    assert job.command == "echo hi"
    assert job.queue == "default"
    assert job.priority == 0
    assert job.max_retries == 7
    assert job.backoff_base == 3.0
    assert job.timeout == 60.0
    assert job.run_at == NOW
    assert job.depends_on == []
    assert job.label is None
    assert job.cwd == "/tmp"
    assert job.env == {}


def test_new_job_default_settings() -> None:
    job = _new(JobSpec(command="true"))
    assert (job.max_retries, job.backoff_base, job.timeout) == (3, 2.0, None)


def test_new_job_spec_overrides_settings() -> None:
    spec = JobSpec(
        command="true",
        queue="batch",
        priority=-5,
        max_retries=0,
        backoff_base=1.5,
        timeout=10.0,
        label="nightly",
        cwd="/srv",
        after=[5, 3, 5],
    )
    job = _new(spec, settings=Settings(max_retries=9, backoff_base=4.0, timeout=99.0))
    assert job.queue == "batch"
    assert job.priority == -5
    assert job.max_retries == 0  # 0 is a value, not "unset"
    assert job.backoff_base == 1.5
    assert job.timeout == 10.0
    assert job.label == "nightly"
    assert job.cwd == "/srv"
    assert job.depends_on == [3, 5]


def test_new_job_delay_and_run_at() -> None:
    assert _new(JobSpec(command="x", delay=30.0)).run_at == NOW + 30
    assert _new(JobSpec(command="x", run_at=NOW + 100)).run_at == NOW + 100
    # A run_at in the past means "now".
    assert _new(JobSpec(command="x", run_at=NOW - 100)).run_at == NOW


def test_new_job_env_spec_laid_over_request_env() -> None:
    job = _new(JobSpec(command="x", env={"B": "spec", "C": "3"}), env={"A": "1", "B": "request"})
    assert job.env == {"A": "1", "B": "spec", "C": "3"}


@pytest.mark.parametrize("command", ["", "   ", "\t\n"])
def test_new_job_blank_command(command: str) -> None:
    with pytest.raises(ValueError, match="command is empty"):
        _new(JobSpec(command=command))


def test_new_job_nul_in_command() -> None:
    with pytest.raises(ValueError, match="NUL"):
        _new(JobSpec(command="echo \0"))


def test_new_job_both_delay_and_run_at() -> None:
    with pytest.raises(ValueError, match="delay"):
        _new(JobSpec(command="x", delay=5.0, run_at=NOW + 5))


@pytest.mark.parametrize(
    ("spec_cwd", "request_cwd"), [("relative/dir", "/tmp"), (None, "relative"), (None, "./x")]
)
def test_new_job_relative_cwd(spec_cwd: str | None, request_cwd: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        _new(JobSpec(command="x", cwd=spec_cwd), cwd=request_cwd)


@pytest.mark.parametrize("bad_env", [{"": "v"}, {"A=B": "v"}, {"A\0": "v"}, {"A": "v\0"}])
def test_new_job_bad_env(bad_env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="environment variable"):
        _new(JobSpec(command="x", env=bad_env))
    # A request's shared environment is checked once per request, not per job.
    with pytest.raises(ValueError, match="environment variable"):
        validation.check_environment(bad_env)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (JobSpec(command="true", cwd="/tmp\0x"), "cwd contains a NUL byte"),
        (JobSpec(command="true", label="a\0b"), "label contains a NUL byte"),
        (JobSpec(command="true", env={"A": "1\0"}), "environment variable A contains a NUL byte"),
        (JobSpec(command="true", env={"A\0": "1"}), "invalid environment variable name"),
    ],
)
def test_new_job_nul_anywhere_is_refused(spec: JobSpec, words: str) -> None:
    """Issue #17 item 6: a NUL byte in the cwd was accepted, and the spawn then raised."""
    with pytest.raises(ValueError, match=words):
        _new(spec)
    with pytest.raises(ValueError, match="NUL"):
        _new(JobSpec(command="true"), cwd="/tmp\0x")


def test_command_longer_than_one_exec_argument_is_refused() -> None:
    """Issue #11: MAX_ARG_STRLEN (128 KiB with the NUL) is the most one argument can be."""
    _new(JobSpec(command="x" * validation.MAX_ARG_BYTES))
    with pytest.raises(ValueError, match=r"command is 131,072 bytes; .*131,071 .*MAX_ARG_STRLEN"):
        _new(JobSpec(command="x" * (validation.MAX_ARG_BYTES + 1)))
    # Counted in bytes, not characters: 43,691 three-byte characters are 131,073 bytes.
    with pytest.raises(ValueError, match="131,073 bytes"):
        _new(JobSpec(command="€" * 43_691))
    with pytest.raises(ValueError, match="environment variable BIG is 131,072 bytes"):
        _new(JobSpec(command="true", env={"BIG": "v" * (validation.MAX_ARG_BYTES - 3)}))


def test_jobs_that_add_nothing_share_the_request_environment() -> None:
    shared = {"A": "1"}
    assert _new(JobSpec(command="x"), env=shared).env is shared
    assert _new(JobSpec(command="x", env={"B": "2"}), env=shared).env == {"A": "1", "B": "2"}


# ----------------------------------------------------------------------------
# Config


def test_config_key_spellings() -> None:
    assert config_key("max-retries") == "max-retries"
    assert config_key("max_retries") == "max-retries"
    assert config_key(" Backoff-Base ") == "backoff-base"


def test_config_key_unknown() -> None:
    with pytest.raises(ValueError, match="unknown config key 'colour'") as info:
        config_key("colour")
    assert "max-retries" in str(info.value)  # lists the known keys


@pytest.mark.parametrize(
    ("key", "text", "field", "value"),
    [
        ("max-retries", "0", "max_retries", 0),
        ("max-retries", "5", "max_retries", 5),
        ("backoff-base", "1", "backoff_base", 1.0),
        ("backoff-base", "2.5", "backoff_base", 2.5),
        ("backoff-max", "5m", "backoff_max", 300.0),
        ("backoff-max", "90", "backoff_max", 90.0),
        ("backoff-max", "1d", "backoff_max", 86400.0),
        ("timeout", "5m", "timeout", 300.0),
        ("timeout", "2h", "timeout", 7200.0),
        ("timeout", "none", "timeout", None),
        ("timeout", "None", "timeout", None),
        ("timeout", "off", "timeout", None),
        ("timeout", "0", "timeout", None),
        ("concurrency", "0", "concurrency", 0),  # stops claiming: workers scale 0
        ("concurrency", "1", "concurrency", 1),
        ("concurrency", "4096", "concurrency", 4096),
        ("log-max-size", "10M", "log_max_size", 10 * 1024 * 1024),
        ("log-max-size", "1k", "log_max_size", 1024),
        ("kill-grace", "30s", "kill_grace", 30.0),
        ("max_retries", "2", "max_retries", 2),
    ],
)
def test_parse_config_value_good(key: str, text: str, field: str, value: object) -> None:
    assert parse_config_value(key, text) == (field, value)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("max-retries", "-1"),
        ("max-retries", "three"),
        ("max-retries", "1.5"),
        ("concurrency", "-2"),
        ("concurrency", "4097"),
        ("backoff-base", "0.5"),
        ("backoff-base", "nan"),
        ("backoff-base", "inf"),
        ("backoff-base", "3601"),
        ("backoff-max", "0"),
        ("backoff-max", "-5"),
        ("backoff-max", "soon"),
        ("timeout", "5 minutes"),
        ("timeout", "-1"),
        ("log-max-size", "100"),
        ("log-max-size", "lots"),
        ("kill-grace", "0s"),
        ("max-retries", "99999999999999999999"),
        ("max-retries", "2147483649"),
        ("backoff-max", "99999d"),
        ("timeout", "3651d"),
        ("kill-grace", "9" * 400),
        ("log-max-size", "2T"),
    ],
)
def test_parse_config_value_bad(key: str, text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid value for {key}"):
        parse_config_value(key, text)


@pytest.mark.parametrize(
    ("key", "text", "words"),
    [
        ("max-retries", "abc", "invalid value for max-retries: 'abc' is not a whole number"),
        ("max-retries", "99999999999999999999", "must be from 0 to 2,147,483,648, got 99,999"),
        ("backoff-base", "x", "'x' is not a number"),
        ("timeout", "99999d", "'99999d' is longer than the 10-year limit"),
    ],
)
def test_parse_config_value_says_why_in_words(key: str, text: str, words: str) -> None:
    """Issue #11: not "invalid literal for int() with base 10"; issue #17 item 8: range-checked."""
    with pytest.raises(ValueError) as caught:
        parse_config_value(key, text)
    assert words in str(caught.value)


def test_parse_config_value_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown config key"):
        parse_config_value("workers", "3")


def test_settings_with_applies_values_and_keeps_the_rest() -> None:
    base = Settings(max_retries=1, kill_grace=3.0)
    updated = settings_with(base, {"max-retries": 5, "timeout": "5m", "backoff_max": "1h"})
    assert updated.max_retries == 5
    assert updated.timeout == 300.0
    assert updated.backoff_max == 3600.0
    assert updated.kill_grace == 3.0
    assert updated.concurrency == base.concurrency
    assert base.max_retries == 1  # the original is untouched


def test_settings_with_refuses_bad_value() -> None:
    with pytest.raises(ValueError):
        settings_with(Settings(), {"concurrency": -1})
    with pytest.raises(ValueError):
        settings_with(Settings(), {"nope": 1})


def test_settings_as_config_uses_user_keys() -> None:
    config = settings_as_config(Settings())
    assert set(config) == set(CONFIG_KEYS)
    assert config["max-retries"] == 3
    assert config["timeout"] is None
    assert config["concurrency"] == 1


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(
            max_retries=0, backoff_base=1.5, backoff_max=30.0, timeout=7.5, concurrency=8, kill_grace=1.0
        ),
        Settings(timeout=None, log_max_size=2048),
    ],
)
def test_settings_round_trip_through_config(settings: Settings) -> None:
    assert settings_with(Settings(max_retries=99), settings_as_config(settings)) == settings
    shown = {k: format_config_value(k, v) for k, v in settings_as_config(settings).items()}
    assert settings_with(Settings(max_retries=99), shown) == settings


@pytest.mark.parametrize(
    ("key", "typed", "shown"),
    [
        ("timeout", "1h", "1h"),
        ("timeout", "3600", "1h"),
        ("timeout", "90m", "1h30m"),
        ("timeout", "0", "none"),
        ("kill-grace", "2.5", "2.5s"),
        ("backoff-max", "1d", "1d"),
        ("log-max-size", "10M", "10M"),
        ("log-max-size", "10485760", "10M"),
        ("log-max-size", "1536", "1536"),
        ("backoff-base", "2", "2"),
        ("backoff-base", "1.5", "1.5"),
        ("max-retries", "5", "5"),
    ],
)
def test_config_values_are_shown_as_a_user_types_them(key: str, typed: str, shown: str) -> None:
    assert format_config_value(key, parse_config_value(key, typed)[1]) == shown


# ----------------------------------------------------------------------------
# Dependencies


def test_dependency_verdict_no_dependencies_is_ready() -> None:
    assert dependency_verdict({}) == lifecycle.DependencyVerdict(True)


def test_dependency_verdict_all_completed() -> None:
    verdict = dependency_verdict({1: "completed", 2: "completed"})
    assert verdict.ready and verdict.blocker is None and verdict.blocker_state is None


@pytest.mark.parametrize("state", ["pending", "running", "failed"])
def test_dependency_verdict_waits(state: str) -> None:
    verdict = dependency_verdict({1: "completed", 2: state})
    assert not verdict.ready
    assert verdict.blocker is None


@pytest.mark.parametrize("state", ["dead", "canceled"])
def test_dependency_verdict_blocked(state: str) -> None:
    verdict = dependency_verdict({1: "completed", 7: state, 3: "pending"})
    assert not verdict.ready
    assert (verdict.blocker, verdict.blocker_state) == (7, state)


def test_dependency_verdict_names_lowest_blocker() -> None:
    verdict = dependency_verdict({9: "dead", 4: "canceled", 6: "dead"})
    assert (verdict.blocker, verdict.blocker_state) == (4, "canceled")


def test_dependency_cancel_reason_names_the_dependency() -> None:
    assert lifecycle.dependency_cancel_reason(12, "dead") == "canceled: dependency 12 is dead"


def test_unknown_ids() -> None:
    assert lifecycle.unknown_ids([3, 1, 2, 3], [2]) == [1, 3]
    assert lifecycle.unknown_ids([], [1]) == []


# ----------------------------------------------------------------------------
# Held jobs and changes to waiting jobs


def test_a_held_new_job_starts_held() -> None:
    settings = Settings()
    held = validation.new_job(JobSpec(command="x", hold=True), cwd="/", env={}, settings=settings, now=0)
    plain = validation.new_job(JobSpec(command="x"), cwd="/", env={}, settings=settings, now=0)
    states = (lifecycle.initial_state(hold=held.hold), lifecycle.initial_state(hold=plain.hold))
    assert states == ("held", "pending")


def test_editable_states_are_those_without_a_process_that_are_not_finished() -> None:
    assert set(lifecycle.EDITABLE_STATES) == set(STATES) - {"running"} - {
        s for s in STATES if lifecycle.is_terminal(s)
    }
    assert set(lifecycle.UNFINISHED_STATES) == {s for s in STATES if not lifecycle.is_terminal(s)}


def test_job_changes_become_fields() -> None:
    changes = JobChanges(command="make", queue="q", priority=-1, max_retries=0, backoff_base=3, timeout=9)
    assert validation.job_changes(changes, now=100) == {
        "command": "make", "queue": "q", "priority": -1, "max_retries": 0, "backoff_base": 3, "timeout": 9,
    }  # fmt: skip
    assert validation.job_changes(JobChanges(), now=100) == {}
    assert validation.job_changes(JobChanges(no_timeout=True, label=""), now=100) == {
        "timeout": None,
        "label": None,
    }
    assert validation.job_changes(JobChanges(delay=5), now=100) == {"run_at": 105}
    assert validation.job_changes(JobChanges(run_at=50), now=100) == {"run_at": 100}  # past: now


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (JobChanges(command=" "), "command is empty"),
        (JobChanges(command="a\0b"), "NUL"),
        (JobChanges(delay=1, run_at=2), "either a delay or a run_at"),
        (JobChanges(timeout=1, no_timeout=True), "either a timeout or no timeout"),
    ],
)
def test_job_changes_refused(changes: JobChanges, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validation.job_changes(changes, now=0)


def test_on_finish_is_a_command_or_none() -> None:
    assert parse_config_value("on-finish", "  ./notify.sh  ") == ("on_finish", "./notify.sh")
    for off in ("none", "off", "", " "):
        assert parse_config_value("on_finish", off) == ("on_finish", None)
    with pytest.raises(ValueError, match="invalid value for on-finish: command contains a NUL byte"):
        parse_config_value("on-finish", "a\0b")
    assert Settings().on_finish is None
    assert settings_as_config(Settings(on_finish="x"))["on-finish"] == "x"


# ----------------------------------------------------------------------------
# Unique keys


def test_every_unfinished_job_holds_its_key_and_only_a_completed_one_a_window() -> None:
    assert lifecycle.UNIQUE_STATES == lifecycle.UNFINISHED_STATES
    window = lifecycle.unique_window_start(NOW, 3600.0)
    assert window == NOW - 3600
    for state in lifecycle.UNFINISHED_STATES:
        assert lifecycle.holds_key(state, NOW - 10**6, None)  # however old
    assert lifecycle.holds_key("completed", NOW - 3599, window)
    assert not lifecycle.holds_key("completed", NOW - 3600, window)  # exactly the window ago: free
    assert not lifecycle.holds_key("completed", NOW - 1, None)  # no window: free at once
    for state in ("dead", "canceled"):  # they did not do the work: a new add tries again
        assert not lifecycle.holds_key(state, NOW - 1, window)


@pytest.mark.parametrize("unique_for", [None, 0.0])
def test_no_window_or_an_empty_one_holds_only_unfinished_jobs(unique_for: float | None) -> None:
    assert lifecycle.unique_window_start(NOW, unique_for) is None


def test_the_refusal_names_the_key_and_its_holder() -> None:
    assert lifecycle.unique_refusal(3, "retry", "nightly", 9, "running") == (
        "cannot retry job 3: its unique key 'nightly' is held by job 9 (running); wait for that one or cancel it"
    )
    assert lifecycle.unique_refusal(3, "restart", "k", 3, "running") == (
        "cannot restart job 3: it holds its unique key 'k' while running; wait for it or cancel it"
    )


def test_new_job_keeps_its_unique_key_and_window() -> None:
    job = _new(JobSpec(command="x", unique_key="build main", unique_for=60.0))
    assert (job.unique_key, job.unique_for) == ("build main", 60.0)
    assert (_new(JobSpec(command="x")).unique_key, _new(JobSpec(command="x")).unique_for) == (None, None)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (JobSpec(command="x", unique_key="   "), "the unique key is empty"),
        (JobSpec(command="x", unique_key="a\nb"), "holds a control character"),
        (JobSpec(command="x", unique_key="a\tb"), "holds a control character"),
        (JobSpec(command="x", unique_key="a\x1b[31m"), "holds a control character"),
        (JobSpec(command="x", unique_key="caf\udce9"), "holds bytes that are not UTF-8"),
        (JobSpec(command="x", unique_key="k" * 201), "the unique key is 201 characters; at most 200"),
        (JobSpec(command="x", unique_for=60.0), "a unique-for window needs a unique key (--unique KEY)"),
    ],
)
def test_a_bad_unique_key_is_refused_in_one_line(spec: JobSpec, words: str) -> None:
    with pytest.raises(ValueError) as info:
        validation.check_spec(spec)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_printable_key_of_any_script_is_kept() -> None:
    validation.check_spec(JobSpec(command="x", unique_key="rapport mensuel · 2026-11 ✓"))


def test_an_attempt_lost_with_its_node_is_retried_at_once_and_still_counts() -> None:
    """Issue #12: a rescued attempt failed for its node, not for itself."""
    kept = {"succeeded": False, "max_retries": 1, "backoff_base": 2, "backoff_max": 60, "now": 100.0}
    assert after_attempt(attempts=1, at_once=True, **kept).run_at == 100.0
    assert after_attempt(attempts=1, **kept).run_at == 102.0
    assert after_attempt(attempts=2, at_once=True, **kept).state == "dead"
    assert lifecycle.node_lost("gpu1").error == (
        "interrupted: its node gpu1 stopped renewing its lease while the job ran"
    )
    assert lifecycle.node_lost(None) == lifecycle.INTERRUPTED
