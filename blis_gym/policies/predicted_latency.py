"""Predicted-latency routing, as llm-d's latency-aware scheduling (`latency-scorer` fed by the
`predicted-latency-producer`): predict each candidate's TTFT and TPOT for this request, then
pick by SLO headroom instead of scoring queues.

llm-d trains XGBoost models online in a sidecar; here each pod has a TTFT and a TPOT ridge
regression (numpy), refitted on a sliding window of the requests the router has seen complete
on that pod. Features, read at the decision (all from the router's signals):

    1, KV use, input tokens / 1000, waiting, running, prefix-match fraction,
    in-flight input tokens / 1000

Targets: TTFT from the routing decision to the first token; TPOT the mean time per output token
after the first. The pick, per llm-d's scorer and its defaults:

1. Until every candidate's model has `min_samples` samples, route with the default profile
   (queue x2, kv-cache-utilization x2, prefix-cache x3), as llm-d falls back when it has no
   predictions. The default profile's approximate prefix index is kept up to date either way
   and gives the prefix-match fraction.
2. Affinity gate: with probability 1 - `epsilon` keep only the candidates whose prefix-match
   fraction is at least `affinity_tau` (if any).
3. Headroom h = SLO - predicted, for TTFT and TPOT. Candidates with both headrooms >= 0 form
   the positive tier; if it is non-empty the pick is in it, by the blended headroom
   `ttft_weight * h_ttft / ttft_slo + tpot_weight * h_tpot / tpot_slo`: the least (`least`,
   llm-d's default: bin-packing) or the most (`most`). Otherwise the candidate with the least
   blended deficit `ttft_weight * ttft / ttft_slo + tpot_weight * tpot / tpot_slo`.
   Without SLOs (`ttft_slo_ms`/`tpot_slo_ms` null, as a request without SLO headers) the pick
   is the least blended predicted latency, each normalised by its mean over the candidates.
Ties go to the lower pod index (the predictions are continuous).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from blis_gym.errors import ConfigError
from blis_gym.policies.params import number, take_params

N_FEATURES = 7
RIDGE = 1e-3         # relative ridge penalty: keeps the fit defined with collinear features


class PodModel:
    """A pod's TTFT and TPOT regressions over its last `window` completed requests."""

    def __init__(self, window: int, refit_every: int):
        self.samples: deque = deque(maxlen=window)
        self.refit_every = refit_every
        self.since_fit = 0
        self.w_ttft: np.ndarray | None = None
        self.w_tpot: np.ndarray | None = None

    def add(self, x: np.ndarray, ttft: float, tpot: float) -> None:
        self.samples.append((x, ttft, tpot))
        self.since_fit += 1
        if self.w_ttft is None or self.since_fit >= self.refit_every:
            self.fit()

    def fit(self) -> None:
        X = np.array([s[0] for s in self.samples])
        y = np.array([(s[1], s[2]) for s in self.samples])
        A = X.T @ X
        A += RIDGE * (np.trace(A) / N_FEATURES + 1.0) * np.eye(N_FEATURES)
        w = np.linalg.solve(A, X.T @ y)
        self.w_ttft, self.w_tpot = w[:, 0], w[:, 1]
        self.since_fit = 0

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.maximum(X @ self.w_ttft, 0.0), np.maximum(X @ self.w_tpot, 0.0)


class PredictedLatencyRouter:
    policy = "predicted-latency"

    def __init__(self, fallback, ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None,
                 ttft_weight: float = 0.8, tpot_weight: float = 0.2, strategy: str = "least",
                 affinity_tau: float = 0.8, epsilon: float = 0.01, window: int = 512, min_samples: int = 32,
                 refit_every: int = 16):
        self.fallback = fallback
        self.prefix_index = fallback.prefix_index
        self.filters = fallback.filters
        self.ttft_slo = None if ttft_slo_ms is None else ttft_slo_ms * 1000.0
        self.tpot_slo = None if tpot_slo_ms is None else tpot_slo_ms * 1000.0
        self.wt, self.wp = ttft_weight, tpot_weight
        self.most = strategy == "most"
        self.tau, self.epsilon = affinity_tau, epsilon
        self.window, self.min_samples, self.refit_every = window, min_samples, refit_every
        self.models: dict[int, PodModel] = {}
        self._last: tuple | None = None        # (request, {pod index: features}, decision time)
        self.pending: dict = {}                # request -> (pod index, features, decision time)

    # ---- the decision ---------------------------------------------------------------------
    def features(self, req, cands, ctx) -> np.ndarray:
        idx = self.prefix_index
        total = idx.total_blocks(req)
        frac = [m / total if total else 0.0 for m in idx.matches(req, cands, ctx)]
        n = req.input_len / 1000.0
        return np.array([[1.0, p.kv_usage, n, p.waiting, p.running, f, p.in_flight_tokens / 1000.0]
                         for p, f in zip(cands, frac)])

    def _predict(self, req, pods, ctx, explore: bool):
        """(candidates, features, predicted TTFT, predicted TPOT), or None to fall back."""
        cands = self.fallback.candidates(pods, req, ctx, explore)
        if not cands:
            return None
        X = self.features(req, cands, ctx)
        self._last = (req, {p.index: x for p, x in zip(cands, X)}, ctx.now)
        models = [self.models.get(p.index) for p in cands]
        if any(m is None or len(m.samples) < self.min_samples for m in models):
            return None
        ttft = np.empty(len(cands))
        tpot = np.empty(len(cands))
        for k, m in enumerate(models):
            t, p = m.predict(X[k:k + 1])
            ttft[k], tpot[k] = t[0], p[0]
        return cands, X, ttft, tpot

    def pick(self, req, pods, ctx):
        pred = self._predict(req, pods, ctx, True)
        if pred is None:
            return self.fallback.pick(req, pods, ctx)
        cands, X, ttft, tpot = pred
        keep = np.arange(len(cands))
        if ctx.rng.random() >= self.epsilon:
            sticky = keep[X[:, 5] >= self.tau]
            if len(sticky):
                keep = sticky
        return cands[int(keep[self._choose(ttft[keep], tpot[keep])])].index

    def _choose(self, ttft: np.ndarray, tpot: np.ndarray) -> int:
        if self.ttft_slo is None or self.tpot_slo is None:
            cost = self.wt * ttft / max(ttft.mean(), 1e-9) + self.wp * tpot / max(tpot.mean(), 1e-9)
            return int(np.argmin(cost))
        h_ttft, h_tpot = self.ttft_slo - ttft, self.tpot_slo - tpot
        positive = np.flatnonzero((h_ttft >= 0) & (h_tpot >= 0))
        if len(positive):
            blended = self.wt * h_ttft[positive] / self.ttft_slo + self.wp * h_tpot[positive] / self.tpot_slo
            return int(positive[np.argmax(blended) if self.most else np.argmin(blended)])
        return int(np.argmin(self.wt * ttft / self.ttft_slo + self.wp * tpot / self.tpot_slo))

    def scores(self, req, pods, ctx):
        pred = self._predict(req, pods, ctx, False)
        if pred is None:
            return self.fallback.scores(req, pods, ctx)
        cands, _, ttft, tpot = pred
        return [(p.index, -float(t) / 1000.0, {"predicted_ttft_ms": float(t) / 1000.0,
                                                "predicted_tpot_ms": float(q) / 1000.0})
                for p, t, q in zip(cands, ttft, tpot)]

    # ---- feedback -------------------------------------------------------------------------
    def observe(self, req, pod_index, ctx):
        last = self._last
        if last is not None and last[0] is req and pod_index in last[1]:
            self.pending[req] = (pod_index, last[1][pod_index], last[2])
        self._last = None
        self.fallback.observe(req, pod_index, ctx)

    def release(self, req, pod_index):
        self.fallback.release(req, pod_index)
        got = self.pending.pop(req, None)
        if got is None or got[0] != pod_index or req.finished < 0 or req.first_token < 0:
            return                                  # not completed: no latency to learn from
        _, x, t0 = got
        tpot = (req.finished - req.first_token) / (req.output_len - 1) if req.output_len > 1 else 0.0
        model = self.models.get(pod_index)
        if model is None:
            model = self.models[pod_index] = PodModel(self.window, self.refit_every)
        model.add(x, float(req.first_token - t0), float(tpot))

    def forget(self, pod_index):
        self.models.pop(pod_index, None)
        self.fallback.forget(pod_index)

    def candidates(self, pods, req, ctx, explore: bool = True):
        return self.fallback.candidates(pods, req, ctx, explore)


DEFAULTS = {"ttft_slo_ms": None, "tpot_slo_ms": None, "ttft_weight": 0.8, "tpot_weight": 0.2, "strategy": "least",
            "affinity_tau": 0.8, "epsilon": 0.01, "window": 512, "min_samples": 32, "refit_every": 16}


def make_predicted_latency(params: dict, field: str, fallback):
    p = take_params(field, params, DEFAULTS)
    for k in ("ttft_slo_ms", "tpot_slo_ms"):
        if p[k] is not None:
            p[k] = number(f"{field}.{k}", p[k], lo=0, lo_open=True)
    if (p["ttft_slo_ms"] is None) != (p["tpot_slo_ms"] is None):
        raise ConfigError(f"{field}.ttft_slo_ms", "give both ttft_slo_ms and tpot_slo_ms, or neither")
    for k in ("ttft_weight", "tpot_weight"):
        p[k] = number(f"{field}.{k}", p[k], lo=0)
    for k in ("affinity_tau", "epsilon"):
        p[k] = number(f"{field}.{k}", p[k], lo=0, hi=1)
    for k in ("window", "min_samples", "refit_every"):
        p[k] = number(f"{field}.{k}", p[k], lo=1, integer=True)
    if p["min_samples"] > p["window"]:
        raise ConfigError(f"{field}.min_samples", f"must be <= window ({p['window']}), got {p['min_samples']}")
    if p["strategy"] not in ("least", "most"):
        raise ConfigError(f"{field}.strategy", f"unknown strategy {p['strategy']!r}; allowed: least, most")
    return PredictedLatencyRouter(fallback, **p)
