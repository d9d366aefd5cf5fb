"""Nodes sharing one PostgreSQL store: registration under a unique live name,
leases on the database's clock, the fence on every attempt's start and end,
and the rescue of a lost node's attempts (once, whoever rescues). The
contract suite covers what both engines do (attempts name their node, pinning)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("psycopg")

from queued import lifecycle
from queued.store import AttemptEnd, Refused
from queued.store.postgres import PostgresStore
from queued.store.postgres.nodes import LeaseUnreachable, NameTaken, NodeCard, NodeLeases
from tests.engines import join_node
from tests.store_harness import BACKOFF_MAX, FAIL, OK, T0, Direct, add, claim, job, state


@pytest.fixture
def url(postgres_url: str) -> str:
    return postgres_url


def node_store(url: str, name: str) -> Direct:
    engine = PostgresStore.open(url)
    store = Direct(engine)
    join_node(engine, name)
    store.recover(BACKOFF_MAX, T0)
    return store


def expire(store: Direct, name: str) -> None:
    """Node `name`'s lease ran out (as if it had stopped renewing)."""
    store.engine.conn.execute(
        "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE name = %s", (name,)
    )


def card(name: str, home: str, lease: float = 30.0) -> NodeCard:
    return NodeCard(name, home, "h", 1, 2, ("gpu",), lease)


def test_a_live_name_is_refused_to_another_home_until_its_lease_ran_out(url: str) -> None:
    a, b = NodeLeases(url, 30.0), NodeLeases(url, 30.0)
    try:
        a.register(card("gpu1", "machine-a:/d"), "inc-a")
        with pytest.raises(NameTaken, match="another node named 'gpu1' is alive"):
            b.register(card("gpu1", "machine-b:/d"), "inc-b")
        # The same machine and data dir: a restart after a crash takes it at once.
        a.register(card("gpu1", "machine-a:/d"), "inc-a2")
        assert a.renew("inc-a", 2).held is False  # the earlier incarnation is gone
        assert a.renew("inc-a2", 2).held is True
        a.conn.execute("UPDATE nodes SET lease_until = now() WHERE name = 'gpu1'")
        b.register(card("gpu1", "machine-b:/d"), "inc-b")  # lost: its name may be taken
        assert b.renew("inc-b", 3).held is True
    finally:
        a.close()
        b.close()


def test_a_renewal_says_when_another_node_may_expire_and_whether_attempts_wait(url: str) -> None:
    a = node_store(url, "a")
    b = node_store(url, "b")
    leases = NodeLeases(url, 30.0)
    try:
        job_id = add(a)
        claim(a)
        renewal = leases.renew(b.engine._node.incarnation, 4)
        assert renewal.held and not renewal.orphans
        assert renewal.next_expiry is not None and 25 < renewal.next_expiry <= 30
        expire(b, "a")
        renewal = leases.renew(b.engine._node.incarnation, 4)
        assert renewal.orphans and renewal.next_expiry is None
        assert state(b, job_id) == "running"
    finally:
        leases.close()
        a.engine.close()
        b.engine.close()


def test_a_renewal_whose_kept_connection_the_server_ended_reconnects_at_once(url: str) -> None:
    """pg_terminate_backend of the lease keeper's idle connection (or a server
    restart between heartbeats): the next renewal is not a failed one (it was,
    and the node claimed nothing for a tenth of its lease); a server that is
    really gone still fails it."""
    a = node_store(url, "a")
    leases = NodeLeases(url, 30.0)
    try:
        incarnation = a.engine._node.incarnation
        assert leases.renew(incarnation, 4).held
        assert leases.conn is not None
        backend = leases.conn.info.backend_pid
        a.engine.conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
        assert leases.renew(incarnation, 4).held
        assert leases.conn.info.backend_pid != backend
        gone = NodeLeases(url.replace("port=", "port=1"), 30.0)  # no server there
        with pytest.raises(LeaseUnreachable):
            gone.renew(incarnation, 4)
        gone.close()
    finally:
        leases.close()
        a.engine.close()


def test_a_lost_nodes_attempt_is_rescued_once_and_its_late_end_is_refused(url: str) -> None:
    a = node_store(url, "a")
    b = node_store(url, "b")
    c = node_store(url, "c")
    try:
        job_id = add(a, max_retries=2)
        [claimed] = claim(a)
        expire(b, "a")
        # Two rescuers at once: one statement each, and one of them records it.
        answers: list = []
        barrier = threading.Barrier(2)

        def rescue(store: Direct) -> None:
            barrier.wait()
            answers.append(store.rescue(BACKOFF_MAX, T0 + 5))

        threads = [threading.Thread(target=rescue, args=(s,)) for s in (b, c)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(len(answer) for answer in answers) == [0, 1]
        [[rescued]] = [answer for answer in answers if answer]
        assert (rescued.job_id, rescued.run, rescued.state) == (job_id, 1, "failed")
        [run] = b.get_job(job_id)[1]
        assert run.error == lifecycle.node_lost("a").error and run.node == "a"
        # The lost node's own end arrives late: refused, nothing recorded.
        with pytest.raises(Refused, match="already ended elsewhere"):
            a.finish(claimed, OK, BACKOFF_MAX, T0 + 6)
        [run] = b.get_job(job_id)[1]
        assert (run.exit_code, run.error) == (None, lifecycle.node_lost("a").error)
        assert job(b, job_id).state == "failed"
        # It runs again elsewhere, under its retry policy.
        assert job(b, job_id).run_at == T0 + 5  # due at once: its node failed, not the job
        [again] = claim(b, T0 + 5)
        assert (again.id, again.run) == (job_id, 2)
        b.finish(again, OK, BACKOFF_MAX, T0 + 101)
        assert state(b, job_id) == "completed"
    finally:
        for store in (a, b, c):
            store.engine.close()


def test_a_node_whose_lease_ran_out_claims_and_starts_nothing(url: str) -> None:
    a = node_store(url, "a")
    try:
        first, second = add(a), add(a)
        [read, _] = sorted(
            a.lookahead(now=T0, horizon=T0, queues=["default"], busy=[], limit=10).jobs, key=lambda c: c.id
        )
        expire(a, "a")
        assert claim(a) == []
        with pytest.raises(Refused):
            a.start(read, T0)
        assert state(a, first) == state(a, second) == "pending"
    finally:
        a.engine.close()


def test_recover_at_start_takes_this_nodes_earlier_attempts_and_leaves_live_nodes_alone(url: str) -> None:
    a = node_store(url, "a")
    b = node_store(url, "b")
    try:
        mine, theirs = add(a), add(a)
        [claimed] = claim(a, slots=1)
        assert claimed.id == mine
        [other] = claim(b, slots=1)
        assert other.id == theirs
        # Node a starts again (same home): a new incarnation, and its own earlier attempt is recovered.
        restarted = node_store(url, "a")
        assert state(restarted, mine) == "failed"
        assert restarted.get_job(mine)[1][0].error == lifecycle.INTERRUPTED.error
        assert state(restarted, theirs) == "running"
        with pytest.raises(Refused):  # the old incarnation's end is fenced off
            a.finish(claimed, FAIL, BACKOFF_MAX, T0 + 1)
        restarted.engine.close()
    finally:
        a.engine.close()
        b.engine.close()


def test_nodes_lists_every_node_alive_lost_or_stopped(url: str) -> None:
    a = node_store(url, "a")
    b = node_store(url, "b")
    c = node_store(url, "c")
    try:
        claim(a) if add(a) else None
        expire(a, "b")
        leases = NodeLeases(url, 30.0)
        leases.leave(c.engine._node.incarnation)
        leases.close()
        listed = {node.name: node for node in a.nodes()}
        assert {name: node.state for name, node in listed.items()} == {
            "a": "alive",
            "b": "lost",
            "c": "stopped",
        }
        assert listed["a"].this and not listed["b"].this
        assert (listed["a"].running, listed["a"].slots, listed["a"].host) == (1, 4, "testhost")
        assert listed["a"].last_heartbeat is not None and listed["a"].lease == 30.0
    finally:
        for store in (a, b, c):
            store.engine.close()


def test_a_heartbeat_stores_the_nodes_resources_for_the_others_to_read(url: str) -> None:
    """`status` on any node shows every node's resources: each one's
    heartbeat stores them (nodes.resources), a heartbeat without them keeps them."""
    from queued.protocol import Resources

    a = node_store(url, "a")
    b = node_store(url, "b")
    leases = NodeLeases(url, 30.0)
    try:
        assert [node.resources for node in b.nodes()] == [None, None]
        have = Resources(slots=4, slots_used=2, counts={"licence": 1}, gpus=[0, 1], gpus_used=[1])
        assert leases.renew(a.engine._node.incarnation, 4, have).held
        assert {node.name: node.resources for node in b.nodes()} == {"a": have, "b": None}
        assert leases.renew(a.engine._node.incarnation, 4).held
        assert {node.name: node.resources for node in b.nodes()} == {"a": have, "b": None}
    finally:
        leases.close()
        a.engine.close()
        b.engine.close()


def test_a_version_3_store_gains_the_nodes_and_recovers_what_its_one_daemon_left(
    postgres_empty_url: str,
) -> None:
    import psycopg

    from tests.unit.test_store_postgres import WITHOUT_NODES, WITHOUT_RESOURCES

    engine = PostgresStore.open(postgres_empty_url)
    old = Direct(engine)
    old.recover(BACKOFF_MAX, T0)
    job_id = add(old)
    claim(old)  # running when the daemon of old stopped
    engine.close()
    with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
        conn.execute(
            f"{WITHOUT_RESOURCES}; {WITHOUT_NODES}; DROP TABLE queued.schedules, queued.firings; UPDATE queued.schema_version SET version = 3"
        )
    store = node_store(postgres_empty_url, "upgraded")
    try:
        assert state(store, job_id) == "failed"
        [run] = store.get_job(job_id)[1]
        assert run.node is None and run.error == lifecycle.INTERRUPTED.error
        assert [n.name for n in store.nodes()] == ["upgraded"]
    finally:
        store.engine.close()


def test_a_lost_nodes_jobs_claimed_ahead_are_given_back_uncounted_and_its_late_records_change_nothing(
    url: str,
) -> None:
    """Node a claimed two jobs ahead of its free slots and started one, then
    lost its lease: the started one is interrupted, the other never ran and
    waits again as it was; b claims it as the same attempt 1. a's late give
    back and late start of that claim touch b's attempt not at all."""
    a = node_store(url, "a")
    b = node_store(url, "b")
    try:
        ran, held = add(a, max_retries=2), add(a, max_retries=2)
        claimed = {c.id: c for c in a.claim(now=T0, slots=2, queue_room={"default": 2}, started=False)}
        assert a.mark_started([(ran, 1, 123, T0)]) == []
        expire(b, "a")
        assert [r.job_id for r in b.rescue(BACKOFF_MAX, T0 + 5)] == [ran]
        assert state(b, held) == "pending" and b.get_job(held)[1] == []
        assert job(b, held).attempts == 0
        [again] = b.claim(now=T0 + 5, slots=1, queue_room={"default": 1}, started=False)
        assert (again.id, again.run) == (held, 1)
        a.unclaim(claimed[held], T0 + 6)  # a, late: the attempt is b's now
        assert a.mark_started([(held, 1, 456, T0 + 6)]) == [held]
        assert state(b, held) == "running"
        [run] = b.get_job(held)[1]
        assert (run.node, run.pid) == ("b", None)
        assert b.mark_started([(held, 1, 789, T0 + 7)]) == []
        b.finish(again, OK, BACKOFF_MAX, T0 + 8)
        assert state(b, held) == "completed"
        assert [r.error for r in b.get_job(ran)[1]] == [lifecycle.node_lost("a").error]
    finally:
        a.engine.close()
        b.engine.close()


def test_a_late_end_is_refused_alone_among_the_ends_of_one_call(url: str) -> None:
    """`finish_many`: the end of an attempt rescued meanwhile is Refused and
    records nothing; the other ends of the same call are recorded."""
    a = node_store(url, "a")
    b = node_store(url, "b")
    try:
        rescued, other = add(a), add(a)
        [late] = claim(a, slots=1)
        assert late.id == rescued
        expire(b, "a")
        assert [r.job_id for r in b.rescue(BACKOFF_MAX, T0 + 5)] == [rescued]
        join_node(a.engine, "a")  # a starts again (a new incarnation) and claims
        [fresh] = claim(a, T0 + 6, slots=1)
        assert fresh.id == other
        results = a.finish_many([AttemptEnd(late, OK, T0 + 7), AttemptEnd(fresh, OK, T0 + 7)], BACKOFF_MAX)
        assert isinstance(results[0], Refused) and "already ended elsewhere" in str(results[0])
        assert results[1] == "completed" and state(b, other) == "completed"
        [run] = b.get_job(rescued)[1]
        assert (run.exit_code, run.error) == (None, lifecycle.node_lost("a").error)
        assert state(b, rescued) == "failed"  # due again, under its retry policy
    finally:
        a.engine.close()
        b.engine.close()


def _waiting_on_a_lock(url: str, deadline: float = 10.0) -> None:
    """Return once some backend of the test's database waits on a lock."""
    import time

    import psycopg

    until = time.monotonic() + deadline
    with psycopg.connect(url, autocommit=True) as watcher:
        while watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone() == (0,):
            assert time.monotonic() < until, "nobody waited on the job's row"
            time.sleep(0.01)


def test_an_end_recorded_while_another_node_cancels_its_job_keeps_the_cancel(url: str) -> None:
    """Node b cancels a job running on node a while a's `finish_many` records
    its end: whichever commits second sees what the first did. Found by an
    attack: the end read the job's state unlocked, so an end that read
    'running' before b's cancel committed wrote 'completed' over 'canceled'
    (the user was told it was canceled; its dependents were canceled with it)."""
    a = node_store(url, "a")
    b = node_store(url, "b")
    try:
        job_id = add(a)
        [running] = claim(a, slots=1)
        results: list[object] = []
        with b.transaction():
            assert b.cancel([job_id], T0 + 1) == [job_id]  # not committed yet: it holds the row
            ending = threading.Thread(
                target=lambda: results.extend(a.finish_many([AttemptEnd(running, OK, T0 + 2)], BACKOFF_MAX))
            )
            ending.start()
            _waiting_on_a_lock(url)
        ending.join(timeout=30)
        assert not ending.is_alive()
        assert results == ["canceled"]  # the end came after the cancel: it decides nothing
        assert state(b, job_id) == "canceled"
        [run] = b.get_job(job_id)[1]
        assert run.exit_code == 0  # the attempt's own record is kept
    finally:
        a.engine.close()
        b.engine.close()


def test_a_job_added_after_one_that_ends_meanwhile_on_another_node_is_released(url: str) -> None:
    """Node b adds a job `--after` one running on node a while a records that
    one's end: the add waits for the end or the end for the add, so the new
    job is counted against what its dependency became. Found by an attack:
    the add read its dependency's state unlocked, so an end committed between
    that read and the add's commit recounted the dependents without the new
    one (not committed yet), which then waited for ever for a completed job."""
    a = node_store(url, "a")
    b = node_store(url, "b")
    try:
        dependency = add(a)
        [running] = claim(a, slots=1)
        ended: list[object] = []
        ending = threading.Thread(
            target=lambda: ended.extend(a.finish_many([AttemptEnd(running, OK, T0 + 2)], BACKOFF_MAX))
        )
        with b.transaction():
            dependent = add(b, after=[dependency])  # read 'running': it waits for one more
            ending.start()
            ending.join(timeout=1)  # done at once without a lock; else it waits for this add
            assert ending.is_alive() or ended == ["completed"]
        ending.join(timeout=30)
        assert ended == ["completed"]
        assert [c.id for c in claim(a, T0 + 3)] == [dependent]
    finally:
        a.engine.close()
        b.engine.close()


def test_a_job_retried_while_its_dependency_ends_on_another_node_is_released(url: str) -> None:
    """As an add --after: node b retries a job whose dependency runs on node
    a while a records that dependency's end; the retried job must not wait
    for ever for a job that completed (its retry read the dependency
    'running' unlocked, and the end's recount passed it over: canceled yet)."""
    a = node_store(url, "a")
    b = node_store(url, "b")
    try:
        dependency = add(a)
        dependent = add(a, after=[dependency])
        [running] = claim(a, slots=1)
        assert b.cancel([dependent], T0 + 1) == []
        ended: list[object] = []
        ending = threading.Thread(
            target=lambda: ended.extend(a.finish_many([AttemptEnd(running, OK, T0 + 2)], BACKOFF_MAX))
        )
        with b.transaction():
            assert b.retry([dependent], False, T0 + 1) == [dependent]  # read 'running': waits for it
            ending.start()
            ending.join(timeout=1)  # done at once without a lock; else it waits for this retry
            assert ending.is_alive() or ended == ["completed"]
        ending.join(timeout=30)
        assert ended == ["completed"]
        assert [c.id for c in claim(a, T0 + 3)] == [dependent]
    finally:
        a.engine.close()
        b.engine.close()
