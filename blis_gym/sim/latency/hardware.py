"""GPU constants (datasheet figures) loaded from ``blis_gym/data/hardware.json``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from blis_gym.errors import ConfigError

__all__ = ["Hardware", "load_hardware", "known_hardware"]


@dataclass(frozen=True)
class Hardware:
    """One GPU type. Rates are decimal (TFLOPS = 1e12 FLOP/s, TB/s = 1e12 B/s); memory in GiB."""

    name: str
    tflops_bf16: float
    tflops_fp8: float
    hbm_tb_s: float
    mfu_prefill: float
    mfu_decode: float
    memory_gib: float
    source: str = ""
    price_per_gpu_hour: float = 0.0     # US$ per GPU-hour (see price_source in hardware.json)
    gpus_per_node: int = 8              # GPUs one node holds (NVLink domain)
    intranode_gb_s: float = 32.0        # GPU-to-GPU link inside a node, per GPU and direction, GB/s
    internode_gb_s: float = 25.0        # scale-out network per GPU and direction, GB/s (InfiniBand / RoCE)
    internode_latency_us: float = 10.0  # start-up latency of one collective over that network
    memory: str = ""                    # memory technology (HBM3, GDDR6, ...): how well KV reads use the bandwidth

    @property
    def gddr(self) -> bool:
        """Graphics memory (GDDR): paged-attention KV reads reach a smaller share of its bandwidth."""
        return self.memory.upper().startswith("GDDR")

    def peak_tflops(self, weight_bytes: float) -> float:
        """FLOP rate for a model: the FP8 rate iff weights are 1 byte and the GPU has FP8 units."""
        if weight_bytes == 1.0 and self.tflops_fp8 > 0:
            return self.tflops_fp8
        return self.tflops_bf16


def _norm(name: str) -> str:
    """Upper case, '_' and ' ' as '-', without a vendor prefix ("NVIDIA H100" is "H100")."""
    key = str(name).strip().upper().replace("_", "-").replace(" ", "-")
    return key[len("NVIDIA-"):] if key.startswith("NVIDIA-") else key


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, Hardware], dict[str, str]]:
    text = resources.files("blis_gym").joinpath("data", "hardware.json").read_text(encoding="utf-8")
    raw = json.loads(text)["gpus"]
    gpus: dict[str, Hardware] = {}
    index: dict[str, str] = {}
    for name, f in raw.items():
        gpus[name] = Hardware(
            name=name,
            tflops_bf16=float(f["tflops_bf16"]),
            tflops_fp8=float(f["tflops_fp8"]),
            hbm_tb_s=float(f["hbm_tb_s"]),
            mfu_prefill=float(f["mfu_prefill"]),
            mfu_decode=float(f["mfu_decode"]),
            memory_gib=float(f["memory_gib"]),
            source=str(f.get("source", "")),
            price_per_gpu_hour=float(f.get("price_per_gpu_hour", 0.0)),
            gpus_per_node=int(f.get("gpus_per_node", 8)),
            intranode_gb_s=float(f.get("intranode_gb_s", 32.0)),
            internode_gb_s=float(f.get("internode_gb_s", 25.0)),
            internode_latency_us=float(f.get("internode_latency_us", 10.0)),
            memory=str(f.get("memory", "")),
        )
        index[_norm(name)] = name
        for alias in f.get("aliases", []):
            index[_norm(alias)] = name
    return gpus, index


def known_hardware() -> list[str]:
    """Canonical GPU names."""
    return list(_table()[0])


def load_hardware(name: "str | Hardware") -> Hardware:
    """Look up a GPU by name or alias (case-insensitive; '_' and ' ' count as '-')."""
    if isinstance(name, Hardware):
        return name
    gpus, index = _table()
    key = index.get(_norm(name)) if isinstance(name, str) else None
    if key is None:
        aliases = sorted(a for a, c in index.items() if _norm(c) != a)
        raise ConfigError(
            "hardware",
            f"unknown GPU {name!r}; known: {', '.join(gpus)} (aliases: {', '.join(aliases)})",
        )
    return gpus[key]


def vllm_batch_defaults(hw: Hardware, vllm_version: str = "") -> tuple[int, int]:
    """`vllm serve` defaults (max_num_seqs, max_num_batched_tokens) for a GPU and vLLM version.

    vLLM >= 0.8 (the V1 engine; also an empty or unparsable version): GPUs with >= 70 GiB that
    are not A100 get 1024 seqs / 8192 tokens per step, others 256 / 2048
    (vllm/engine/arg_utils.py get_batch_defaults). Older versions (V0 engine): 256 / 2048."""
    if _version(vllm_version) < (0, 8):
        return 256, 2048
    if hw.memory_gib >= 70 and not hw.name.upper().startswith("A100"):
        return 1024, 8192
    return 256, 2048


def _version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string like "0.15.1" or "v0.7.3"; (99, 0) if not readable."""
    parts = str(text or "").strip().lstrip("vV").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 99, 0
