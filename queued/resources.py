"""Resources and weights: what a node has (`queued --resources gpu=2,licence=1`,
GPUs found by `nvidia-smi -L`), what a job needs (`--needs gpu=1`, `--slots N`),
and which waiting jobs start now with which GPUs. Pure: texts and values in,
`now` passed in; the shell runs nvidia-smi and sets CUDA_VISIBLE_DEVICES.

Theory of operation
- A node has slots (its concurrency), counted resources (licence=1) and GPUs,
  which are counted too but also named by index, so that each GPU job gets its
  own (CUDA_VISIBLE_DEVICES), as task-spooler's -G does.
- `allocate` walks the waiting jobs in claim order. A job that fits what is
  free starts, with the lowest free GPU indices. A job that does not fit is
  passed over, so smaller jobs behind it fill the gap (backfill).
- Anti-starvation: a job that does not fit and has waited `patience` seconds
  (60 by default, `queued --starvation-patience`) since it became due (its
  run_at; a job its dependencies released counts from its run_at too, so it
  gets the rule no later) holds whatever part of its need is free
  now, so no job behind it in claim order can take it; as running jobs end,
  what they free accumulates for it until it fits. It waits at most the
  patience plus the longest run ahead of it. Jobs ahead of it in claim order
  (higher priority) are not held back: the rule protects a big job from smaller
  ones behind it, not from a steady stream of more urgent work. Each node
  applies it to what it has: on PostgreSQL a starved job holds what is free
  on every node that could run it, until one of them starts it.
- Where it runs: the supervisor's read-ahead (SQLite) and the engines' claims
  walk jobs in claim order through an `Allocator`; a job of one slot and no
  needs ahead of the first one that needs more never meets it.
- A job that could never fit this node, even idle (more slots than the node's
  concurrency, a resource it lacks), is passed over without holding anything:
  another node may run it, or a later `workers scale`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from msgspec import Struct, field

from queued.protocol import MAX_CONCURRENCY

GPU = "gpu"
STARVATION_PATIENCE = 60.0
MAX_UNITS = 1_000_000
MAX_GPUS = 1024  # GPUs are named one by one (CUDA_VISIBLE_DEVICES): a node has a few
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_GPU_LINE = re.compile(r"^GPU (\d+):")


class Capacity(Struct, frozen=True, kw_only=True):
    """What a node has in all."""

    slots: int
    counts: dict[str, int] = field(default_factory=dict)  # resources other than GPUs
    gpus: tuple[int, ...] = ()  # GPU indices


class Pool(Struct, kw_only=True):
    """What is free on a node now."""

    slots: int
    counts: dict[str, int] = field(default_factory=dict)
    gpus: frozenset[int] = frozenset()


class Holding(Struct, frozen=True, kw_only=True):
    """What a running job holds."""

    slots: int = 1
    needs: dict[str, int] = field(default_factory=dict)  # gpu included, as a count
    gpus: tuple[int, ...] = ()


class Waiting(Struct, frozen=True, kw_only=True):
    """A job that could be claimed, with what it needs."""

    job_id: int
    slots: int = 1
    needs: dict[str, int] = field(default_factory=dict)
    waiting_since: float  # when it became due: its run_at, or when its dependencies released it


class Start(Struct, frozen=True, kw_only=True):
    job_id: int
    gpus: tuple[int, ...] = ()


class Allocation(Struct, frozen=True, kw_only=True):
    started: tuple[Start, ...]  # in claim order
    holding: tuple[int, ...]  # job ids of starved jobs holding free units until they fit


def _parse_pairs(text: str, what: str, example: str, least: int) -> dict[str, int]:
    pairs: dict[str, int] = {}
    if not text.strip():
        raise ValueError(f"{what} is empty: use NAME=COUNT pairs separated by commas, e.g. {example}")
    for item in text.split(","):
        name, equals, count_text = (part.strip() for part in item.partition("="))
        if not equals or not name or not count_text:
            raise ValueError(f"invalid {what} item {item.strip()!r}: use NAME=COUNT, e.g. {example}")
        if not _NAME.match(name):
            raise ValueError(
                f"invalid resource name {name!r}: "
                "a letter, then letters, digits, '_', '.' or '-' (64 at most)"
            )
        if name == "slots":
            raise ValueError("'slots' is not a resource: use --slots N for a job, the concurrency for a node")
        if name in pairs:
            raise ValueError(f"{what} names {name!r} twice")
        if not count_text.isdigit() or not least <= int(count_text) <= MAX_UNITS:
            raise ValueError(
                f"invalid count {count_text!r} for {name}: a whole number from {least} to {MAX_UNITS:,}"
            )
        if name == GPU and what == "--resources" and int(count_text) > MAX_GPUS:
            raise ValueError(f"invalid count {count_text!r} for gpu: at most {MAX_GPUS:,}")
        pairs[name] = int(count_text)
    return pairs


def parse_resources(text: str) -> dict[str, int]:
    """A node's `--resources gpu=2,licence=1`; 0 declares none (gpu=0 turns detection off)."""
    return _parse_pairs(text, "--resources", "gpu=2,licence=1", 0)


def parse_needs(text: str) -> dict[str, int]:
    """A job's `--needs gpu=1,licence=1`; each count at least 1."""
    return _parse_pairs(text, "--needs", "gpu=1", 1)


def parse_slots(text: str) -> int:
    """A job's `--slots N`: how many of the node's slots it takes (tsp -N)."""
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_CONCURRENCY:
        raise ValueError(f"invalid --slots {value!r}: a whole number from 1 to {MAX_CONCURRENCY:,}")
    return int(value)


def parse_nvidia_smi(text: str) -> tuple[int, ...]:
    """GPU indices in `nvidia-smi -L` output ("GPU 0: NVIDIA A100 (UUID: ...)");
    MIG devices and error messages name none."""
    return tuple(sorted({int(match[1]) for line in text.splitlines() if (match := _GPU_LINE.match(line))}))


def node_capacity(slots: int, configured: Mapping[str, int] | None, detected_gpus: Sequence[int]) -> Capacity:
    """The node's capacity: the configured resources, and GPUs as detected
    unless the configuration counts them (then the first N detected, or 0..N-1
    when fewer are detected: the user knows a GPU nvidia-smi did not list)."""
    counts = dict(configured or {})
    wanted = counts.pop(GPU, None)
    gpus = tuple(sorted(set(detected_gpus)))
    if wanted is not None:
        gpus = gpus[:wanted] if len(gpus) >= wanted else tuple(range(wanted))
    return Capacity(slots=slots, counts={name: count for name, count in counts.items() if count}, gpus=gpus)


def _has(capacity: Capacity | Pool, name: str) -> int:
    return len(capacity.gpus) if name == GPU else capacity.counts.get(name, 0)


def never_fits(slots: int, needs: Mapping[str, int], capacity: Capacity) -> str | None:
    """Why this node could not run the job even idle, or None."""
    if slots > capacity.slots:
        return f"takes {slots} slots; this node has {capacity.slots}"
    for name, count in needs.items():
        has = _has(capacity, name)
        if count > has:
            return f"needs {name}={count}; this node has " + (f"{name}={has}" if has else f"no {name}")
    return None


def refusal(slots: int, needs: Mapping[str, int], capacity: Capacity) -> str | None:
    """Why a daemon that runs jobs alone (SQLite) refuses a job at `add`: it
    could never run it, in the user's words; None if it could. A node of no
    slots (`workers scale 0`) refuses nothing for its slots: it runs nothing
    for now."""
    if capacity.slots and slots > capacity.slots:
        return (
            f"takes {slots} slots but this daemon has {capacity.slots}; "
            f"raise them with `queuectl workers scale {slots}`"
        )
    for name, count in needs.items():
        has = _has(capacity, name)
        if count > has:
            if has:
                return f"needs {name}={count} but this daemon has {name}={has}"
            return (
                f"needs {name}={count} but this daemon has no {name}; start queued with --resources {name}=N"
            )
    return None


def shortfall(slots: int, needs: Mapping[str, int], pool: Pool) -> str | None:
    """What the job waits for now ("gpu: needs 2, 1 free"), or None if it fits."""
    short = []
    if slots > pool.slots:
        short.append(f"slots: needs {slots}, {pool.slots} free")
    for name, count in needs.items():
        free = _has(pool, name)
        if count > free:
            short.append(f"{name}: needs {count}, {free} free")
    return "; ".join(short) or None


def free_pool(capacity: Capacity, holdings: Iterable[Holding]) -> Pool:
    """What is free: the capacity less what the running jobs hold."""
    pool = Pool(slots=capacity.slots, counts=dict(capacity.counts), gpus=frozenset(capacity.gpus))
    for holding in holdings:
        _take(pool, holding.slots, holding.needs, holding.gpus)
    return pool


def _take(pool: Pool, slots: int, needs: Mapping[str, int], gpus: Iterable[int]) -> None:
    pool.slots -= slots
    for name, count in needs.items():
        if name != GPU:
            pool.counts[name] = pool.counts.get(name, 0) - count
    pool.gpus = pool.gpus - frozenset(gpus)


class Allocator:
    """`allocate`, one job at a time, in claim order: what the supervisor's
    read-ahead and the engines' claims walk their candidates with. Each
    `offer` either starts the job (its GPU indices returned) or passes it
    over (None), a starved one holding what is free of its need."""

    __slots__ = ("capacity", "free", "now", "patience")

    def __init__(self, pool: Pool, capacity: Capacity, now: float, patience: float = STARVATION_PATIENCE):
        self.free = Pool(slots=pool.slots, counts=dict(pool.counts), gpus=pool.gpus)
        self.capacity = capacity
        self.now = now
        self.patience = patience

    @property
    def full(self) -> bool:
        """No slot is left: nothing more can start (every job takes a slot at least)."""
        return self.free.slots <= 0

    def offer(self, slots: int, needs: Mapping[str, int], waiting_since: float) -> tuple[int, ...] | None:
        """The GPU indices the job gets if it starts now (taken from what is
        free), else None: it does not fit (and, starved, holds what is free
        of its need), or it could never fit this node."""
        free = self.free
        if free.slots <= 0 or never_fits(slots, needs, self.capacity) is not None:
            return None
        if shortfall(slots, needs, free) is None:
            gpus = tuple(sorted(free.gpus)[: needs.get(GPU, 0)])
            _take(free, slots, needs, gpus)
            return gpus
        if self.now - waiting_since >= self.patience:
            # Starved: hold the part of its need that is free, for it alone.
            part = {name: min(count, _has(free, name)) for name, count in needs.items()}
            _take(free, min(slots, free.slots), part, sorted(free.gpus)[: part.get(GPU, 0)])
        return None

    def is_holding(self, slots: int, needs: Mapping[str, int], waiting_since: float) -> bool:
        """Whether a job just passed over (`offer` gave None) holds what is free now."""
        return self.now - waiting_since >= self.patience and never_fits(slots, needs, self.capacity) is None


def allocate(
    pool: Pool,
    waiting: Sequence[Waiting],
    capacity: Capacity,
    now: float,
    patience: float = STARVATION_PATIENCE,
) -> Allocation:
    """Which of `waiting` (in claim order) start now on a node with `pool`
    free, and the GPU indices each gets; the module's anti-starvation rule."""
    allocator = Allocator(pool, capacity, now, patience)
    started: list[Start] = []
    holding: list[int] = []
    for job in waiting:
        if allocator.full:
            break  # every job takes a slot at least
        gpus = allocator.offer(job.slots, job.needs, job.waiting_since)
        if gpus is not None:
            started.append(Start(job_id=job.job_id, gpus=gpus))
        elif allocator.is_holding(job.slots, job.needs, job.waiting_since):
            holding.append(job.job_id)
    return Allocation(started=tuple(started), holding=tuple(holding))


class Fit(Struct, frozen=True, kw_only=True):
    """What a node may take now, handed to an engine's claim (on the writer's
    thread): its capacity, what is free, and the rule's patience. The engine
    walks its candidates in claim order through `allocator`."""

    capacity: Capacity
    free: Pool
    patience: float = STARVATION_PATIENCE

    def allocator(self, now: float) -> Allocator:
        return Allocator(self.free, self.capacity, now, self.patience)


def cuda_visible_devices(gpus: Sequence[int]) -> str:
    """The CUDA_VISIBLE_DEVICES value for a job holding `gpus`."""
    return ",".join(str(index) for index in gpus)
