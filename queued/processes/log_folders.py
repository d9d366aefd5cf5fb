"""Where attempts' logs go: a folder per thousand jobs under the data dir's
`logs/`, made (0700) at its first use. A folder is trusted from then on, until
an attempt there loses output: then the next start there looks again. A folder
that cannot be written (read-only, its permissions changed) fails the starts
in it with the reason, until it can be written again; a removed one is made
again."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class LogsUnusable(Exception):
    """An attempt's logs folder cannot be written; the message says why."""


class LogFolders:
    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self._usable: set[str] = set()

    def paths(self, job_id: int, run: int) -> tuple[str, str]:
        """Where an attempt's stdout and stderr go."""
        stem = f"{self.logs_dir}/{job_id // 1000}/{job_id}.{run}"
        return f"{stem}.out", f"{stem}.err"

    def check(self, job_id: int) -> None:
        """Make sure the job's logs folder can be written: LogsUnusable if not."""
        folder = f"{self.logs_dir}/{job_id // 1000}"
        if folder in self._usable:
            return
        try:
            os.makedirs(self.logs_dir, mode=0o700, exist_ok=True)
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LogsUnusable(f"cannot create its logs folder {folder}: {exc.strerror or exc}") from None
        if not os.access(folder, os.W_OK):
            read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
            why = "is on a read-only file system" if read_only else "is not writable"
            raise LogsUnusable(f"its logs folder {folder} {why}")
        self._usable.add(folder)

    def forget(self, job_id: int) -> None:
        """An attempt of the job lost output: its folder may be gone or read-only."""
        self._usable.discard(f"{self.logs_dir}/{job_id // 1000}")

    def files_of(self, job_ids: Iterable[int]) -> list[str]:
        """This node's log files of the jobs' attempts (one listing per folder)."""
        by_folder: dict[str, set[str]] = {}
        for job_id in job_ids:
            by_folder.setdefault(f"{self.logs_dir}/{job_id // 1000}", set()).add(str(job_id))
        found = []
        for folder, stems in by_folder.items():
            try:
                names = os.listdir(folder)
            except OSError:
                continue  # never made here, or gone
            found += [f"{folder}/{name}" for name in names if name.partition(".")[0] in stems]
        return found
