"""queued: a durable job-queue daemon. Importing this package loads nothing heavy,
so the client can share its pure modules (protocol, durations, paths)."""

__version__ = "0.1.0"
