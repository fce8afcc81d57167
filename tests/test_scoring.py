"""Honest scoring in `blis-gym eval`: cut episodes scored to their horizon, intervals that stay in
their KPI's range, too few seeds, and the robustness verdict (`collapses`)."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pandas as pd
import pytest
import yaml

import blis_gym  # noqa: F401
from blis_gym.harness import stats
from blis_gym.harness.claims import KpiSpec, pooled, verdict
from blis_gym.harness.evaluate import Job, kpis, play
from blis_gym.harness.scoring import unserved

ROUTER = "blis_gym/Router-v0"
ROOT = Path(__file__).resolve().parent.parent


def _run(env, action):
    obs, info = env.reset(seed=1000)
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(action(env))
        done = term or trunc
    return info


def test_a_cut_episode_counts_the_requests_it_never_served_as_missed_up_to_its_horizon():
    cfg = {"horizon_s": 20, "max_backlog": 120}     # llm-d's routing holds ~200 requests at 24 req/s
    env = gym.make(ROUTER, config=cfg).unwrapped
    info = _run(env, lambda e: e.pending.default())
    assert info["end_reason"] == "backlog"
    cut = unserved(env.episode)
    assert cut.end_us == 20_000_000 and cut.cut_us < cut.end_us
    # the same seed run to the horizon injects exactly what ran before the cut plus what never came
    full = gym.make(ROUTER, config={"horizon_s": 20, "max_backlog": None}).unwrapped
    full_info = _run(full, lambda e: e.pending.default())
    assert env.sim.injected + cut.total == full_info["summary"]["injected_requests"]
    # scored to the horizon: goodput per second of the whole episode, attainment over every request
    honest = kpis(info["summary"], 0.0, env.sim, env.config["reward"], cut)
    naive = kpis(info["summary"], 0.0, env.sim, env.config["reward"])
    good = round(naive["goodput_rps"] * info["summary"]["duration_s"])
    assert good > 0 and honest["goodput_rps"] == pytest.approx(good / 20, abs=1e-6)
    assert honest["goodput_rps"] < naive["goodput_rps"]
    assert honest["slo_attainment"] == pytest.approx(good / full_info["summary"]["injected_requests"], abs=1e-6)


def test_eval_scores_a_cut_episode_to_its_horizon():
    cfg = {"horizon_s": 10, "max_backlog": 30}
    row = play(Job(ROUTER, "router", "round-robin", "short", cfg, 1000))["row"]
    from blis_gym.envs.config import load_spec, merge_config
    from blis_gym.harness.policies import parse_policy
    rr = parse_policy("round-robin", "router").env_config(merge_config(load_spec("router")["config"], cfg))
    env = gym.make(ROUTER, config=rr).unwrapped
    info = _run(env, lambda e: e.pending.default())            # the same episode, by hand
    assert row["end_reason"] == info["end_reason"] == "backlog"
    assert row == {**row, **kpis(info["summary"], row["return"], env.sim, env.config["reward"],
                                 unserved(env.episode))}
    assert row["goodput_rps"] < info["summary"]["injected_requests"] / info["summary"]["duration_s"]


def test_a_cut_autoscaled_pool_keeps_paying_for_its_gpus_to_the_horizon():
    env = gym.make("blis_gym/Autoscaler-v0", config={"horizon_s": 600, "max_backlog": 40}).unwrapped
    info = _run(env, lambda e: 0)                    # scale down all the time: one replica drowns
    assert info["end_reason"] == "backlog"
    cut = unserved(env.episode)
    gpus = sum(p.gpus() for p in env.sim.pools)
    assert gpus == 1 and cut.end_us == 600_000_000
    assert cut.dollars == pytest.approx(4.096 * (600 - cut.cut_us / 1e6) / 3600)
    row = kpis(info["summary"], 0.0, env.sim, env.config["reward"], cut)
    assert row["dollars"] == pytest.approx(info["summary"]["cost"]["dollars"] + cut.dollars, abs=1e-5)


# ---- intervals in range ------------------------------------------------------------------------
def test_a_skewed_latency_or_a_fraction_gets_an_interval_within_its_range():
    ttft = [100.0] * 19 + [23_000.0]                 # one seed at 23 s
    t = stats.mean_ci(ttft)
    assert t["ci95"][0] < 0                          # Student t leaves the range
    b = stats.mean_ci(ttft, bounded=True)
    assert b["mean"] == t["mean"] and 100 <= b["ci95"][0] < b["mean"] < b["ci95"][1] <= 23_000
    frac = stats.mean_ci([1.0, 1.0, 0.2], bounded=True)
    assert 0.2 <= frac["ci95"][0] and frac["ci95"][1] <= 1.0
    assert stats.mean_ci([1.0, 1.0, 0.2])["ci95"][1] > 1.0


# ---- the verdict -------------------------------------------------------------------------------
def _table(rows, cuts=()):
    t = pd.DataFrame(rows, columns=["policy", "scenario", "seed", "goodput_rps", "return"])
    t["end_reason"] = ["backlog" if (p, s, seed) in cuts else "drained" for p, s, seed, *_ in rows]
    return t


def _rows(policy, per_scenario: dict, seeds=range(20)):
    return [(policy, s, seed, f(seed), 0.0) for s, f in per_scenario.items() for seed in seeds]


def test_a_policy_better_pooled_but_much_worse_on_one_scenario_collapses():
    base = _rows("base", {"a": lambda k: 10 + k % 3, "b": lambda k: 10 + k % 3, "c": lambda k: 10 + k % 3})
    # +3 on a and b, -1.5 (15% of the baseline's 11) on c: pooled +1.5, CI clear of 0
    fall = _rows("fall", {"a": lambda k: 13 + k % 3, "b": lambda k: 13 + k % 3, "c": lambda k: 8.5 + k % 3})
    # -0.5 on c (5%) is not a collapse: it wins
    dent = _rows("dent", {"a": lambda k: 13 + k % 3, "b": lambda k: 13 + k % 3, "c": lambda k: 9.5 + k % 3})
    out = pooled(_table(base + fall + dent), policies=["base", "fall", "dent"], baseline="base",
                 scenarios=["a", "b", "c"], kpis=KpiSpec(primary="goodput_rps"))
    assert out["pooled_paired"]["fall"]["goodput_rps"]["ci95"][0] > 0
    assert out["verdict"]["fall"]["verdict"] == "collapses" and out["verdict"]["fall"]["collapses_on"] == ["c"]
    assert out["per_scenario"]["fall"]["c"]["diff_mean"] == pytest.approx(-1.5)
    assert out["per_scenario"]["fall"]["c"]["collapses"] and not out["per_scenario"]["dent"]["c"]["collapses"]
    assert out["verdict"]["dent"]["verdict"] == "wins"


def test_no_win_for_a_policy_cut_more_often_than_its_baseline():
    base = _rows("base", {"a": lambda k: 10 + k % 3})
    mine = _rows("mine", {"a": lambda k: 12 + k % 3})
    cuts = {("mine", "a", 3), ("mine", "a", 4), ("base", "a", 7)}
    out = pooled(_table(base + mine, cuts), policies=["base", "mine"], baseline="base", scenarios=["a"],
                 kpis=KpiSpec(primary="goodput_rps"))
    assert out["truncated"] == {"base": {"a": 1}, "mine": {"a": 2}}
    v = out["verdict"]["mine"]
    assert v["verdict"] == "ties" and (v["truncated"], v["baseline_truncated"]) == (2, 1)
    assert "more often" in v["note"]


def test_fewer_than_ten_seeds_is_too_few_whatever_the_interval():
    pair = {"goodput_rps": stats.paired([12, 13, 14], [10, 11, 12], True)}
    assert verdict(pair, KpiSpec(primary="goodput_rps"), n_seeds=3)["verdict"] == "too few seeds"
    assert verdict(pair, KpiSpec(primary="goodput_rps"), n_seeds=10)["verdict"] == "wins"


def test_eval_warns_about_few_seeds(capsys):
    from blis_gym.cli.train_eval import _warn_few_seeds
    _warn_few_seeds(9)
    assert "warning: 9 seeds, fewer than 10" in capsys.readouterr().err
    _warn_few_seeds(10)
    assert capsys.readouterr().err == ""


# ---- the KPIs the claims are made on ---------------------------------------------------------------
def test_pd_claim_is_goodput_under_both_slos_and_its_recipe_return_counts_exactly_those_requests():
    from blis_gym.harness.claims import spec_kpis
    k = spec_kpis("blis_gym/PDDecider-v0")
    assert k.primary == "goodput_rps" and "itl_p99_ms" in k.guards
    recipe = yaml.safe_load((ROOT / "agents" / "pd.yaml").read_text())
    cfg = {**recipe["env_config"], "horizon_s": 20}
    env = gym.make("blis_gym/PDDecider-v0", config=cfg).unwrapped
    targets = env.config["reward"]["targets"]["standard"]
    assert set(targets) == {"ttft_ms", "itl_ms"}                 # both SLOs
    info = _run(env, lambda e: 1)                                # always disaggregate
    row = kpis(info["summary"], env.episode_return, env.sim, env.config["reward"])
    assert info["summary"]["rejected_requests"] == 0
    assert env.episode_return == pytest.approx(row["goodput_rps"] * info["summary"]["duration_s"], abs=1e-3)


def test_autoscaler_claim_prices_money_per_request_served_within_slo():
    job = Job("blis_gym/Autoscaler-v0", "autoscaler", "hpa", "short", {"horizon_s": 300}, 1000)
    row = play(job)["row"]
    good = round(row["goodput_rps"] * 300)
    assert good > 0 and row["dollars_per_good_request"] == pytest.approx(row["dollars"] / good, abs=1e-8)
    router = play(Job(ROUTER, "router", "round-robin", "short", {"horizon_s": 2}, 1000))["row"]
    assert "dollars_per_good_request" not in router              # other slots keep their columns


# ---- re-scoring a committed evaluation, and one held-out scenario by its label ----------------------
def test_rescore_rebuilds_summary_and_report_exactly_from_results_csv(tmp_path):
    from blis_gym.harness.evaluate import evaluate
    from blis_gym.harness.report import rescore, write_all
    jobs = [Job(ROUTER, "router", p, "short", {"horizon_s": 2}, s) for p in ("llm-d-default", "round-robin")
            for s in (1000, 1001)]
    from blis_gym.harness.claims import spec_kpis
    write_all(tmp_path, evaluate(jobs, workers=1, quiet=True), env_id=ROUTER, policies=["llm-d-default", "round-robin"],
              baseline="llm-d-default", scenarios=["short"], seeds=[1000, 1001], kpis=spec_kpis(ROUTER))
    before = {f: (tmp_path / f).read_bytes() for f in ("summary.json", "report.md", "results.csv")}
    (tmp_path / "summary.json").write_text((tmp_path / "summary.json").read_text().replace('"truncated"', '"old"'))
    rescore(tmp_path, ROUTER)
    assert {f: (tmp_path / f).read_bytes() for f in before} == before


def test_a_held_out_scenario_is_played_alone_by_its_label():
    from blis_gym.envs.config import load_spec
    from blis_gym.harness.evaluate import plan
    from blis_gym.harness.split import spec_split
    jobs, labels, _ = plan(ROUTER, ["round-robin"], [1000], ["load-1.25x"])
    entry = next(e for e in spec_split(ROUTER).eval.scenarios if e.name == "load-1.25x")
    assert labels == ["load-1.25x"] and jobs[0].config == entry.env_config(load_spec("router")["config"])
