"""Routers: the implicit availability filter, the configured filters, then a choice.

`pick()` never changes router state: the caller reports the pod it actually used with
`observe()` (so an external agent's choice updates the approximate prefix index, the no-hit LRU,
session affinity and the round-robin cursor exactly as the router's own choice would).
`prefix_index` is the router's `PrefixIndex` (None when nothing in the profile reads one).
"""
from __future__ import annotations

from blis_gym.sim.cluster.signals import load

from .pickers import PICKERS, pick_max_score
from .prefix import PrefixIndex
from .scorers import NoHitLRUScorer, PrefixCacheScorer, Scorer


class Router:
    """Base router. A filter that reads prefix scores gets the profile's prefix scorer, or the
    router's own default one (observed and forgotten with the router)."""
    policy = "router"

    def __init__(self, filters: list | None = None, prefix: PrefixCacheScorer | None = None):
        self.filters = [f for f in (filters or []) if f is not None]
        self._own_prefix = None
        readers = [f for f in self.filters if getattr(f, "uses_prefix_scorer", False)]
        if prefix is None and readers:
            self._own_prefix = prefix = PrefixCacheScorer()
        for f in readers:
            f.scorer = prefix
        self.prefix_index: PrefixIndex | None = prefix.index if prefix is not None else None

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
        if self._own_prefix is not None:
            self._own_prefix.observe(req, pod_index, ctx)

    def release(self, req, pod_index: int) -> None:
        pass

    def forget(self, pod_index: int) -> None:
        """Drop all router state about a pod (it left the pool)."""
        if self._own_prefix is not None:
            self._own_prefix.forget(pod_index)


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
        super().observe(req, pod_index, ctx)
        self._last = pod_index


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
        return cands[pick_max_score([-load(p) for p in cands], ctx.rng)].index

    def scores(self, req, pods, ctx):
        out = []
        for p in self.candidates(pods, req, ctx, explore=False):
            s = 1.0 / (1 + load(p))
            out.append((p.index, s, {"load-balance": s}))
        return out


class WeightedRouter(Router):
    """An llm-d scheduling profile: filters -> Σ w·clamp(score) -> picker."""
    policy = "weighted"

    def __init__(self, scorers: list[tuple[str, float, Scorer]], filters=None, picker: str = "max-score"):
        # the profile's prefix scorer (approximate preferred) feeds no-hit-lru and the filters
        prefixes = [s for _, _, s in scorers if isinstance(s, PrefixCacheScorer)]
        approx = [s for s in prefixes if not s.precise]
        super().__init__(filters, approx[0] if approx else (prefixes[0] if prefixes else None))
        self.scorer_specs = [(n, w) for n, w, _ in scorers]
        self._all = [(n, float(w), s) for n, w, s in scorers]
        self._active = [(float(w), s, bool(getattr(s, "bounded", False))) for _, w, s in scorers if w > 0]
        self.picker_name = picker
        self._picker = PICKERS[picker]
        self._nohit = [s for _, _, s in scorers if isinstance(s, NoHitLRUScorer)]
        for s in self._nohit:
            if self.prefix_index is not None:
                s.probe = self.prefix_index
        self._stateful = [s for _, _, s in scorers if type(s).observe is not Scorer.observe
                          and not isinstance(s, NoHitLRUScorer)]
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
        super().observe(req, pod_index, ctx)

    def release(self, req, pod_index):
        for s in self._releasing:
            s.release(req, pod_index)

    def forget(self, pod_index):
        for _, _, s in self._all:
            s.forget(pod_index)
        super().forget(pod_index)
