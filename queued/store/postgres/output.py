"""Attempts' output in the database (PostgreSQL): what the supervisor copies
of each stream, in pieces keyed by the byte where they begin, so that any node
reads any attempt's output, while it runs and after."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import Connection

from queued.store.contract import NOTHING, OutputChunk, OutputStream, Written

# The most one row holds: a read finds the row holding its first byte among
# those that begin less than this before it (one index range, no scan).
PIECE = 64 * 1024
STREAMS: dict[OutputStream, int] = {"stdout": 1, "stderr": 2}  # as the file descriptors

# Chunks of attempts that still exist, each kept once. The attempt rows are
# locked (KEY SHARE) first: an `rm` committed meanwhile on another node makes
# its chunks dropped here, never a foreign-key error that would fail the batch.
_APPEND = """
WITH c(job_id, attempt, stream, at, data) AS (
    SELECT * FROM unnest(%s::bigint[], %s::int[], %s::smallint[], %s::bigint[], %b::bytea[])),
alive AS (
    SELECT job_id, attempt FROM attempts
    WHERE (job_id, attempt) IN (SELECT job_id, attempt FROM c) FOR KEY SHARE)
INSERT INTO output_chunks (job_id, attempt, stream, at, data)
SELECT c.job_id, c.attempt, c.stream, c.at, c.data FROM c JOIN alive USING (job_id, attempt)
ON CONFLICT DO NOTHING
"""
_READ = """
SELECT at, data FROM output_chunks
WHERE job_id = %s AND attempt = %s AND stream = %s AND at > %s AND at < %s ORDER BY at
"""
_SIZE = """
SELECT at + length(data) FROM output_chunks
WHERE job_id = %s AND attempt = %s AND stream = %s ORDER BY at DESC LIMIT 1
"""


class Output:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def append(self, chunks: Sequence[OutputChunk]) -> Written[None]:
        columns: tuple[list[int], list[int], list[int], list[int], list[bytes]] = ([], [], [], [], [])
        jobs, attempts, streams, starts, pieces = columns
        for chunk in chunks:
            data = chunk.data
            for start in range(0, len(data), PIECE):
                jobs.append(chunk.job_id)
                attempts.append(chunk.attempt)
                streams.append(STREAMS[chunk.stream])
                starts.append(chunk.at + start)
                pieces.append(data[start : start + PIECE])
        if jobs:
            self.conn.execute(_APPEND, columns)  # the bytes sent binary (%b): as text, 5 times slower
        return Written(None, NOTHING)

    def read(
        self, job_id: int, attempt: int, stream: OutputStream, offset: int, limit: int
    ) -> tuple[bytes, int]:
        key = (job_id, attempt, STREAMS[stream])
        row = self.conn.execute(_SIZE, key).fetchone()
        size = 0 if row is None else int(row[0])
        if offset >= size:
            return b"", size
        data = bytearray()
        position = offset
        rows = self.conn.execute(_READ, (*key, offset - PIECE, offset + limit), binary=True)
        for at, piece in rows:
            if at + len(piece) <= position:
                continue  # ends before the read begins
            if at > position:
                break  # a gap: a chunk still to be tried again
            data += piece[position - at :]
            position = at + len(piece)
            if len(data) >= limit:
                break
        return bytes(data[:limit]), size
