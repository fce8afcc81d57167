"""Gateway admission: saturation detectors and admission policies.

What llm-d does (the EPP's admission and saturation detectors: https://github.com/llm-d/llm-d-inference-scheduler,
https://github.com/kubernetes-sigs/gateway-api-inference-extension) and what BLIS adds
(`sim/admission.go` of https://github.com/inference-sim/inference-sim):

* With flow control off (llm-d's default), the *legacy* admission controller rejects a request
  with HTTP 429 iff it is sheddable (priority < 0) and the pool saturation is >= 1.0. The current
  saturation detector is the gradient `utilization-detector`: the unweighted mean over endpoints
  of max(waiting/QD, kv/KV), where an endpoint with missing or stale (> 200 ms) metrics scores
  1.0 (fail closed), an empty pool scores 1.0, and the mean is not capped at 1.
* With P/D (llm-d-router v0.10), the saturation is stage-aware: max(S_prefill, S_decode), each
  stage's detector over its own pods, so a saturated prefill pool is not hidden by idle decode
  pods; `stage_aware: true` on gaie-legacy and probabilistic (off by default: the pool mean).
* The optional `probabilistic-admitter` plugin rejects a sheddable request with probability
  min(sat^power * k, 1); it does not check staleness. Its denials surface as HTTP 500 because
  the EPP wraps an admitter's denial in an Internal error.
* BLIS's own policies: always-admit, token-bucket, tier-shed and reject-all.
* blis-gym's own `probabilistic-queue-guard` (not an llm-d or BLIS policy): probabilistic, plus
  a critical request is turned away when every pod is full: it has a waiting queue or its KV
  cache is nearly full.

Every policy answers 503 "rejected-no-endpoints" when the candidate list is empty: such a
request could not be routed anyway. Policies are deterministic given the `rng` they are handed;
only `probabilistic` draws from it (exactly one draw per sheddable decision).

Core code: standard library only.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable, Sequence

from blis_gym.errors import ConfigError
from blis_gym.policies.params import number, policy_spec
from blis_gym.policies.registry import create, register, table
from blis_gym.sim.cluster.signals import PodSignals, load
from blis_gym.sim.slots import AdmissionPolicy

from blis_gym.sim.cluster.signals import (  # noqa: F401  (re-exported for policy authors)
    HTTP_INTERNAL, HTTP_OK, HTTP_TOO_MANY, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS, REASON_PROBABILISTIC,
    REASON_QUEUE_GUARD, REASON_REJECT_ALL, REASON_SATURATED, REASON_TIER_SHED, REASON_TOKEN_BUCKET,
    REASON_TTL_EXPIRED, Decision,
)

ADMIT = Decision(True)
NO_ENDPOINTS = Decision(False, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS)


# ---------------------------------------------------------------------------------------------
# Saturation detectors
# ---------------------------------------------------------------------------------------------

def utilization_saturation(pods: Sequence[PodSignals], now: int, queue_threshold: float = 5,
                           kv_threshold: float = 0.8, staleness_us: int | None = 200_000,
                           stale_counts_saturated: bool = True) -> float:
    """llm-d's `utilization-detector`: mean over pods of max(waiting/QD, kv/KV).

    A pod never scraped (scraped_at < 0), or scraped more than `staleness_us` before `now`,
    scores 1.0 when `stale_counts_saturated` (else its last snapshot is used as is).
    `staleness_us=None` disables the staleness check (never-scraped pods still score 1.0).
    An empty list scores 1.0. The result is not capped at 1.
    """
    n = len(pods)
    if n == 0:
        return 1.0
    total = 0.0
    for p in pods:
        if stale_counts_saturated and (
                p.scraped_at < 0 or (staleness_us is not None and now - p.scraped_at > staleness_us)):
            total += 1.0
            continue
        q = p.waiting / queue_threshold
        kv = p.kv_usage / kv_threshold
        total += q if q > kv else kv
    return total / n


def concurrency_saturation(pods: Sequence[PodSignals], max_concurrency: int = 100) -> float:
    """llm-d's `concurrency-detector` (requests mode): sum of in-flight / (N * max_concurrency)."""
    n = len(pods)
    if n == 0:
        return 1.0
    return sum(p.in_flight for p in pods) / (n * max_concurrency)


def role_saturation(pods: Sequence[PodSignals], detector: Callable[[Sequence[PodSignals]], float]) -> float:
    """Flow control's pool saturation: the max of `detector` over the prefill-role pods and over
    the other (decode / unified) pods when the pool is disaggregated; `detector(pods)` otherwise."""
    prefill = [p for p in pods if p.role == "prefill"]
    if not prefill:
        return detector(pods)
    rest = [p for p in pods if p.role != "prefill"]
    return max(detector(prefill), detector(rest))


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------

class StageAwareSaturation:
    """The saturation an admitter reads: its detector (`_detect`) over all the pods, or with
    `stage_aware` the worse of the prefill and the decode pools' (llm-d-router v0.10)."""
    stage_aware = False

    def saturation(self, pods, now) -> float:
        if self.stage_aware:
            return role_saturation(pods, lambda ps: self._detect(ps, now))
        return self._detect(pods, now)


class AlwaysAdmit:
    name = "always-admit"

    def admit(self, req, pods, now, rng) -> Decision:
        return ADMIT if pods else NO_ENDPOINTS


class RejectAll:
    name = "reject-all"

    def admit(self, req, pods, now, rng) -> Decision:
        if not pods:
            return NO_ENDPOINTS
        return Decision(False, HTTP_TOO_MANY, REASON_REJECT_ALL)


class TokenBucket:
    """BLIS token bucket: starts full; refill Δt·rate/1e6 (capped) at each decision; admit iff
    tokens >= input_len, then subtract it."""
    name = "token-bucket"

    def __init__(self, capacity: float = 10_000, refill_rate: float = 1_000):
        self.capacity = float(capacity)
        self.refill_rate = float(refill_rate)
        self.tokens = float(capacity)
        self.last: int | None = None

    def admit(self, req, pods, now, rng) -> Decision:
        if self.last is not None and now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.refill_rate / 1e6)
        if self.last is None or now > self.last:
            self.last = now
        if not pods:
            return NO_ENDPOINTS
        need = req.input_len
        if self.tokens >= need:
            self.tokens -= need
            return ADMIT
        return Decision(False, HTTP_TOO_MANY, REASON_TOKEN_BUCKET)


class GaieLegacy(StageAwareSaturation):
    """llm-d's legacy admission controller (flow control off): priority >= 0 always admitted;
    priority < 0 rejected 429 iff saturation >= 1.0 (gradient utilization detector by default)."""
    name = "gaie-legacy"

    def __init__(self, queue_threshold: float = 5, kv_threshold: float = 0.8, staleness_ms: float = 200,
                 detector: str = "utilization", max_concurrency: int = 100, stage_aware: bool = False):
        self.queue_threshold = queue_threshold
        self.kv_threshold = kv_threshold
        self.staleness_us = int(round(staleness_ms * 1000))
        self.detector = detector
        self.max_concurrency = max_concurrency
        self.stage_aware = stage_aware

    def _detect(self, pods, now) -> float:
        if self.detector == "concurrency":
            return concurrency_saturation(pods, self.max_concurrency)
        return utilization_saturation(pods, now, self.queue_threshold, self.kv_threshold, self.staleness_us, True)

    def admit(self, req, pods, now, rng) -> Decision:
        if not pods:
            return NO_ENDPOINTS
        if req.priority >= 0:
            return ADMIT
        if self.saturation(pods, now) >= 1.0:
            return Decision(False, HTTP_TOO_MANY, REASON_SATURATED)
        return ADMIT


class Probabilistic(StageAwareSaturation):
    """llm-d's `probabilistic-admitter`: a sheddable request is rejected with probability
    min(sat^power * k, 1); sat = utilization mean with never-scraped pods at 1.0 and no
    staleness check. Exactly one rng.random() is drawn per sheddable decision."""
    name = "probabilistic"

    def __init__(self, power: float = 5, k: float = 300, queue_threshold: float = 5, kv_threshold: float = 0.8,
                 stage_aware: bool = False):
        self.power = power
        self.k = k
        self.queue_threshold = queue_threshold
        self.kv_threshold = kv_threshold
        self.stage_aware = stage_aware

    def _detect(self, pods, now) -> float:
        return utilization_saturation(pods, now, self.queue_threshold, self.kv_threshold, None, True)

    def probability(self, sat: float) -> float:
        try:
            p = sat ** self.power * self.k
        except OverflowError:
            return 1.0
        return 1.0 if p > 1.0 or math.isnan(p) else p

    def admit(self, req, pods, now, rng) -> Decision:
        if not pods:
            return NO_ENDPOINTS
        if req.priority >= 0:
            return ADMIT
        sat = self.saturation(pods, now)
        u = rng.random()                     # always drawn: stream use independent of sat
        if u < self.probability(sat):
            return Decision(False, HTTP_INTERNAL, REASON_PROBABILISTIC)
        return ADMIT


class QueueGuard(Probabilistic):
    """Not an llm-d policy: llm-d's probabilistic admitter for sheddable requests, and a request
    of priority >= 0 is rejected (429) when every pod is full: at least `critical_queue`
    requests waiting or KV-cache use at least `critical_kv` (both scraped). Probabilistic never
    turns a critical request away; in a critical overload each one it admits joins a queue that
    already holds it, and the requests behind it, past their SLO. A pod whose KV cache is full
    queues (or preempts) the next request however short its queue looks, so the KV test rejects
    a moment earlier. Elsewhere probabilistic keeps the pods far from full and this admits
    exactly what probabilistic does (the same rng draws)."""
    name = "probabilistic-queue-guard"

    def __init__(self, critical_queue: int = 1, critical_kv: float = 0.95, **probabilistic):
        super().__init__(**probabilistic)
        self.critical_queue = critical_queue
        self.critical_kv = critical_kv

    def _full(self, pod) -> bool:
        return pod.waiting >= self.critical_queue or pod.kv_usage >= self.critical_kv

    def admit(self, req, pods, now, rng) -> Decision:
        if pods and req.priority >= 0 and all(self._full(p) for p in pods):
            return Decision(False, HTTP_TOO_MANY, REASON_QUEUE_GUARD)
        return super().admit(req, pods, now, rng)


class TierShed:
    """BLIS tier-shed: max_load = max over pods of waiting + running + in_flight; if it exceeds
    `threshold`, only requests with priority >= min_priority are admitted."""
    name = "tier-shed"

    def __init__(self, threshold: int = 0, min_priority: int = 3):
        self.threshold = threshold
        self.min_priority = min_priority

    def admit(self, req, pods, now, rng) -> Decision:
        if not pods:
            return NO_ENDPOINTS
        max_load = max(load(p) for p in pods)
        if max_load <= self.threshold or req.priority >= self.min_priority:
            return ADMIT
        return Decision(False, HTTP_TOO_MANY, REASON_TIER_SHED)


DEFAULT_POLICY = "always-admit"


# ---------------------------------------------------------------------------------------------
# Factory and validation
# ---------------------------------------------------------------------------------------------

def _num(field: str, value: Any, *, positive: bool = False, integer: bool = False) -> Any:
    return number(field, value, lo=0, lo_open=positive, integer=integer)


def _int_any_sign(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Real) or value != int(value):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    return int(value)


# per policy: key -> validator(field, value) -> value
_PARAMS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "always-admit": {},
    "reject-all": {},
    "token-bucket": {
        "capacity": lambda f, v: _num(f, v, positive=True),
        "refill_rate": lambda f, v: _num(f, v),
    },
    "gaie-legacy": {
        "queue_threshold": lambda f, v: _num(f, v, positive=True),
        "kv_threshold": lambda f, v: _num(f, v, positive=True),
        "staleness_ms": lambda f, v: _num(f, v),
        "detector": lambda f, v: _choice(f, v, ("utilization", "concurrency")),
        "max_concurrency": lambda f, v: _num(f, v, positive=True, integer=True),
        "stage_aware": lambda f, v: _flag(f, v),
    },
    "probabilistic": {
        "power": lambda f, v: _num(f, v),
        "k": lambda f, v: _num(f, v),
        "queue_threshold": lambda f, v: _num(f, v, positive=True),
        "kv_threshold": lambda f, v: _num(f, v, positive=True),
        "stage_aware": lambda f, v: _flag(f, v),
    },
    "tier-shed": {
        "threshold": lambda f, v: _num(f, v),
        "min_priority": _int_any_sign,
    },
}
# the queue guard takes its own parameters and probabilistic's (it is probabilistic for sheddable requests)
_PARAMS["probabilistic-queue-guard"] = {
    "critical_queue": lambda f, v: _num(f, v, positive=True, integer=True),
    "critical_kv": lambda f, v: _num(f, v, positive=True),
    **_PARAMS["probabilistic"],
}


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be true or false, got {value!r}")
    return value


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(field, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


def _factory(cls: type):
    """The registry's factory of a built-in policy: each parameter checked by its validator."""
    def build(params: dict, field: str):
        allowed = _PARAMS[cls.name]
        kwargs = {}
        for key in params:                              # dict order: deterministic
            if key == "policy":
                continue
            if key not in allowed:
                names = ", ".join(allowed) or "none"
                raise ConfigError(f"{field}.{key}", f"unknown parameter for policy {cls.name!r}; allowed: {names}")
            kwargs[key] = allowed[key](f"{field}.{key}", params[key])
        return cls(**kwargs)
    build.__doc__ = cls.__doc__
    return build


for _cls in (AlwaysAdmit, TokenBucket, GaieLegacy, Probabilistic, QueueGuard, TierShed, RejectAll):
    register("admission", _cls.name)(_factory(_cls))
# name -> factory, filled by the registry (new policies register with @register("admission", name))
ADMISSION_POLICIES = table("admission")


def make_admission(spec: dict | str | None = None, field: str = "gateway.admission") -> AdmissionPolicy:
    """Build a policy from `{"policy": name, **params}` (a bare name or None also accepted;
    None / {} give the default, always-admit). Raises ConfigError on any bad input."""
    spec = policy_spec(spec, field)
    return create("admission", spec.get("policy", DEFAULT_POLICY), spec, field)


__all__ = [
    "ADMISSION_POLICIES", "AdmissionPolicy", "AlwaysAdmit", "Decision", "GaieLegacy", "Probabilistic",
    "QueueGuard", "RejectAll", "TierShed", "TokenBucket", "concurrency_saturation", "make_admission", "role_saturation",
    "utilization_saturation", "HTTP_INTERNAL", "HTTP_OK", "HTTP_TOO_MANY", "HTTP_UNAVAILABLE",
    "REASON_NO_ENDPOINTS", "REASON_PROBABILISTIC", "REASON_QUEUE_GUARD", "REASON_SATURATED", "REASON_TIER_SHED",
    "REASON_TOKEN_BUCKET", "REASON_TTL_EXPIRED", "REASON_REJECT_ALL",
]
