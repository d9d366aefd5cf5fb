"""A throwaway PostgreSQL server for the tests: one cluster per session in a
temp dir, a fresh database per test.

initdb, pg_ctl and postgres refuse to run as root, and CI runs as root: then
the cluster belongs to `nobody` and its tools run under setpriv. The server
listens on a Unix socket in its own dir and on 127.0.0.1 at a free port;
fsync is off (a crash of the test machine loses nothing we keep). The
server is the test run's own child and gets SIGQUIT when the run dies.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_UNPRIVILEGED = "nobody"


def binaries() -> Path | None:
    """The dir of initdb/pg_ctl/postgres: on PATH, else Debian's newest
    /usr/lib/postgresql/*/bin; None where PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl") and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".")]
    )
    for candidate in reversed(candidates):
        if all((Path(candidate) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A cluster in `root`, run as an unprivileged user when we are root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # Short: the socket's path must fit in sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="qpg"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._template: str | None = None  # a database holding queued's schema, to copy
        self._shared: str | None = None  # the one emptied for each test (see clean_database)
        self._wrap: list[str] = []
        self.options: list[str] = []  # more `-c name=value` settings (a bench's pg_stat_statements)
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.root, _UNPRIVILEGED)
            self._wrap = ["setpriv", f"--reuid={_UNPRIVILEGED}", "--regid=nogroup", "--clear-groups"]
            # The unprivileged user may not read the root's cwd: run from our dir.

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._wrap, str(self.bin_dir / tool), *args],
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}{result.stdout}\n{tail}")

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.restart()

    def restart(self, timeout: float = 60) -> None:
        """Start the server (again: same port, same data) as our child, which
        dies with us: a test run killed half-way leaves no server behind."""
        options = [
            *("-k", str(self.root), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1"),
            *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            *("-c", "max_connections=200"),
            *self.options,
        ]
        death = ["setpriv", "--pdeathsig", "SIGQUIT"] if not self._wrap and shutil.which("setpriv") else []
        wrap = [*self._wrap, "--pdeathsig", "SIGQUIT"] if self._wrap else death
        with open(self.root / "log", "ab") as log:
            self.process = subprocess.Popen(
                [*wrap, str(self.bin_dir / "postgres"), "-D", str(self.data), *options],
                cwd=self.root,
                env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not (self.root / f".s.PGSQL.{self.port}").exists() or not self._accepting():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop("immediate")
                raise RuntimeError(f"postgres did not start: {(self.root / 'log').read_text()[-2000:]}")
            time.sleep(0.05)

    def _accepting(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (SIGINT) or `immediate` (SIGQUIT, as a crash)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def processes(self) -> list[int]:
        """The server's processes: the postmaster and its children (backends, writers)."""
        if self.process is None or self.process.poll() is not None:
            return []
        children = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            except OSError:
                continue
            if stat and int(stat[stat.rindex(")") + 2 :].split()[1]) == self.process.pid:
                children.append(int(entry.name))
        return [self.process.pid, *children]

    def freeze(self) -> list[int]:
        """SIGSTOP every process of the server (a hung server: connections stay
        up, nothing answers); what was stopped, for `thaw`."""
        frozen = self.processes()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(frozen: list[int]) -> None:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A libpq URL reaching `database` through the Unix socket."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

    def tcp_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, *, with_schema: bool = False) -> str:
        """A fresh database (empty, or holding queued's schema and nothing
        else: a copy of a template made once, far cheaper than creating the
        schema again for every test); its name."""
        import psycopg

        name = f"test_{next(self._names)}"
        template = "template0"
        if with_schema:
            template = self._schema_template()
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def clean_database(self) -> str:
        """The session's database holding queued's schema, emptied (tables
        truncated, ids restarted): ~20 ms where creating a database takes
        ~0.3 s. A fresh copy instead if a leftover connection holds a lock."""
        import psycopg

        if self._shared is None:
            self._shared = self.create_database(with_schema=True)
            return self._shared
        try:
            with psycopg.connect(self.url(self._shared), autocommit=True) as conn:
                conn.execute("SET lock_timeout = '2s'")
                # Every table of the schema but its version row (tables added later included).
                tables = [
                    f"queued.{name}"
                    for (name,) in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'queued'"
                        " AND tablename <> 'schema_version' ORDER BY tablename"
                    )
                ]
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        except psycopg.errors.LockNotAvailable:
            self._shared = self.create_database(with_schema=True)
        return self._shared

    def _schema_template(self) -> str:
        if self._template is None:
            from queued.store.postgres import PostgresStore

            name = self.create_database()
            PostgresStore.open(self.url(name)).close()
            self._template = name
        return self._template


def server_or_skip(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's server (started at first use), or a skip saying why not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]'")
    server = request.getfixturevalue("_postgres_session")
    if isinstance(server, str):
        pytest.skip(server)
    return server


@pytest.fixture(scope="session")
def _postgres_session() -> Iterator[PostgresServer | str]:
    bin_dir = binaries()
    if bin_dir is None:
        yield "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)"
        return
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        yield "PostgreSQL refuses to run as root and setpriv (util-linux) is missing"
        return
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's throwaway PostgreSQL server (skips where it cannot run)."""
    return server_or_skip(request)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a database holding queued's schema (as a first start makes
    it) and nothing else, for this test alone."""
    return postgres_server.url(postgres_server.clean_database())


@pytest.fixture
def postgres_empty_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database of its own for this test."""
    return postgres_server.url(postgres_server.create_database())
