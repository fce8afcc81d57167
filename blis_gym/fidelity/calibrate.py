"""Fit the `calibrated` step-time model to measured vLLM runs, deterministically.

Method (docs/fidelity.md): every evaluation replays the calibration experiments in the
simulator (each load stage cut to `stage_cap_s` seconds, which keeps every stage in steady
state: the longest E2E is ~40 s) and scores

    loss = mean over (experiment, load stage) of  Σ_m w_m · min(APE_m, cap)

with weights w = 1 for the E2E and TTFT means, 0.5 for their p90 and for ITL (a per-request
trace counts as `trace_weight` stages). The search minimises loss + penalty, the penalty a
ridge on each free coefficient's log distance from its prior centre (`PRIOR`). A `Procedure`
fixes the start, the free coefficients, the ridge, the cap and the trace weight: the default,
`UNREGULARISED` (fixed start, 13 free coefficients, no prior, no cap), produced the shipped
coefficients; `REGULARISED` (start at the prior's centres, 9 free, ridge 1, cap 100 %) is what
`--regularised` and the cross-validation folds use. The search is a coordinate pattern search
in log space: for each parameter in a fixed order try ×(1 ± δ), keep a move that lowers the
objective, and halve δ after a sweep without improvement, until δ < `min_step` or `max_evals`.
No random numbers: the same inputs give the same coefficients bit for bit (simulations are
deterministic; a process pool only evaluates candidates in parallel and results are consumed in
order).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import yaml

from blis_gym.errors import ConfigError

from ..parallel import worker_pool
from ..sim.latency.calibrated import DEFAULT_INTERCONNECT, PARAM_NAMES
from .engine_setup import _check_known
from .measured import Experiment, is_trace, load_experiments, resolve_measurements
from .replay import TraceCase, load_trace, run_experiment
from .scoring import ape

__all__ = [
    "BOUNDS",
    "DEFAULT_FREE",
    "DEFAULT_HOLDOUT",
    "DEFAULT_START",
    "calibrate",
    "fit",
    "loss",
    "penalty",
    "PRIOR",
    "Procedure",
    "REGULARISED",
    "UNREGULARISED",
    "write_calibration",
]

#: Prior of each coefficient: (centre, spread). The spread is a factor: one standard deviation
#: in log space, so (0.85, 1.2) says "0.85, give or take 20 %". Efficiencies sit at the
#: fractions of a datasheet peak that public kernel benchmarks report (large BF16 GEMMs ~70 %,
#: weight streaming ~85 % of memory bandwidth, paged-attention KV reads ~60 %); CPU-side
#: overheads are small. A regularised fit starts at the centres and pays `ridge` x (log distance
#: in spreads)^2 per free coefficient, so a coefficient the data cannot pin down stays near its
#: prior instead of absorbing noise.
PRIOR = {
    "eta_compute": (0.7, 1.3), "eta_attn": (0.5, 1.5), "eta_mem": (0.85, 1.2), "eta_kv": (0.6, 1.5),
    "step_us": (500.0, 3.0), "layer_us": (10.0, 3.0), "moe_layer_us": (50.0, 3.0), "seq_us": (5.0, 3.0),
    "prefill_seq_us": (50.0, 3.0), "ar_latency_us": (10.0, 3.0), "eta_link": (0.7, 2.0), "api_us": (8000.0, 3.0),
    "sched_steps": (1.0, 2.0), "token_us": (45.0, 3.0), "final_us": (800.0, 3.0),
}
#: The search starts at the prior's centres (regularised fits).
PRIOR_START = {k: c for k, (c, _s) in PRIOR.items()}
#: Parameters a regularised fit moves: those the aggregates and traces identify. token_us and
#: final_us cannot be told apart from api_us and step_us with aggregate data; eta_attn, seq_us,
#: prefill_seq_us and ar_latency_us trade off against eta_compute, step_us and eta_link.
PRIOR_FREE = ("eta_mem", "eta_kv", "step_us", "api_us", "sched_steps", "eta_compute", "layer_us", "moe_layer_us",
              "eta_link")
#: The unregularised fit's start (kernel efficiencies typical of H100 vLLM, CPU overheads of a
#: few ms) and free parameters (token_us and final_us keep their start values).
DEFAULT_START = {
    "eta_compute": 0.6, "eta_attn": 0.5, "eta_mem": 0.85, "eta_kv": 0.7, "step_us": 1500.0, "layer_us": 20.0,
    "moe_layer_us": 50.0, "seq_us": 5.0, "prefill_seq_us": 50.0, "ar_latency_us": 10.0, "eta_link": 0.7,
    "api_us": 8000.0, "sched_steps": 1.0, "token_us": 45.0, "final_us": 800.0,
}
DEFAULT_FREE = ("eta_mem", "step_us", "api_us", "sched_steps", "eta_kv", "seq_us", "eta_compute", "layer_us", "moe_layer_us",
                "ar_latency_us", "prefill_seq_us", "eta_attn", "eta_link")


class Procedure(NamedTuple):
    """How a fit searches: where it starts, what it moves, the prior's weight (0: none) and how
    the loss counts errors."""
    start: Mapping[str, float]
    free: tuple[str, ...]
    ridge: float
    ape_cap: float          # an APE counts at most this much (percent)
    trace_weight: float     # a per-request trace weighs as this many load stages


#: The fit that produced the shipped calibrated.yaml (blis-gym calibrate's default).
UNREGULARISED = Procedure(DEFAULT_START, DEFAULT_FREE, ridge=0.0, ape_cap=math.inf, trace_weight=1.0)
#: `calibrate --regularised` and every cross-validation fold: the prior pulls each coefficient the
#: data do not pin down; an APE counts at most 100 % (a run that tips into a never-draining queue
#: under one candidate must not outweigh every other experiment); a trace weighs as two stages
#: (the traces are the only non-H100 measurements: without the weight 30 H100 stages drown them).
REGULARISED = Procedure(PRIOR_START, PRIOR_FREE, ridge=1.0, ape_cap=100.0, trace_weight=2.0)
BOUNDS = {"eta_compute": (0.05, 1.0), "eta_attn": (0.05, 1.0), "eta_mem": (0.3, 1.0), "eta_kv": (0.1, 1.0),
          "eta_link": (0.05, 1.0), "step_us": (1.0, 50_000.0), "layer_us": (0.1, 500.0),
          "moe_layer_us": (0.1, 2000.0), "seq_us": (0.1, 500.0), "prefill_seq_us": (0.1, 20_000.0),
          "ar_latency_us": (0.1, 200.0), "api_us": (1.0, 200_000.0), "sched_steps": (0.01, 10.0),
          "token_us": (1.0, 1000.0),
          "final_us": (1.0, 100_000.0)}
#: Held out of the shipped fit by model (reported apart): Qwen2.5-7B (TP1) and Yi-34B (TP2).
DEFAULT_HOLDOUT = ("64", "65", "66")
WEIGHTS = {"e2e_mean": 1.0, "ttft_mean": 1.0, "e2e_p90": 0.5, "ttft_p90": 0.5, "itl_mean": 0.5}
STAGE_CAP_S = 150.0
MAX_EVALS = 360

_WORK: dict = {}


def _init(exps: list[Experiment], cap: float | None, inter: Mapping, procedure: "Procedure") -> None:
    _WORK["exps"], _WORK["cap"], _WORK["inter"], _WORK["proc"] = exps, cap, dict(inter), procedure


def _eval(params: dict) -> float:
    p = _WORK["proc"]
    return loss(_WORK["exps"], params, _WORK["inter"], _WORK["cap"], ape_cap=p.ape_cap, trace_weight=p.trace_weight)


def loss(exps: Sequence[Experiment], params: Mapping[str, float], interconnect: Mapping[str, float],
         stage_cap_s: float | None = STAGE_CAP_S, ape_cap: float = math.inf, trace_weight: float = 1.0) -> float:
    """Mean weighted APE (percent, each capped at `ape_cap`) over the load stages of the
    experiments (a per-request trace counts as `trace_weight` stages of its whole-run statistics)."""
    total, n = 0.0, 0
    for e in exps:
        if isinstance(e, TraceCase):
            rows = {r["metric"]: r["ape"] for r in e.replay(params, interconnect)["rows"]}
            total += trace_weight * sum(w * min(rows[m], ape_cap) for m, w in WEIGHTS.items()
                                        if not math.isnan(rows[m]))
            n += trace_weight
            continue
        pred = run_experiment(e, params, interconnect, stage_cap_s=stage_cap_s)
        for si in range(len(e.stages)):
            act = e.actual.get(si)
            if act is None:
                continue
            s = 0.0
            for m, w in WEIGHTS.items():
                a = ape(pred[si][m], act[m])
                if not math.isnan(a):
                    s += w * min(a, ape_cap)
            total += s
            n += 1
    return total / max(n, 1)


def _clip(name: str, v: float) -> float:
    lo, hi = BOUNDS[name]
    return min(max(v, lo), hi)


def penalty(params: Mapping[str, float], free: Sequence[str], ridge: float = REGULARISED.ridge) -> float:
    """ridge x sum over the free coefficients of (log distance from the prior centre, in spreads)^2."""
    if not ridge:
        return 0.0
    return ridge * sum((math.log(params[k] / PRIOR[k][0]) / math.log(PRIOR[k][1])) ** 2 for k in free)


def fit(exps: Sequence[Experiment], start: Mapping[str, float] | None = None,
        free: Sequence[str] | None = None, interconnect: Mapping[str, float] | None = None,
        stage_cap_s: float | None = STAGE_CAP_S, step: float = 0.32, min_step: float = 0.02,
        max_evals: int = MAX_EVALS, workers: int = 1, procedure: Procedure = UNREGULARISED,
        log: Callable[[str], None] | None = None) -> tuple[dict, float, int]:
    """Coordinate pattern search on loss + penalty (the procedure's prior; none by default);
    returns (params, that objective, evaluations). `start` and `free` override the procedure's."""
    free = procedure.free if free is None else free
    params = {**procedure.start, **(start or {})}
    params = {k: float(params[k]) for k in PARAM_NAMES}
    inter = {**DEFAULT_INTERCONNECT, **(interconnect or {})}
    bad = [f for f in free if f not in PARAM_NAMES]
    if bad:
        raise ConfigError("free", f"unknown parameter(s) {', '.join(bad)}; allowed: {', '.join(PARAM_NAMES)}")
    exps = list(exps)
    pool = worker_pool(workers, _init, (exps, stage_cap_s, inter, procedure)) if workers > 1 else None
    if pool is None:
        _init(exps, stage_cap_s, inter, procedure)

    def evaluate(cands: list[dict]) -> list[float]:
        losses = [_eval(c) for c in cands] if pool is None else list(pool.map(_eval, cands))
        return [v + penalty(c, free, procedure.ridge) for v, c in zip(losses, cands)]

    try:
        best = evaluate([params])[0]
        evals = 1
        if log:
            log(f"start loss {best:.3f}")
        while step >= min_step and evals < max_evals:
            improved = False
            for name in free:
                if evals >= max_evals:
                    break
                cands = []
                for f in (1 + step, 1 / (1 + step)):
                    v = _clip(name, params[name] * f)
                    if v != params[name]:
                        cands.append({**params, name: v})
                if not cands:
                    continue
                res = evaluate(cands)
                evals += len(cands)
                i = min(range(len(res)), key=lambda j: (res[j], j))
                if res[i] < best - 1e-9:
                    best, params = res[i], cands[i]
                    improved = True
                    if log:
                        log(f"eval {evals:4d}  step {step:.3f}  {name} = {params[name]:.6g}  loss {best:.3f}")
            if not improved:
                step /= 2
                if log:
                    log(f"eval {evals:4d}  step -> {step:.3f}")
    finally:
        if pool is not None:
            pool.shutdown()
    return params, best, evals


def write_calibration(path: str | Path, params: Mapping[str, float], info: Mapping) -> None:
    lines = [
        "# Fitted coefficients of the `calibrated` step-time model (blis_gym/sim/latency/calibrated.py).",
        "# Reproduce: blis-gym calibrate --data h100_trainval_aggregates.csv --out DIR [--install]  (docs/fidelity.md)",
        "# eta_*: fractions of the datasheet peak (compute, attention compute, HBM bandwidth for weights,",
        "# for KV reads, interconnect); *_us: overheads in microseconds (per step, per layer, per MoE layer,",
        "# per scheduled sequence, per prefill chunk, per all-reduce; api_us arrival -> engine queue,",
        "# token_us per streamed token, final_us after the last token). Global: one set for all models/GPUs.",
    ]
    doc = {"params": {k: round(float(params[k]), 6) for k in PARAM_NAMES},
           "interconnect": {k: float(v) for k, v in info.get("interconnect", DEFAULT_INTERCONNECT).items()},
           "fit": {k: v for k, v in info.items() if k != "interconnect"}}
    Path(path).write_text("\n".join(lines) + "\n" + yaml.safe_dump(doc, sort_keys=False))
    from ..sim.latency.calibrated import _load_yaml
    _load_yaml.cache_clear()


#: what `blis-gym calibrate` fits when no --data is given: the shipped per-request traces
DEFAULT_DATA = ("rtx4090_llama-3.1-8b_tp1_requests.csv", "rtxpro6000_llama-3.1-8b_tp1_requests.csv")


def load_cases(data: str | Path | Sequence[str | Path]) -> list:
    """Experiments of aggregates CSVs and per-request traces (a bare name of a shipped file is
    found in the package), in the order given."""
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    cases: list = []
    for p in paths:
        p = resolve_measurements(p)
        cases += [load_trace(p)] if is_trace(p) else load_experiments(p)
    return cases


def calibrate(data: str | Path | Sequence[str | Path] = DEFAULT_DATA, out: str | Path | None = None, *,
              holdout: Sequence[str] = DEFAULT_HOLDOUT, stage_cap_s: float | None = STAGE_CAP_S,
              max_evals: int = MAX_EVALS, workers: int = 1, regularised: bool = False,
              log: Callable[[str], None] | None = None) -> dict:
    """Fit on the experiments and traces of `data` minus the hold-out (and overloaded runs);
    write the coefficients file `out` (if given)."""
    cases = load_cases(data)
    train = [e for e in cases if e.exp_id not in set(holdout) and not e.overloaded]
    if not train:
        raise ConfigError("data", "no experiment left to fit (all held out or overloaded)")
    proc = REGULARISED if regularised else UNREGULARISED
    params, best, evals = fit(train, stage_cap_s=stage_cap_s, max_evals=max_evals, workers=workers, procedure=proc,
                              log=log)
    names = [Path(data).name] if isinstance(data, (str, Path)) else [Path(d).name for d in data]
    info = {"data": ", ".join(names), "trained_on": [e.exp_id for e in train],
            "holdout": [h for h in holdout if h in {e.exp_id for e in cases}],
            "stage_cap_s": stage_cap_s, "objective": round(best, 4), "evaluations": evals,
            "method": ("coordinate pattern search in log space from the prior's centres on loss + ridge x "
                       "(log distance from the prior in spreads)^2" if regularised else
                       "coordinate pattern search in log space from a fixed start") + " (blis_gym/fidelity/calibrate.py)",
            "free": list(proc.free), "ridge": proc.ridge,
            "interconnect": DEFAULT_INTERCONNECT}
    if out is not None:
        write_calibration(out, params, info)
    return {"params": params, **info}


def _model_id(case) -> str:
    return case.settings["model"] if isinstance(case, TraceCase) else case.model


def _gpu_id(case) -> str:
    return case.settings["hardware"] if isinstance(case, TraceCase) else case.hardware


def usable(cases: Sequence) -> tuple[list, list[dict]]:
    """(cases that can be fitted and replayed, [{exp_id, reason}] for the others)."""
    keep, skipped = [], []
    for c in cases:
        reason = "overloaded run (most requests failed)" if c.overloaded else _check_known(_model_id(c), _gpu_id(c))
        if reason:
            skipped.append({"exp_id": c.exp_id, "reason": reason})
        else:
            keep.append(c)
    return keep, skipped
