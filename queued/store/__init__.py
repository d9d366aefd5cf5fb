"""The store: what the daemon keeps, behind one interface.

`Store` (contract.py) lists exactly what the supervisor and the handlers may
ask of a store; `Writer` (writer.py) is the one path to it, group-committing
calls from one thread. Engines implement the contract: SQLite (sqlite/) is the
embedded default. Nothing outside this package reads an engine's insides.
"""

from queued.store.contract import (
    AddedIds,
    Ahead,
    AttemptEnd,
    Changes,
    Claimed,
    CommitUnknown,
    Engine,
    NodeIdentity,
    OutputChunk,
    Recovered,
    Refused,
    StorageError,
    Store,
    StoreUnreachable,
    Written,
)

__all__ = [
    "AddedIds",
    "Ahead",
    "AttemptEnd",
    "Changes",
    "Claimed",
    "CommitUnknown",
    "Engine",
    "NodeIdentity",
    "OutputChunk",
    "Recovered",
    "Refused",
    "StorageError",
    "Store",
    "StoreUnreachable",
    "Written",
]
