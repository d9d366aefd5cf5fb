"""What the slots need of the descriptor limit, and raising the limit at start."""

from __future__ import annotations

import resource

from queued.processes import descriptors


def test_a_concurrency_the_limit_carries_draws_no_word() -> None:
    assert descriptors.shortfall(4, 1024) is None
    assert descriptors.shortfall(descriptors.most_slots(1024), 1024) is None


def test_a_concurrency_beyond_the_limit_is_explained_with_the_way_out() -> None:
    why = descriptors.shortfall(500, 1024)
    assert why is not None
    assert "concurrency 500 needs up to 2,532 open files" in why
    assert "1,024" in why and "LimitNOFILE=" in why and "ulimit -n" in why
    assert f"at most {descriptors.most_slots(1024)}" in why
    assert descriptors.shortfall(descriptors.most_slots(1024) + 1, 1024) is not None


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert descriptors.raise_limit() == hard == descriptors.current_limit()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_clients_get_what_the_slots_leave_of_the_limit_within_bounds() -> None:
    room = descriptors.client_room
    assert room(20000, 4) == descriptors.MAX_CLIENTS  # plenty: the cap holds
    assert room(1024, 100) == 1024 - 32 - 500 + descriptors.MIN_CLIENTS
    assert room(1024, descriptors.most_slots(1024)) < descriptors.MIN_CLIENTS + descriptors.FDS_PER_ATTEMPT
    assert room(1024, 4096) == descriptors.MIN_CLIENTS  # never none
