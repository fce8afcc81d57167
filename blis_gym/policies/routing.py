"""Request routing: llm-d's EPP scheduling pipeline (filters -> weighted scorers -> picker).

A router sees each pod only through `PodSignals` (blis_gym.sim.cluster.signals) plus the
`RouterContext` handed in by the caller (the simulated time, the router's own RNG stream and a
precise view of each pod's prefix cache). The pipeline follows llm-d's scheduler profile
(reference llm-d.md §1 step 10, §2.2-2.6, parity rows 11-27):

    candidates = available pods -> filters (in order)
    total(pod) = sum_k  w_k * clamp(score_k(pod), 0, 1)        (absolute weights, default 1.0)
    choice     = picker(candidates, totals)

`pick()` never changes router state: the caller reports the pod it actually used with
`observe()` (so an external agent's choice updates the approximate prefix index, the no-hit LRU,
session affinity and the round-robin cursor exactly as the router's own choice would).

Build routers with `make_router(spec)`; registries: ROUTING_POLICIES, SCORERS, FILTERS, PICKERS.
Determinism: no set is iterated and nothing depends on hash() ordering; per-pod state lives in
insertion-ordered dicts keyed by pod index; every random draw comes from ctx.rng.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Protocol

import numpy as np

from blis_gym.errors import ConfigError
from blis_gym.sim.engine.request import BLOCK_SIZE

__all__ = [
    "RouterContext", "SimpleContext", "Router", "WeightedRouter", "RoundRobinRouter", "RandomRouter",
    "LeastLoadedRouter", "Scorer", "make_router", "ROUTING_POLICIES", "SCORERS", "SCORER_ALIASES",
    "FILTERS", "FILTER_ALIASES", "PICKERS", "PICKER_ALIASES", "DEFAULT_PROFILE",
]


# --------------------------------------------------------------------------------------------
# context

class RouterContext(Protocol):
    """What the caller (the cluster) hands the router on every call."""
    now: int                       # µs
    rng: np.random.Generator       # the router's own tie-break stream

    def cached_blocks(self, req, pod_index: int) -> int:
        """# of the request's leading 16-token blocks present in that pod's real KV cache."""
        ...


class SimpleContext:
    """A plain RouterContext (tests, notebooks, external agents).

    `cached` is either a callable (req, pod_index) -> int or a dict pod_index -> int (the same
    count for every request); missing pods have 0 cached blocks.
    """
    __slots__ = ("now", "rng", "_cached")

    def __init__(self, now: int = 0, rng: np.random.Generator | int | None = 0, cached=None):
        self.now = now
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._cached = cached

    def cached_blocks(self, req, pod_index: int) -> int:
        c = self._cached
        if c is None:
            return 0
        if callable(c):
            return int(c(req, pod_index))
        return int(c.get(pod_index, 0))


# --------------------------------------------------------------------------------------------
# config helpers

def _names(d: dict) -> str:
    return ", ".join(sorted(d))


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _num(field: str, x, lo: float | None = None, hi: float | None = None, integer: bool = False,
         lo_open: bool = False):
    if not _is_number(x) or not math.isfinite(float(x)):
        raise ConfigError(field, f"must be a finite number, got {x!r}")
    if integer:
        if float(x) != int(x):
            raise ConfigError(field, f"must be an integer, got {x!r}")
        x = int(x)
    else:
        x = float(x)
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ConfigError(field, f"must be {'>' if lo_open else '>='} {lo}, got {x!r}")
    if hi is not None and x > hi:
        raise ConfigError(field, f"must be <= {hi}, got {x!r}")
    return x


def _split_entry(field: str, entry, reserved: tuple[str, ...]) -> tuple[str, dict, dict]:
    """An entry is "name", "name:weight" or a dict {"name": ..., <reserved keys>, "params": {...}
    or params inline}. Returns (name, reserved values, params)."""
    if isinstance(entry, str):
        name, _, w = entry.partition(":")
        extra: dict = {}
        if w:
            if "weight" not in reserved:
                raise ConfigError(f"{field}", f"'{entry}': a weight is not allowed here")
            try:
                extra["weight"] = float(w)
            except ValueError:
                raise ConfigError(f"{field}.weight", f"must be a number, got {w!r}") from None
        return name.strip(), extra, {}
    if not isinstance(entry, dict):
        raise ConfigError(field, f"must be a name or a mapping with 'name', got {type(entry).__name__}")
    if "name" not in entry and "type" not in entry:
        raise ConfigError(f"{field}.name", "is required")
    name = entry.get("name", entry.get("type"))
    if not isinstance(name, str):
        raise ConfigError(f"{field}.name", f"must be a string, got {name!r}")
    extra = {k: entry[k] for k in reserved if k in entry}
    params = {}
    if "params" in entry:
        p = entry["params"]
        if p is None:
            p = {}
        if not isinstance(p, dict):
            raise ConfigError(f"{field}.params", "must be a mapping")
        params.update(p)
    for k, v in entry.items():
        if k in ("name", "type", "params") or k in reserved:
            continue
        params[k] = v
    return name, extra, params


def _take_params(field: str, params: dict, defaults: dict) -> dict:
    """Merge user params over defaults; unknown keys are errors. Accepts camelCase spellings."""
    out = dict(defaults)
    for k, v in params.items():
        key = k if k in defaults else _snake(k)
        if key not in defaults:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"{field}.{k}", f"unknown parameter; allowed: {allowed}")
        out[key] = v
    return out


def _snake(name: str) -> str:
    out = []
    for ch in name.replace("-", "_"):
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# scorers

class Scorer:
    """Base class. `score` returns one float per candidate (any range: the router clamps it to
    [0, 1] unless `bounded` is True, i.e. the scorer guarantees [0, 1] itself)."""
    name = "scorer"
    bounded = False
    PARAMS: dict[str, Any] = {}

    def __init__(self, params: dict | None = None, field: str = "scorer"):
        self.params = _take_params(f"{field}", params or {}, self.PARAMS)
        self.field = field

    def score(self, req, cands: list, ctx) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, req, pod_index: int, ctx) -> None:
        pass

    def release(self, req, pod_index: int) -> None:
        pass

    def forget(self, pod_index: int) -> None:
        pass


def _minmax_inverted(vals: list) -> list[float]:
    hi = max(vals)
    lo = min(vals)
    if hi == lo:
        return [1.0] * len(vals)
    d = float(hi - lo)
    return [(hi - v) / d for v in vals]


class QueueScorer(Scorer):
    """(maxQ - q)/(maxQ - minQ) over the candidates on scraped waiting; all equal -> 1."""
    name = "queue"
    bounded = True

    def score(self, req, cands, ctx):
        return _minmax_inverted([p.waiting for p in cands])


class RunningRequestsScorer(Scorer):
    """The queue formula on scraped running."""
    name = "running-requests"
    bounded = True

    def score(self, req, cands, ctx):
        return _minmax_inverted([p.running for p in cands])


class KVUtilizationScorer(Scorer):
    """1 - kv_usage."""
    name = "kv-cache-utilization"
    bounded = True

    def score(self, req, cands, ctx):
        return [(1.0 - u if u < 1.0 else 0.0) if u > 0.0 else 1.0 for u in [p.kv_usage for p in cands]]


class LoadAwareScorer(Scorer):
    """q = 0 -> 0.5; q >= T -> 0; else 0.5 (1 - q/T)."""
    name = "load-aware"
    bounded = True
    PARAMS = {"threshold": 128}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.t = _num(f"{field}.threshold", self.params["threshold"], lo=0, lo_open=True)

    def score(self, req, cands, ctx):
        t = self.t
        return [0.5 if q <= 0 else (0.0 if q >= t else 0.5 * (1.0 - q / t)) for q in [p.waiting for p in cands]]


class ActiveRequestScorer(Scorer):
    """EPP in-flight requests n: n <= idle -> 1; else (maxN - n)/maxN * max_busy_score."""
    name = "active-request"
    bounded = True
    PARAMS = {"idle_threshold": 0, "max_busy_score": 1.0}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.idle = _num(f"{field}.idle_threshold", self.params["idle_threshold"], lo=0, integer=True)
        self.busy = _num(f"{field}.max_busy_score", self.params["max_busy_score"], lo=0, hi=1)

    def score(self, req, cands, ctx):
        ns = [p.in_flight for p in cands]
        mx = max(ns)
        idle = self.idle
        k = self.busy / mx if mx > 0 else 0.0
        return [1.0 if n <= idle else (mx - n) * k for n in ns]


class TokenLoadScorer(Scorer):
    """1 - min(1, in_flight_tokens / Q)."""
    name = "token-load"
    bounded = True
    PARAMS = {"queue_threshold_tokens": 4_194_304}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.q = _num(f"{field}.queue_threshold_tokens", self.params["queue_threshold_tokens"], lo=0,
                      lo_open=True)

    def score(self, req, cands, ctx):
        q = self.q
        return [0.0 if t >= q else 1.0 - t / q for t in [p.in_flight_tokens for p in cands]]


class LoadBalanceScorer(Scorer):
    """BLIS extra: 1 / (1 + waiting + running + in_flight)."""
    name = "load-balance"
    bounded = True

    def score(self, req, cands, ctx):
        return [1.0 / (1 + p.waiting + p.running + p.in_flight) for p in cands]


class PrefixCacheScorer(Scorer):
    """llm-d prefix-cache-scorer: score = (1-w)·match/total + w·min(1, match·blockSize/scale)².

    mode "approximate" (default): llm-d's approx-prefix-cache producer. A router-side per-pod LRU
    of chained router-block hashes (block_size tokens per router block, default 64, a positive
    multiple of 16), updated ONLY by observe(); match = consecutive blocks from block 0 present
    in that pod's LRU; only full router blocks count; at most max_prefix_blocks are considered.
    Router block k is identified by the chained 16-token hash of its last 16-token block
    (Content.block_hash), which already commits to every token before it: the same identity as
    re-chaining the block's 16-token hashes, at a quarter of the cost.

    mode "precise": ctx.cached_blocks(req, i) 16-token blocks over the request's full 16-token
    blocks (the real KV state); with normalize "minmax" the legacy (c - min)/(max - min), all
    equal -> 1.
    """
    name = "prefix-cache"
    bounded = True
    PARAMS = {"mode": "approximate", "block_size": 64, "lru_capacity": 31250, "max_prefix_blocks": 2048,
              "normalize": "ratio", "match_length_weight": 0.0, "match_length_scale_tokens": 8192}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        p = self.params
        if p["mode"] not in ("approximate", "precise"):
            raise ConfigError(f"{field}.mode", f"unknown mode {p['mode']!r}; allowed: approximate, precise")
        self.precise = p["mode"] == "precise"
        bs = _num(f"{field}.block_size", p["block_size"], lo=1, integer=True)
        if bs % BLOCK_SIZE:
            raise ConfigError(f"{field}.block_size", f"must be a positive multiple of {BLOCK_SIZE}, got {bs}")
        self.block_size = bs
        self.sub = bs // BLOCK_SIZE
        self.capacity = _num(f"{field}.lru_capacity", p["lru_capacity"], lo=1, integer=True)
        self.max_blocks = _num(f"{field}.max_prefix_blocks", p["max_prefix_blocks"], lo=1, integer=True)
        if p["normalize"] not in ("ratio", "minmax"):
            raise ConfigError(f"{field}.normalize", f"unknown {p['normalize']!r}; allowed: minmax, ratio")
        self.minmax = p["normalize"] == "minmax"
        self.len_w = _num(f"{field}.match_length_weight", p["match_length_weight"], lo=0, hi=1)
        self.len_scale = _num(f"{field}.match_length_scale_tokens", p["match_length_scale_tokens"], lo=0,
                              lo_open=True)
        self._lru: dict[int, OrderedDict] = {}      # pod index -> OrderedDict(hash -> None)
        # router-block-0 hash -> pods whose LRU holds it: a match starts there, so matching
        # costs O(pods that hold the first block), not O(candidates)
        self._first: dict[int, tuple[int, ...]] = {}
        self._hreq = None                            # memo: request -> router-block hashes
        self._hashes: list[int] = []
        self._mreq = None                            # memo: (request, candidate list) -> matches
        self._mcands = None
        self._mctx = None
        self._matches: list[int] = []

    # -- approximate index -----------------------------------------------------------------
    def hashes(self, req) -> list[int]:
        """The request's router-block hashes (full router blocks only, capped)."""
        if req is self._hreq:
            return self._hashes
        content = req.content
        n16 = min(req.input_len, content.length) // BLOCK_SIZE
        sub = self.sub
        n = min(n16 // sub, self.max_blocks)
        hs = content.prefix_hashes(n * sub)[sub - 1::sub] if n else []
        self._hreq = req
        self._hashes = hs
        return hs

    def matches(self, req, cands, ctx) -> list[int]:
        """Per candidate: matched blocks (router blocks, or 16-token blocks in precise mode)."""
        if req is self._mreq and cands is self._mcands and ctx is self._mctx:
            return self._matches
        if self.precise:
            cb = ctx.cached_blocks
            out = [cb(req, p.index) for p in cands]
        else:
            hs = self.hashes(req)
            n = len(cands)
            out = [0] * n
            holders = self._first.get(hs[0]) if hs else None
            if holders:
                lrus = self._lru
                pos = None
                for i in holders:
                    k = i if i < n and cands[i].index == i else None
                    if k is None:                # candidates are not the pods in index order
                        if pos is None:
                            pos = {p.index: j for j, p in enumerate(cands)}
                        k = pos.get(i)
                        if k is None:
                            continue
                    lru = lrus[i]
                    m = 0
                    for h in hs:
                        if h in lru:
                            m += 1
                        else:
                            break
                    out[k] = m
        self._mreq = req
        self._mcands = cands
        self._mctx = ctx
        self._matches = out
        return out

    def total_blocks(self, req) -> int:
        if self.precise:
            return min(req.input_len, req.content.length) // BLOCK_SIZE
        return len(self.hashes(req))

    def is_warm(self, req, cands, ctx) -> bool:
        return any(m > 0 for m in self.matches(req, cands, ctx))

    def warm_anywhere(self, req) -> bool:
        """Approximate mode: does any pod in the index hold the request's first block?"""
        hs = self.hashes(req)
        if not hs:
            return False
        return bool(self._first.get(hs[0]))

    def score(self, req, cands, ctx):
        ms = self.matches(req, cands, ctx)
        if self.precise and self.minmax:
            return _minmax(ms)
        total = self.total_blocks(req)
        if total <= 0:
            return [0.0] * len(cands)
        if self.precise:
            ms = [m if m < total else total for m in ms]
        inv = 1.0 / total
        w = self.len_w
        if w == 0.0:
            return [m * inv for m in ms]
        k = (self.block_size if not self.precise else BLOCK_SIZE) / self.len_scale
        return [(1.0 - w) * m * inv + w * min(1.0, m * k) ** 2 for m in ms]

    def observe(self, req, pod_index, ctx):
        self._mreq = None
        if self.precise:
            return
        hs = self.hashes(req)
        if not hs:
            return
        lru = self._lru.get(pod_index)
        if lru is None:
            lru = self._lru[pod_index] = OrderedDict()
        mte = lru.move_to_end
        for h in hs:
            if h in lru:
                mte(h)
            else:
                lru[h] = None
        held = self._first.get(hs[0], ())
        if pod_index not in held:
            self._first[hs[0]] = held + (pod_index,)
        cap = self.capacity
        while len(lru) > cap:
            self._unindex(lru.popitem(last=False)[0], pod_index)

    def _unindex(self, h: int, pod_index: int) -> None:
        """Pod pod_index's LRU dropped h: if h is a first block, the pod no longer holds it."""
        held = self._first.get(h)
        if held is not None and pod_index in held:
            rest = tuple(i for i in held if i != pod_index)
            if rest:
                self._first[h] = rest
            else:
                del self._first[h]

    def forget(self, pod_index):
        self._mreq = None
        for h in self._lru.pop(pod_index, {}):
            self._unindex(h, pod_index)


def _minmax(vals: list) -> list[float]:
    hi = max(vals)
    lo = min(vals)
    if hi == lo:
        return [1.0] * len(vals)
    d = float(hi - lo)
    return [(v - lo) / d for v in vals]


class _PreciseProbe:
    """Warm/cold test on the real KV state (no-hit-lru when the profile has no prefix scorer)."""

    def is_warm(self, req, cands, ctx) -> bool:
        if req.input_len < BLOCK_SIZE:
            return False
        cb = ctx.cached_blocks
        return any(cb(req, p.index) > 0 for p in cands)


class NoHitLRUScorer(Scorer):
    """Cold request (no candidate holds any prefix block): never-used pods first (candidate
    order), then least-recently-used first; score 1 - rank/(N-1). Warm request: 0.5 for all.
    observe() moves the chosen pod to MRU for cold requests only."""
    name = "no-hit-lru"
    bounded = True
    PARAMS = {"lru_size": 1024}

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self.size = _num(f"{field}.lru_size", self.params["lru_size"], lo=1, integer=True)
        self._lru: OrderedDict = OrderedDict()      # pod index -> None, LRU first
        self.probe: Any = _PreciseProbe()            # set by the router to the profile's prefix scorer
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
        if isinstance(probe, PrefixCacheScorer) and not probe.precise:
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


class SessionAffinityScorer(Scorer):
    """1 for the pod the request's session was last sent to, 0 for the others."""
    name = "session-affinity"
    bounded = True

    def __init__(self, params=None, field="scorer"):
        super().__init__(params, field)
        self._pin: dict = {}                         # session id -> pod index

    def score(self, req, cands, ctx):
        sid = getattr(req.session, "id", None)
        pod = self._pin.get(sid) if sid is not None else None
        if pod is None:
            return [0.0] * len(cands)
        return [1.0 if p.index == pod else 0.0 for p in cands]

    def observe(self, req, pod_index, ctx):
        sid = getattr(req.session, "id", None)
        if sid is not None:
            self._pin[sid] = pod_index

    def forget(self, pod_index):
        for sid in [s for s, p in self._pin.items() if p == pod_index]:
            del self._pin[sid]


SCORERS: dict[str, type] = {
    "queue": QueueScorer,
    "kv-cache-utilization": KVUtilizationScorer,
    "prefix-cache": PrefixCacheScorer,
    "load-aware": LoadAwareScorer,
    "active-request": ActiveRequestScorer,
    "running-requests": RunningRequestsScorer,
    "token-load": TokenLoadScorer,
    "no-hit-lru": NoHitLRUScorer,
    "session-affinity": SessionAffinityScorer,
    "load-balance": LoadBalanceScorer,
}

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
}


def _resolve(name: str, registry: dict, aliases: dict, field: str, what: str) -> str:
    if name in registry:
        return name
    if name in aliases and aliases[name] in registry:
        return aliases[name]
    allowed = ", ".join(sorted(list(registry) + [a for a in aliases if aliases[a] in registry]))
    raise ConfigError(field, f"unknown {what} {name!r}; allowed: {allowed}")


# --------------------------------------------------------------------------------------------
# filters: callables (req, cands, ctx, explore) -> list of candidates

class _RoleFilter:
    def __init__(self, roles: tuple[str, ...]):
        self.roles = roles

    def __call__(self, req, cands, ctx, explore):
        roles = self.roles
        return [p for p in cands if p.role in roles]


class _UtilizationFilter:
    PARAMS = {"headroom": 0.0, "queue_depth_threshold": 5, "kv_cache_util_threshold": 0.8}

    def __init__(self, params: dict, field: str):
        p = _take_params(field, params, self.PARAMS)
        h = _num(f"{field}.headroom", p["headroom"], lo=0)
        qd = _num(f"{field}.queue_depth_threshold", p["queue_depth_threshold"], lo=0, lo_open=True)
        kv = _num(f"{field}.kv_cache_util_threshold", p["kv_cache_util_threshold"], lo=0, lo_open=True)
        self.qmax = qd * (1.0 + h)
        self.kvmax = min(1.0, kv * (1.0 + h))

    def __call__(self, req, cands, ctx, explore):
        q, kv = self.qmax, self.kvmax
        out = [p for p in cands if p.waiting < q and p.kv_usage < kv]
        return out if out else cands                 # fails open


class _PrefixAffinityFilter:
    """Keeps pods whose prefix score >= threshold; if none pass, keeps all. With probability
    exploration_probability the gate is skipped. TTFT load gate: if the best sticky pod's
    estimated TTFT (in_flight_tokens / peak_prefill_throughput) exceeds the best non-sticky
    pod's by more than max_ttft_penalty_ms, keeps all."""
    PARAMS = {"threshold": 0.8, "exploration_probability": 0.0, "max_ttft_penalty_ms": 18000.0,
              "peak_prefill_throughput": 15928.0}
    prefix: PrefixCacheScorer

    def __init__(self, params: dict, field: str):
        p = _take_params(field, params, self.PARAMS)
        self.threshold = _num(f"{field}.threshold", p["threshold"], lo=0, hi=1)
        self.explore = _num(f"{field}.exploration_probability", p["exploration_probability"], lo=0, hi=1)
        self.penalty = _num(f"{field}.max_ttft_penalty_ms", p["max_ttft_penalty_ms"], lo=0)
        self.peak = _num(f"{field}.peak_prefill_throughput", p["peak_prefill_throughput"], lo=0, lo_open=True)

    def __call__(self, req, cands, ctx, explore):
        if explore and self.explore > 0.0 and ctx.rng.random() < self.explore:
            return cands
        scores = self.prefix.score(req, cands, ctx)
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


def _make_filter(name: str, params: dict, field: str):
    if name == "decode-filter":
        _take_params(field, params, {})
        return _RoleFilter(("decode", "both", "prefill-decode", ""))
    if name == "prefill-filter":
        _take_params(field, params, {})
        return _RoleFilter(("prefill", "both", "prefill-decode"))
    if name == "available":
        _take_params(field, params, {})
        return None                                   # always applied first anyway
    if name == "utilization-detector":
        return _UtilizationFilter(params, field)
    if name == "prefix-cache-affinity":
        return _PrefixAffinityFilter(params, field)
    raise AssertionError(name)  # pragma: no cover


FILTERS: dict[str, Callable] = {
    "decode-filter": _make_filter, "prefill-filter": _make_filter, "available": _make_filter,
    "utilization-detector": _make_filter, "prefix-cache-affinity": _make_filter,
}
FILTER_ALIASES: dict[str, str] = {
    "prefix-cache-affinity-filter": "prefix-cache-affinity", "utilization-filter": "utilization-detector",
    "available-filter": "available",
}


# --------------------------------------------------------------------------------------------
# pickers: (cands, totals, rng) -> chosen position in cands

def _pick_max_score(totals: list[float], rng) -> int:
    """Argmax with a uniform random tie-break (llm-d: shuffle, stable sort, take first). The RNG
    is drawn only when there is a tie."""
    best = max(totals)
    n_best = totals.count(best)
    if n_best == 1:
        return totals.index(best)
    k = int(rng.random() * n_best)
    for i, t in enumerate(totals):
        if t == best:
            if k == 0:
                return i
            k -= 1
    return totals.index(best)  # pragma: no cover


def _pick_random(totals: list[float], rng) -> int:
    return int(rng.random() * len(totals))


def _pick_weighted_random(totals: list[float], rng) -> int:
    """A-Res: key = U^(1/score), take the max key; pods with score <= 0 only if all are."""
    n = len(totals)
    u = rng.random(n)
    best, best_key = -1, -1.0
    for i in range(n):
        s = totals[i]
        if s > 0.0:
            key = float(u[i]) ** (1.0 / s)
            if key > best_key:
                best, best_key = i, key
    if best < 0:
        return int(u[0] * n)
    return best


PICKERS: dict[str, Callable] = {
    "max-score": _pick_max_score, "random": _pick_random, "weighted-random": _pick_weighted_random,
}
PICKER_ALIASES: dict[str, str] = {
    "max-score-picker": "max-score", "random-picker": "random", "weighted-random-picker": "weighted-random",
}


# --------------------------------------------------------------------------------------------
# routers

class Router:
    """Base router: the implicit availability filter, then the configured filters."""
    policy = "router"

    def __init__(self, filters: list | None = None):
        self.filters = [f for f in (filters or []) if f is not None]

    def candidates(self, pods: list, req, ctx, explore: bool = True) -> list:
        cands = [p for p in pods if p.available]
        for f in self.filters:
            if not cands:
                return cands
            cands = f(req, cands, ctx, explore)
        return cands

    def pick(self, req, pods: list, ctx) -> int | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, req, pods: list, ctx) -> list[tuple[int, float, dict[str, float]]]:  # pragma: no cover
        raise NotImplementedError

    def observe(self, req, pod_index: int, ctx) -> None:
        pass

    def release(self, req, pod_index: int) -> None:
        pass

    def forget(self, pod_index: int) -> None:
        """Drop all router state about a pod (it left the pool)."""


class RoundRobinRouter(Router):
    """Cycles over the available candidates: the next candidate (by pod index) after the pod
    last observed, wrapping around."""
    policy = "round-robin"

    def __init__(self, filters=None):
        super().__init__(filters)
        self._last = -1

    def _choose(self, cands):
        last = self._last
        best = None
        first = None
        for p in cands:
            i = p.index
            if i > last and (best is None or i < best):
                best = i
            if first is None or i < first:
                first = i
        return best if best is not None else first

    def pick(self, req, pods, ctx):
        cands = self.candidates(pods, req, ctx)
        return self._choose(cands) if cands else None

    def scores(self, req, pods, ctx):
        cands = self.candidates(pods, req, ctx, explore=False)
        if not cands:
            return []
        nxt = self._choose(cands)
        return [(p.index, 1.0 if p.index == nxt else 0.0, {"round-robin": 1.0 if p.index == nxt else 0.0})
                for p in cands]

    def observe(self, req, pod_index, ctx):
        self._last = pod_index

    def forget(self, pod_index):
        pass


class RandomRouter(Router):
    """Uniform over the candidates (ctx.rng)."""
    policy = "random"

    def pick(self, req, pods, ctx):
        cands = self.candidates(pods, req, ctx)
        if not cands:
            return None
        return cands[int(ctx.rng.random() * len(cands))].index

    def scores(self, req, pods, ctx):
        return [(p.index, 1.0, {}) for p in self.candidates(pods, req, ctx, explore=False)]


class LeastLoadedRouter(Router):
    """Min of waiting + running + in_flight, uniform random tie-break. scores() reports the
    load-balance score 1/(1 + load), which orders pods the same way."""
    policy = "least-loaded"

    def pick(self, req, pods, ctx):
        cands = self.candidates(pods, req, ctx)
        if not cands:
            return None
        loads = [-(p.waiting + p.running + p.in_flight) for p in cands]
        return cands[_pick_max_score(loads, ctx.rng)].index

    def scores(self, req, pods, ctx):
        out = []
        for p in self.candidates(pods, req, ctx, explore=False):
            s = 1.0 / (1 + p.waiting + p.running + p.in_flight)
            out.append((p.index, s, {"load-balance": s}))
        return out


class WeightedRouter(Router):
    """An llm-d scheduling profile: filters -> Σ w·clamp(score) -> picker."""
    policy = "weighted"

    def __init__(self, scorers: list[tuple[str, float, Scorer]], filters=None, picker: str = "max-score"):
        super().__init__(filters)
        self.scorer_specs = [(n, w) for n, w, _ in scorers]
        self._all = [(n, float(w), s) for n, w, s in scorers]
        self._active = [(float(w), s, bool(getattr(s, "bounded", False))) for _, w, s in scorers if w > 0]
        self.picker_name = picker
        self._picker = PICKERS[picker]
        # the profile's prefix index: first prefix scorer (approximate preferred) feeds no-hit-lru
        # and the prefix-affinity filter
        prefixes = [s for _, _, s in scorers if isinstance(s, PrefixCacheScorer)]
        approx = [s for s in prefixes if not s.precise]
        self.prefix = approx[0] if approx else (prefixes[0] if prefixes else None)
        self._own_prefix = None
        if self.prefix is None and any(isinstance(f, _PrefixAffinityFilter) for f in self.filters):
            self._own_prefix = self.prefix = PrefixCacheScorer()
        for f in self.filters:
            if isinstance(f, _PrefixAffinityFilter):
                f.prefix = self.prefix
        self._nohit = [s for _, _, s in scorers if isinstance(s, NoHitLRUScorer)]
        for s in self._nohit:
            if self.prefix is not None:
                s.probe = self.prefix
        self._stateful = [s for _, _, s in scorers if type(s).observe is not Scorer.observe
                          and not isinstance(s, NoHitLRUScorer)]
        if self._own_prefix is not None:
            self._stateful.append(self._own_prefix)
        self._releasing = [s for _, _, s in scorers if type(s).release is not Scorer.release]

    def pick(self, req, pods, ctx):
        cands = self.candidates(pods, req, ctx)
        n = len(cands)
        if n <= 1:
            return cands[0].index if n else None
        totals = [0.0] * n
        for w, sc, bounded in self._active:
            s = sc.score(req, cands, ctx)
            if bounded:
                totals = [t + w * x for t, x in zip(totals, s)]
            else:
                totals = [t + w * (0.0 if x < 0.0 else (1.0 if x > 1.0 else x)) for t, x in zip(totals, s)]
        return cands[self._picker(totals, ctx.rng)].index

    def scores(self, req, pods, ctx):
        cands = self.candidates(pods, req, ctx, explore=False)
        n = len(cands)
        if not n:
            return []
        totals = [0.0] * n
        parts = [{} for _ in range(n)]
        for name, w, sc in self._all:
            s = sc.score(req, cands, ctx)
            for i in range(n):
                x = float(s[i])
                x = 0.0 if x < 0.0 or x != x else (1.0 if x > 1.0 else x)
                parts[i][name] = x
                totals[i] += w * x
        return [(cands[i].index, totals[i], parts[i]) for i in range(n)]

    def observe(self, req, pod_index, ctx):
        colds = [s.cold_for_observe(req, ctx) for s in self._nohit]   # before the index changes
        for s, cold in zip(self._nohit, colds):
            s.observe_cold(cold, pod_index)
        for s in self._stateful:
            s.observe(req, pod_index, ctx)

    def release(self, req, pod_index):
        for s in self._releasing:
            s.release(req, pod_index)

    def forget(self, pod_index):
        for _, _, s in self._all:
            s.forget(pod_index)
        if self._own_prefix is not None:
            self._own_prefix.forget(pod_index)


# --------------------------------------------------------------------------------------------
# construction

DEFAULT_PROFILE: tuple[tuple[str, float], ...] = (("queue", 2.0), ("kv-cache-utilization", 2.0), ("prefix-cache", 3.0))

ROUTING_POLICIES: dict[str, str] = {
    "round-robin": "uniform cycle over available candidates",
    "random": "uniform random candidate",
    "least-loaded": "min waiting + running + in_flight, random tie-break",
    "weighted": "llm-d scheduling profile: filters, weighted scorers, picker",
    "default": "llm-d built-in profile: queue x2, kv-cache-utilization x2, prefix-cache x3, max-score",
}

_SIMPLE = {"round-robin": RoundRobinRouter, "random": RandomRouter, "least-loaded": LeastLoadedRouter}


def _build_filters(spec_filters, field: str) -> list:
    if spec_filters is None:
        return []
    if not isinstance(spec_filters, (list, tuple)):
        raise ConfigError(field, "must be a list of filter names or mappings")
    out = []
    for i, entry in enumerate(spec_filters):
        f = f"{field}[{i}]"
        name, _, params = _split_entry(f, entry, ())
        name = _resolve(name, FILTERS, FILTER_ALIASES, f"{f}.name", "filter")
        out.append(FILTERS[name](name, params, f))
    return out


def _build_scorers(spec_scorers, field: str) -> list[tuple[str, float, Scorer]]:
    if not isinstance(spec_scorers, (list, tuple)):
        raise ConfigError(field, "must be a list of scorer names or mappings")
    out = []
    for i, entry in enumerate(spec_scorers):
        f = f"{field}[{i}]"
        name, extra, params = _split_entry(f, entry, ("weight",))
        name = _resolve(name, SCORERS, SCORER_ALIASES, f"{f}.name", "scorer")
        w = extra.get("weight", 1.0)
        if w is None:
            w = 1.0
        w = _num(f"{f}.weight", w, lo=0)
        scorer = SCORERS[name](params, f)
        out.append((name, w, scorer))
    return out


def _build_picker(spec_picker, field: str) -> str:
    if spec_picker is None:
        return "max-score"
    name, _, params = _split_entry(field, spec_picker, ())
    if params:
        raise ConfigError(f"{field}.{next(iter(params))}", "unknown parameter; allowed: none")
    return _resolve(name, PICKERS, PICKER_ALIASES, f"{field}" if isinstance(spec_picker, str) else f"{field}.name",
                    "picker")


def make_router(spec: dict | None = None, field: str = "router") -> Router:
    """Build a router from a spec (see the module docstring and ROUTING_POLICIES).

    {"policy": "round-robin" | "random" | "least-loaded", "filters": [...]}
    {"policy": "weighted", "scorers": [{"name": "queue", "weight": 2}, ...], "filters": [...],
     "picker": "max-score"}
    {"policy": "default"} or {}: queue x2, kv-cache-utilization x2, prefix-cache x3 (approximate),
    max-score (scorers/filters/picker may still be given to override).
    """
    if spec is None:
        spec = {}
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict):
        raise ConfigError(field, f"must be a mapping, got {type(spec).__name__}")
    policy = spec.get("policy", "default")
    if policy is None:
        policy = "default"
    if not isinstance(policy, str) or policy not in ROUTING_POLICIES:
        raise ConfigError(f"{field}.policy", f"unknown policy {policy!r}; allowed: {_names(ROUTING_POLICIES)}")
    if policy in _SIMPLE:
        allowed = ("policy", "filters")
    else:
        allowed = ("policy", "filters", "scorers", "picker")
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"{field}.{k}", f"unknown key for policy {policy!r}; allowed: {', '.join(allowed)}")
    filters = _build_filters(spec.get("filters"), f"{field}.filters")
    if policy in _SIMPLE:
        return _SIMPLE[policy](filters)
    scorers_spec = spec.get("scorers")
    if scorers_spec is None:
        scorers_spec = [{"name": n, "weight": w} for n, w in DEFAULT_PROFILE]
    scorers = _build_scorers(scorers_spec, f"{field}.scorers")
    if not scorers:
        raise ConfigError(f"{field}.scorers", "a weighted profile needs at least one scorer; allowed: "
                          + _names(SCORERS))
    picker = _build_picker(spec.get("picker"), f"{field}.picker")
    return WeightedRouter(scorers, filters, picker)
