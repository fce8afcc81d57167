"""The `calibrated` step-time model: a roofline with fitted efficiencies and overheads.

Every term is a physical time computed from the model architecture and the GPU's datasheet
constants (``hardware.json``: dense tensor FLOP/s for the weight precision, HBM bandwidth) and
an interconnect bandwidth per GPU type (``calibrated.yaml: interconnect``). The fitted numbers
(``calibrated.yaml: params``) are dimensionless efficiencies and CPU-side overheads in µs, global
for every model and GPU, so the model carries over to other models and GPUs through the
constants. For one engine step with prefill chunks (t_i new tokens on top of c_i cached or
computed tokens) and D decoding requests whose contexts sum to C tokens::

    T      = Σ t_i + D                                   tokens in the step, B = #chunks + D sequences
    gemm   = max(FLOPs_lin(T) / (P·eta_compute),  (W_bytes(T) + lm_head_bytes) / (BW·eta_mem))
    attn   = Σ 4·L·H/tp·hd·t_i·(c_i + t_i/2) / (P·eta_attn)      prefill attention (FlashAttention)
           + KV_bytes_per_token/tp · (C + Σ c_i) / (BW·eta_kv)    KV read by the attention kernels
    comm   = [tp>1] 2·L·(ar_latency + 2(tp-1)/tp · T·d·bpp / (link·eta_link))   TP all-reduces
    step   = gemm + attn + comm + step_us + layer_us·L + moe_layer_us·L_moe + seq_us·B
             + prefill_seq_us·#chunks

FLOPs_lin(T) = 2·T·(attention projections + gated MLP (dense, or top-k routed + shared experts))
+ 2·B·d·V (LM head on one position per sequence); W_bytes(T) reads the dense weights once per
step and, for MoE, the expected number of distinct experts the T tokens route to,
N·(1 − (1 − k/N)^T) per MoE layer. Overheads outside the step (client-visible):
``api_us`` from arrival to the engine queue (HTTP, tokenisation), ``token_us`` per streamed token
and ``final_us`` once after the last token. A new request also waits ``sched_steps`` engine steps
before it can be scheduled (vLLM's engine core takes new requests between steps and, with async
scheduling, the next step is already scheduled when one finishes): the arrival -> queue delay is
``api_us + sched_steps × (duration of the latest step)``, read when the request arrives.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from blis_gym.errors import ConfigError, read_yaml
from .deployment import Deployment, all_reduce_factor, all_to_all_factor, check_deployment, spans_nodes
from .hardware import load_hardware
from .kv_capacity import validate_tp
from .model_config import load_model

__all__ = ["DEFAULT_INTERCONNECT", "PARAM_NAMES", "CalibratedPhysics", "load_calibration"]

#: Fitted parameters, in order (see the module docstring and docs/fidelity.md).
PARAM_NAMES = ("eta_compute", "eta_attn", "eta_mem", "eta_kv", "step_us", "layer_us", "moe_layer_us", "seq_us",
               "prefill_seq_us", "ar_latency_us", "eta_link", "api_us", "sched_steps", "token_us", "final_us")

#: Per-GPU link bandwidth for tensor-parallel all-reduce, GB/s per direction (datasheets).
DEFAULT_INTERCONNECT = {
    "H100": 450.0,          # NVLink 4: 900 GB/s bidirectional
    "H200": 450.0,
    "A100-80GB": 300.0,     # NVLink 3: 600 GB/s bidirectional
    "L40S": 32.0,           # no NVLink: PCIe Gen4 x16
    "RTX-4090": 32.0,       # PCIe Gen4 x16
    "RTX-PRO-6000": 64.0,   # PCIe Gen5 x16
}

CALIBRATION_FILE = "calibrated.yaml"


@lru_cache(maxsize=4)
def _load_yaml(path: str | None) -> dict:
    if path is None:
        bundled = resources.files("blis_gym").joinpath("data", CALIBRATION_FILE)
        data = yaml.safe_load(bundled.read_text(encoding="utf-8"))
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("calibration", f"no such file: {p}")
        data = read_yaml(p, "calibration")
    if not isinstance(data, dict) or "params" not in data:
        raise ConfigError("calibration", "expected a mapping with `params`")
    return data


def load_calibration(path: str | Path | None = None) -> tuple[dict, dict]:
    """(params, interconnect) from calibrated.yaml (the bundled one by default)."""
    data = _load_yaml(None if path is None else str(path))
    params = _numbers(data["params"], "calibration.params")
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ConfigError("calibration.params", f"missing {', '.join(missing)}")
    inter = {**DEFAULT_INTERCONNECT, **_numbers(data.get("interconnect") or {}, "calibration.interconnect")}
    return params, inter


def _numbers(d, field: str) -> dict[str, float]:
    """A mapping of names to finite numbers (a coefficients file is user input)."""
    if not isinstance(d, dict):
        raise ConfigError(field, "must be a mapping of names to numbers")
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{field}.{k}", f"must be a finite number (got {v!r})")
    return {str(k): float(v) for k, v in d.items()}


class CalibratedPhysics:
    """Step-time model with the interface of blis_gym.sim.latency.step_time (kind "calibrated")."""

    stateful = True      # its queueing overhead reads the latest step: steps are not planned ahead

    kind = "calibrated"

    def __init__(self, model, hw, tp: int = 1, params: Mapping[str, float] | None = None,
                 interconnect: Mapping[str, float] | None = None, dp: int = 1,
                 deployment: Deployment | None = None):
        dep = deployment or Deployment(dp=dp)
        if params is None or interconnect is None:
            p0, i0 = load_calibration()
            params = params if params is not None else p0
            interconnect = interconnect if interconnect is not None else i0
        m = load_model(model)
        hw = load_hardware(hw)
        tp = validate_tp(m, tp)
        check_deployment(m, dep)
        dp = dep.dp
        self.model, self.hw, self.tp, self.dp, self.deployment = m, hw, tp, dp, dep
        self.params = {k: float(params[k]) for k in PARAM_NAMES}
        p = self.params
        link = interconnect.get(hw.name)
        if link is None:
            link = min(interconnect.values()) if interconnect else 32.0

        L, d, H, Hkv, hd = m.num_layers, float(m.hidden), m.num_heads, m.num_kv_heads, float(m.head_dim)
        q_dim, kv_dim = H * hd, Hkv * hd
        wb, bpp = float(m.weight_bytes), float(m.dtype_bytes)
        # MoE layers: HF Llama-4 / Mixtral semantics (layer i is MoE iff (i+1) % step == 0)
        n_moe, n_dense = 0, L
        if m.is_moe:
            s = m.interleave_moe_layer_step
            n_moe = L // s if s > 0 else max(L - m.first_k_dense_replace, 0)
            n_dense = L - n_moe
        I_d = m.intermediate
        I_e = m.moe_intermediate or m.intermediate
        I_sh = m.shared_expert_intermediate
        if m.is_moe and m.model_type.startswith("llama4") and not I_sh:
            I_sh = I_e                     # Llama-4 MoE layers carry one always-on shared expert
        N, k = m.num_experts, m.experts_per_token

        attn_params = d * (2 * q_dim + 2 * kv_dim)             # q, o, k, v projections
        dense_mlp = 3 * d * I_d
        expert = 3 * d * I_e
        shared = 3 * d * I_sh
        # FLOPs per token (per GPU); the LM head is charged per sequence
        self._flops_tok = 2 * (L * attn_params + n_dense * dense_mlp + n_moe * (k * expert + shared)) / tp
        self._flops_seq = 2 * d * m.vocab / tp
        # bytes read once per step (per GPU)
        self._w_fixed = (L * attn_params + n_dense * dense_mlp + n_moe * shared) * wb / tp \
            + m.vocab * d * bpp / tp                            # LM head kept in 16-bit
        self._w_expert = n_moe * expert * wb / tp               # per distinct expert touched
        if dp > 1:
            self._w_expert /= dp                                # the experts are spread over dp x tp GPUs
        self._N, self._k = N, k
        self._neff: dict[int, float] = {}

        P = hw.peak_tflops(wb) * 1e6 * p["eta_compute"]        # FLOP per µs
        Pa = hw.tflops_bf16 * 1e6 * p["eta_attn"]               # attention runs in 16-bit
        W = hw.hbm_tb_s * 1e6 * p["eta_mem"]                    # bytes per µs
        self._P, self._Pa, self._W = P, Pa, W
        self._Wkv = hw.hbm_tb_s * 1e6 * p["eta_kv"]
        self._att_ctx = 4 * L * (H / tp) * hd                    # FLOPs per (query token x context token)
        if m.is_hybrid:
            self._att_ctx = 4 * m.attention_layers * (H / tp) * hd  # linear-attention layers read no context
        self._kv_tok = m.kv_bytes_per_token(tp, dep.kv_cache_bytes)  # KV bytes per token per GPU
        eta_link = max(p["eta_link"], 1e-6)
        if tp > 1:
            bw = link * 1e3 * eta_link                           # bytes per µs
            self._ar_fixed = 2 * L * p["ar_latency_us"]
            self._ar_tok = 2 * L * 2 * (tp - 1) / tp * d * bpp / bw
            if spans_nodes(tp, dep, hw):      # hierarchical: a share crosses the nodes' network
                self._ar_fixed += 2 * L * hw.internode_latency_us
                self._ar_tok = 2 * L * all_reduce_factor(tp, dep, hw) * d * bpp / bw
        else:
            self._ar_fixed = self._ar_tok = 0.0
        self._a2a_tok = 0.0
        if m.is_moe and (dp > 1 or (dep.expert_parallel and tp > 1)):
            # dispatch + combine per MoE layer. With expert parallelism a token goes once to each
            # other GPU holding one of its top-k experts, on average (G-1)(1 - (1 - 1/G)^k) GPUs
            # (experts spread evenly); without, it is all-gathered and reduce-scattered over the
            # group ((G-1)/G of it per GPU). A rank's tokens leave through its tp GPUs' links.
            G = tp * dp
            reach = G * (1 - (1 - 1 / G) ** k) if dep.expert_parallel else 1.0
            if dp == 1:                        # the MoE layers all-to-all instead of all-reducing
                self._ar_tok *= (2 * L - n_moe) / (2 * L)
                self._ar_fixed *= (2 * L - n_moe) / (2 * L)
            a2a_lat = p["ar_latency_us"] + (hw.internode_latency_us if spans_nodes(G, dep, hw) else 0.0)
            self._ar_fixed += 2 * n_moe * a2a_lat
            self._a2a_tok = (2 * n_moe * reach * all_to_all_factor(G, dep, hw) * d * bpp / tp
                             / (link * 1e3 * eta_link))
        self._w = dep.verify_tokens                              # tokens verified per decoding sequence
        self._over = p["step_us"] + p["layer_us"] * L + p["moe_layer_us"] * n_moe + self._ar_fixed
        self._seq_us = p["seq_us"]
        self._pf_seq_us = p["prefill_seq_us"]
        self._api_us = p["api_us"]
        self._sched_steps = p["sched_steps"]
        self._last_step = 0
        self.output_token_us = int(p["token_us"])
        self.post_decode_us = int(p["final_us"])
        self._dc_cache: dict[int, tuple[float, float]] = {}

    @property
    def queueing_us(self) -> int:
        """Arrival -> engine queue delay for a request arriving now (read at dispatch)."""
        return int(self._api_us + self._sched_steps * self._last_step)

    def queueing_time_us(self, input_len: int) -> int:
        return self.queueing_us

    def __repr__(self) -> str:
        return f"CalibratedPhysics(model={self.model.name!r}, hw={self.hw.name!r}, tp={self.tp})"

    def _weights(self, T: int) -> float:
        if not self._w_expert:
            return self._w_fixed
        ne = self._neff.get(T)
        if ne is None:
            N, k = self._N, self._k
            ne = N * (1.0 - (1.0 - k / N) ** T)
            if len(self._neff) < 65536:
                self._neff[T] = ne
        return self._w_fixed + self._w_expert * ne

    def _time(self, T: int, B: int, n_pf: int, att_flops: float, ctx_read: float) -> int:
        dp = self.dp
        if dp > 1:
            return self._rank_time(T, B, n_pf, att_flops, ctx_read)
        comp = (self._flops_tok * T + self._flops_seq * B) / self._P
        mem = self._weights(T) / self._W
        gemm = max(mem, comp)
        step = (gemm + att_flops / self._Pa + self._kv_tok * ctx_read / self._Wkv + self._ar_tok * T
                + self._over + self._seq_us * B + self._pf_seq_us * n_pf)
        if self._a2a_tok:                     # expert parallelism inside the TP group
            step += self._a2a_tok * T
        s = int(step)
        s = max(1, s)
        self._last_step = s
        return s

    def _rank_time(self, T: int, B: int, n_pf: int, att_flops: float, ctx_read: float) -> int:
        """A DP group's lockstep step: one rank's share (1/dp of the group's batch) of the compute,
        the KV reads and the overheads; the expert weights every token of the group touches (the
        experts live spread over the group); the dispatch/combine all-to-all."""
        dp = self.dp
        t, b = T / dp, B / dp
        comp = (self._flops_tok * t + self._flops_seq * b) / self._P
        gemm = max(self._weights(T) / self._W, comp)
        step = (gemm + att_flops / dp / self._Pa + self._kv_tok * ctx_read / dp / self._Wkv
                + (self._ar_tok + self._a2a_tok) * t + self._over + self._seq_us * b + self._pf_seq_us * n_pf / dp)
        s = max(1, int(step))
        self._last_step = s
        return s

    def step_time_us(self, prefill: Iterable[Sequence[int]] = (), num_decode: int = 0,
                     decode_context: int = 0) -> int:
        T = num_decode * self._w
        n_pf = 0
        att = 0.0
        ctx = float(decode_context)
        for t, computed, _prompt_len in prefill:
            if t <= 0:
                continue
            T += t
            n_pf += 1
            att += t * (computed + t / 2.0)
            ctx += computed
        if T == 0:
            return 1
        return self._time(T, n_pf + num_decode, n_pf, self._att_ctx * att, ctx)

    def decode_step_us(self, num_decode: int, decode_context: int) -> int:
        if num_decode <= 0:
            return 1
        return self._time(num_decode * self._w, num_decode, 0, 0.0, float(decode_context))
