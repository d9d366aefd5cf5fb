"""queuectl: the Python SDK (and CLI) for the queued job-queue daemon.

from queuectl import Client
with Client() as queue:
    job_id = queue.add("make test", max_retries=2)
    print(queue.wait(job_id).jobs[0].state)

Every error is a QueuectlError with a one-line message and a machine-readable
`code` (the protocol's error codes when the daemon refused: "not_found",
"invalid", "bad_request", ...).
"""

from queued import __version__
from queued.protocol import Job, JobDetail, JobSpec, LogChunk, QueueInfo, Run, Slot, Status, Waited, Workers

from .client import (
    AddedJob,
    Client,
    DaemonError,
    DaemonUnreachable,
    InvalidRequest,
    NoAnswer,
    PartlyAdded,
    PartlyDone,
    QueuectlError,
    UntrustedDaemon,
)

__all__ = [
    "AddedJob",
    "Client",
    "DaemonError",
    "DaemonUnreachable",
    "InvalidRequest",
    "Job",
    "JobDetail",
    "JobSpec",
    "LogChunk",
    "NoAnswer",
    "PartlyAdded",
    "PartlyDone",
    "QueueInfo",
    "QueuectlError",
    "Run",
    "Slot",
    "Status",
    "UntrustedDaemon",
    "Waited",
    "Workers",
    "__version__",
]
