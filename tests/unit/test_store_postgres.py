"""What only the PostgreSQL engine does: its schema under an advisory lock,
claims that skip rows another node holds, its errors mapped to the contract's,
reconnecting after the server went away, and URLs shown without a password.
The behaviour both engines share is the contract suite's."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("psycopg")

import psycopg

from queued import lifecycle, validation
from queued.lifecycle import classify_exit
from queued.protocol import JobSpec
from queued.settings import Settings
from queued.store import OutputChunk, StorageError
from queued.store.contract import BatchLost, CommitUnknown, StoreUnreachable
from queued.store.postgres import DatabaseUnusable, PostgresStore, schema
from tests.postgres import PostgresServer
from tests.store_harness import Direct, add

T0 = 1_700_000_000.0
ROOM = {"default": 1000}


def new(command: str = "true", **spec: object) -> validation.NewJob:
    return validation.new_job(
        JobSpec(command=command, **spec),  # type: ignore[arg-type]
        cwd="/tmp",
        env={"HOME": "/root"},
        settings=Settings(),
        now=T0,
    )


@pytest.fixture
def store(postgres_url: str):
    engine = PostgresStore.open(postgres_url)
    direct = Direct(engine)
    direct.recover(3600.0, T0)
    yield direct
    engine.close()


def test_schema_is_created_once_with_a_version_row(postgres_empty_url: str) -> None:
    opened = []

    def open_one() -> None:
        opened.append(PostgresStore.open(postgres_empty_url))

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 4  # none failed on a table another one created meanwhile
    with psycopg.connect(postgres_empty_url) as conn:
        assert conn.execute("SELECT version FROM queued.schema_version").fetchall() == [
            (schema.SCHEMA_VERSION,)
        ]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'queued'")}
        assert {"jobs", "attempts", "dependencies", "queues", "environments", "config"} <= tables
        # The public schema is left alone: a database shared with other applications keeps its own.
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    for engine in opened:
        engine.close()


def test_a_newer_schema_is_refused_naming_the_store(postgres_empty_url: str) -> None:
    PostgresStore.open(postgres_empty_url).close()
    with psycopg.connect(postgres_empty_url) as conn:
        conn.execute("UPDATE queued.schema_version SET version = %s", (schema.SCHEMA_VERSION + 1,))
    with pytest.raises(DatabaseUnusable, match="newer than this queued understands"):
        PostgresStore.open(postgres_empty_url)


def test_a_version_5_store_gains_the_schedules(postgres_empty_url: str) -> None:
    """A store written by the previous version (no schedules) opens, its jobs kept."""
    from tests.unit.test_store_contract import a_schedule

    engine = PostgresStore.open(postgres_empty_url)
    Direct(engine).recover(3600.0, T0)
    Direct(engine).add_jobs([new("echo kept")], T0)
    engine.close()
    with psycopg.connect(postgres_empty_url) as conn:
        conn.execute(WITHOUT_RESOURCES)
        conn.execute("DROP TABLE queued.schedules, queued.firings")
        conn.execute("UPDATE queued.schema_version SET version = 5")
    engine = PostgresStore.open(postgres_empty_url)
    try:
        direct = Direct(engine)
        assert direct.counts()["pending"] == 1
        direct.add_schedule(a_schedule(), T0)
        assert direct.fire_schedule("nightly", T0 + 10, T0 + 10).outcome == "added"
        with psycopg.connect(postgres_empty_url) as conn:
            assert conn.execute("SELECT version FROM queued.schema_version").fetchone() == (
                schema.SCHEMA_VERSION,
            )
    finally:
        engine.close()


def test_a_version_6_store_gains_what_jobs_need_and_what_attempts_and_nodes_held(
    postgres_empty_url: str,
) -> None:
    """A store written by the previous version (no slots, needs, GPUs or
    node resources) opens, its jobs, attempts and schedules needing nothing."""
    from tests.unit.test_store_contract import a_schedule

    engine = PostgresStore.open(postgres_empty_url)
    direct = Direct(engine)
    direct.recover(3600.0, T0)
    direct.add_jobs([new("echo kept"), new("echo ran")], T0)
    direct.add_schedule(a_schedule(), T0)
    [claimed, _] = direct.claim(now=T0, slots=2, queue_room=ROOM)
    engine.close()
    with psycopg.connect(postgres_empty_url) as conn:
        conn.execute(WITHOUT_RESOURCES)
        conn.execute("ALTER TABLE queued.schedules DROP COLUMN slots, DROP COLUMN needs")
        conn.execute("UPDATE queued.schema_version SET version = 6")
    engine = PostgresStore.open(postgres_empty_url)
    try:
        direct = Direct(engine)
        assert [(j.slots, j.needs, j.gpus) for j in direct.list_jobs()] == [(1, {}, []), (1, {}, [])]
        assert [run.gpus for run in direct.get_job(claimed.id)[1]] == [[]]
        assert [(s.slots, s.needs) for s in direct.schedules()] == [(1, {})]
        [job_id] = direct.add_jobs([new(slots=2, needs={"gpu": 1})], T0)
        assert (direct.get_job(job_id)[0].slots, direct.get_job(job_id)[0].needs) == (2, {"gpu": 1})
        with psycopg.connect(postgres_empty_url) as conn:
            assert conn.execute("SELECT version FROM queued.schema_version").fetchone() == (
                schema.SCHEMA_VERSION,
            )
            assert conn.execute(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_schema = 'queued' AND table_name = 'nodes' AND column_name = 'resources'"
            ).fetchone() == (1,)
    finally:
        engine.close()


def test_tables_not_ours_are_refused(postgres_empty_url: str) -> None:
    with psycopg.connect(postgres_empty_url) as conn:
        conn.execute("CREATE SCHEMA queued; CREATE TABLE queued.jobs (id int)")
    with pytest.raises(DatabaseUnusable, match="not queued's"):
        PostgresStore.open(postgres_empty_url)


def test_an_unreachable_server_is_one_line_without_the_password(postgres_server: PostgresServer) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nothing?connect_timeout=2"
    with pytest.raises(DatabaseUnusable) as caught:
        PostgresStore.open(url)
    message = str(caught.value)
    assert "s3cret" not in message
    assert "127.0.0.1:1/nothing" in message
    assert "\n" not in message


def test_two_nodes_never_claim_the_same_job(postgres_url: str, store: Direct) -> None:
    """A row one node's open claim holds is skipped by the other, not waited for."""
    store.add_jobs([new(f"echo {n}") for n in range(4)], T0)
    other = Direct(PostgresStore.open(postgres_url))
    try:
        with store.transaction():
            first = store.claim(now=T0, slots=3, queue_room=ROOM)
            second = other.claim(now=T0, slots=3, queue_room=ROOM)  # while the first is uncommitted
        assert len(first) == 3
        assert len(second) == 1
        assert not {c.id for c in first} & {c.id for c in second}
        assert [c.run for c in first + second] == [1, 1, 1, 1]
    finally:
        other.engine.close()


def test_claim_keeps_to_each_queues_room(store: Direct) -> None:
    store.add_queue("gpu", None, T0)
    ids = store.add_jobs([new("a", queue="gpu"), new("b", queue="gpu"), new("c"), new("d")], T0)
    claimed = store.claim(now=T0, slots=10, queue_room={"gpu": 1, "default": 1})
    assert [c.id for c in claimed] == [ids[0], ids[2]]
    claimed = store.claim(now=T0, slots=1, queue_room={"gpu": 1, "default": 5})
    assert [c.id for c in claimed] == [ids[1]]


def test_a_cwd_that_is_not_utf8_comes_back_as_it_went_in(store: Direct) -> None:
    odd = "/tmp/caf\udce9"  # os.fsdecode of b"/tmp/caf\xe9"
    [job_id] = store.add_jobs(
        [validation.new_job(JobSpec(command="pwd"), cwd=odd, env={}, settings=Settings(), now=T0)], T0
    )
    [claimed] = store.claim(now=T0, slots=1, queue_room=ROOM)
    assert claimed.id == job_id
    assert claimed.cwd == b"/tmp/caf\xe9"
    assert store.get_job(job_id)[0].cwd.startswith("/tmp/caf")


def test_a_database_error_in_a_guarded_call_keeps_the_rest_of_the_batch(store: Direct) -> None:
    def broken(engine: PostgresStore) -> None:
        engine.conn.execute("SELECT * FROM no_such_table")

    with store.transaction():
        [kept] = store.add_jobs([new()], T0)
        with pytest.raises(StorageError, match="no_such_table"):
            store.engine.call(broken, (store.engine,), {}, guarded=True)
        assert store.states([kept]) == {kept: lifecycle.PENDING}
    assert store.states([kept]) == {kept: lifecycle.PENDING}


def _terminate(store: Direct) -> None:
    with psycopg.connect(store.engine.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (store.engine.conn.info.backend_pid,))


def test_a_connection_broken_while_idle_is_replaced_at_the_next_batch(store: Direct) -> None:
    [job_id] = store.add_jobs([new()], T0)
    _terminate(store)
    [second] = store.add_jobs([new()], T0)  # nothing lost: the batch began on a new connection
    assert store.states([job_id, second]) == {job_id: lifecycle.PENDING, second: lifecycle.PENDING}
    [claimed, _] = store.claim(now=T0, slots=2, queue_room=ROOM)
    assert store.finish(claimed, classify_exit(0), 3600.0, T0) == lifecycle.COMPLETED


def test_a_version_1_database_gains_the_output_table_and_keeps_its_rows(postgres_empty_url: str) -> None:
    """A database of the queued before output was kept (attempt rows naming
    files only) opens migrated: its jobs and attempts as they were, no output
    kept for them (`logs` reads their files), and new output kept."""
    engine = PostgresStore.open(postgres_empty_url)
    store = Direct(engine)
    store.recover(3600.0, T0)
    [old] = store.add_jobs([new("echo old")], T0)
    [claimed] = store.claim(now=T0, slots=1, queue_room=ROOM)
    store.finish(claimed, classify_exit(0), 3600.0, T0, stdout="/logs/0/1.1.out", stderr="/logs/0/1.1.err")
    engine.close()
    with psycopg.connect(postgres_empty_url) as conn:
        conn.execute(WITHOUT_RESOURCES)
        conn.execute(WITHOUT_NODES)
        conn.execute(WITHOUT_UNIQUE_KEYS)
        conn.execute("DROP TABLE queued.output_chunks, queued.schedules, queued.firings")
        conn.execute("UPDATE queued.schema_version SET version = 1")
    engine = PostgresStore.open(postgres_empty_url)
    try:
        store = Direct(engine)
        assert engine.conn.execute("SELECT version FROM schema_version").fetchone() == (
            schema.SCHEMA_VERSION,
        )
        job, runs, _ = store.get_job(old)
        assert (job.state, runs[0].stdout_path) == ("completed", "/logs/0/1.1.out")
        assert store.read_output(old, 1, "stdout", 0, 100) == (b"", 0)
        [job_id] = store.add_jobs([new("echo new")], T0)
        [claimed] = store.claim(now=T0, slots=1, queue_room=ROOM)
        store.append_output([OutputChunk(job_id=job_id, attempt=1, stream="stdout", at=0, data=b"new\n")])
        assert store.read_output(job_id, 1, "stdout", 0, 100) == (b"new\n", 4)
    finally:
        engine.close()


def test_a_connection_lost_in_a_batch_fails_it_as_unreachable_and_reconnect_restores_it(
    store: Direct,
) -> None:
    [job_id] = store.add_jobs([new()], T0)
    with pytest.raises(BatchLost) as caught, store.transaction():
        store.add_jobs([new()], T0)
        _terminate(store)
        store.states([job_id])
    error = caught.value.error
    assert isinstance(error, StoreUnreachable) and not isinstance(error, CommitUnknown)
    assert str(error) == f"the job store at {store.engine.where} is unreachable; retrying"
    assert "terminating connection" in error.detail
    store.engine.reconnect()
    assert store.list_jobs() and [job.id for job in store.list_jobs()] == [job_id]  # the second was not kept


def test_a_commit_lost_on_its_way_is_an_unknown_outcome(store: Direct) -> None:
    with pytest.raises(BatchLost) as caught, store.transaction():
        store.add_jobs([new()], T0)
        _terminate(store)
    error = caught.value.error
    assert isinstance(error, CommitUnknown)
    assert "may or may not have been kept" in str(error) and "\n" not in str(error)


def test_reconnect_while_the_server_is_down_says_unreachable(postgres_server: PostgresServer) -> None:
    engine = PostgresStore.open(postgres_server.tcp_url(postgres_server.clean_database()))
    try:
        postgres_server.stop("immediate")
        try:
            with pytest.raises(StoreUnreachable) as caught:
                engine.reconnect(connect_timeout=2)
            assert caught.value.detail and str(caught.value).endswith("is unreachable; retrying")
        finally:
            postgres_server.restart()
        engine.reconnect()
        assert engine.conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        engine.close()


# What schema version 7 added: a job's slots and needs, an attempt's GPUs, a
# node's resources (and a schedule's slots and needs, in the schedules table).
WITHOUT_RESOURCES = (
    "ALTER TABLE queued.jobs DROP COLUMN slots, DROP COLUMN needs; ALTER TABLE queued.attempts DROP COLUMN gpus;"
    " ALTER TABLE queued.nodes DROP COLUMN resources"
)

# What schema version 5 added: the nodes (see test_store_postgres_nodes.py).
WITHOUT_NODES = (
    "DROP TABLE queued.nodes; ALTER TABLE queued.attempts DROP COLUMN node;"
    " ALTER TABLE queued.attempts DROP COLUMN incarnation; ALTER TABLE queued.attempts DROP COLUMN rescued_by;"
    " ALTER TABLE queued.jobs DROP COLUMN node"
)

# What schema version 3 added: unique keys.
WITHOUT_UNIQUE_KEYS = (
    "DROP INDEX queued.jobs_unique; DROP INDEX queued.jobs_by_unique_key;"
    " ALTER TABLE queued.jobs DROP COLUMN unique_key"
)


def test_a_version_2_store_gains_unique_keys_and_their_index(postgres_empty_url: str) -> None:
    """A database the previous queued wrote opens, its jobs kept, with unique keys."""
    engine = PostgresStore.open(postgres_empty_url)
    Direct(engine).recover(3600.0, T0)
    Direct(engine).add_jobs([new("a"), new("b")], T0)
    engine.close()
    with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
        conn.execute(
            f"{WITHOUT_RESOURCES}; {WITHOUT_NODES}; {WITHOUT_UNIQUE_KEYS}; DROP TABLE queued.schedules, queued.firings;"
            " UPDATE queued.schema_version SET version = 2"
        )
    store = Direct(PostgresStore.open(postgres_empty_url))
    try:
        assert schema.SCHEMA_VERSION >= 3
        assert [(j.command, j.unique_key) for j in store.list_jobs()] == [("a", None), ("b", None)]
        [first] = store.add_jobs([new(unique_key="k")], T0)
        assert store.add_jobs([new(unique_key="k")], T0) == [first]
        with pytest.raises(psycopg.errors.UniqueViolation):  # the index, not only the add's look
            store.engine.conn.execute("UPDATE jobs SET unique_key = 'k' WHERE id = 1")
        with psycopg.connect(postgres_empty_url) as conn:
            assert conn.execute("SELECT version FROM queued.schema_version").fetchone() == (
                schema.SCHEMA_VERSION,
            )
    finally:
        store.engine.close()


def test_fifty_nodes_adding_one_key_at_once_add_one_job(postgres_url: str, store: Direct) -> None:
    """Fifty connections (as fifty nodes' writers), released together, each
    add the key in a batch of its own: one job, and every one is given its id."""
    adders = 50
    engines = [PostgresStore.open(postgres_url) for _ in range(adders)]
    start = threading.Barrier(adders)
    answers: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def add_one(engine: PostgresStore, n: int) -> None:
        try:
            start.wait()
            window = 3600.0 if n % 2 else None
            answer = Direct(engine).add_jobs([new(f"echo {n}", unique_key="deploy", unique_for=window)], T0)
            answers.append((answer[0], answer.existing[0]))
        except BaseException as exc:  # the test fails on it below
            errors.append(exc)

    threads = [threading.Thread(target=add_one, args=(engine, n)) for n, engine in enumerate(engines)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for engine in engines:
            engine.close()
    assert not errors, errors
    assert len(answers) == adders
    assert len({job_id for job_id, _ in answers}) == 1
    assert sorted(existing for _, existing in answers) == [False] + [True] * (adders - 1)
    assert [j.unique_key for j in store.list_jobs()] == ["deploy"]


def test_a_retry_and_an_add_of_one_key_on_two_nodes_take_turns(postgres_url: str, store: Direct) -> None:
    """The add waits for the retry's transaction (the key's lock) and then finds the retried job."""
    [old] = store.add_jobs([new(unique_key="k")], T0)
    [claimed] = store.claim(now=T0, slots=1, queue_room=ROOM)
    store.finish(claimed, classify_exit(0), 3600.0, T0)
    other = Direct(PostgresStore.open(postgres_url))
    answers: list[Any] = []
    try:
        with store.transaction():
            assert store.retry([old], False, T0 + 1) == [old]
            adder = threading.Thread(
                target=lambda: answers.append(other.add_jobs([new(unique_key="k")], T0 + 1))
            )
            adder.start()
            adder.join(0.3)
            assert adder.is_alive()  # waits for the key: the retry has not committed
        adder.join(30)
        assert answers == [[old]] and answers[0].existing == [True]
    finally:
        other.engine.close()


def test_connection_strings_get_keepalive_and_a_user_timeout_unless_they_set_them() -> None:
    given = psycopg.conninfo.conninfo_to_dict(schema.with_defaults("postgresql://u@db.example/q", {}))
    assert given["keepalives"] == "1" and given["tcp_user_timeout"] == "5000"
    assert given["keepalives_idle"] == "5" and given["connect_timeout"] == "10"
    mine = "postgresql://u@db.example/q?tcp_user_timeout=30000&keepalives=0"
    kept = psycopg.conninfo.conninfo_to_dict(schema.with_defaults(mine, {"PGCONNECT_TIMEOUT": "3"}))
    assert kept["tcp_user_timeout"] == "30000" and kept["keepalives"] == "0"
    assert "connect_timeout" not in kept  # libpq takes PGCONNECT_TIMEOUT itself


def test_finished_jobs_are_counted_apart_and_a_database_without_the_counts_gets_them(
    postgres_empty_url: str,
) -> None:
    """Counts of finished jobs come from finished_counts, kept by triggers on
    every way a job enters or leaves a terminal state (finish, retry, rm, bulk
    insert, delete, truncate); a database of the version before them is
    upgraded with its finished jobs counted."""
    engine = PostgresStore.open(postgres_empty_url)
    store = Direct(engine)
    try:
        engine.recover(3600.0, T0)
        ids = store.add_jobs([new(), new(), new("false", max_retries=0)], T0)
        for claimed in store.claim(now=T0, slots=3, queue_room=ROOM):
            store.finish(claimed, classify_exit(1 if claimed.id == ids[2] else 0), 3600.0, T0)
        assert {k: v for k, v in store.counts().items() if v} == {"completed": 2, "dead": 1}
        store.retry([ids[2]], False, T0)  # dead -> pending
        store.remove([ids[0]])
        assert {k: v for k, v in store.counts().items() if v} == {"completed": 1, "pending": 1}
        with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM queued.finished_counts").fetchone()[0]
            assert rows >= 1  # one row per writing backend's shard
            conn.execute(  # a bulk insert, as a load would
                "INSERT INTO queued.jobs (command, state, queue, priority, max_retries, backoff_base, run_at,"
                " created_at, updated_at, cwd, env_id)"
                " SELECT 'x', 'canceled', 'default', 0, 0, 2, 0, 0, 0, '\\x2f', env_id FROM queued.jobs,"
                " generate_series(1, 5) WHERE id = %s",
                (ids[1],),
            )
        assert store.counts()["canceled"] == 5
        # The version before: no counts table; its finished jobs are counted at the upgrade.
        with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
            conn.execute(WITHOUT_RESOURCES)
            conn.execute("DROP TABLE queued.finished_counts, queued.schedules, queued.firings")
            for function in (
                "count_finished_change()",
                "count_finished_rows()",
                "count_finished_truncated()",
            ):
                conn.execute(f"DROP FUNCTION queued.{function} CASCADE")
            conn.execute("DROP FUNCTION queued.take_job_ids(bigint)")
            conn.execute(WITHOUT_NODES)  # version 5's, after it
            conn.execute("UPDATE queued.schema_version SET version = 3")
        engine.close()
        engine = PostgresStore.open(postgres_empty_url)
        store = Direct(engine)
        assert {k: v for k, v in store.counts().items() if v} == {"completed": 1, "pending": 1, "canceled": 5}
        with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
            assert (
                conn.execute("SELECT version FROM queued.schema_version").fetchone()[0]
                == schema.SCHEMA_VERSION
            )
            conn.execute("TRUNCATE queued.jobs CASCADE")
        assert not any(store.counts().values())
    finally:
        engine.close()


def test_a_limited_queue_admits_no_more_than_its_concurrency_when_nodes_claim_at_once(
    postgres_url: str, store: Direct
) -> None:
    """The claim that waits for another node's claim of the same limited queue
    counts that claim once it commits (its count is not of a snapshot taken
    before the wait)."""
    store.add_queue("gpu", 1, T0)
    store.add_jobs([new("a", queue="gpu"), new("b", queue="gpu")], T0)
    other = Direct(PostgresStore.open(postgres_url))
    second: list = []
    try:
        with store.transaction():
            first = store.claim(now=T0, slots=5, queue_room={"gpu": 5})
            waiting = threading.Thread(
                target=lambda: second.append(other.claim(now=T0, slots=5, queue_room={"gpu": 5}))
            )
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive(), "the second claim waits for the first to commit"
        waiting.join(10)
        assert len(first) == 1
        assert second == [[]]
    finally:
        other.engine.close()


def test_a_queue_paused_on_another_node_has_no_room_before_this_node_heard_of_it(store: Direct) -> None:
    store.add_queue("gpu", None, T0)
    [job_id] = store.add_jobs([new("a", queue="gpu")], T0)
    store.set_paused("gpu", True)
    assert store.claim(now=T0, slots=5, queue_room={"gpu": 5}) == []  # the caller's room is stale
    store.set_paused("gpu", False)
    assert [c.id for c in store.claim(now=T0, slots=5, queue_room={"gpu": 5})] == [job_id]


def listening(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("LISTEN queued")
    return conn


def heard(conn: psycopg.Connection) -> list[tuple[str, bool]]:
    """(payload, whether this engine's own connection sent it) of what came."""
    return [(n.payload, n.pid) for n in conn.notifies(timeout=0.2, stop_after=50)]


def test_news_is_sent_with_the_commit_and_only_then(postgres_url: str, store: Direct) -> None:
    listener = listening(postgres_url)
    try:
        [job_id] = store.add_jobs([new("sleep 1")], T0)
        assert heard(listener) == [("wake", store.engine.backend_pid)]
        with pytest.raises(RuntimeError), store.transaction():
            store.add_jobs([new()], T0)
            raise RuntimeError("the batch fails")
        assert heard(listener) == []  # rolled back: nothing sent
        store.add_queue("gpu", 1, T0)
        store.set_paused("gpu", True)
        store.set_queue_concurrency("gpu", 2)
        assert [p for p, _ in heard(listener)] == ["queues", "queues", "queues"]
        [claimed] = store.claim(now=T0, slots=1, queue_room=ROOM)
        assert heard(listener) == []  # a claim is news to nobody
        store.cancel([job_id], T0)
        assert [p for p, _ in heard(listener)] == [f"cancel {job_id}", f"finished {job_id}"]
        store.finish(claimed, classify_exit(-9), 3600.0, T0)
        assert [p for p, _ in heard(listener)] == ["room default", f"output {job_id}"]
    finally:
        listener.close()


def test_outbox_gathers_a_batch_into_few_notifications() -> None:
    import msgspec

    from queued.store.contract import Changes, Claimed, Written
    from queued.store.postgres.news import IDS_PER_NOTICE, Outbox, parse

    outbox = Outbox()
    job = Claimed(
        id=1, run=1, attempts=1, command="true", queue="gpu", cwd="/", env={}, timeout=None,
        max_retries=0, backoff_base=2.0,
    )  # fmt: skip
    done = Changes()
    done.finished = [1]
    for _ in range(3):
        outbox.note("finish", (job,), Written("completed", done))
    outbox.note("finish", (msgspec.structs.replace(job, id=2),), Written("failed", Changes()))  # retried
    outbox.note("add_jobs", ([],), Written([5]))
    outbox.note("states", ([1],), {1: "completed"})  # a read: no news
    outbox.note("cancel_what_can", ([], T0), Written((list(range(10, 10 + IDS_PER_NOTICE + 1)), [], {})))
    payloads = outbox.payloads()
    assert payloads[:2] == ["wake", "room gpu"]
    # The cancels in two notifications, the finishes in one (their output with
    # them: not repeated), the output of the one that did not finish in one.
    assert len(payloads) == 6
    assert all(len(p) < 8000 for p in payloads)
    news = parse(payloads[2])
    news.merge(parse(payloads[3]))
    assert news.cancel == list(range(10, 10 + IDS_PER_NOTICE + 1))
    assert parse(payloads[4]).finished == parse(payloads[4]).output == [1, 1, 1]
    assert payloads[5] == "output 2"
    assert parse("something newer 1") == parse("cancel x") == type(news)()
    outbox.clear()
    assert not outbox and outbox.payloads() == []


def test_a_rescue_that_ended_attempts_wakes_the_other_nodes() -> None:
    from queued.store.contract import Recovered, Written
    from queued.store.postgres.news import Outbox

    outbox = Outbox()
    outbox.note("rescue", (60.0, T0), Written([]))
    outbox.note("recover", (60.0, T0), Written([]))
    assert not outbox  # nothing was lost: no news
    outbox.note("rescue", (60.0, T0), Written([Recovered(7, 1, "queued")]))
    assert outbox.payloads() == ["wake"]


def test_a_schedule_firing_that_added_a_job_wakes_the_other_nodes() -> None:
    from queued.store.contract import Fired, Written
    from queued.store.postgres.news import Outbox

    outbox = Outbox()
    outbox.note("fire_schedule", ("nightly", T0, T0), Written(Fired("taken")))
    assert not outbox  # another node added it
    outbox.note("fire_schedule", ("nightly", T0, T0), Written(Fired("added", 12)))
    assert outbox.payloads() == ["wake"]


def test_jobs_deleted_are_news_for_the_nodes_that_hold_their_log_files() -> None:
    """`rm` and `clean` on one node: every node hears which jobs went (from
    the log paths the attempts named, on whichever node), to delete its own."""
    from queued.store.contract import News, Written
    from queued.store.postgres.news import Outbox, parse

    outbox = Outbox()
    outbox.note("remove", ([7],), Written(["/b/logs/0/7.1.out", "/b/logs/0/7.1.err", "/a/logs/0/7.2.out"]))
    outbox.note("clean", ([lifecycle.COMPLETED], None), Written((2, ["/c/logs/1/1500.1.out", "/x/odd"])))
    assert outbox.payloads() == ["removed 7,1500"]
    assert parse("removed 7,1500") == News(removed=[7, 1500])
    nothing = Outbox()
    nothing.note("clean", ([lifecycle.COMPLETED], None), Written((0, [])))
    assert not nothing


def test_a_change_of_schedules_is_news_for_every_scheduler() -> None:
    from queued.store.contract import News, Written
    from queued.store.postgres.news import Outbox, parse

    for change in ("add_schedule", "remove_schedule", "pause_schedule"):
        outbox = Outbox()
        outbox.note(change, ("nightly",), Written(None))
        assert outbox.payloads() == ["schedules"]
    assert parse("schedules") == News(schedules=True)
    merged = News()
    merged.merge(parse("schedules"))
    assert merged.schedules


async def test_the_listener_hears_other_nodes_and_says_when_it_listens_again(
    postgres_url: str, store: Direct
) -> None:
    import trio

    from queued.store.contract import News

    other = Direct(PostgresStore.open(postgres_url))
    got: list[News] = []
    arrived = trio.Event()

    def deliver(news: News) -> None:
        got.append(news)
        arrived.set()

    async def next_news() -> News:
        nonlocal arrived
        with trio.fail_after(10):
            await arrived.wait()
        arrived = trio.Event()
        return got.pop(0) if len(got) == 1 else _merged(got)

    def _merged(items: list[News]) -> News:
        merged = News()
        while items:
            merged.merge(items.pop(0))
        return merged

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.engine.news().run, deliver)
            assert (await next_news()).reconnected
            await trio.to_thread.run_sync(lambda: store.add_jobs([new()], T0))  # its own: not heard
            await trio.to_thread.run_sync(lambda: other.add_jobs([new()], T0))
            assert (await next_news()) == News(wake=True)
            await trio.to_thread.run_sync(
                lambda: other.engine.conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN queued'"
                )
            )
            news = await next_news()
            assert news.lost
            if not news.reconnected:
                news = await next_news()
            assert news.reconnected  # news sent meanwhile may be lost: read again
            await trio.to_thread.run_sync(lambda: other.add_queue("q", None, T0))
            assert (await next_news()) == News(queues=True)
            nursery.cancel_scope.cancel()
    finally:
        other.engine.close()


# What schema version 8 changed: a job's queue and environment are no longer
# foreign keys (schema.JOB_KEYS_CHECKED_ONCE).
WITH_JOB_KEYS = (
    "ALTER TABLE queued.jobs ADD CONSTRAINT jobs_queue_fkey FOREIGN KEY (queue) REFERENCES queued.queues(name);"
    " ALTER TABLE queued.jobs ADD CONSTRAINT jobs_env_id_fkey"
    " FOREIGN KEY (env_id) REFERENCES queued.environments(id)"
)


def _job_foreign_keys(conn: psycopg.Connection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'queued.jobs'::regclass AND contype = 'f'"
        )
    ]


def test_a_version_7_store_drops_the_jobs_foreign_keys_and_keeps_its_jobs(postgres_empty_url: str) -> None:
    engine = PostgresStore.open(postgres_empty_url)
    Direct(engine).recover(3600.0, T0)
    Direct(engine).add_jobs([new("a"), new("b")], T0)
    engine.close()
    with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
        conn.execute(f"{WITH_JOB_KEYS}; UPDATE queued.schema_version SET version = 7")
        assert sorted(_job_foreign_keys(conn)) == ["jobs_env_id_fkey", "jobs_queue_fkey"]
    store = Direct(PostgresStore.open(postgres_empty_url))
    try:
        assert _job_foreign_keys(store.engine.conn) == []
        assert [j.command for j in store.list_jobs()] == ["a", "b"]
        ids = store.add_jobs([new("c", slots=2, needs={"gpu": 1}) for _ in range(100)], T0)  # COPY
        assert len(store.list_jobs()) == 102
        job = store.get_job(ids[-1])[0]
        assert (job.command, job.slots, job.needs) == ("c", 2, {"gpu": 1})
    finally:
        store.engine.close()


def test_a_version_8_store_gains_a_cascade_counted_in_one_statement(postgres_empty_url: str) -> None:
    """A store of the previous version (its counts trigger counts every row,
    no index of ended attempts) opens, and a cascade then counts its moves
    once: the trigger stands aside; the web's history has its index."""
    engine = PostgresStore.open(postgres_empty_url)
    Direct(engine).recover(3600.0, T0)
    [root, *chain] = Direct(engine).add_jobs(
        [new(delay=100.0)] + [new(after=[1 + n]) for n in range(100)], T0
    )
    engine.close()
    with psycopg.connect(postgres_empty_url, autocommit=True) as conn:
        conn.execute(
            "DROP TRIGGER jobs_finished_change ON queued.jobs;"
            " CREATE TRIGGER jobs_finished_change AFTER UPDATE OF state ON queued.jobs FOR EACH ROW"
            " WHEN (OLD.state IS DISTINCT FROM NEW.state AND (OLD.state IN ('completed', 'dead', 'canceled')"
            " OR NEW.state IN ('completed', 'dead', 'canceled'))) EXECUTE FUNCTION queued.count_finished_change();"
            " DROP INDEX queued.attempts_ended; UPDATE queued.schema_version SET version = 8"
        )
    store = Direct(PostgresStore.open(postgres_empty_url))
    try:
        store.cancel([root], T0)
        assert store.counts()["canceled"] == 101
        assert [store.states([i])[i] for i in (chain[0], chain[-1])] == ["canceled"] * 2
        with psycopg.connect(postgres_empty_url) as conn:
            assert conn.execute("SELECT version FROM queued.schema_version").fetchone() == (9,)
            assert (
                schema.COUNTED_APART
                in conn.execute(
                    "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'jobs_finished_change'"
                ).fetchone()[0]
            )
    finally:
        store.engine.close()


def test_a_cancel_of_many_waits_for_another_nodes_cancel_of_one_and_refuses_that_one_alone(
    postgres_url: str, store: Direct
) -> None:
    """Another node cancels one of the jobs (and its dependent) while this
    node cancels them all: this one waits for that commit, refuses that job
    alone (it is canceled already) and cancels and counts the rest once."""
    ids = store.add_jobs([new(delay=100.0) for _ in range(5)], T0)
    dependent = add(store, after=[ids[2]])
    other = Direct(PostgresStore.open(postgres_url))
    watcher = psycopg.connect(postgres_url, autocommit=True)
    answers: list[object] = []

    def cancel_all() -> None:
        try:
            answers.append(store.cancel_what_can([*ids, dependent], T0 + 1))
        except BaseException as exc:  # handed to the test's thread
            answers.append(exc)

    try:
        with other.transaction():
            other.cancel([ids[2]], T0)
            canceling = threading.Thread(target=cancel_all)
            canceling.start()
            for _ in range(200):  # until this node's cancel waits for the other's locks
                if watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()[0]:
                    break
                canceling.join(0.05)
            assert canceling.is_alive(), "the cancel waits for the other node's commit"
        canceling.join(30)
        [(running, canceled, refused)] = answers  # type: ignore[misc]
        assert (running, canceled) == ([], [i for i in ids if i != ids[2]])
        assert sorted(refused) == [ids[2], dependent] and "canceled" in refused[ids[2]]
        assert sorted(store.finished) == canceled and sorted(other.finished) == [ids[2], dependent]
        assert store.counts()["canceled"] == 6
        assert store.get_job(dependent)[0].error == f"canceled: dependency {ids[2]} is canceled"
    finally:
        watcher.close()
        other.engine.close()


def test_a_cascade_over_dependents_another_node_canceled_meanwhile_counts_each_once(
    postgres_url: str, store: Direct
) -> None:
    """Another node cancels a dependent (and so the one after it) while this
    node's cascade runs: the cascade waits for that commit, then moves and
    counts only what is still unstarted; each job is told finished once."""
    root = add(store, delay=100.0)
    first, second, third = store.add_jobs([new(after=[root + n]) for n in range(3)], T0)
    other = Direct(PostgresStore.open(postgres_url))
    watcher = psycopg.connect(postgres_url, autocommit=True)
    cascade: list[BaseException | None] = []

    def cancel_root() -> None:
        try:
            store.cancel([root], T0)
            cascade.append(None)
        except BaseException as exc:  # handed to the test's thread
            cascade.append(exc)

    try:
        with other.transaction():
            other.cancel([second], T0)  # and third, its dependent
            canceling = threading.Thread(target=cancel_root)
            canceling.start()
            for _ in range(200):  # until the cascade waits for this node's locks
                if watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()[0]:
                    break
                canceling.join(0.05)
            assert canceling.is_alive(), "the cascade waits for the other node's commit"
        canceling.join(30)
        assert cascade == [None]
        assert sorted(store.finished) == [root, first]
        assert sorted(other.finished) == [second, third]
        assert store.counts()["canceled"] == 4
        assert [store.get_job(i)[0].error for i in (first, second, third)] == [
            f"canceled: dependency {root} is canceled",
            lifecycle.CANCELED_BY_USER,
            f"canceled: dependency {second} is canceled",
        ]
    finally:
        watcher.close()
        other.engine.close()


def test_queue_rm_waits_for_an_add_into_it_and_then_refuses(postgres_url: str, store: Direct) -> None:
    """Without a foreign key the add locks the queue's row: a `queue rm` from
    another node waits for the add's commit and then sees its jobs, instead of
    deleting the queue from under them."""
    store.add_queue("gpu", None, T0)
    other = Direct(PostgresStore.open(postgres_url))
    removed: list[BaseException | None] = []

    def remove() -> None:
        try:
            other.remove_queue("gpu")
            removed.append(None)
        except BaseException as exc:  # asserted below
            removed.append(exc)

    remover = threading.Thread(target=remove)
    try:
        with store.transaction():
            [job_id] = store.add_jobs([new(queue="gpu") for _ in range(100)], T0)[:1]
            remover.start()
            remover.join(0.5)
            assert remover.is_alive()  # waiting for the add's lock
        remover.join(30)
        assert not remover.is_alive()
    finally:
        other.engine.close()
    [error] = removed
    assert error is not None and "still has 100 unfinished job(s)" in str(error)
    assert store.states([job_id]) == {job_id: lifecycle.PENDING}
    assert [q.name for q in store.queues()] == ["default", "gpu"]


def test_an_add_after_a_queue_rm_committed_names_the_queue_unknown(postgres_url: str, store: Direct) -> None:
    store.add_queue("gpu", None, T0)
    other = Direct(PostgresStore.open(postgres_url))
    try:
        with other.transaction():
            other.remove_queue("gpu")
            added: list[BaseException | None] = []

            def add() -> None:
                try:
                    store.add_jobs([new(queue="gpu")], T0)
                    added.append(None)
                except BaseException as exc:  # asserted below
                    added.append(exc)

            adder = threading.Thread(target=add)
            adder.start()
            adder.join(0.5)
            assert adder.is_alive()  # waiting for the removal's commit
        adder.join(30)
    finally:
        other.engine.close()
    [error] = added
    assert error is not None and "unknown queue 'gpu'" in str(error)
    assert store.list_jobs() == []


async def test_two_nodes_adding_unique_keys_in_crossing_orders_both_add_them(
    postgres_url: str, store: Direct, caplog: pytest.LogCaptureFixture
) -> None:
    """Node a's batch adds key A then B while node b's adds B then A: the
    locks cross and the database breaks the deadlock by undoing one batch.
    That batch runs again (it is not an outage): each key ends with one job,
    which every add is given."""
    import trio

    from queued.store import Store
    from queued.store.writer import Kind, Writer

    caplog.set_level("INFO", logger="queued.store.writer")
    engines = [PostgresStore.open(postgres_url) for _ in range(2)]
    first_locks = threading.Barrier(2)

    def both_hold_their_first_key(engine: PostgresStore) -> None:
        """Wait until the other batch took its first key too (the first time only)."""
        if not getattr(engine, "met", False):
            engine.met = True  # type: ignore[attr-defined]
            first_locks.wait(timeout=30)

    answers: dict[str, list[list[int]]] = {}
    try:
        writers = [Writer(engine) for engine in engines]
        async with trio.open_nursery() as nursery:
            for writer in writers:
                await nursery.start(writer.serve)

            async def adds(name: str, writer: Writer, keys: str) -> None:
                def job(key: str) -> validation.NewJob:
                    # An environment of each node's own: a new one shared would make
                    # the second adder wait for the first's commit before any key.
                    spec = JobSpec(command="true", unique_key=key)
                    return validation.new_job(spec, cwd="/", env={"NODE": name}, settings=Settings(), now=T0)

                calls = [
                    writer.queue(Kind.ADD, Store.add_jobs, [job(keys[0])], T0),
                    writer.queue(Kind.READ, both_hold_their_first_key),
                    writer.queue(Kind.ADD, Store.add_jobs, [job(keys[1])], T0),
                ]
                answers[name] = [list(await calls[0].outcome()), list(await calls[2].outcome())]

            with trio.fail_after(60):
                async with trio.open_nursery() as adders:
                    adders.start_soon(adds, "a", writers[0], "AB")
                    adders.start_soon(adds, "b", writers[1], "BA")
            assert all(writer.unreachable is None for writer in writers)
            nursery.cancel_scope.cancel()
    finally:
        for engine in engines:
            engine.close()
    jobs = {job.unique_key: job.id for job in store.list_jobs()}
    assert sorted(jobs) == ["A", "B"]
    assert answers == {"a": [[jobs["A"]], [jobs["B"]]], "b": [[jobs["B"]], [jobs["A"]]]}
    assert "to settle a conflict with another node (deadlock detected); again" in caplog.text


def test_a_statement_timeout_the_session_has_bounds_its_answers(postgres_url: str) -> None:
    """None by default (a long cascade may take a minute on a loaded machine:
    nothing cancels it); the URL's (or the role's, the database's) cancels a
    slow statement in one line, and a call without an answer for twice that
    plus a second is from a server that does not answer."""
    import math

    engine = PostgresStore.open(postgres_url)
    try:
        assert engine.conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
        assert engine.answer_bound == math.inf
    finally:
        engine.close()
    engine = PostgresStore.open(postgres_url + "&options=-c%20statement_timeout%3D1500")
    try:
        assert engine.answer_bound == 4
        engine.begin()
        try:
            with pytest.raises(
                StorageError, match=r"gave up on it \(canceling statement due to statement timeout"
            ):
                engine.call(lambda: engine.conn.execute("SELECT pg_sleep(3)"), (), {}, guarded=True)
            assert engine.conn.execute("SELECT 1").fetchone() == (1,)  # the batch goes on
        finally:
            engine.abort()
    finally:
        engine.close()


async def test_a_backend_that_stops_answering_is_dropped_and_the_batch_goes_on_a_new_connection(
    postgres_url: str, store: Direct, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import signal

    import trio

    from queued.store import Store
    from queued.store.writer import Writer

    caplog.set_level("INFO", logger="queued.store")
    engine = PostgresStore.open(postgres_url)
    engine.answer_bound = 1.0
    frozen = engine.conn.info.backend_pid
    db = Writer(engine)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(db.serve)
            assert await db.read(Store.counts) is not None
            os.kill(frozen, signal.SIGSTOP)
            with trio.fail_after(15):
                await db.read(Store.counts)  # the BEGIN hangs; after 1 s, a new connection answers
            assert engine.conn.info.backend_pid != frozen
            nursery.cancel_scope.cancel()
    finally:
        os.kill(frozen, signal.SIGCONT)
        engine.close()
    assert "the job store has not answered for 1 s; dropping its connection to reconnect" in caplog.text


async def test_a_long_statement_on_a_server_that_answers_is_not_cut(
    postgres_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PROBE_AFTER_SECONDS the writer asks the server on a connection of
    its own; it answers, so the statement goes on to its end."""
    import trio

    from queued.store import writer
    from queued.store.writer import Kind, Writer

    caplog.set_level("INFO", logger="queued.store")
    monkeypatch.setattr(writer, "PROBE_AFTER_SECONDS", 0.3)
    engine = PostgresStore.open(postgres_url)
    probes: list[bool] = []
    real_answers = engine.answers

    def answers() -> bool:
        probes.append(real_answers())
        return probes[-1]

    monkeypatch.setattr(engine, "answers", answers)
    db = Writer(engine)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(db.serve)
            slept = db.queue(Kind.READ, lambda e: e.conn.execute("SELECT pg_sleep(1.5)").fetchone())
            with trio.fail_after(30):
                assert await slept.outcome() == ("",)
            nursery.cancel_scope.cancel()
    finally:
        engine.close()
    assert len(probes) >= 2 and all(probes)
    assert "has not answered" not in caplog.text


def test_a_rollback_that_fails_drops_the_connection_with_a_warning(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an attack (pg_terminate_backend while a drain recorded ends):
    a connection the server ended during a pipeline was not yet marked broken,
    so the batch's ROLLBACK failed ("cannot exit pipeline mode while busy") and
    was logged as an ERROR with a traceback, for an outage the log already
    told. The connection is dropped instead, in one line: the next call
    finds it closed and reconnects."""
    store.begin()
    conn = store.conn
    real = conn.execute

    def execute(query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == "ROLLBACK":
            raise psycopg.OperationalError("sending query failed: cannot exit pipeline mode while busy")
        return real(query, *args, **kwargs)

    monkeypatch.setattr(conn, "execute", execute)
    with caplog.at_level("WARNING", logger="queued.store.postgres.engine"):
        store.abort()
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "rollback failed (sending query failed: cannot exit pipeline mode while busy)" in caplog.text
    assert conn.closed
