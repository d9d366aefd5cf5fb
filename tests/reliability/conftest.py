"""The end-to-end helpers: a real queued in a temporary directory."""

from tests.e2e.conftest import daemon  # noqa: F401  (a fixture, shared)
