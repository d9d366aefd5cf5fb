"""Fixtures every test level may use: a throwaway PostgreSQL (tests/postgres.py);
and the reason of a skip inside a trio test, which pytest-trio drops."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

import pytest
from _pytest.outcomes import Skipped

from tests.postgres import _postgres_session, postgres_empty_url, postgres_server, postgres_url

__all__ = ["_postgres_session", "postgres_empty_url", "postgres_server", "postgres_url"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """pytest-trio (0.8) turns a `pytest.skip(reason)` inside a trio test into
    a bare `pytest.skip()` raised while handling the exception group that held
    it: the report says "Skipped" at _pytest/python.py with no reason. Report
    the reason given, where it was given."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and call.excinfo is not None and isinstance(call.excinfo.value, Skipped)):
        return
    group = call.excinfo.value.__context__
    if not isinstance(group, BaseExceptionGroup):
        return
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], Skipped):
        shown = [
            (frame.f_code.co_filename, line)
            for frame, line in traceback.walk_tb(leaves[0].__traceback__)
            if not frame.f_locals.get("__tracebackhide__")  # pytest.skip's own frame
        ]
        filename, line = shown[-1] if shown else (str(item.path), 0)
        report.longrepr = (filename, line, f"Skipped: {leaves[0].msg}")
