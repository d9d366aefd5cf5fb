"""The lease's arithmetic (queued/lease.py): pure, `now` passed in."""

from __future__ import annotations

import pytest

from queued import lease
from queued.lease import Lease


def test_the_jobs_are_dead_a_margin_before_the_database_can_call_the_lease_expired() -> None:
    held = Lease(sent=100.0, seconds=30.0)
    # The database stamped the renewal no earlier than it was sent: it
    # cannot call the lease expired before 130.
    assert held.dead_by == 130.0 - lease.margin(30.0) == 128.5
    assert held.stop_at(kill_grace=10.0) == 118.5
    assert held.held(128.4) and not held.held(128.5)
    assert held.next_renewal() == 110.0


def test_a_renewal_counts_from_when_it_was_sent_and_never_moves_back() -> None:
    held = Lease(sent=100.0, seconds=3.0)
    assert held.renewed(101.0).sent == 101.0
    assert held.renewed(99.0).sent == 100.0  # a late answer to an older renewal


def test_the_margin_grows_with_the_lease_from_half_a_second() -> None:
    assert lease.margin(3.0) == 0.5
    assert lease.margin(30.0) == 1.5
    assert lease.margin(600.0) == 30.0


@pytest.mark.parametrize(
    ("seconds", "grace", "fits"),
    [(30.0, 10.0, True), (3.0, 0.5, True), (15.0, 10.0, False), (3.0, 2.0, False), (20.0, 10.0, True)],
)
def test_a_lease_fits_a_kill_grace_when_one_failed_renewal_leaves_the_jobs_running(
    seconds: float, grace: float, fits: bool
) -> None:
    assert lease.lease_fits(seconds, grace) is fits
    # Fitting means: the first renewal (and a retry) come before the jobs must stop.
    stop = Lease(0.0, seconds).stop_at(grace)
    assert (stop > lease.renew_interval(seconds) + lease.retry_interval(seconds)) is fits


def test_the_refusal_names_the_shortest_lease_that_fits() -> None:
    message = lease.lease_refusal(15.0, 10.0)
    assert message is not None
    shortest = lease.minimum_lease(10.0)
    assert f"at least {shortest:g}s" in message and "kill-grace 10s" in message
    assert lease.lease_fits(shortest, 10.0) and not lease.lease_fits(round(shortest - 0.1, 1), 10.0)
    assert lease.lease_refusal(shortest, 10.0) is None


@pytest.mark.parametrize("name", ["gpu1", "web-2.example", "nœud", "a" * 63])
def test_good_node_names(name: str) -> None:
    assert lease.check_node_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("two words", "no spaces"),
        ("tab\there", "no spaces"),
        ("a,b", "commas"),
        ("bell\a", "printable"),
        ("a" * 64, "longer than 63"),
    ],
)
def test_bad_node_names(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        lease.check_node_name(name)


def test_the_default_name_is_a_valid_host_name() -> None:
    assert lease.check_node_name(lease.default_node_name())


def test_served_queues_are_a_list_without_repeats() -> None:
    assert lease.check_queue_names("gpu, default,gpu") == ("gpu", "default")
    with pytest.raises(ValueError, match="queues"):
        lease.check_queue_names("gpu,")
