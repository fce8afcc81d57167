"""Number of KV-cache blocks one instance (a TP group of GPUs) holds, computed the way vLLM does.

Per GPU: the memory vLLM may use (memory x gpu_memory_utilization) minus this GPU's weight shard,
minus activation-peak and non-torch overheads, divided by this GPU's bytes per KV block. Because every
GPU of a TP group holds the same number of blocks (each with its shard of the heads), this is also the
instance's block count. At TP=1 this is identical to BLIS ``CalculateKVBlocks``; at TP>1 BLIS multiplies
the available memory by TP while also dividing per-token bytes by TP, which over-counts by ~TP x
(BLIS ``sim/latency/kv_capacity.go``, https://github.com/inference-sim/inference-sim); this port follows vLLM
instead (``vllm/v1/core/kv_cache_utils.py``, https://github.com/vllm-project/vllm).
"""
from __future__ import annotations

import math
import numbers

from blis_gym.errors import ConfigError

from .hardware import Hardware, load_hardware
from .model_config import GIB, ModelConfig, load_model

__all__ = ["kv_blocks_per_instance", "validate_tp", "ACTIVATION_GIB_DENSE", "ACTIVATION_GIB_MOE"]

ACTIVATION_GIB_DENSE = 5.5
ACTIVATION_GIB_MOE = 8.0
NON_TORCH_GIB_TP1 = 0.15
NON_TORCH_GIB_TPN = 0.6


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def validate_tp(model: ModelConfig, tp) -> int:
    """Check the tensor-parallel degree: a positive integer dividing num_attention_heads.

    Returns ``tp`` as a plain int; raises ConfigError("tp", ...) listing the allowed values otherwise.
    """
    H = model.num_heads
    ok = isinstance(tp, numbers.Integral) and not isinstance(tp, bool)
    if not ok or tp < 1 or H % int(tp) != 0:
        allowed = ", ".join(str(x) for x in _divisors(H))
        raise ConfigError("tp", f"tp={tp!r} does not divide num_attention_heads={H} (allowed: {allowed})")
    return int(tp)


def kv_blocks_per_instance(
    model: "ModelConfig | str",
    hw: "Hardware | str",
    tp: int,
    gpu_memory_utilization: float = 0.9,
    block_size: int = 16,
    dp: int = 1,
    kv_cache_bytes: int = 0,
) -> int:
    """KV blocks (of ``block_size`` tokens) available to one instance of ``tp`` GPUs; with
    ``dp`` > 1 (a MoE model's data-parallel ranks run as one engine) the whole group's blocks:
    each rank holds its own KV cache, sized after its share of the experts (they are spread over
    dp x tp GPUs). ``kv_cache_bytes``: bytes per KV element (1 = fp8; 0 = the model's dtype)."""
    model = load_model(model)
    hw = load_hardware(hw)
    tp = validate_tp(model, tp)
    u = gpu_memory_utilization
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not (0.0 < u <= 1.0) or math.isnan(u):
        raise ConfigError("gpu_memory_utilization", f"must be in (0, 1], got {u!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError("block_size", f"must be a positive integer, got {block_size!r}")
    per_block = int(model.kv_bytes_per_token(tp, kv_cache_bytes) * block_size)
    activation = ACTIVATION_GIB_MOE if model.is_moe else ACTIVATION_GIB_DENSE
    non_torch = NON_TORCH_GIB_TP1 if tp == 1 and dp == 1 else NON_TORCH_GIB_TPN
    weights = model.weight_gib() / tp if dp == 1 else model.weight_gib_per_gpu(tp, dp)
    free_gib = hw.memory_gib * u - weights - activation - non_torch
    blocks = int(free_gib * GIB) // per_block if free_gib > 0 else 0
    if blocks <= 0:
        raise ConfigError(
            "tp",
            f"model {model.name} does not fit on {tp} x {hw.name} at gpu_memory_utilization {u}; "
            f"try a larger tp (weights {model.weight_gib():.1f} GiB in total, "
            f"{hw.memory_gib * u:.1f} GiB usable per GPU)",
        )
    return blocks * dp
