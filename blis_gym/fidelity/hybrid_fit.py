"""Fit the `hybrid` step-time model (blis_gym/sim/latency/hybrid.py) by ridge least squares.

The step structure is trained-physics's, so a request's latency is, to first order, linear in
the refitted coefficients: raising beta_j by d adds d x (the sum over the engine steps the request
waited through of that beta's basis term) to it, and the scheduling delay adds api_us + sched_steps
x (the latest step when it arrived). One replay of each experiment with a recording step model
gives those sums per request (the step log: when each step started, how long it took, its basis
terms), so the fit is a linear least-squares problem on the relative errors of each experiment's
mean E2E, mean TTFT and ITL, solved for the least absolute relative error (iteratively
reweighted least squares: a few rows far off do not pull the others) plus a ridge

    sum_rows w_m |sim + F d - measured| / measured  +  ridge sum_j ((theta_j + d_j - c_j) / s_j)^2

with the prior centres c at trained-physics's own values (BLIS's betas, its fixed queueing delay,
no step-dependent delay) and spreads s (`PRIOR`); every coefficient stays at or above its floor
(`FLOOR`: a KV read cannot beat the HBM bandwidth; what a solution drives below is held there
and the rest re-solved). A few Gauss-Newton rounds (replay with the new coefficients, solve
again) absorb what queueing makes non-linear. Rows a round's coefficients predict more than
100 % off (a run tipped into a queue that never drains) are left out of that round: the
linearisation says nothing there. No randomness and no search: the same data give the same
coefficients bit for bit; a fit on the 17 shipped-and-H100 experiments takes about a minute.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..sim.latency.hybrid import HYBRID_PARAMS, HybridPhysics, start_params
from .replay import TraceCase, run_experiment

__all__ = ["FREE", "PRIOR", "RIDGE", "calibrate_hybrid", "fit_hybrid", "observe", "prior_centre", "write_hybrid"]

#: the coefficients a fit can move (one basis column each)
BASIS = ("b1a", "b2a", "b2b", "b2b_gddr", "b3", "b6", "b7", "b8", "api_us", "sched_steps")
#: what the shipped fit and the cross-validation folds move: the KV-read efficiency on HBM and on
#: GDDR cards and the scheduling delay. Freeing more betas was worse out of sample (b1a as well:
#: leave-one-model-out E2E 7.3 % against 6.1 %; every beta: worse than trained-physics on the
#: folds it reached; docs/fidelity.md).
FREE = ("b2b", "b2b_gddr", "api_us", "sched_steps")
#: prior spread of each free coefficient (its centre is trained-physics's value): one spread
#: away costs as much as a 1/sqrt(ridge) relative error on one row
PRIOR = {"b1a": 0.1, "b2a": 0.5, "b2b": 0.5, "b2b_gddr": 0.5, "b3": 0.3, "b6": 5.0, "b7": 300.0, "b8": 200.0,
         "api_us": 10_000.0, "sched_steps": 1.0}
#: physical floors: a prefill cannot beat the peak FLOP rate, weight and KV reads cannot beat
#: the HBM bandwidth (the basis terms are FLOPs / peak and bytes / bandwidth)
FLOOR = {"b1a": 1.0, "b2b": 1.0, "b2b_gddr": 1.0, "b3": 1.0}
#: and a ceiling: vLLM's engine core takes a new request in between two steps, so it waits for the
#: step running when it arrives and, with async scheduling, the one already scheduled: two at most
CEILING = {"sched_steps": 2.0}
RIDGE = 1e-3
WEIGHTS = {"e2e_mean": 1.0, "ttft_mean": 1.0, "itl_mean": 0.5}
TRACE_WEIGHT = 2.0          # the traces are the only non-H100 rows: without it 15 H100 runs drown them
MAX_ROW_ERROR = 1.0         # rows further off than this (relative) are left out of a round
ROUNDS = 3
IRLS_ROUNDS = 20
IRLS_FLOOR = 0.005          # relative errors below 0.5 % weigh as 0.5 % (IRLS stays finite)
FIT_STAGE_CAP_S = 150.0


class _Recorder(HybridPhysics):
    """The hybrid model that also logs each step: start, duration and the basis terms of the
    refitted betas (b1a: prefill compute, b2a: decode compute, b2b: decode KV read, b3: weight read, b6: sequences,
    b7: 1, b8: MoE layers of an interleaved MoE model)."""

    def __init__(self, model, hw, tp, params, deployment=None):
        super().__init__(model, hw, tp, params=params, deployment=deployment)
        self.clock = None
        self.log: list[tuple] = []
        m = self.model
        self._moe = float(m.moe_layer_split[0]) if m.is_moe and m.interleave_moe_layer_step > 0 else 0.0
        self._gddr = self.hw.gddr

    def step_time_us(self, prefill=(), num_decode: int = 0, decode_context: int = 0) -> int:
        prefill = [p for p in prefill if p[0] > 0]
        s = super().step_time_us(prefill, num_decode, decode_context)
        tokens = sum(t for t, _c, _p in prefill)
        att = sum(4 * self._hP * t * (p + t / 2) * self._d_h for t, _c, p in prefill)
        pf = ((self._proj_tok + self._ffn_tok) * tokens + self._La * att / self._dp) / self._P
        kv = self._kv_tok * (decode_context + num_decode * self._w)
        dc = self._dc_comp_req * num_decode + self._dc_comp_ctx * decode_context
        self._log(s, pf, dc, kv, len(prefill) + num_decode)
        return s

    def decode_step_us(self, num_decode: int, decode_context: int) -> int:
        s = super().decode_step_us(num_decode, decode_context)
        kv = self._kv_tok * (decode_context + num_decode * self._w)
        dc = self._dc_comp_req * num_decode + self._dc_comp_ctx * decode_context
        self._log(s, 0.0, dc, kv, num_decode)
        return s

    def _log(self, s, pf, dc, kv, seqs) -> None:       # the columns of BASIS, after start and duration
        kv_hbm, kv_gddr = (0.0, kv) if self._gddr else (kv, 0.0)
        self.log.append((self.clock.now, s, pf, dc, kv_hbm, kv_gddr, self._t_weight, seqs, 1.0, self._moe))


class Rows(NamedTuple):
    """One experiment's comparison rows: simulated, measured, basis (one row per metric)."""
    sim: np.ndarray
    measured: np.ndarray
    basis: np.ndarray       # (metrics, len(BASIS))
    weight: np.ndarray


def _replay(case, params: Mapping[str, float], stage_cap_s: float | None):
    """Replay `case` with a recording hybrid model: (predicted whole-run metrics, measured,
    the Simulation, the recorder)."""
    made: list[_Recorder] = []
    held = {}

    def factory(m, hw, tp, p, deployment=None):
        rec = _Recorder(m, hw, tp, p, deployment)
        made.append(rec)
        return rec

    def bind(sim):
        held["sim"] = sim
        for rec in made:
            rec.clock = sim.loop
    if isinstance(case, TraceCase):
        res = case.replay(dict(params), {}, kind=factory, with_sim=bind)
        pred = {r["metric"]: r["predicted"] for r in res["rows"]}
        actual = {r["metric"]: r["actual"] for r in res["rows"]}
    else:
        out = run_experiment(case, dict(params), {}, stage_cap_s=stage_cap_s, latency_model=factory, with_sim=bind)
        pred, actual = out[-1], case.actual[-1]
    return pred, actual, held["sim"], made


def observe(case, params: Mapping[str, float], stage_cap_s: float | None = FIT_STAGE_CAP_S) -> Rows | None:
    """The fit's rows for one experiment at `params` (None: a data-parallel run, not fitted)."""
    if (case.settings.get("dp", 1) if isinstance(case, TraceCase) else case.dp) != 1:
        return None
    from blis_gym.sim.engine import State
    pred, actual, sim, (rec,) = _replay(case, params, stage_cap_s)
    log = np.asarray(rec.log, dtype=float).reshape(-1, len(BASIS))      # start, duration, the step terms of BASIS
    a = sim.metrics.arrays()
    ok = a["state"] == int(State.COMPLETED)
    if not ok.any() or not len(log):
        return None
    start, dur, terms = log[:, 0], log[:, 1], log[:, 2:]
    end = start + dur
    cum = np.vstack([np.zeros(terms.shape[1]), np.cumsum(terms, axis=0)])
    arrival = a["arrival"][ok].astype(float)
    first, last = arrival + a["ttft"][ok], arrival + a["e2e"][ok]

    def through(hi):                      # basis sums over the steps that end in (arrival, hi]
        return cum[np.searchsorted(end, hi, side="right")] - cum[np.searchsorted(end, arrival, side="right")]
    k = np.searchsorted(start, arrival, side="right") - 1
    latest = np.where(k >= 0, dur[np.maximum(k, 0)], 0.0)
    engine_clock = isinstance(case, TraceCase) and case.settings.get("clock") != "client"
    delay = np.column_stack([np.full(len(arrival), 0.0 if engine_clock else 1.0), latest])
    f_ttft = np.hstack([through(first), delay]) / 1000.0           # ms per unit of each coefficient
    f_e2e = np.hstack([through(last), delay]) / 1000.0
    if isinstance(case, TraceCase):
        n = a["out"][ok].astype(float)
        sel = n > 1
        f_itl = ((f_e2e - f_ttft)[sel] / (n[sel] - 1)[:, None]).mean(axis=0) if sel.any() else f_e2e[0] * np.nan
    else:
        f_itl = (f_e2e.mean(axis=0) - f_ttft.mean(axis=0)) / max(case.output_len - 1, 1)
    basis = {"e2e_mean": f_e2e.mean(axis=0), "ttft_mean": f_ttft.mean(axis=0), "itl_mean": f_itl}
    w = TRACE_WEIGHT if isinstance(case, TraceCase) else 1.0
    ms = list(WEIGHTS)
    return Rows(np.array([pred[m] for m in ms], float), np.array([actual[m] for m in ms], float),
                np.vstack([basis[m] for m in ms]), np.array([w * WEIGHTS[m] for m in ms]))


def prior_centre(free: Sequence[str] = FREE) -> dict[str, float]:
    """Where a fit starts and what the ridge pulls toward: trained-physics's own coefficients,
    the free ones raised to their physical floors (BLIS's prefill compute correction 0.15 would
    be 6.6x the peak FLOP rate)."""
    return {k: max(v, FLOOR.get(k, 0.0)) if k in free else v for k, v in start_params().items()}


def solve(rows: Sequence[Rows], theta: Mapping[str, float], ridge: float = RIDGE,
          free: Sequence[str] = FREE) -> dict[str, float]:
    """One round from `theta` (the coefficients `rows` were observed at): the least absolute
    relative error (by iteratively reweighted least squares, so that a few rows far off do not
    pull every other row off) plus the ridge toward the prior centres, coefficients >= 0."""
    cols = [BASIS.index(k) for k in free]
    t0 = np.array([theta[k] for k in free])
    centre = np.array([prior_centre(free)[k] for k in free])
    low = np.array([FLOOR.get(k, 0.0) for k in free])
    high = np.array([CEILING.get(k, np.inf) for k in free])
    inv_var = 1.0 / np.array([PRIOR[k] for k in free]) ** 2
    A, b, w = [], [], []
    for r in rows:
        rel = (r.sim - r.measured) / r.measured
        keep = np.isfinite(rel) & (np.abs(rel) <= MAX_ROW_ERROR) & np.isfinite(r.basis).all(axis=1)
        A.append(r.basis[keep][:, cols] / r.measured[keep, None])
        b.append(-rel[keep])
        w.append(r.weight[keep])
    A = np.vstack(A) if A else np.zeros((0, len(free)))
    b, w = (np.concatenate(b), np.concatenate(w)) if b else (np.zeros(0), np.zeros(0))
    d = np.zeros(len(free))
    for _ in range(IRLS_ROUNDS):
        irls = w / np.maximum(np.abs(A @ d - b), IRLS_FLOOR)      # |residual| weights: an L1 fit
        d = _ridge_bounded(A, b, irls, t0, centre, ridge * inv_var, low, high)
    return {**theta, **{k: float(min(max(t0[i] + d[i], low[i]), high[i])) for i, k in enumerate(free)}}


def _ridge_bounded(A, b, wt, t0, centre, pen, low, high) -> np.ndarray:
    """argmin_d sum wt (A d - b)^2 + sum pen (t0 + d - centre)^2 with low <= t0 + d <= high:
    what a solution drives past a bound is held there and the rest re-solved."""
    sw = np.sqrt(wt)[:, None]
    Aw, bw = A * sw, b * sw[:, 0]
    free = np.ones(len(t0), bool)
    held = low - t0                        # where a coefficient held at a bound sits
    for _ in range(len(t0)):
        d = np.where(free, 0.0, held)
        idx = np.flatnonzero(free)
        rhs = bw - Aw @ d
        M = Aw[:, idx].T @ Aw[:, idx] + np.diag(pen[idx])
        d[idx] = np.linalg.solve(M, Aw[:, idx].T @ rhs - pen[idx] * (t0[idx] - centre[idx]))
        under, over = free & (t0 + d < low), free & (t0 + d > high)
        if not (under.any() or over.any()):
            return d
        held = np.where(under, low - t0, np.where(over, high - t0, held))
        free &= ~(under | over)
    return np.where(free, d, held)


def fit_hybrid(cases: Sequence, rounds: int = ROUNDS, stage_cap_s: float | None = FIT_STAGE_CAP_S,
               first_rows: Mapping | None = None, free: Sequence[str] = FREE,
               log: Callable[[str], None] | None = None) -> dict[str, float]:
    """The hybrid coefficients fitted to `cases` (experiments and traces). `first_rows`
    {exp_id: Rows} observed at the start coefficients may be given (the cross-validation folds
    share them)."""
    theta = prior_centre(free)
    for i in range(rounds):
        if i == 0 and first_rows is not None:
            rows = [first_rows[c.exp_id] for c in cases if first_rows.get(c.exp_id) is not None]
        else:
            rows = [r for r in (observe(c, theta, stage_cap_s) for c in cases) if r is not None]
        theta = solve(rows, theta, free=free)
        if log:
            log(f"hybrid round {i + 1}: " + ", ".join(f"{k} {theta[k]:.4g}" for k in free))
    return {k: theta[k] for k in HYBRID_PARAMS}


def write_hybrid(path, params: Mapping[str, float], info: Mapping) -> None:
    """A hybrid coefficients file: the coefficients and what they were fitted on."""
    import yaml
    head = ["# Coefficients of the `hybrid` step-time model (blis_gym/sim/latency/hybrid.py): trained-physics's betas",
            "# (b1a ... b8, BLIS's values unless the fit freed them) with the decode KV-read correction split by",
            "# memory technology (b2b: HBM, b2b_gddr: GDDR cards); api_us + sched_steps x the latest step from",
            "# arrival to the engine queue; token_us, final_us: trained-physics's alpha[2], alpha[1]. Fitted by",
            "# `blis-gym calibrate --latency-model hybrid` (blis_gym/fidelity/hybrid_fit.py); what on: `fit:` below."]
    doc = {"params": {k: round(float(params[k]), 6) for k in HYBRID_PARAMS}, "fit": dict(info)}
    Path(path).write_text("\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False))


def calibrate_hybrid(data, out=None, *, holdout: Sequence[str] = (), install: bool = False,
                     log: Callable[[str], None] | None = None) -> dict:
    """Fit the hybrid model on the experiments and traces of `data` (minus `holdout`, overloaded
    runs and what cannot be replayed); write `out` (and the package's hybrid.yaml if `install`)."""
    from blis_gym.errors import ConfigError

    from ..sim.latency.hybrid import HYBRID_FILE, _load
    from .calibrate import load_cases, usable
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    cases, _skipped = usable(load_cases(paths))
    train = [c for c in cases if c.exp_id not in set(holdout)]
    if not train:
        raise ConfigError("data", "no experiment left to fit (all held out, overloaded or unknown)")
    params = fit_hybrid(train, log=log)
    info = {"data": [Path(p).name for p in paths], "free": list(FREE), "trained_on": [c.exp_id for c in train],
            "holdout": [h for h in holdout if h in {c.exp_id for c in cases}], "rounds": ROUNDS, "ridge": RIDGE,
            "stage_cap_s": FIT_STAGE_CAP_S, "method": "ridge least squares (L1 by IRLS) on trained-physics's "
                                                     "step structure (blis_gym/fidelity/hybrid_fit.py)"}
    if out is not None:
        write_hybrid(out, params, info)
        if install:
            from importlib import resources
            target = Path(str(resources.files("blis_gym").joinpath("data", HYBRID_FILE)))
            target.write_text(Path(out).read_text())
            _load.cache_clear()
    return {"params": params, **info}
