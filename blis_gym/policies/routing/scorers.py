"""Scorers of a weighted profile: one float per candidate pod (llm-d's EPP scorer plugins).

A scorer returns any range; the router clamps each score to [0, 1] unless the scorer is
`bounded` (it guarantees [0, 1] itself). Stateful scorers learn from `observe()` (the pod the
caller actually used) and drop a pod's state in `forget()`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from blis_gym.errors import ConfigError
from blis_gym.sim.cluster.signals import load
from blis_gym.sim.engine.request import BLOCK_SIZE

from ..params import number, take_params
from ..registry import register, table
from .prefix import PrefixIndex


class Scorer:
    """Base class. `score` returns one float per candidate (any range: the router clamps it to
    [0, 1] unless `bounded` is True, i.e. the scorer guarantees [0, 1] itself)."""
    name = "scorer"
    bounded = False
    PARAMS: dict[str, Any] = {}

    def __init__(self, params: dict | None = None, field: str = "scorer"):
        self.params = take_params(f"{field}", params or {}, self.PARAMS)
        self.field = field

    @classmethod
    def from_params(cls, params: dict, field: str) -> "Scorer":
        return cls(params, field)

    def score(self, req, cands: list, ctx) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, req, pod_index: int, ctx) -> None:
        pass

    def release(self, req, pod_index: int) -> None:
        pass

    def forget(self, pod_index: int) -> None:
        pass


def minmax(vals: list, invert: bool = False) -> list[float]:
    """(v - min)/(max - min), or (max - v)/(max - min) inverted; all equal -> 1."""
    hi = max(vals)
    lo = min(vals)
    if hi == lo:
        return [1.0] * len(vals)
    d = float(hi - lo)
    if invert:
        return [(hi - v) / d for v in vals]
    return [(v - lo) / d for v in vals]


@register("scorer", "queue")
class QueueScorer(Scorer):
    """(maxQ - q)/(maxQ - minQ) over the candidates on scraped waiting; all equal -> 1."""
    name = "queue"
    bounded = True

    def score(self, req, cands, ctx):
        return minmax([p.waiting for p in cands], invert=True)


@register("scorer", "running-requests")
class RunningRequestsScorer(QueueScorer):
    """The queue formula on scraped running."""
    name = "running-requests"

    def score(self, req, cands, ctx):
        return minmax([p.running for p in cands], invert=True)


@register("scorer", "kv-cache-utilization")
class KVUtilizationScorer(Scorer):
    """1 - kv_usage."""
    name = "kv-cache-utilization"
    bounded = True

    def score(self, req, cands, ctx):
        return [(1.0 - u if u < 1.0 else 0.0) if u > 0.0 else 1.0 for u in [p.kv_usage for p in cands]]


@register("scorer", "load-aware")
class LoadAwareScorer(Scorer):
    """q = 0 -> 0.5; q >= T -> 0; else 0.5 (1 - q/T)."""
    name = "load-aware"
    bounded = True
    PARAMS = {"threshold": 128}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.t = number(f"{field}.threshold", self.params["threshold"], lo=0, lo_open=True)

    def score(self, req, cands, ctx):
        t = self.t
        return [0.5 if q <= 0 else (0.0 if q >= t else 0.5 * (1.0 - q / t)) for q in [p.waiting for p in cands]]


@register("scorer", "active-request")
class ActiveRequestScorer(Scorer):
    """EPP in-flight requests n: n <= idle -> 1; else (maxN - n)/maxN * max_busy_score."""
    name = "active-request"
    bounded = True
    PARAMS = {"idle_threshold": 0, "max_busy_score": 1.0}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.idle = number(f"{field}.idle_threshold", self.params["idle_threshold"], lo=0, integer=True)
        self.busy = number(f"{field}.max_busy_score", self.params["max_busy_score"], lo=0, hi=1)

    def score(self, req, cands, ctx):
        ns = [p.in_flight for p in cands]
        mx = max(ns)
        idle = self.idle
        k = self.busy / mx if mx > 0 else 0.0
        return [1.0 if n <= idle else (mx - n) * k for n in ns]


@register("scorer", "token-load")
class TokenLoadScorer(Scorer):
    """1 - min(1, in_flight_tokens / Q)."""
    name = "token-load"
    bounded = True
    PARAMS = {"queue_threshold_tokens": 4_194_304}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.q = number(f"{field}.queue_threshold_tokens", self.params["queue_threshold_tokens"], lo=0,
                        lo_open=True)

    def score(self, req, cands, ctx):
        q = self.q
        return [0.0 if t >= q else 1.0 - t / q for t in [p.in_flight_tokens for p in cands]]


@register("scorer", "load-balance")
class LoadBalanceScorer(Scorer):
    """BLIS extra: 1 / (1 + load)."""
    name = "load-balance"
    bounded = True

    def score(self, req, cands, ctx):
        return [1.0 / (1 + load(p)) for p in cands]


@register("scorer", "prefix-cache")
class PrefixCacheScorer(Scorer):
    """llm-d prefix-cache-scorer: score = (1-w)·match/total + w·min(1, match·blockSize/scale)²
    over its `PrefixIndex` (mode, block_size, lru_capacity, max_prefix_blocks: see
    `blis_gym.policies.routing.prefix`). In precise mode with normalize "minmax": the legacy
    (c - min)/(max - min), all equal -> 1."""
    name = "prefix-cache"
    bounded = True
    PARAMS = {"mode": "approximate", "block_size": 64, "lru_capacity": 31250, "max_prefix_blocks": 2048,
              "normalize": "ratio", "match_length_weight": 0.0, "match_length_scale_tokens": 8192}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        p = self.params
        self.index = PrefixIndex(p["mode"], p["block_size"], p["lru_capacity"], p["max_prefix_blocks"], field)
        self.precise = self.index.precise
        if p["normalize"] not in ("ratio", "minmax"):
            raise ConfigError(f"{field}.normalize", f"unknown {p['normalize']!r}; allowed: minmax, ratio")
        self.minmax = p["normalize"] == "minmax"
        self.len_w = number(f"{field}.match_length_weight", p["match_length_weight"], lo=0, hi=1)
        self.len_scale = number(f"{field}.match_length_scale_tokens", p["match_length_scale_tokens"], lo=0,
                                lo_open=True)

    def score(self, req, cands, ctx):
        index = self.index
        ms = index.matches(req, cands, ctx)
        if self.precise and self.minmax:
            return minmax(ms)
        total = index.total_blocks(req)
        if total <= 0:
            return [0.0] * len(cands)
        if self.precise:
            ms = [m if m < total else total for m in ms]
        inv = 1.0 / total
        w = self.len_w
        if w == 0.0:
            return [m * inv for m in ms]
        k = index.match_tokens / self.len_scale
        return [(1.0 - w) * m * inv + w * min(1.0, m * k) ** 2 for m in ms]

    def observe(self, req, pod_index, ctx):
        self.index.observe(req, pod_index)

    def forget(self, pod_index):
        self.index.forget(pod_index)


class PreciseProbe:
    """Warm/cold test on the real KV state (no-hit-lru when the profile has no prefix index)."""

    def is_warm(self, req, cands, ctx) -> bool:
        if req.input_len < BLOCK_SIZE:
            return False
        cb = ctx.cached_blocks
        return any(cb(req, p.index) > 0 for p in cands)


@register("scorer", "no-hit-lru")
class NoHitLRUScorer(Scorer):
    """Cold request (no candidate holds any prefix block): never-used pods first (candidate
    order), then least-recently-used first; score 1 - rank/(N-1). Warm request: 0.5 for all.
    observe() moves the chosen pod to MRU for cold requests only."""
    name = "no-hit-lru"
    bounded = True
    PARAMS = {"lru_size": 1024}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.size = number(f"{field}.lru_size", self.params["lru_size"], lo=1, integer=True)
        self._lru: OrderedDict = OrderedDict()      # pod index -> None, LRU first
        self.probe: PrefixIndex | PreciseProbe = PreciseProbe()   # the router sets its prefix index
        self._creq = None                            # memo of the last cold/warm verdict
        self._cold = False
        self._seen: list[int] = []                   # candidate indices of the last evaluation

    def _is_cold(self, req, cands, ctx) -> bool:
        cold = not self.probe.is_warm(req, cands, ctx)
        self._creq = req
        self._cold = cold
        self._seen = [p.index for p in cands]
        return cold

    def score(self, req, cands, ctx):
        n = len(cands)
        if not self._is_cold(req, cands, ctx):
            return [0.5] * n
        if n == 1:
            return [1.0]
        lru = self._lru
        pos = {}
        for r, k in enumerate(lru):                  # dict order: least recently used first
            pos[k] = r
        # never used (rank by candidate order) before used (rank by LRU position)
        keyed = sorted(range(n), key=lambda i: (1, pos[cands[i].index], i) if cands[i].index in pos else (0, i, i))
        out = [0.0] * n
        inv = 1.0 / (n - 1)
        for rank, i in enumerate(keyed):
            out[i] = 1.0 - rank * inv
        return out

    def cold_for_observe(self, req, ctx) -> bool:
        if req is self._creq:
            return self._cold
        probe = self.probe
        if isinstance(probe, PrefixIndex) and not probe.precise:
            return not probe.warm_anywhere(req)
        if req.input_len < BLOCK_SIZE:
            return True
        cb = ctx.cached_blocks
        return not any(cb(req, i) > 0 for i in self._seen)

    def observe_cold(self, cold: bool, pod_index: int) -> None:
        self._creq = None
        if not cold:
            return
        lru = self._lru
        if pod_index in lru:
            lru.move_to_end(pod_index)
        else:
            lru[pod_index] = None
            if len(lru) > self.size:
                lru.popitem(last=False)

    def observe(self, req, pod_index, ctx):
        self.observe_cold(self.cold_for_observe(req, ctx), pod_index)

    def forget(self, pod_index):
        self._lru.pop(pod_index, None)


@register("scorer", "session-affinity")
class SessionAffinityScorer(Scorer):
    """1 for the pod the request's session was last sent to, 0 for the others. With `ttl_s`
    (llm-d-router's `session_id` strategy: 300 s), a binding not renewed by a request of its
    session within ttl_s lapses (the session is routed afresh); without it, bindings last."""
    name = "session-affinity"
    bounded = True
    PARAMS = {"ttl_s": None}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        ttl = self.params["ttl_s"]
        self.ttl_us = None if ttl is None else int(number(f"{field}.ttl_s", ttl, lo=0, lo_open=True) * 1e6)
        self._pin: dict = {}                         # session id -> (pod index, expiry µs or None)

    def score(self, req, cands, ctx):
        sid = getattr(req.session, "id", None)
        pin = self._pin.get(sid) if sid is not None else None
        if pin is None or (pin[1] is not None and ctx.now >= pin[1]):
            return [0.0] * len(cands)
        return [1.0 if p.index == pin[0] else 0.0 for p in cands]

    def observe(self, req, pod_index, ctx):
        sid = getattr(req.session, "id", None)
        if sid is not None:
            self._pin[sid] = (pod_index, None if self.ttl_us is None else ctx.now + self.ttl_us)

    def forget(self, pod_index):
        for sid in [s for s, p in self._pin.items() if p[0] == pod_index]:
            del self._pin[sid]


@register("scorer", "lora-affinity")
class LoraAffinityScorer(Scorer):
    """GAIE's lora-affinity-scorer on the scraped vllm:lora_requests_info: 1.0 if the request's
    adapter is running on the pod; else 0.8 if the pod has room for one more adapter (running +
    waiting adapters < max_lora); else 0.6 if the adapter is waiting there; else 0. A
    base-model request matches no adapter (0.8 where there is room, as in GAIE); pods without
    LoRA (max_lora 0) score 0."""
    name = "lora-affinity"
    bounded = True

    def score(self, req, cands, ctx):
        a = getattr(req, "adapter", None)
        name = a.name if a is not None else None
        out = []
        for p in cands:
            if name is not None and name in p.lora_running:
                out.append(1.0)
            elif len(p.lora_running) + len(p.lora_waiting) < p.max_lora:
                out.append(0.8)
            elif name is not None and name in p.lora_waiting:
                out.append(0.6)
            else:
                out.append(0.0)
        return out


# name -> scorer class, filled by @register("scorer", name) (new scorers register the same way)
SCORERS: dict[str, type] = table("scorer")

SCORER_ALIASES: dict[str, str] = {
    "queue-scorer": "queue", "queue-depth": "queue",
    "kv-cache-utilization-scorer": "kv-cache-utilization", "kv-utilization": "kv-cache-utilization",
    "prefix-cache-scorer": "prefix-cache",
    "load-aware-scorer": "load-aware",
    "active-request-scorer": "active-request", "active-requests": "active-request",
    "running-requests-size-scorer": "running-requests",
    "token-load-scorer": "token-load",
    "no-hit-lru-scorer": "no-hit-lru",
    "session-affinity-scorer": "session-affinity",
    "lora-affinity-scorer": "lora-affinity",
}
