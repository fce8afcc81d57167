"""Model architecture parsed from a HuggingFace ``config.json`` (BLIS-compatible field rules).

Field sources follow BLIS ``sim/latency/config.go`` (https://github.com/inference-sim/inference-sim): configs with a
``text_config`` (e.g. Llama-4) are pivoted to it; weight bytes are quantization-aware; the maximum
model length follows vLLM/BLIS rope-scaling rules.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from blis_gym.errors import ConfigError

__all__ = ["ModelConfig", "load_model", "model_from_dict", "known_models", "SUPPORTED_HIDDEN_ACTS"]

GIB = float(2**30)

#: hidden_act values with a gated (SwiGLU-family) MLP, the only ones BLIS's formulas cover.
SUPPORTED_HIDDEN_ACTS = frozenset({"silu", "swiglu", "geglu", "situ", ""})

_DTYPE_BYTES = {
    "float32": 4, "fp32": 4, "float": 4,
    "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2,
    "int8": 1, "uint8": 1, "fp8": 1, "float8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int4": 1, "nf4": 1,
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture numbers needed by the latency models and the KV-capacity planner."""

    name: str
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: float            # config head_dim, else hidden / num_heads
    intermediate: int          # dense-MLP width (intermediate_size_mlp if present, else intermediate_size)
    moe_intermediate: int      # per-expert width (moe_intermediate_size, else intermediate_size); 0 if dense
    shared_expert_intermediate: int  # shared-expert width (or n_shared_experts x expert width); 0 if none
    num_experts: int           # routed experts; 0 = dense
    experts_per_token: int     # top-k; 0 if dense
    interleave_moe_layer_step: int
    first_k_dense_replace: int
    kv_lora_rank: int          # > 0 = MLA (compressed latent KV)
    qk_rope_head_dim: int
    vocab: int
    tie_word_embeddings: bool
    dtype_bytes: int           # torch_dtype bytes (activations / KV cache)
    weight_bytes: float        # bytes per weight, quantization-aware
    max_model_len: int
    hidden_act: str = "silu"
    model_type: str = ""
    # hybrid attention (config `layer_types`, or `full_attention_interval`): layers that keep no
    # per-token KV (linear attention: a fixed-size state) or only a window of it (sliding window)
    linear_layers: int = 0
    sliding_layers: int = 0
    sliding_window: int = 0

    @property
    def kv_layers(self) -> int:
        """Layers holding KV for every token of the context (full attention)."""
        return self.num_layers - self.linear_layers - self.sliding_layers

    @property
    def attention_layers(self) -> int:
        """Layers whose attention reads the context (full and sliding window; a sliding-window
        layer is priced as full attention, an upper bound once contexts exceed its window)."""
        return self.num_layers - self.linear_layers

    @property
    def is_hybrid(self) -> bool:
        return self.kv_layers != self.num_layers

    @property
    def is_moe(self) -> bool:
        return self.num_experts >= 2

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layer_split(self) -> tuple[int, int]:
        """(n_moe_layers, n_dense_layers) as the step-time models count them (BLIS ``sim/latency/roofline.go``)."""
        L = self.num_layers
        if not self.is_moe:
            return 0, L
        s = self.interleave_moe_layer_step
        if s > 0:
            n_moe = L // (s + 1)
            return n_moe, L - n_moe
        return L, 0

    def kv_bytes_per_token(self, tp: int = 1, kv_bytes: int = 0) -> float:
        """KV-cache bytes per token held by ONE GPU of a TP group (kv_bytes: bytes per element,
        1 for an fp8 KV cache; 0 = the model's dtype).

        Standard attention: 2 (K and V) x layers x kv_heads x head_dim x dtype bytes, sharded over TP
        (KV heads are replicated when tp > num_kv_heads, as vLLM does). MLA (kv_lora_rank > 0): the
        latent (kv_lora_rank + qk_rope_head_dim) per layer, replicated on every GPU (not divided by TP).
        Hybrid models count their full-attention layers only: a linear-attention layer keeps a
        fixed-size state per sequence and a sliding-window layer at most its window (vLLM's hybrid
        KV cache manager frees the blocks that leave the window); neither grows with the context.
        """
        b = kv_bytes or self.dtype_bytes
        if self.is_mla:
            return float(self.kv_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * b)
        heads_per_gpu = max(self.num_kv_heads / tp, 1.0)
        return self.kv_layers * 2 * self.head_dim * heads_per_gpu * b

    def param_count(self) -> float:
        """Parameter count by the llm-d capacity-planner formula BLIS uses (``sim/latency/kv_capacity.go``)."""
        L, d, V = self.num_layers, self.hidden, self.vocab
        kv_dim = self.num_kv_heads * self.head_dim
        embed = V * d
        attn = L * (d * (d + 2 * kv_dim) + d * d + 2 * d)
        if self.is_moe:
            k_dense = self.first_k_dense_replace
            i_exp = self.moe_intermediate or self.intermediate
            n = self.num_experts
            mlp = k_dense * 3 * d * self.intermediate + (L - k_dense) * (
                3 * d * i_exp * n + 3 * d * self.shared_expert_intermediate + n * d
            )
        else:
            mlp = L * 3 * d * self.intermediate
        lm_head = 0 if self.tie_word_embeddings else V * d
        return float(embed + attn + mlp + lm_head + d)

    def weight_gib(self) -> float:
        """Total weight memory (all GPUs together) in GiB."""
        return self.param_count() * self.weight_bytes / GIB

    def routed_expert_gib(self) -> float:
        """Weight memory of the routed experts alone (what expert parallelism shards over
        dp x tp GPUs; the rest is sharded over tp and replicated on every DP rank)."""
        if not self.is_moe:
            return 0.0
        n_moe_layers = self.num_layers - self.first_k_dense_replace
        i_exp = self.moe_intermediate or self.intermediate
        return n_moe_layers * 3 * self.hidden * i_exp * self.num_experts * self.weight_bytes / GIB

    def weight_gib_per_gpu(self, tp: int, dp: int = 1) -> float:
        """Weights one GPU holds: everything sharded over tp, except that the routed experts of a
        MoE model with dp ranks are sharded over dp x tp (vLLM's fused MoE spreads them over the
        whole DP group, with or without expert parallelism)."""
        if dp <= 1 or not self.is_moe:
            return self.weight_gib() / tp
        experts = self.routed_expert_gib()
        return (self.weight_gib() - experts) / tp + experts / (tp * dp)


# --------------------------------------------------------------------------------------------
# parsing

def _whole(name: str, key: str, v: Any) -> int:
    """A config.json count: a whole, non-negative number (JSON may give 32 or 32.0), else one
    ConfigError naming the field."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 2**53 and float(v).is_integer()
    if not ok:
        raise ConfigError("model", f"{name}: config.json field {key!r} must be a whole number >= 0 (got {v!r})")
    return int(v)


def _first(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return default


def _dtype_bytes(value: Any) -> int:
    if value is None:
        return 2
    s = str(value).lower().replace("torch.", "")
    return _DTYPE_BYTES.get(s, 2)


def _weight_bytes(qc: Any, dtype_bytes: int, names: tuple[str, ...]) -> float:
    if isinstance(qc, Mapping) and qc:
        bits = qc.get("bits")
        if isinstance(bits, (int, float)) and not isinstance(bits, bool) and bits > 0:
            return bits / 8.0
        if str(qc.get("quant_method", "")).lower() == "fp8":
            return 1.0
        groups = qc.get("config_groups")
        if isinstance(groups, Mapping):  # compressed-tensors
            for group in groups.values():
                w = group.get("weights") if isinstance(group, Mapping) else None
                if isinstance(w, Mapping) and isinstance(w.get("num_bits"), (int, float)):
                    return w["num_bits"] / 8.0
    text = " ".join(n.lower() for n in names if n)
    if any(k in text for k in ("w4a16", "int4", "awq", "gptq", "4bit", "nvfp4", "mxfp4")):
        return 0.5
    if "fp8" in text or "w8a8" in text or "w8a16" in text or "int8" in text:
        return 1.0
    return float(dtype_bytes)


def _max_model_len(cfg: Mapping[str, Any], model_type: str, name: str) -> int:
    base = _first(cfg, "max_position_embeddings", "seq_length", "n_positions", "max_sequence_length")
    if base is None:
        raise ConfigError("model", f"{name}: config.json lacks max_position_embeddings")
    rope = cfg.get("rope_scaling")
    if isinstance(rope, Mapping):
        rtype = str(_first(rope, "rope_type", "type", default="")).lower()
        factor = rope.get("factor")
        if rtype == "yarn" and rope.get("original_max_position_embeddings"):
            base = rope["original_max_position_embeddings"]
        base = _whole(name, "max_position_embeddings", base)
        if (isinstance(factor, (int, float)) and not isinstance(factor, bool) and 1 < factor < 1e6
                and rtype not in ("su", "longrope", "llama3") and "gemma3" not in model_type):
            return int(base * factor)
    return _whole(name, "max_position_embeddings", base)


def model_from_dict(cfg: Mapping[str, Any], name: str = "custom", source: str = "") -> ModelConfig:
    """Build a ModelConfig from a parsed HF config dict."""
    if not isinstance(cfg, Mapping):
        raise ConfigError("model", f"{name}: config.json must hold a JSON object")
    top = cfg
    text = cfg.get("text_config")
    if isinstance(text, Mapping) and text:
        cfg = text
    model_type = str(_first(cfg, "model_type", default=top.get("model_type", "")) or "")

    def need(*keys: str) -> int:
        v = _first(cfg, *keys)
        if v is None:
            raise ConfigError("model", f"{name}: config.json lacks {keys[0]!r}")
        return _whole(name, keys[0], v)

    def count(key: str, *more: str, default: int = 0) -> int:
        return _whole(name, key, _first(cfg, key, *more, default=default))

    L = need("num_hidden_layers", "num_layers", "n_layer")
    d = need("hidden_size", "d_model", "n_embd")
    H = need("num_attention_heads", "n_head")
    Hkv = count("num_key_value_heads", "num_kv_heads", "multi_query_group_num", default=H)
    hd_cfg = cfg.get("head_dim")
    if hd_cfg:
        head_dim: float = _whole(name, "head_dim", hd_cfg)
    else:
        head_dim = d // H if d % H == 0 else d / H
    if _first(cfg, "intermediate_size", "ffn_hidden_size") is None and cfg.get("moe_intermediate_size"):
        inter_base = _whole(name, "moe_intermediate_size", cfg["moe_intermediate_size"])   # MoE in every layer
    else:
        inter_base = need("intermediate_size", "ffn_hidden_size")
    intermediate = count("intermediate_size_mlp", default=inter_base)
    n_exp = count("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    if n_exp < 2:
        n_exp = 0
    if n_exp:
        k = _first(cfg, "num_experts_per_tok", "moe_topk", "num_experts_per_token")
        if k is None:
            raise ConfigError("model", f"{name}: MoE config lacks num_experts_per_tok")
        k = _whole(name, "num_experts_per_tok", k)
        moe_inter = count("moe_intermediate_size", default=inter_base)
        shared = cfg.get("shared_expert_intermediate_size")
        if not shared:
            shared = _whole(name, "n_shared_experts", cfg.get("n_shared_experts") or 0) * moe_inter
        shared = _whole(name, "shared_expert_intermediate_size", shared)
    else:
        k, moe_inter, shared = 0, 0, 0
    act = str(_first(cfg, "hidden_act", default="") or "").lower()
    if act not in SUPPORTED_HIDDEN_ACTS:
        raise ConfigError(
            "model",
            f"{name}: hidden_act {act!r} is not supported (allowed: gated-MLP activations "
            f"{', '.join(sorted(a for a in SUPPORTED_HIDDEN_ACTS if a))})",
        )
    dtype_b = _dtype_bytes(_first(cfg, "torch_dtype", "dtype", default=_first(top, "torch_dtype", "dtype")))
    qc = top.get("quantization_config") or cfg.get("quantization_config")
    wbytes = _weight_bytes(qc, dtype_b, (name, source, str(top.get("_name_or_path", ""))))
    vocab = need("vocab_size", "padded_vocab_size")
    tie = bool(_first(cfg, "tie_word_embeddings", default=top.get("tie_word_embeddings", False)))
    for field, val in (("num_hidden_layers", L), ("hidden_size", d), ("num_attention_heads", H),
                       ("num_key_value_heads", Hkv), ("intermediate_size", intermediate), ("vocab_size", vocab)):
        if val <= 0:
            raise ConfigError("model", f"{name}: {field} must be positive, got {val}")
    linear, sliding, window = _layer_kinds(cfg, L, name)
    return ModelConfig(
        name=name,
        num_layers=L,
        hidden=d,
        num_heads=H,
        num_kv_heads=Hkv,
        head_dim=head_dim,
        intermediate=intermediate,
        moe_intermediate=moe_inter,
        shared_expert_intermediate=shared,
        num_experts=n_exp,
        experts_per_token=k,
        interleave_moe_layer_step=_whole(name, "interleave_moe_layer_step", cfg.get("interleave_moe_layer_step") or 0),
        first_k_dense_replace=_whole(name, "first_k_dense_replace", cfg.get("first_k_dense_replace") or 0),
        kv_lora_rank=_whole(name, "kv_lora_rank", cfg.get("kv_lora_rank") or 0),
        qk_rope_head_dim=_whole(name, "qk_rope_head_dim", cfg.get("qk_rope_head_dim") or 0),
        vocab=vocab,
        tie_word_embeddings=tie,
        dtype_bytes=dtype_b,
        weight_bytes=wbytes,
        max_model_len=_max_model_len(cfg, model_type, name),
        hidden_act=act,
        model_type=model_type,
        linear_layers=linear,
        sliding_layers=sliding,
        sliding_window=window,
    )


_LINEAR_KINDS = ("linear_attention", "mamba", "gated_deltanet", "kimi_delta_attention")
_SLIDING_KINDS = ("sliding_attention", "sliding_window", "local_attention", "chunked_attention")


def _layer_kinds(cfg: Mapping[str, Any], L: int, name: str) -> tuple[int, int, int]:
    """(linear-attention layers, sliding-window layers, window) from `layer_types` (one entry per
    layer) or `full_attention_interval` k (every k-th layer full, the others linear, as Qwen3-Next
    and Qwen3.5 configs say). A plain transformer gives (0, 0, 0)."""
    kinds = cfg.get("layer_types")
    if isinstance(kinds, list) and kinds:
        if len(kinds) != L:
            raise ConfigError("model", f"{name}: layer_types has {len(kinds)} entries for {L} layers")
        kinds = [str(k).lower() for k in kinds]
        linear = sum(k in _LINEAR_KINDS for k in kinds)
        sliding = sum(k in _SLIDING_KINDS for k in kinds)
    elif cfg.get("full_attention_interval"):
        k = _whole(name, "full_attention_interval", cfg["full_attention_interval"])
        linear = L - L // k if k else 0
        sliding = 0
    else:
        return 0, 0, 0
    window = _whole(name, "sliding_window", cfg.get("sliding_window") or 0) if sliding else 0
    if linear + sliding >= L:
        raise ConfigError("model", f"{name}: no full-attention layer in layer_types")
    return linear, sliding, window


# --------------------------------------------------------------------------------------------
# bundled models and lookup

def _models_dir():
    return resources.files("blis_gym").joinpath("data", "models")


@lru_cache(maxsize=1)
def _bundled() -> tuple[str, ...]:
    return tuple(sorted(
        p.name for p in _models_dir().iterdir() if p.is_dir() and p.joinpath("config.json").is_file()
    ))


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    text = _models_dir().joinpath("aliases.yaml").read_text(encoding="utf-8")
    return {str(k).lower(): str(v) for k, v in (yaml.safe_load(text) or {}).items()}


def known_models() -> list[str]:
    """Bundled folder names followed by the HF ids that map to them."""
    return list(_bundled()) + sorted(_aliases())


@lru_cache(maxsize=64)
def _load_bundled(folder: str) -> ModelConfig:
    text = _models_dir().joinpath(folder, "config.json").read_text(encoding="utf-8")
    return model_from_dict(json.loads(text), name=folder)


def _load_path(path: Path, given: str) -> ModelConfig:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError("model", f"{given!r}: no config.json found at {file}")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError("model", f"cannot read {file}: {e}") from None
    name = file.parent.name if file.name == "config.json" else file.stem
    return model_from_dict(cfg, name=name or given, source=str(file))


#: name tokens that do not change the architecture: fine-tune flavours, release dates and
#: checkpoint formats / quantisation schemes (the weight precision is read from the given name)
_VARIANT_TOKENS = frozenset({
    "instruct", "chat", "it", "hf", "base", "sft", "dpo", "rlhf", "v0.1", "v0.2", "v0.3",
    "fp8", "fp16", "bf16", "int4", "int8", "awq", "gptq", "gguf", "bnb", "4bit", "8bit", "dynamic",
    "w4a16", "w8a8", "w8a16", "fp8_dynamic", "quantized", "nvfp4", "mxfp4", "exl2",
})
_QUANT_TOKENS = frozenset({"fp8", "int4", "int8", "awq", "gptq", "w4a16", "w8a8", "w8a16", "fp8_dynamic",
                           "nvfp4", "mxfp4", "4bit", "8bit", "bnb"})


def _tokens(name: str) -> list[str]:
    """The lower-case '-'-separated tokens of a model id without its organisation."""
    return name.strip().lower().rsplit("/", 1)[-1].split("-")


def _base_key(name: str) -> str:
    """A model id reduced to its architecture name: `Qwen/Qwen3-30B-A3B-Instruct-2507`,
    `qwen3-30b-a3b` and `Qwen3-30B-A3B-FP8` all give `qwen3-30b-a3b`."""
    keep = [t for t in _tokens(name) if t not in _VARIANT_TOKENS
            and not (len(t) == 4 and t.isdigit())]          # release dates: 2407, 2507
    return "-".join(keep)


@lru_cache(maxsize=1)
def _variant_index() -> dict[str, str]:
    """architecture name -> bundled folder (the first folder in sorted order wins a tie)."""
    index: dict[str, str] = {}
    for folder in _bundled():
        index.setdefault(_base_key(folder), folder)
    for alias, folder in sorted(_aliases().items()):
        index.setdefault(_base_key(alias), folder)
    return index


def _load_variant(folder: str, given: str) -> ModelConfig:
    """The bundled architecture `folder` under another id: its weight precision follows the
    given id's quantisation suffix (none = the config's dtype, so a BF16 variant of an FP8
    checkpoint is read as BF16)."""
    cfg = json.loads(_models_dir().joinpath(folder, "config.json").read_text(encoding="utf-8"))
    quantised = any(t in _QUANT_TOKENS for t in _tokens(given))
    if not quantised:
        cfg.pop("quantization_config", None)
        if isinstance(cfg.get("text_config"), dict):
            cfg["text_config"].pop("quantization_config", None)
    return model_from_dict(cfg, name=given.strip(), source=given)


def architecture_name(model_id: str) -> str:
    """The architecture name of the bundled model an id resolves to, without fine-tune, date and
    format tokens (`Qwen/Qwen2.5-7B-Instruct` and `Qwen2.5-7B` are both `qwen2.5-7b`); an id
    that resolves to none is reduced the same way."""
    key = model_id.strip().lower()
    folder = _aliases().get(key) or (key if key in _bundled() else None) or _variant_index().get(_base_key(model_id))
    return _base_key(folder or model_id)


def load_model(name_or_path: "str | os.PathLike | ModelConfig") -> ModelConfig:
    """A bundled model by HF id (any case) or folder name, a name variant of one (`-Instruct`,
    a release date, a quantisation suffix), or a config.json / folder holding one."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    given = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
    if not isinstance(given, str) or not given.strip():
        raise ConfigError("model", f"expected a model name or path, got {name_or_path!r}")
    key = given.strip().lower()
    folder = _aliases().get(key)
    if folder is None and key in _bundled():
        folder = key
    if folder is not None:
        return _load_bundled(folder)
    path = Path(given).expanduser()
    if path.exists():
        return _load_path(path, given)
    variant = _variant_index().get(_base_key(given))
    if variant is not None:
        return _load_variant(variant, given)
    raise ConfigError(
        "model",
        f"unknown model {given!r}: no bundled architecture matches it (bundled: {', '.join(_bundled())}); "
        f"give the path of its HuggingFace config.json instead (`model: path/to/config.json` in a scenario, "
        f"`--model-config path/to/config.json` for blis-gym validate)",
    )
