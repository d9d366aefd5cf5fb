"""queuectl: the Python SDK (and CLI) for the queued job-queue daemon.

from queuectl import Client
with Client() as queue:
    job_id = queue.add("make test", max_retries=2)
    print(queue.wait(job_id).jobs[0].state)
"""

from queued import __version__
from queued.protocol import Job, JobDetail, JobSpec, LogChunk, QueueInfo, Run, Slot, Status, Waited, Workers

from .client import Client, DaemonError, DaemonUnreachable, QueuectlError, UntrustedDaemon

__all__ = [
    "Client",
    "DaemonError",
    "DaemonUnreachable",
    "Job",
    "JobDetail",
    "JobSpec",
    "LogChunk",
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
