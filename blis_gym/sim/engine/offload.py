"""KV offload tiers below the GPU: vLLM's CPU offloading connector (OffloadingConnector, native
CPU offload) and, optionally, a filesystem tier under it (llm-d's tiered prefix cache).

Blocks are identified by their chained hashes, as in the GPU store (`kv.py`). What happens:

- Store (GPU -> CPU): a request's full blocks are copied to the CPU tier when it leaves the
  GPU (completes, is preempted or aborted): its prompt blocks only (`prompt_only`, vLLM's
  default `offload_prompt_only`) or also the blocks holding generated tokens. A block already
  in the CPU tier is only touched. The prefix is touched first-block-last, so a chain's head
  is the most recent and is evicted last. vLLM copies a block as soon as it is computed, on a
  separate CUDA stream; while a request runs its blocks are on the GPU anyway, so copying them
  at release changes only the CPU tier's LRU order. The copy overlaps compute: it costs no
  step time.
- Evict: the CPU tier is an LRU of `cpu_blocks` blocks; its evictions spill into the
  filesystem tier (an LRU of `fs_blocks`), or are dropped without one. A block lives in at
  most one lower tier.
- Load (lower tier -> GPU): a waiting request whose prompt continues, after its GPU hits, with
  blocks found in a lower tier gets them loaded (see `scheduler.Scheduler._start_load`): the time is
  blocks x bytes per block / bandwidth of the tier they come from. Loaded blocks from the
  filesystem are promoted into the CPU tier; CPU blocks stay (touched).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# llm-d's precise prefix-cache scorer weights a block by the tier it is found in (gpu 1.0, cpu 0.8)
CPU_TIER_WEIGHT = 0.8


@dataclass(frozen=True)
class OffloadConfig:
    cpu_blocks: int                 # the CPU tier's capacity (blocks of 16 tokens, all GPUs' shards)
    cpu_us_per_block: float         # load time of one block from the CPU tier (one GPU's shard / PCIe)
    fs_blocks: int = 0              # the filesystem tier's capacity (0 = no such tier)
    fs_us_per_block: float = 0.0    # load time of one block from the filesystem tier
    prompt_only: bool = True        # vLLM offload_prompt_only: blocks of generated tokens stay on the GPU


def offload_config(shard_bytes: float, tp: int, *, cpu_blocks: int | None = None, cpu_gib: float | None = None,
                   cpu_bandwidth_gb_s: float = 25.0, fs_gib: float = 0.0, fs_bandwidth_gb_s: float = 5.0,
                   prompt_only: bool = True) -> OffloadConfig:
    """Tier sizes in blocks and load times per block from bytes and bandwidths. `shard_bytes` is
    one GPU's share of a block; a block on all `tp` GPUs is tp times that. Each GPU loads its
    shard from the CPU over its own link (in parallel); the filesystem serves whole blocks."""
    block = shard_bytes * tp
    gib = 1 << 30
    cpu = cpu_blocks if cpu_blocks else max(1, int(cpu_gib * gib // block))
    return OffloadConfig(cpu_blocks=int(cpu), cpu_us_per_block=shard_bytes / (cpu_bandwidth_gb_s * 1e3),
                         fs_blocks=int(fs_gib * gib // block), fs_us_per_block=block / (fs_bandwidth_gb_s * 1e3),
                         prompt_only=prompt_only)


class OffloadTiers:
    """The lower tiers of one instance and their counters."""

    def __init__(self, cfg: OffloadConfig):
        self.cfg = cfg
        self.prompt_only = cfg.prompt_only
        self.cpu: OrderedDict[int, None] = OrderedDict()     # LRU first
        self.fs: OrderedDict[int, None] | None = OrderedDict() if cfg.fs_blocks > 0 else None
        # counters
        self.stored = 0                # blocks copied GPU -> CPU
        self.spilled = 0               # CPU evictions moved into the filesystem tier
        self.dropped = 0               # blocks evicted from the lowest tier
        self.loads = 0                 # loads started (one per request admission that found blocks)
        self.loaded_cpu = 0            # blocks loaded from the CPU tier
        self.loaded_fs = 0             # blocks loaded from the filesystem tier
        self.load_us = 0               # total load time

    def store(self, hashes: list[int]) -> None:
        """Copy a request's leading blocks (in order) into the CPU tier."""
        cpu, fs = self.cpu, self.fs
        mte = cpu.move_to_end
        for h in reversed(hashes):
            if h in cpu:
                mte(h)
            elif fs is not None and h in fs:
                del fs[h]                  # still offloaded: back up to the CPU tier
                cpu[h] = None
            else:
                cpu[h] = None
                self.stored += 1
        self._evict()

    def _evict(self) -> None:
        cpu, fs = self.cpu, self.fs
        over = len(cpu) - self.cfg.cpu_blocks
        for _ in range(over):
            h = cpu.popitem(last=False)[0]
            if fs is None:
                self.dropped += 1
                continue
            fs[h] = None
            self.spilled += 1
            if len(fs) > self.cfg.fs_blocks:
                fs.popitem(last=False)
                self.dropped += 1

    def lookup(self, hashes) -> tuple[int, int]:
        """Leading blocks of `hashes` present in a lower tier: (from the CPU tier, from the fs tier)."""
        cpu, fs = self.cpu, self.fs
        c = f = 0
        for h in hashes:
            if h in cpu:
                c += 1
            elif fs is not None and h in fs:
                f += 1
            else:
                break
        return c, f

    def cpu_prefix(self, hashes) -> int:
        """Leading blocks of `hashes` in the CPU tier (what llm-d's index sees below the GPU)."""
        cpu = self.cpu
        n = 0
        for h in hashes:
            if h not in cpu:
                break
            n += 1
        return n

    def load(self, hashes: list[int], from_cpu: int, from_fs: int) -> int:
        """Load the blocks `hashes` (found by lookup) onto the GPU; returns the time (µs).
        Filesystem blocks are promoted into the CPU tier; CPU blocks are touched."""
        cfg = self.cfg
        us = round(from_cpu * cfg.cpu_us_per_block + from_fs * cfg.fs_us_per_block)
        self.loads += 1
        self.loaded_cpu += from_cpu
        self.loaded_fs += from_fs
        self.load_us += us
        cpu, fs = self.cpu, self.fs
        mte = cpu.move_to_end
        for h in reversed(hashes):
            if h in cpu:
                mte(h)
            else:
                del fs[h]
                cpu[h] = None
        if from_fs:
            self._evict()
        return us

    def check(self) -> None:
        """Invariants: budgets hold, tiers are disjoint, every stored block is accounted for."""
        cfg = self.cfg
        assert len(self.cpu) <= cfg.cpu_blocks, (len(self.cpu), cfg.cpu_blocks)
        fs = self.fs or {}
        assert len(fs) <= cfg.fs_blocks, (len(fs), cfg.fs_blocks)
        assert not (self.cpu.keys() & fs.keys()), "block in two tiers"
        # blocks enter the tiers only by a store; moves between tiers neither add nor remove
        assert self.stored == len(self.cpu) + len(fs) + self.dropped, "tier blocks not conserved"
