"""Step-time models: BLIS "trained-physics" (default) and "roofline" (BLIS ``sim/latency/
trained_physics_model.go`` and ``roofline.go``, https://github.com/inference-sim/inference-sim).

Both return integer microseconds for one engine step, ``max(1, int(estimate))``, and expose the
per-request framework overheads (``queueing_us``, ``output_token_us``, ``post_decode_us``).

Batch description used by :meth:`step_time_us`:
  * ``prefill``: iterable of ``(new_tokens, computed_before, prompt_len)`` for each request that is
    prefilling (possibly a chunk) in this step;
  * ``num_decode``: number of requests decoding one token;
  * ``decode_context``: sum over the decoding requests of the tokens already in their context.
Both models are linear in the decode aggregates, so :meth:`decode_step_us` evaluates the decode-only
case from constants precomputed in ``__init__`` (simulator hot path).
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

import yaml

from blis_gym.errors import ConfigError

from .deployment import DEFAULT, Deployment, all_reduce_factor, all_to_all_factor, check_deployment, spans_nodes
from .hardware import Hardware, load_hardware
from .kv_capacity import validate_tp
from .model_config import ModelConfig, load_model

__all__ = ["TrainedPhysics", "Roofline", "default_coefficients"]



@lru_cache(maxsize=1)
def _coefficients() -> tuple[tuple[float, ...], tuple[float, ...]]:
    text = resources.files("blis_gym").joinpath("data", "coefficients.yaml").read_text(encoding="utf-8")
    tp = yaml.safe_load(text)["trained_physics"]
    return tuple(float(a) for a in tp["alpha"]), tuple(float(b) for b in tp["beta"])


def default_coefficients() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(alpha, beta) of the bundled trained-physics fit (BLIS iter29)."""
    return _coefficients()


def _check_alpha(alpha) -> tuple[float, float, float]:
    try:
        a = tuple(float(x) for x in alpha)
    except (TypeError, ValueError):
        raise ConfigError("alpha", f"expected 3 numbers, got {alpha!r}") from None
    if len(a) != 3 or any(x < 0 or x != x for x in a):
        raise ConfigError("alpha", f"expected 3 non-negative numbers, got {alpha!r}")
    return a  # type: ignore[return-value]


def _common(model, hw, tp, dp, deployment):
    model = load_model(model)
    hw = load_hardware(hw)
    tp = validate_tp(model, tp)
    dep = deployment or (Deployment(dp=dp) if dp != 1 else DEFAULT)
    check_deployment(model, dep)
    return model, hw, tp, dep


class _StepModelBase:
    kind = ""
    model: ModelConfig
    hw: Hardware
    tp: int
    queueing_us: int
    output_token_us: int
    post_decode_us: int

    def queueing_time_us(self, input_len: int) -> int:
        """Arrival -> queued delay for a request with ``input_len`` prompt tokens."""
        return self.queueing_us

    def decode_run_us(self, num_decode: int, decode_context: int, steps: int) -> list[int]:
        """Durations of the `steps` decode-only steps that follow one of this batch: each adds a
        token per request, so the j-th sees decode_context + j * num_decode tokens."""
        step = self.decode_step_us
        return [step(num_decode, decode_context + j * num_decode) for j in range(1, steps + 1)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model.name!r}, hw={self.hw.name!r}, tp={self.tp})"


class TrainedPhysics(_StepModelBase):
    """BLIS trained-physics step time: physics basis terms times fitted betas, plus overheads."""

    kind = "trained-physics"
    #: BLIS computes every attention size from hidden / heads; a subclass may use the config's
    #: head_dim instead (they differ for Mistral-Nemo, Qwen3-32B, ...)
    config_head_dim = False

    def __init__(self, model: "ModelConfig | str", hw: "Hardware | str", tp: int = 1,
                 alpha: "Sequence[float] | None" = None, beta: "Sequence[float] | None" = None,
                 dp: int = 1, deployment: Deployment | None = None):
        model, hw, tp, dep = _common(model, hw, tp, dp, deployment)
        dp = dep.dp
        self.model, self.hw, self.tp, self.dp, self.deployment = model, hw, tp, dp, dep
        a_def, b_def = _coefficients()
        self.alpha = _check_alpha(a_def if alpha is None else alpha)
        try:
            b = [float(x) for x in (b_def if beta is None else beta)]
        except (TypeError, ValueError):
            raise ConfigError("beta", f"expected 7 to 11 numbers, got {beta!r}") from None
        if not 7 <= len(b) <= 11:
            raise ConfigError("beta", f"expected 7 to 11 numbers, got {len(b)}")
        self.beta = tuple(b)
        self.queueing_us = int(self.alpha[0])
        self.post_decode_us = int(self.alpha[1])
        self.output_token_us = int(self.alpha[2])

        # Coefficients: b1a, b2a, b3, b4, b5, b6, b7, [b8], [b1b], [b2b], [bEP]
        self._b1a, self._b2a, self._b3, self._b4, self._b5, self._b6, self._b7 = b[:7]
        self._b8 = b[7] if len(b) > 7 else 0.0
        self._pf_split = len(b) >= 9      # else prefill term = b1 * max(compute, kv)
        self._dc_split = len(b) >= 10     # else decode term  = b2 * max(compute, kv)
        self._b1b = b[8] if len(b) > 8 else 0.0
        self._b2b = b[9] if len(b) > 9 else 0.0
        self._bep = b[10] if len(b) > 10 else self._b4

        m = model
        L, d, H, Hkv = m.num_layers, float(m.hidden), m.num_heads, m.num_kv_heads
        d_h = float(m.head_dim) if self.config_head_dim else d / H     # BLIS: always hidden/heads
        d_kv = Hkv * d_h
        n_moe, n_dense = m.moe_layer_split
        G = tp * dp if m.is_moe else tp
        tpdp = tp * dp
        hP = H / tp
        bpp = float(m.dtype_bytes)
        wbpp = m.weight_bytes
        P = hw.peak_tflops(wbpp) * 1e6      # FLOP per us
        W = hw.hbm_tb_s * 1e6               # bytes per us
        k, N = m.experts_per_token, m.num_experts
        I_d, I_m, I_s = m.intermediate, m.moe_intermediate, m.shared_expert_intermediate
        self._L, self._d_h, self._hP, self._P, self._W, self._dp = L, d_h, hP, P, W, dp

        # FLOPs per token for projections and FFN (identical for prefill and decode tokens)
        self._proj_tok = L * 2 * d * (2 * d + 2 * d_kv) / tpdp
        ffn = n_dense * 6 * d * I_d / tpdp
        if m.is_moe:
            ffn += n_moe * (k / G) * 6 * d * I_m + n_moe * 6 * d * I_s / tpdp
        self._ffn_tok = ffn
        self._kv_tok = L * 2 * (d_kv / tpdp) * 2 / W          # KV bytes-time per token (write or read)
        La = L
        if m.is_hybrid or dep.kv_cache_bytes:
            # only full-attention layers hold per-token KV; an fp8 cache moves half the bytes
            kvb = dep.kv_cache_bytes or 2
            self._kv_tok = m.kv_layers * 2 * (d_kv / tpdp) * kvb / W
            La = m.attention_layers
        self._La = La                                         # layers whose attention reads the context
        w = L * d * (2 * d + 2 * d_kv) * wbpp / tp + n_dense * 3 * d * I_d * wbpp / tp
        if m.is_moe:
            w += n_moe * (N / G) * 3 * d * I_m * wbpp + n_moe * 3 * d * I_s * wbpp / tp
        self._t_weight = w / W
        # expert parallelism inside one TP group (dp 1): the MoE layers all-to-all instead of all-reducing
        ep_tp = m.is_moe and dep.expert_parallel and dp == 1 and tp > 1
        u = L + n_dense + (n_moe if (m.is_moe and dp == 1 and tp > 1 and not ep_tp) else 0)
        self._tp_tok = u * d * bpp * 2 * (tp - 1) / tp / W / dp  # all-reduce time per token in step
        self._net_us = 0.0                                        # collective start-up latency per step
        if spans_nodes(tp, dep, hw):
            # hierarchical all-reduce: part of it crosses the nodes at the network's speed
            self._tp_tok = u * d * bpp * all_reduce_factor(tp, dep, hw) / W / dp
            self._net_us = 2 * L * hw.internode_latency_us
        self._disp_tok = 0.0
        if m.is_moe and (dp > 1 or ep_tp):
            # expert dispatch + combine per MoE layer (BLIS T_disp): all-to-all to the top-k experts'
            # GPUs with expert parallelism, all-gather / reduce-scatter without
            fan = k if dep.expert_parallel else 1
            self._disp_tok = n_moe * fan * (G - 1) / G * 2 * d * bpp / W / dp
            if spans_nodes(G, dep, hw):          # the tokens for other nodes' experts cross the network
                self._disp_tok = n_moe * fan * all_to_all_factor(G, dep, hw) * 2 * d * bpp / W / dp
                self._net_us += 2 * n_moe * hw.internode_latency_us
        self._w = dep.verify_tokens
        interleaved = m.is_moe and m.interleave_moe_layer_step > 0
        self._const = self._b3 * self._t_weight + self._b5 * L + self._b7 + (
            self._b8 * n_moe if interleaved else 0.0)
        if self._net_us:
            self._const += self._net_us

        # decode-only fast path: step = c0 + c_req * num_decode + c_ctx * decode_context
        w = self._w                   # tokens each decoding sequence verifies (1 + draft tokens)
        dc_comp_req = (self._proj_tok + self._ffn_tok) / P
        dc_comp_ctx = La * 4 * hP * d_h / dp / P
        if w > 1:
            dc_comp_req *= w          # every verified token goes through the projections and FFN
            dc_comp_ctx *= w          # and attends to the whole context
        if self._dc_split:
            if w == 1 and not self._disp_tok:
                self._dc_req = (self._b2a * dc_comp_req + self._b2b * self._kv_tok
                                + self._b4 * self._tp_tok + self._b6)
            else:
                self._dc_req = (self._b2a * dc_comp_req + (self._b2b * self._kv_tok + self._b4 * self._tp_tok
                                                           + self._bep * self._disp_tok) * w + self._b6)
            self._dc_ctx = self._b2a * dc_comp_ctx + self._b2b * self._kv_tok
        self._dc_comp_req, self._dc_comp_ctx = dc_comp_req, dc_comp_ctx

    # reference implementation (general batch)
    def step_time_us(self, prefill: Iterable[Sequence[int]] = (), num_decode: int = 0,
                     decode_context: int = 0) -> int:
        T_p = 0
        n_pf = 0
        att = 0.0
        for t, _computed, prompt_len in prefill:
            if t <= 0:
                continue
            T_p += t
            n_pf += 1
            att += 4 * self._hP * t * (prompt_len + t / 2) * self._d_h
        w = self._w
        T_d = num_decode * w if w > 1 else num_decode      # decode tokens verified in the step
        C = decode_context
        B = n_pf + num_decode
        if B == 0:
            return 1
        L, P, La = self._L, self._P, self._La
        pf_comp = (self._proj_tok * T_p + La * att / self._dp + self._ffn_tok * T_p) / P
        pf_kv = self._kv_tok * T_p
        dc_att = La * 4 * self._hP * C * self._d_h / self._dp
        if w > 1:
            dc_att *= w
        dc_comp = (self._proj_tok * T_d + dc_att + self._ffn_tok * T_d) / P
        dc_kv = self._kv_tok * (C + T_d)
        if self._pf_split:
            pf = self._b1a * pf_comp + self._b1b * pf_kv
        else:
            pf = self._b1a * max(pf_comp, pf_kv)
        if self._dc_split:
            dc = self._b2a * dc_comp + self._b2b * dc_kv
        else:
            dc = self._b2a * max(dc_comp, dc_kv)
        step = (pf + dc + self._b3 * self._t_weight + self._b4 * self._tp_tok * (T_p + T_d)
                + self._b5 * L + self._b6 * B + self._b7)
        if self._disp_tok or self._net_us:
            step += self._bep * self._disp_tok * (T_p + T_d) + self._net_us
        if self._b8 and self.model.is_moe and self.model.interleave_moe_layer_step > 0:
            step += self._b8 * self.model.moe_layer_split[0]
        s = int(step)
        return s if s > 1 else 1

    def decode_step_us(self, num_decode: int, decode_context: int) -> int:
        if num_decode <= 0:
            return 1
        if self._dc_split:
            step = self._const + self._dc_req * num_decode + self._dc_ctx * decode_context
        else:
            w = self._w
            comp = self._dc_comp_req * num_decode + self._dc_comp_ctx * decode_context
            kv = self._kv_tok * (decode_context + num_decode * w)
            if w == 1 and not self._disp_tok:
                step = (self._const + self._b2a * max(comp, kv)
                        + (self._b4 * self._tp_tok + self._b6) * num_decode)
            else:
                step = (self._const + self._b2a * max(comp, kv) + self._b6 * num_decode
                        + (self._b4 * self._tp_tok + self._bep * self._disp_tok) * num_decode * w)
        s = int(step)
        return s if s > 1 else 1

    def decode_run_us(self, num_decode: int, decode_context: int, steps: int) -> list[int]:
        if num_decode <= 0 or not self._dc_split:
            return super().decode_run_us(num_decode, decode_context, steps)
        # decode_step_us term by term (same float operations, so the same integers)
        a = self._const + self._dc_req * num_decode
        b = self._dc_ctx
        run = [int(a + b * (decode_context + j * num_decode)) for j in range(1, steps + 1)]
        if run and min(run) < 1:
            run = [s if s > 1 else 1 for s in run]
        return run


class Roofline(_StepModelBase):
    """BLIS roofline step time: max(compute at MFU, bytes / HBM bandwidth) over the whole step."""

    kind = "roofline"

    def __init__(self, model: "ModelConfig | str", hw: "Hardware | str", tp: int = 1,
                 alpha: Sequence[float] = (0.0, 0.0, 0.0), dp: int = 1, deployment: Deployment | None = None):
        model, hw, tp, dep = _common(model, hw, tp, dp, deployment)
        # a roofline has no communication terms: TP all-reduces, expert all-to-alls and
        # inter-node links are not in it; data-parallel ranks share the batch and the experts
        self.model, self.hw, self.tp, self.dp, self.deployment = model, hw, tp, dep.dp, dep
        self.alpha = _check_alpha(alpha)
        # BLIS roofline semantics: queueing = a0 + a1 * input_len, per-output-token = a2, no post-decode.
        self.queueing_us = int(self.alpha[0])
        self.output_token_us = int(self.alpha[2])
        self.post_decode_us = 0

        m = model
        L, d, H, Hkv = m.num_layers, float(m.hidden), m.num_heads, m.num_kv_heads
        d_h = d / H
        d_kv = Hkv * d_h
        n_moe, n_dense = m.moe_layer_split
        k, N = m.experts_per_token, m.num_experts
        I_d, I_m = m.intermediate, m.moe_intermediate
        bpp = float(m.dtype_bytes)
        wbpp = m.weight_bytes
        peak = hw.peak_tflops(wbpp) * 1e12
        self._L, self._H, self._d, self._d_h, self._tp = L, H, d, d_h, tp
        self._bw = hw.hbm_tb_s * 1e12
        self._pf_rate = peak * hw.mfu_prefill
        self._dc_rate = peak * hw.mfu_decode
        # FLOPs per new token that do not depend on context (projections + MLP + vector 2td)
        self._tok_flops = (L * (2 * (d * d + 2 * d * d_kv) + 2 * d * d)
                           + n_dense * 2 * (2 * d * I_d) + n_moe * 2 * (2 * d * I_m) * k
                           + L * 2 * d)
        self._ctx_flops = L * 4 * H * d_h + L * 5 * H     # per (token x context) pair
        kv_tok_bytes = 2 * L * Hkv * d_h * bpp
        if m.is_hybrid or dep.kv_cache_bytes:
            La = m.attention_layers                       # linear-attention layers read no context
            self._ctx_flops = La * 4 * H * d_h + La * 5 * H
            kv_tok_bytes = 2 * m.kv_layers * Hkv * d_h * (dep.kv_cache_bytes or bpp)
        self._w = dep.verify_tokens
        self._dyn_new = (kv_tok_bytes + L * d * bpp) / tp  # per new token (KV write + activations)
        self._dyn_ctx = kv_tok_bytes / tp                  # per context token read
        self._w_fixed = (L * (d * (d + 2 * d_kv) + d * d) + n_dense * 2 * d * I_d) * wbpp / tp
        self._w_expert = n_moe * 2 * d * I_m * wbpp / tp   # times effective #experts touched
        self._N, self._k = N, k
        self._neff_cache: dict[int, float] = {}
        # decode fast path, per request and per context token
        self._dc_comp_req = self._tok_flops / tp / self._dc_rate
        self._dc_comp_ctx = self._ctx_flops / tp / self._dc_rate

    def queueing_time_us(self, input_len: int) -> int:
        return int(self.alpha[0] + self.alpha[1] * input_len)

    def _weights(self, new_tokens: int) -> float:
        if not self._w_expert:
            return self._w_fixed
        ne = self._neff_cache.get(new_tokens)
        if ne is None:
            N, k = self._N, self._k
            ne = N * (1 - ((N - k) / N) ** new_tokens)
            if len(self._neff_cache) < 65536:
                self._neff_cache[new_tokens] = ne
        return self._w_fixed + self._w_expert * ne

    def step_time_us(self, prefill: Iterable[Sequence[int]] = (), num_decode: int = 0,
                     decode_context: int = 0) -> int:
        tp = self._tp
        compute = 0.0
        dyn = 0.0
        T = 0
        for t, s, _prompt_len in prefill:
            if t <= 0:
                continue
            T += t
            ctx = s + (t - 1) / 2 if t > 1 else s
            flops = t * self._tok_flops + t * ctx * self._ctx_flops
            compute += flops / tp / self._pf_rate
            dyn += self._dyn_new * t + self._dyn_ctx * s
        if num_decode > 0:
            w = self._w                                   # verified tokens per decoding sequence
            T += num_decode * w
            compute += (self._dc_comp_req * num_decode + self._dc_comp_ctx * decode_context) * (w if w > 1 else 1)
            dyn += self._dyn_new * num_decode * w + self._dyn_ctx * decode_context
        if T == 0:
            return 1
        if self.dp > 1:
            return self._rank_us(T, compute, dyn)
        memory = (self._weights(T) + dyn) / self._bw
        s_us = int(max(compute, memory) * 1e6)
        return s_us if s_us > 1 else 1

    def _rank_us(self, T: int, compute: float, dyn: float) -> int:
        """One DP rank's lockstep step: its share of the group's compute and per-token bytes, the
        shared weights, and its share of the experts the group's tokens touch."""
        dp = self.dp
        weights = self._w_fixed + (self._weights(T) - self._w_fixed) / dp
        memory = (weights + dyn / dp) / self._bw
        s_us = int(max(compute / dp, memory) * 1e6)
        return s_us if s_us > 1 else 1

    def decode_step_us(self, num_decode: int, decode_context: int) -> int:
        if num_decode <= 0:
            return 1
        if self._w > 1 or self.dp > 1:
            return self.step_time_us((), num_decode, decode_context)
        compute = self._dc_comp_req * num_decode + self._dc_comp_ctx * decode_context
        memory = (self._weights(num_decode) + self._dyn_new * num_decode
                  + self._dyn_ctx * decode_context) / self._bw
        s_us = int((compute if compute > memory else memory) * 1e6)
        return s_us if s_us > 1 else 1

