"""A PostgreSQL server that stops answering: its processes frozen (SIGSTOP,
a stuck disk, a swapping host) while the connection stays up, so that
neither TCP keepalive nor `tcp_user_timeout` notices (the kernel answers
for the stopped process).

Theory of operation: while a call has had no answer for
writer.PROBE_AFTER_SECONDS, the writer asks the server, on a connection of
its own, whether it answers at all (`answers`, within writer.PROBE_SECONDS):
a long statement on a live server goes on (a cascade over 100,000 jobs may
take a minute on a loaded machine: nothing cancels it by default); a server
that does not answer is taken for hung. Where the session has a
`statement_timeout` (the URL's `options=-c statement_timeout=...`, the
role's or the database's), a live server cancels a statement running longer
and says so, and a call with no answer for twice that, plus a second
(`answer_bound`), is hung whatever the probe says (its backend alone is
frozen). Hung: the writer breaks the connection (`break_connection`, a
shutdown of its socket from another thread, which wakes the libpq call
waiting on it), the batch fails as unreachable, and the writer reconnects
with backoff (each try bounded by `connect_timeout`) until the server
answers again. A frozen server fails the requests waiting in about 10 s,
well within a client's 30 s.
"""

from __future__ import annotations

import math
import socket

import psycopg
from psycopg import Connection

PROBE_SECONDS = 3  # connect_timeout of the probe (the writer gives it as long: writer.PROBE_SECONDS)


def answer_bound(conn: Connection) -> float:
    """The seconds after which a call without an answer means a server that
    does not answer, from the session's statement_timeout (math.inf: none)."""
    row = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'").fetchone()
    milliseconds = int(row[0]) if row else 0
    return 2 * milliseconds / 1000 + 1 if milliseconds > 0 else math.inf


def break_connection(conn: Connection) -> None:
    """Shut the connection's socket down under whatever waits on it (any
    thread): the waiting call fails at once as a lost connection."""
    try:
        fd = conn.pgconn.socket
    except Exception:  # closed meanwhile: nothing waits on it
        return
    try:
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as dup:  # a dup: closing it keeps fd
            dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def answers(conninfo: str) -> bool:
    """Whether the server takes a new connection and answers on it (blocking;
    the writer gives up on it after writer.PROBE_SECONDS)."""
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=PROBE_SECONDS) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
