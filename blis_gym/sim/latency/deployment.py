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

from blis_gym.errors import ConfigError

__all__ = ["Deployment", "DEFAULT", "refuse", "group_gpus", "spans_nodes"]


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


def group_gpus(tp: int, dep: Deployment) -> int:
    """GPUs one engine (a TP group, or the dp x tp GPUs of a DP group) occupies."""
    return tp * dep.dp


def spans_nodes(gpus: int, dep: Deployment, hw) -> bool:
    """Whether a collective over `gpus` GPUs leaves the node (then it runs over the scale-out
    network)."""
    return gpus > dep.node_size(hw)


def refuse(kind: str, dep: Deployment, tp: int, hw, *, dp: bool = True, multinode: bool = True,
           speculative: bool = True) -> None:
    """One ConfigError naming the first setting a step-time model of `kind` cannot price."""
    if not dp and (dep.dp > 1 or dep.expert_parallel):
        field = "dp" if dep.dp > 1 else "vllm.enable_expert_parallel"
        raise ConfigError(field, f"the {kind} latency model has no communication terms to price data-parallel "
                                 "MoE ranks or expert parallelism; use latency_model trained-physics or calibrated")
    if not multinode and spans_nodes(tp, dep, hw):
        raise ConfigError("tp", f"the {kind} latency model has no all-reduce term to price a TP group of {tp} "
                                f"GPUs across nodes of {dep.node_size(hw)}; use latency_model trained-physics "
                                "or calibrated")
    if not speculative and dep.verify_tokens > 1:
        raise ConfigError("vllm.speculative", f"the {kind} latency model cannot price speculative decoding")
