"""Filters: callables (req, cands, ctx, explore) -> the candidates kept, applied in order after
the implicit availability filter. A filter that reads prefix scores says so with
`uses_prefix_scorer`; the router hands it its prefix scorer (`scorer`)."""
from __future__ import annotations

from typing import Callable

from ..params import number, take_params
from .scorers import PrefixCacheScorer


class RoleFilter:
    def __init__(self, roles: tuple[str, ...]):
        self.roles = roles

    def __call__(self, req, cands, ctx, explore):
        roles = self.roles
        return [p for p in cands if p.role in roles]


class UtilizationFilter:
    PARAMS = {"headroom": 0.0, "queue_depth_threshold": 5, "kv_cache_util_threshold": 0.8}

    def __init__(self, params: dict, field: str):
        p = take_params(field, params, self.PARAMS)
        h = number(f"{field}.headroom", p["headroom"], lo=0)
        qd = number(f"{field}.queue_depth_threshold", p["queue_depth_threshold"], lo=0, lo_open=True)
        kv = number(f"{field}.kv_cache_util_threshold", p["kv_cache_util_threshold"], lo=0, lo_open=True)
        self.qmax = qd * (1.0 + h)
        self.kvmax = min(1.0, kv * (1.0 + h))

    def __call__(self, req, cands, ctx, explore):
        q, kv = self.qmax, self.kvmax
        out = [p for p in cands if p.waiting < q and p.kv_usage < kv]
        return out if out else cands                 # fails open


class PrefixAffinityFilter:
    """Keeps pods whose prefix score >= threshold; if none pass, keeps
    all. With probability exploration_probability the gate is skipped. TTFT load gate: if the best
    sticky pod's estimated TTFT (in_flight_tokens / peak_prefill_throughput) exceeds the best
    non-sticky pod's by more than max_ttft_penalty_ms, keeps all."""
    PARAMS = {"threshold": 0.8, "exploration_probability": 0.0, "max_ttft_penalty_ms": 18000.0,
              "peak_prefill_throughput": 15928.0}
    uses_prefix_scorer = True

    def __init__(self, params: dict, field: str):
        p = take_params(field, params, self.PARAMS)
        self.threshold = number(f"{field}.threshold", p["threshold"], lo=0, hi=1)
        self.explore = number(f"{field}.exploration_probability", p["exploration_probability"], lo=0, hi=1)
        self.penalty = number(f"{field}.max_ttft_penalty_ms", p["max_ttft_penalty_ms"], lo=0)
        self.peak = number(f"{field}.peak_prefill_throughput", p["peak_prefill_throughput"], lo=0, lo_open=True)
        self.scorer: PrefixCacheScorer | None = None  # the router's prefix scorer, set by the router

    def __call__(self, req, cands, ctx, explore):
        if explore and self.explore > 0.0 and ctx.rng.random() < self.explore:
            return cands
        scores = self.scorer.score(req, cands, ctx)
        t = self.threshold
        keep = [p for p, s in zip(cands, scores) if s >= t]
        if not keep or len(keep) == len(cands):
            return cands
        rest = [p for p, s in zip(cands, scores) if s < t]
        best_sticky = min(p.in_flight_tokens for p in keep)
        best_other = min(p.in_flight_tokens for p in rest)
        if (best_sticky - best_other) / self.peak * 1000.0 > self.penalty:
            return cands
        return keep


def make_filter(name: str, params: dict, field: str):
    """A filter by its registry name (None for `available`, always applied first anyway)."""
    if name == "decode-filter":
        take_params(field, params, {})
        return RoleFilter(("decode", "both", "prefill-decode", ""))
    if name == "prefill-filter":
        take_params(field, params, {})
        return RoleFilter(("prefill", "both", "prefill-decode"))
    if name == "available":
        take_params(field, params, {})
        return None
    if name == "utilization-detector":
        return UtilizationFilter(params, field)
    if name == "prefix-cache-affinity":
        return PrefixAffinityFilter(params, field)
    raise AssertionError(name)  # pragma: no cover


FILTERS: dict[str, Callable] = {
    "decode-filter": make_filter, "prefill-filter": make_filter, "available": make_filter,
    "utilization-detector": make_filter, "prefix-cache-affinity": make_filter,
}
FILTER_ALIASES: dict[str, str] = {
    "prefix-cache-affinity-filter": "prefix-cache-affinity", "utilization-filter": "utilization-detector",
    "available-filter": "available",
}
