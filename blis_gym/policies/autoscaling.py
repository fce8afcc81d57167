"""Autoscalers: given a pool's view at a tick, how many replicas should it have?

- `hpa`: KEDA driving an HPA on EPP metrics (llm-d's recommended path in 2026). For each
  metric, AverageValue semantics: desired = ceil(total / target per replica) for `waiting`
  (the pool's waiting requests plus the gateway queue) and `running`; for `saturation`,
  desired = ceil(replicas * saturation / target). The max over metrics, then HPA's
  stabilisation: scale up to the lowest recommendation of the up-window, down to the highest of
  the down-window (defaults 0 s and 300 s, as Kubernetes).
- `wva`: the saturation-percentage analyser of llm-d's workload-variant-autoscaler. A replica
  is saturated at kv >= 0.8 or waiting >= 5; +1 replica when the non-saturated replicas' mean
  spare KV < 0.1 or mean spare queue < 3 (or all are saturated); -1 when at least two are
  non-saturated and spreading their load over one replica fewer stays within both spares; no
  change while a replica is starting.
Both scale a pool to zero after `scale_to_zero_after_s` without traffic when its minimum is 0.
"""
from __future__ import annotations

import math
from collections import deque

from blis_gym.policies.admission import utilization_saturation
from blis_gym.policies.registry import create, register


class HPA:
    def __init__(self, spec):
        self.interval_us = int(spec.interval_s * 1e6)
        self.metrics = dict(spec.metrics)
        self.up_us = int(spec.scale_up_stabilization_s * 1e6)
        self.down_us = int(spec.scale_down_stabilization_s * 1e6)
        self.max_step = spec.max_scale_up_per_tick
        self.zero_after_us = int(spec.scale_to_zero_after_s * 1e6)
        self.history: deque[tuple[int, int]] = deque()

    def raw(self, v) -> int:
        want = 0
        for name, target in self.metrics.items():
            if name == "waiting":
                total = sum(p.waiting for p in v.pods) + v.gateway_queue
                want = max(want, math.ceil(total / target))
            elif name == "running":
                want = max(want, math.ceil(sum(p.running for p in v.pods) / target))
            else:
                sat = utilization_saturation(v.pods, v.now) if v.pods else (1.0 if v.gateway_queue else 0.0)
                want = max(want, math.ceil(max(v.replicas, 1) * sat / target))
        return want

    def desired(self, v, now: int) -> int:
        want = self.raw(v)
        if want == 0 and v.min == 0 and not (v.idle_since >= 0 and now - v.idle_since >= self.zero_after_us):
            want = 1                      # stay at one replica until the pool has been idle long enough
        want = max(v.min, min(v.max, want))
        h = self.history
        h.append((now, want))
        horizon = max(self.up_us, self.down_us)
        while h and h[0][0] < now - horizon:
            h.popleft()
        if want > v.replicas:
            want = min(w for t, w in h if t >= now - self.up_us)
            want = min(max(want, v.replicas), v.replicas + self.max_step)
        elif want < v.replicas:
            want = max(w for t, w in h if t >= now - self.down_us)
            want = min(want, v.replicas)
        return want


class WVA:
    def __init__(self, spec):
        self.interval_us = int(spec.interval_s * 1e6)
        self.kv = spec.kv_threshold
        self.q = spec.queue_threshold
        self.spare_kv = spec.spare_kv
        self.spare_q = spec.spare_queue
        self.zero_after_us = int(spec.scale_to_zero_after_s * 1e6)

    def desired(self, v, now: int) -> int:
        n = v.replicas
        if v.starting:
            return n
        if n == 0:
            return 1 if v.gateway_queue else 0
        if v.min == 0 and v.idle_since >= 0 and now - v.idle_since >= self.zero_after_us:
            return 0
        free = [p for p in v.pods if p.kv_usage < self.kv and p.waiting < self.q]
        if not free:
            return n + 1
        spare_kv = sum(self.kv - p.kv_usage for p in free) / len(free)
        spare_q = sum(self.q - p.waiting for p in free) / len(free)
        if spare_kv < self.spare_kv or spare_q < self.spare_q:
            return n + 1
        if len(free) >= 2 and n > max(v.min, 1):
            k = len(free) / (len(free) - 1)
            kv_after = sum(p.kv_usage for p in free) / len(free) * k
            q_after = sum(p.waiting for p in free) / len(free) * k
            if self.kv - kv_after >= self.spare_kv and self.q - q_after >= self.spare_q:
                return n - 1
        return n


class External:
    """The slot of an external agent (a Gymnasium autoscaler environment): ticks on the same
    interval; without an agent attached, it holds the current size."""

    def __init__(self, spec):
        self.interval_us = int(spec.interval_s * 1e6)

    def desired(self, v, now: int) -> int:
        return v.replicas


for _name, _cls in (("hpa", HPA), ("wva", WVA), ("external", External)):
    register("autoscaler", _name)(lambda spec, field, cls=_cls: cls(spec))


def make_autoscaler(spec, field: str = "autoscaler"):
    """An autoscaler from a validated AutoscalerSpec, or None for a fixed-size pool."""
    return None if spec is None else create("autoscaler", spec.policy, spec, field)
