"""How an engine is deployed beyond its TP degree: the settings that change what a step costs.

A `Deployment` travels with a step-time model and carries the opt-in 2026 engine features:

- `dp` data-parallel ranks of one MoE model acting as one engine (vLLM's `--data-parallel-size`
  with a MoE model): the ranks step in lockstep, as vLLM's DP coordinator makes them do so that
  every rank joins each MoE layer's collective. The simulator keeps the whole group's batch in
  one instance and a step model prices the step of one rank holding an even share of it.
- `expert_parallel` (vLLM's `--enable-expert-parallel`): the routed experts are sharded over the
  dp x tp GPUs instead of tensor-sliced, and every MoE layer dispatches each token to the GPUs of
  its top-k experts and combines the results (two all-to-alls).
- `gpus_per_node`: the node size; a TP (or expert-parallel) group larger than one node runs its
  collectives over the scale-out network (InfiniBand / RoCE figures from hardware.json) instead
  of NVLink.
- `kv_cache_bytes`: bytes per KV element (1 for vLLM's `--kv-cache-dtype fp8`; 0 = the model's
  dtype), which sets KV capacity and the KV read/write terms.
- `verify_tokens`: tokens a decoding sequence puts through the model per step (1 + the
  speculative draft length K): the decode terms grow with it, the prefill terms do not.

The default Deployment() is today's engine: every model built with it is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from blis_gym.errors import ConfigError

if TYPE_CHECKING:
    from .model_config import ModelConfig

__all__ = ["Deployment", "DEFAULT", "check_deployment", "spans_nodes"]


@dataclass(frozen=True)
class Deployment:
    dp: int = 1
    expert_parallel: bool = False
    gpus_per_node: int = 0          # 0: the GPU type's node (hardware.json gpus_per_node)
    kv_cache_bytes: int = 0         # 0: the model's dtype; 1: fp8 KV cache
    verify_tokens: int = 1          # 1 + speculative draft tokens per decoding sequence and step

    def node_size(self, hw) -> int:
        return self.gpus_per_node or hw.gpus_per_node


DEFAULT = Deployment()


def spans_nodes(gpus: int, dep: Deployment, hw) -> bool:
    """Whether a collective over `gpus` GPUs leaves the node (then it runs over the scale-out
    network)."""
    return gpus > dep.node_size(hw)


def all_reduce_factor(tp: int, dep: Deployment, hw) -> float:
    """Time of an all-reduce of S bytes over tp GPUs, in units of S / (the NVLink bandwidth per
    GPU). Within a node a ring: 2(tp-1)/tp. Across N nodes of g GPUs, hierarchical (as NCCL runs
    it): reduce-scatter and all-gather inside each node over NVLink, 2(g-1)/g, and between them an
    all-reduce of each GPU's 1/g share across the nodes over its own NIC, 2(N-1)/N / g, slower by
    NVLink / network bandwidth."""
    g = min(tp, dep.node_size(hw))
    n = -(-tp // g)
    if n <= 1:
        return 2 * (tp - 1) / tp
    return 2 * (g - 1) / g + 2 * (n - 1) / n / g * hw.intranode_gb_s / hw.internode_gb_s


def all_to_all_factor(gpus: int, dep: Deployment, hw) -> float:
    """Share of a token's expert traffic that leaves its GPU, in units of NVLink time: (G-1)/G
    within a node; across nodes of g GPUs, (g-1)/G over NVLink plus (G-g)/G over the network,
    slower by NVLink / network bandwidth."""
    g = min(gpus, dep.node_size(hw))
    if gpus <= g:
        return (gpus - 1) / gpus
    return (g - 1) / gpus + (gpus - g) / gpus * hw.intranode_gb_s / hw.internode_gb_s


def check_deployment(model: ModelConfig, dep: Deployment) -> None:
    """What every model refuses: data-parallel ranks or expert parallelism without a MoE model
    (a dense model's DP ranks are independent engines: more instances)."""
    if isinstance(dep.dp, bool) or not isinstance(dep.dp, int) or not 1 <= dep.dp <= 64:
        raise ConfigError("dp", f"must be an integer in [1, 64], got {dep.dp!r}")
    if dep.dp > 1 and not model.is_moe:
        raise ConfigError("dp", f"{model.name} is not a MoE model: its data-parallel ranks are independent "
                                "engines (give more instances instead of dp)")
    if dep.expert_parallel and not model.is_moe:
        raise ConfigError("vllm.enable_expert_parallel", f"{model.name} has no experts to distribute")
