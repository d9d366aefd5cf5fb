"""Job environments, stored once each: most jobs of a user share a few, so a
bulk add of 100,000 jobs stores (and hashes) one environment, not 100,000.

Bytes that are not UTF-8 (held as os.fsdecode's lone surrogates) cannot be
SQLite text or msgpack strings: such a cwd is stored as a BLOB, and such an
environment as sorted (name, value) pairs of bytes. Both are read back into
the very same str. Every other job pays one isascii() or one failed decode.

The same table and encoding in every engine (PostgreSQL keeps the data in a
bytea); the engine spells the statements (queued/store/dialect.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import msgspec

from queued.protocol import is_utf8
from queued.store.dialect import Connection, Dialect

_encoder = msgspec.msgpack.Encoder(order="deterministic")
_decoder = msgspec.msgpack.Decoder(dict[str, str])
_DECODED_KEPT = 256


def blob(env: Mapping[str, str]) -> bytes:
    try:
        return _encoder.encode(env)
    except UnicodeEncodeError:
        return _encoder.encode(sorted((os.fsencode(k), os.fsencode(v)) for k, v in env.items()))


def from_blob(data: bytes) -> dict[str, str]:
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError:
        return {os.fsdecode(k): os.fsdecode(v) for k, v in msgspec.msgpack.decode(data)}


def stored_path(path: str | bytes) -> str | bytes:
    return path if isinstance(path, bytes) or is_utf8(path) else os.fsencode(path)


class Environments:
    """The environments table, with what was stored and read lately kept in memory."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self.conn = conn
        self._insert = dialect.sql(
            "INSERT INTO environments (digest, data) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING"
        )
        self._by_digest = dialect.sql("SELECT id FROM environments WHERE digest = ?")
        self._data = dialect.sql("SELECT data FROM environments WHERE id = ?")
        self._ids: dict[bytes, int] = {}  # digest -> row
        self._decoded: dict[int, dict[str, str]] = {}  # row -> env, for claims

    def forget(self) -> None:
        """Drop what may name rows a rollback removed."""
        self._ids.clear()
        self._decoded.clear()

    def store(self, env: Mapping[str, str]) -> int:
        """The row of `env`, stored if it is new."""
        data = blob(env)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        env_id = self._ids.get(digest)
        if env_id is None:
            self.conn.execute(self._insert, (digest, data))
            env_id = self._ids[digest] = self.conn.execute(self._by_digest, (digest,)).fetchone()[0]
        return env_id

    def get(self, env_id: int) -> dict[str, str]:
        """The environment of row `env_id` (shared: never change it)."""
        env = self._decoded.get(env_id)
        if env is None:
            if len(self._decoded) > _DECODED_KEPT:
                self._decoded.clear()
            data = self.conn.execute(self._data, (env_id,)).fetchone()[0]
            env = self._decoded[env_id] = from_blob(bytes(data))  # bytes: a bytea may come as a view
        return env

    def read(self, env_id: int) -> dict[str, str]:
        """The environment of row `env_id`, uncached ({} if the row is gone)."""
        row = self.conn.execute(self._data, (env_id,)).fetchone()
        return from_blob(bytes(row[0])) if row else {}
