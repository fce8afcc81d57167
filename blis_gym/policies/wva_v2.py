"""The 2026 analyzers of llm-d's workload-variant-autoscaler (WVA), as autoscaler policies.

- `wva-tokens` (saturation V2, token-based): a replica's capacity is
  min(KV tokens x `kv_fraction` (0.8), `compute_tokens`, when given); the demand is the tokens
  the pool's KV caches hold (scraped KV use x KV tokens) + the EPP's in-flight prompt tokens of
  requests not yet past their first token + the gateway queue x the mean of those prompt
  tokens per in-flight request. Utilization = demand / (replicas x capacity): above
  `up_threshold` (0.85) it asks for enough replicas to bring it back to the threshold (at least
  +1); with one replica fewer still under `down_threshold` (0.70), it asks for −1.
- `wva-throughput` (the throughput analyzer): scales on rates rather than levels, so it moves
  before the queues form (WVA: 30–60 s earlier). Demand λ = requests arrived at the gateway per
  second over the last `window_s`; a replica's supply μ = the highest completion rate per
  active replica seen over a window in which some pod was saturated (kv >= 0.8 or waiting >= 5;
  WVA reads it at the KV-saturation operating point of its ITL model), `replica_rps` until
  then (no signal without either). The requests waiting (gateway queue and pods' queues) add
  their number / `window_s` to λ (WVA's queue-demand term: the backlog drains within a window).
  It asks for ceil(λ / (μ x `up_threshold`)) replicas.
- `wva-v2`: the multi-analyzer pipeline: each of `analyzers` (saturation = the V1 `wva`
  analyzer, tokens, throughput) gives its desired size; scale up if any asks for more (to the
  largest ask), down only if all ask for less (to the smallest cut), else hold. The V1
  analyzer holds while a replica is starting; the others count starting replicas as capacity
  on the way and may ask for more meanwhile.

All clamp to the pool's bounds and add at most `max_scale_up_per_tick` replicas per tick.
"""
from __future__ import annotations

import math
from collections import deque

from blis_gym.policies.autoscaling import WVA
from blis_gym.policies.registry import register
from blis_gym.sim.engine import BLOCK_SIZE


def _clamp(want: int, v, max_step: int) -> int:
    return max(v.min, min(v.max, v.replicas + max_step, want))


class TokenSaturation:
    """WVA's saturation analyzer V2 (token-based)."""

    def __init__(self, spec):
        self.interval_us = int(spec.interval_s * 1e6)
        self.kv_fraction = spec.kv_fraction
        self.compute_tokens = spec.compute_tokens
        self.up = spec.up_threshold
        self.down = spec.down_threshold
        self.max_step = spec.max_scale_up_per_tick

    def capacity(self, pod) -> float:
        cap = pod.num_kv_blocks * BLOCK_SIZE * self.kv_fraction
        return min(cap, self.compute_tokens) if self.compute_tokens else cap

    def demand(self, v) -> float:
        in_kv = sum(p.kv_usage * p.num_kv_blocks * BLOCK_SIZE for p in v.pods)
        prompt = sum(p.in_flight_tokens for p in v.pods)
        flying = sum(p.in_flight for p in v.pods)
        return in_kv + prompt + (v.gateway_queue * prompt / flying if flying else 0.0)

    def wanted(self, v) -> int:
        n = v.replicas
        if not v.pods:
            return max(n, 1) if v.gateway_queue else n
        cap = sum(self.capacity(p) for p in v.pods) / len(v.pods)
        demand = self.demand(v)
        if demand > self.up * n * cap:
            return max(n + 1, math.ceil(demand / (self.up * cap)))
        if n > 1 and demand < self.down * (n - 1) * cap:
            return n - 1
        return n

    def desired(self, v, now: int) -> int:
        return _clamp(self.wanted(v), v, self.max_step)


class Throughput:
    """WVA's throughput analyzer: arrival rate against the supply one replica sustains."""

    def __init__(self, spec):
        self.interval_us = int(spec.interval_s * 1e6)
        self.window_us = int(spec.window_s * 1e6)
        self.up = spec.up_threshold
        self.mu = spec.replica_rps or 0.0       # requests/s one replica completes (learned upwards)
        self.kv = spec.kv_threshold
        self.q = spec.queue_threshold
        self.max_step = spec.max_scale_up_per_tick
        self.history: deque = deque()           # (now, arrivals, completions, active replicas)

    def wanted(self, v) -> int:
        h = self.history
        h.append((v.now, v.arrivals, v.completions, v.active))
        while len(h) > 1 and h[0][0] < v.now - self.window_us:
            h.popleft()
        t0, a0, c0, _ = h[0]
        dt = (v.now - t0) / 1e6
        if dt <= 0:
            return v.replicas
        saturated = any(p.kv_usage >= self.kv or p.waiting >= self.q for p in v.pods)
        active = sum(x[3] for x in h) / len(h)
        if saturated and active > 0:
            self.mu = max(self.mu, (v.completions - c0) / dt / active)
        if self.mu <= 0:
            return v.replicas                   # no supply estimate yet: no signal
        backlog = v.gateway_queue + sum(p.waiting for p in v.pods)
        lam = (v.arrivals - a0) / dt + backlog / (self.window_us / 1e6)    # and drain the backlog in a window
        return max(1 if lam > 0 else 0, math.ceil(lam / (self.mu * self.up)))

    def desired(self, v, now: int) -> int:
        return _clamp(self.wanted(v), v, self.max_step)


class MultiAnalyzer:
    """WVA's multi-analyzer pipeline: up if any asks, down only if all agree."""

    def __init__(self, spec):
        self.interval_us = int(spec.interval_s * 1e6)
        self.max_step = spec.max_scale_up_per_tick
        build = {"saturation": WVA, "tokens": TokenSaturation, "throughput": Throughput}
        self.analyzers = [build[name](spec) for name in spec.analyzers]

    def _ask(self, a, v, now: int) -> int:
        return a.wanted(v) if hasattr(a, "wanted") else a.desired(v, now)

    def desired(self, v, now: int) -> int:
        asks = [self._ask(a, v, now) for a in self.analyzers]    # every analyzer sees every tick
        n = v.replicas
        if any(w > n for w in asks):
            return _clamp(max(asks), v, self.max_step)
        if all(w < n for w in asks):
            return _clamp(max(asks), v, self.max_step)
        return n


for _name, _cls in (("wva-tokens", TokenSaturation), ("wva-throughput", Throughput), ("wva-v2", MultiAnalyzer)):
    register("autoscaler", _name)(lambda spec, field, cls=_cls: cls(spec))
