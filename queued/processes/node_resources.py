"""This node's resources (`queued --resources`, GPUs found by `nvidia-smi -L`)
and what its running attempts hold of them: the shell around the pure rules
of queued.resources.

Finding GPUs runs `nvidia-smi -L` once at start, on a thread, in a session of
its own (a hung one is killed with whatever it started) and with a timeout:
an absent binary means no GPUs; one that fails, hangs or prints nothing we
understand is a warning in the log and no GPUs, and the daemon starts.

What a job holding no GPU sees on a node with GPUs: `CUDA_VISIBLE_DEVICES`
set empty, so that CUDA shows it none and it cannot use a GPU another job
holds; a job holding GPUs sees exactly its own ("0,1"). On a node with no
GPUs the variable is left as the job's captured environment has it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping

from queued.resources import (
    GPU,
    STARVATION_PATIENCE,
    Allocator,
    Capacity,
    Fit,
    Pool,
    cuda_visible_devices,
    node_capacity,
    parse_nvidia_smi,
)

log = logging.getLogger(__name__)

NVIDIA_SMI = "nvidia-smi"
DETECT_TIMEOUT = 5.0  # seconds nvidia-smi -L may take at start
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def detect_gpus(timeout: float = DETECT_TIMEOUT) -> tuple[int, ...]:
    """The GPU indices `nvidia-smi -L` lists; () when it is absent, fails,
    hangs past `timeout` or lists none (each but the first logged). Blocking:
    run it on a thread."""
    try:
        child = subprocess.Popen(
            [NVIDIA_SMI, "-L"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # killed with whatever it started
        )
    except FileNotFoundError:
        return ()
    except OSError as exc:
        log.warning("cannot run %s -L (%s): no GPUs are used", NVIDIA_SMI, exc.strerror or exc)
        return ()
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(child)
        log.warning("%s -L did not answer within %g s: no GPUs are used", NVIDIA_SMI, timeout)
        return ()
    finally:
        if child.returncode is None:
            _kill_session(child)
    text = out.decode("utf-8", "replace")
    if child.returncode != 0:
        reason = (err.decode("utf-8", "replace").strip() or text.strip()).splitlines()
        log.warning(
            "%s -L failed (exit %d%s): no GPUs are used",
            NVIDIA_SMI,
            child.returncode,
            f": {reason[0][:200]}" if reason else "",
        )
        return ()
    gpus = parse_nvidia_smi(text)
    if not gpus and text.strip() and "No devices" not in text:
        log.warning("%s -L printed no GPU line we understand: no GPUs are used", NVIDIA_SMI)
    return gpus


def _kill_session(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        # Its pipes close with the last process of its session; a process
        # that escaped the session may hold them: do not wait for it.
        child.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass


class NodeResources:
    """What this node has besides its slots (the slots are its concurrency,
    which `workers scale` changes), and the patience of the anti-starvation
    rule (see queued.resources)."""

    __slots__ = ("counts", "gpus", "patience")

    def __init__(
        self,
        counts: Mapping[str, int] | None = None,
        gpus: tuple[int, ...] = (),
        patience: float = STARVATION_PATIENCE,
    ) -> None:
        self.counts = dict(counts or {})
        self.gpus = gpus
        self.patience = patience

    @classmethod
    def found(
        cls,
        configured: Mapping[str, int] | None,
        detected_gpus: tuple[int, ...],
        patience: float = STARVATION_PATIENCE,
    ) -> NodeResources:
        capacity = node_capacity(0, configured, detected_gpus)
        return cls(capacity.counts, capacity.gpus, patience)

    @staticmethod
    def wants_detection(configured: Mapping[str, int] | None) -> bool:
        """Whether nvidia-smi is asked (not when `gpu=0` turns it off)."""
        return (configured or {}).get(GPU) != 0

    @property
    def plain(self) -> bool:
        """Nothing but slots: only jobs without needs run here."""
        return not self.counts and not self.gpus

    def capacity(self, slots: int) -> Capacity:
        return Capacity(slots=slots, counts=self.counts, gpus=self.gpus)

    def free(self, slots: int, counts_held: Mapping[str, int], gpus_held: set[int]) -> Pool:
        """What is free: `slots` free, the counts and GPUs less what is held."""
        return Pool(
            slots=slots,
            counts={name: count - counts_held.get(name, 0) for name, count in self.counts.items()},
            gpus=frozenset(self.gpus).difference(gpus_held),
        )

    def fit(self, concurrency: int, free: Pool) -> Fit:
        """What a claim may take, as a value the engine can use on its thread."""
        return Fit(capacity=self.capacity(concurrency), free=free, patience=self.patience)

    def allocator(self, concurrency: int, free: Pool, now: float) -> Allocator:
        return Allocator(free, self.capacity(concurrency), now, self.patience)

    def visible_devices(self, gpus: tuple[int, ...]) -> str | None:
        """CUDA_VISIBLE_DEVICES for a job holding `gpus`: its own, or empty
        (none) on a node with GPUs; None (left alone) on a node without."""
        return cuda_visible_devices(gpus) if self.gpus else None

    def describe(self) -> str:
        """For the start's log line: ", gpu=0,1, licence=1" or ""."""
        parts = [f"gpu={cuda_visible_devices(self.gpus)}"] if self.gpus else []
        parts += [f"{name}={count}" for name, count in sorted(self.counts.items())]
        return "".join(f", {part}" for part in parts)
