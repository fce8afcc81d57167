"""Evaluation: every policy × scenario × seed as one episode, in parallel, paired by seed.

Each episode is an independent job (`play`) run through `blis_gym.parallel.run_jobs`; results
are ordered by (policy, scenario, seed) in the order given, so `results.csv` is byte-identical
whatever the number of workers or the backend. Every policy plays the same seeds of the same
scenarios, so each sees the same arrivals (common random numbers).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..sim.limits import MAX_SEED
from .kpi_names import KPIS
from .policies import parse_policy
from .scoring import CUT_REASONS, Unserved, unserved
from .split import SplitScenario, spec_name, spec_split

MAX_EVAL_SEEDS = 10_000     # episodes per policy and scenario: ample for the paired intervals


@dataclass(frozen=True)
class Job:
    env_id: str
    slot: str
    policy: str            # the --policy text (parsed again in the worker)
    scenario: str          # its label
    config: dict           # env config overrides of the scenario
    seed: int


def parse_seeds(text: str) -> list[int]:
    """`A-B` (inclusive) or a single seed `N`; a ConfigError otherwise."""
    first, sep, last = str(text).strip().partition("-")
    try:
        lo, hi = int(first), int(last) if sep else int(first)
    except ValueError:
        raise ConfigError("--seeds", f"must be a range FIRST-LAST of non-negative integers (e.g. 1000-1019) "
                          f"or one seed, got {text!r}") from None
    if not 0 <= lo <= hi <= MAX_SEED:
        raise ConfigError("--seeds", f"must be a range FIRST-LAST with 0 <= FIRST <= LAST <= {MAX_SEED}, got {text!r}")
    if hi - lo + 1 > MAX_EVAL_SEEDS:
        raise ConfigError("--seeds", f"{hi - lo + 1:,} seeds; at most {MAX_EVAL_SEEDS:,} per evaluation, got {text!r}")
    return list(range(lo, hi + 1))


def plan(env_id: str, policies: list[str], seeds: list[int] | None = None,
         scenarios: list[str] | None = None) -> tuple[list[Job], list[str], list[int]]:
    """The jobs of an evaluation (and the scenario labels and seeds), every input checked first:
    policies by name, checkpoints against each scenario's spaces."""
    import gymnasium as gym

    from ..envs.config import load_spec, merge_config
    spec = load_spec(spec_name(env_id))
    slot = spec["slot"]
    if scenarios:
        entries = [_entry(env_id, s) for s in scenarios]
        labels = [e.name for e in entries]
        if len(set(labels)) != len(labels):
            raise ConfigError("--scenario", f"two scenarios share a name: {', '.join(labels)}")
    if not scenarios or seeds is None:
        split = spec_split(env_id)
        entries = entries if scenarios else split.eval.scenarios
        seeds = seeds if seeds is not None else split.eval.seed_list
    parsed = [parse_policy(p, slot) for p in policies]
    if len(set(policies)) != len(policies):
        raise ConfigError("--policy", "a policy is given twice")
    jobs = []
    for entry in entries:
        cfg = merge_config(spec["config"], entry.env_config(spec["config"]))
        for p in parsed:
            env = gym.make(env_id, config=p.env_config(cfg))   # validates the scenario, gives the spaces
            p.check(env)
            env.close()
    for p in parsed:
        for entry in entries:
            cfg = entry.env_config(spec["config"])
            jobs += [Job(env_id, slot, p.text, entry.name, cfg, s) for s in seeds]
    return jobs, [e.name for e in entries], seeds


def _entry(env_id: str, scenario: str) -> SplitScenario:
    """A --scenario: a scenario of the spec's held-out split by its label (so one held-out
    scenario, or an earlier held-out set, can be played alone), else a bundled name or a file."""
    from ..envs.config import load_spec
    if "split" in load_spec(spec_name(env_id)):
        for e in spec_split(env_id).eval.scenarios:
            if e.name == scenario:
                return e
    return SplitScenario(name=_label(scenario), scenario=scenario)


def _label(scenario: str) -> str:
    from pathlib import Path
    return Path(scenario).stem if scenario.endswith((".yaml", ".yml")) else scenario


def play(job: Job) -> dict:
    """One episode: the row of results.csv, the completed requests' TTFT and E2E (ms) for the
    CDFs, and a digest of the arrivals (same seed, same digest, whatever the policy)."""
    import gymnasium as gym

    import blis_gym  # noqa: F401  (registers the ids in a fresh worker)
    from ..envs.config import load_spec, merge_config
    from .claims import spec_kpis
    policy = parse_policy(job.policy, job.slot)
    spec = load_spec(spec_name(job.env_id))
    env = gym.make(job.env_id, config=policy.env_config(merge_config(spec["config"], job.config)))
    act = policy.actor(env, job.seed)
    obs, info = env.reset(seed=job.seed)
    ret, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(act(obs, info))
        ret += float(reward)
        steps += 1
        if terminated or truncated:
            break
    u = env.unwrapped
    cut = unserved(u.episode) if info["end_reason"] in CUT_REASONS else None
    row = {"policy": job.policy, "scenario": job.scenario, "seed": job.seed, "steps": steps,
           "end_reason": info["end_reason"], **kpis(info["summary"], ret, u.sim, u.config["reward"], cut,
                                                        optional=spec_kpis(job.env_id).names)}
    a = u.sim.metrics.arrays()
    env.close()
    done = a["e2e"] >= 0
    order = np.argsort(a["id"], kind="stable")
    digest = hashlib.sha256(np.stack([a["id"][order], a["arrival"][order], a["inp"][order]]).tobytes())
    return {"row": row, "ttft_ms": (a["ttft"][done] / 1000.0).astype(np.float32),
            "e2e_ms": (a["e2e"][done] / 1000.0).astype(np.float32), "arrivals": digest.hexdigest()}


def kpis(summary: dict, episode_return: float, sim, reward_cfg: dict, cut: Unserved | None = None,
         optional=()) -> dict:
    """The KPI columns of one episode (None where undefined). Goodput and SLO attainment use
    the environment's targets (its reward's: the same SLO the return counts), overall and per
    class; the rest comes from the run's summary; the `optional` KPIs of OPTIONAL_KPIS named
    are added at the end. A cut episode (`cut`) is scored to its
    horizon: its unserved requests count as missed and its cost runs on (`harness.scoring`)."""
    from ..envs.rewards import within_targets
    cost = summary.get("cost") or {}
    dur = summary["duration_s"] if cut is None else cut.end_us / 1e6
    missed = cut.requests if cut is not None else {}
    per_class = within_targets(sim, reward_cfg)
    n_good = sum(int(g.sum()) for _, g in per_class.values())
    n_all = sum(int(m.sum()) for m, _ in per_class.values()) + sum(missed.values())
    out = {"return": episode_return, "goodput_rps": round(n_good / dur, 6) if dur else None,
           "slo_attainment": round(n_good / n_all, 6) if n_all else None}
    for k in KPIS:
        if k not in out:
            out[k] = cost.get(k, 0.0) if k in ("gpu_hours", "dollars") else summary.get(k)
    if cut is not None:
        out["gpu_hours"] = round(out["gpu_hours"] + cut.gpu_hours, 6)
        out["dollars"] = round(out["dollars"] + cut.dollars, 6)
    out["rejection_rate"] = round(summary["rejected_requests"] / n_all, 6) if n_all else None
    for cls, (m, g) in per_class.items():
        block = (summary.get("per_class") or {}).get(cls) or {}
        n = int(m.sum()) + missed.get(cls, 0)
        out[f"{cls}.goodput_rps"] = round(int(g.sum()) / dur, 6) if dur else None
        out[f"{cls}.slo_attainment"] = round(int(g.sum()) / n, 6) if n else None
        out[f"{cls}.ttft_p90_ms"] = block.get("ttft_p90_ms")
        out[f"{cls}.rejection_rate"] = round(block.get("rejected_requests", 0) / n, 6) if n else None
    if "dollars_per_good_request" in optional:
        out["dollars_per_good_request"] = round(out["dollars"] / max(n_good, 1), 9)
    return out


def evaluate(jobs: list[Job], *, workers: int | None = None, backend: str = "process",
             address: str | None = None, quiet: bool = False) -> list[dict]:
    """Every job's `play` result, in the jobs' order."""
    from ..parallel import run_jobs
    results: list = [None] * len(jobs)
    for i, res in run_jobs(play, jobs, workers=workers, backend=backend, address=address,
                           label="episodes", quiet=quiet):
        results[i] = res
    return results
