"""The store contract driven without the writer, for tests: each call in a
transaction of its own (or inside the one a test opened), its `Written`
unwrapped, and what it changed gathered in `changes`, as the writer would.

Engine-independent: it uses only the contract and `Transactions`, so the
contract tests run the same way on every engine.
"""

from __future__ import annotations

from typing import Any

from queued.store.contract import Changes, Engine, Store, Written


class Direct:
    """An engine whose contract methods answer plainly (`store.cancel(...)`
    returns the ids), one transaction per call, as the writer would run them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.changes = Changes()
        self.in_transaction = False  # a test's own transaction is open (see `transaction`)

    @property
    def finished(self) -> list[int]:
        """Jobs finished by the calls so far (clear it to start counting again)."""
        return self.changes.finished

    @property
    def reordered(self) -> bool:
        return self.changes.reordered

    @reordered.setter
    def reordered(self, value: bool) -> None:
        self.changes.reordered = value

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.engine, name)
        if not hasattr(Store, name):
            return method  # the engine's own (conn, forget_caches, ...)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.in_transaction:
                result = self.engine.call(method, args, kwargs, guarded=True)
            else:
                self.engine.begin()
                try:
                    result = self.engine.call(method, args, kwargs, guarded=True)
                    self.engine.commit()
                except BaseException:
                    self.engine.abort()
                    raise
            if isinstance(result, Written):
                self.changes.merge(result.changes)
                return result.value
            return result

        return call

    def transaction(self) -> _Transaction:
        """Several calls in one transaction (as one writer batch)."""
        return _Transaction(self)


class _Transaction:
    def __init__(self, direct: Direct) -> None:
        self.direct = direct

    def __enter__(self) -> Direct:
        self.direct.engine.begin()
        self.direct.in_transaction = True
        return self.direct

    def __exit__(self, kind: object, *_: object) -> None:
        self.direct.in_transaction = False
        if kind is None:
            self.direct.engine.commit()
        else:
            self.direct.engine.abort()
