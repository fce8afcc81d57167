"""LoRA adapters on one vLLM instance (`--enable-lora`): which adapters are loaded, which run in
the batch, and what they cost.

- Loaded adapters: an LRU of at most `max_cpu_loras` (vLLM's CPU cache of adapters). An
  adapter outside it is cold: the step that first admits one of its requests also loads it, so
  the step lasts `load_us(rank)` longer (vLLM loads adapters synchronously when the model
  runner activates them, so the whole batch waits). Each cold load is charged exactly once.
- The batch: at most `max_loras` distinct adapters among the running requests (vLLM's GPU
  slots). A waiting request whose adapter would be one too many is skipped, and the requests
  behind it may still be admitted (vLLM's scheduler does the same); it stays at its place in
  the queue.
- Per-step overhead: a step's duration is multiplied by `1 + c(r) · n`, with n the distinct
  adapters in the batch and r their largest rank (BLIS's LoRA cost model; see `overhead`).

Base-model requests (no adapter) cost nothing here and are never skipped.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# BLIS's per-adapter step overhead by the batch's largest rank (tiers 8, 16, 32).
OVERHEAD_TIERS = ((8, 0.02), (16, 0.035), (32, 0.06))


class Adapter:
    """A LoRA adapter: its name and rank. One object per name in a workload."""
    __slots__ = ("name", "rank")

    def __init__(self, name: str, rank: int):
        self.name = name
        self.rank = rank

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Adapter({self.name!r}, rank={self.rank})"


def overhead(rank: int) -> float:
    """The step-time fraction one more adapter in the batch adds, by the batch's largest rank:
    the first BLIS tier at or above it; above rank 32, linear in the rank (an assumption)."""
    for tier, c in OVERHEAD_TIERS:
        if rank <= tier:
            return c
    return OVERHEAD_TIERS[-1][1] * rank / OVERHEAD_TIERS[-1][0]


@dataclass(frozen=True)
class LoraConfig:
    max_loras: int = 1                       # distinct adapters in one batch (GPU slots)
    max_lora_rank: int = 16
    max_cpu_loras: int = 1                   # loaded adapters kept (LRU), >= max_loras
    load_base_us: int = 1500                 # fixed cost of a cold load
    bytes_per_rank: int = 0                  # adapter bytes per unit of rank (from the model's shapes)
    load_bytes_per_us: float = 2000.0        # load bandwidth (2 GB/s)
    load_us_fixed: int | None = None         # a set load time (overrides base + size / bandwidth)
    step_overhead: float | None = None       # per-adapter step fraction (None: by rank, `overhead`)

    def load_us(self, rank: int) -> int:
        """Time of one cold load of an adapter of this rank (µs)."""
        if self.load_us_fixed is not None:
            return self.load_us_fixed
        return self.load_base_us + math.ceil(rank * self.bytes_per_rank / self.load_bytes_per_us)

    def per_adapter(self, rank: int) -> float:
        return overhead(rank) if self.step_overhead is None else self.step_overhead


def _drop_one(counts: dict, a: Adapter) -> bool:
    """One request of `a` fewer in `counts`; True if that was its last (its entry is removed)."""
    n = counts[a] - 1
    if n:
        counts[a] = n
        return False
    del counts[a]
    return True


class LoraState:
    """One instance's adapters: counts of running and waiting requests per adapter, the LRU of
    loaded adapters, the load time owed by the step being formed and the step-time factor."""

    def __init__(self, cfg: LoraConfig):
        self.cfg = cfg
        self.running: dict[Adapter, int] = {}       # adapter -> running requests (the batch's adapters)
        self.waiting: dict[Adapter, int] = {}       # adapter -> waiting requests
        self.loaded: OrderedDict[Adapter, None] = OrderedDict()   # least recently used first
        self.owed_us = 0                            # load time of the step being formed
        self.factor = 1.0                           # step-time multiplier of the current batch
        self.loads: dict[str, int] = {}             # adapter name -> cold loads
        self.load_us_total = 0
        self.peak_distinct = 0                      # most distinct adapters ever in one batch

    # ---- the waiting queue ---------------------------------------------------------------
    def queued(self, a: Adapter) -> None:
        self.waiting[a] = self.waiting.get(a, 0) + 1

    def unqueued(self, a: Adapter) -> None:
        _drop_one(self.waiting, a)

    def can_join(self, a: Adapter) -> bool:
        """Whether a request of adapter `a` may join the batch (vLLM's max_loras check)."""
        return a in self.running or len(self.running) < self.cfg.max_loras

    # ---- the batch -------------------------------------------------------------------------
    def admit(self, a: Adapter) -> None:
        """A waiting request of `a` joins the batch: load `a` if it is cold (the step being
        formed pays for it), and mark it most recently used."""
        self.unqueued(a)
        n = self.running.get(a, 0)
        self.running[a] = n + 1
        loaded = self.loaded
        if a in loaded:
            loaded.move_to_end(a)
        else:
            if len(loaded) >= self.cfg.max_cpu_loras:
                # evict the least recently used adapter that no running request uses (there is
                # one: fewer than max_loras <= max_cpu_loras adapters run besides `a`)
                for old in loaded:
                    if old not in self.running:
                        del loaded[old]
                        break
            loaded[a] = None
            us = self.cfg.load_us(a.rank)
            self.owed_us += us
            self.load_us_total += us
            self.loads[a.name] = self.loads.get(a.name, 0) + 1
        if n == 0:
            self._batch_changed()

    def left(self, a: Adapter) -> None:
        """A running request of `a` finished, was aborted or was preempted."""
        if _drop_one(self.running, a):
            self._batch_changed()

    def _batch_changed(self) -> None:
        run = self.running
        if len(run) > self.peak_distinct:
            self.peak_distinct = len(run)
        if not run:
            self.factor = 1.0
            return
        self.factor = 1.0 + self.cfg.per_adapter(max(a.rank for a in run)) * len(run)

    def step_us(self, dt: int) -> int:
        """A step's duration with the adapters' overhead and the load time it owes."""
        if self.factor != 1.0:
            dt = int(dt * self.factor)
        if self.owed_us:
            dt += self.owed_us
            self.owed_us = 0
        return dt

    def check(self, running, waiting) -> None:
        """Invariants: the counts match the instance's running and waiting requests, the batch
        holds at most max_loras adapters, and every running adapter is loaded."""
        def counts(reqs) -> dict:
            out: dict[Adapter, int] = {}
            for r in reqs:
                if r.adapter is not None:
                    out[r.adapter] = out.get(r.adapter, 0) + 1
            return out
        assert counts(running) == self.running, (counts(running), self.running)
        assert counts(waiting) == self.waiting, (counts(waiting), self.waiting)
        assert len(self.running) <= self.cfg.max_loras
        assert len(self.loaded) <= self.cfg.max_cpu_loras
        assert all(a in self.loaded for a in self.running)

    def info(self) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        """vllm:lora_requests_info: running adapters, waiting adapters, max_lora."""
        return (tuple(a.name for a in self.running), tuple(a.name for a in self.waiting), self.cfg.max_loras)


LORA_DTYPE_BYTES = 2      # adapters ship in bf16/fp16 whatever the base model's precision


def bytes_per_rank(model) -> int:
    """Bytes of an adapter per unit of rank when it targets every linear layer of each decoder
    layer (q, k, v, o, gate, up, down; vLLM's default): each holds A (d_in x r) and B (r x d_out),
    so r · Σ (d_in + d_out) parameters per layer. MoE experts are counted as one dense MLP of
    `intermediate` width (an approximation)."""
    d = model.hidden
    q = int(model.num_heads * model.head_dim)
    kv = int(model.num_kv_heads * model.head_dim)
    inter = model.intermediate or model.moe_intermediate
    per_layer = (d + q) + 2 * (d + kv) + (q + d) + 2 * (d + inter) + (inter + d)
    return per_layer * model.num_layers * LORA_DTYPE_BYTES
