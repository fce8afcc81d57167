"""blis-gym eval / train: policies by spec, common random numbers, statistics, reports, errors.

Episodes here are a few simulated seconds long; the full evaluations are the slow tests."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import blis_gym  # noqa: F401
from blis_gym.envs.config import load_spec
from blis_gym.errors import ConfigError
from blis_gym.harness import stats
from blis_gym.harness.evaluate import Job, evaluate, parse_seeds, play
from blis_gym.harness.policies import Heuristic, parse_policy, policy_names
from blis_gym.harness.report import write_all
from blis_gym.harness.split import parse_split, spec_split

ROOT = Path(__file__).resolve().parent.parent
ROUTER = "blis_gym/Router-v0"
SHIPPED = ROOT / "agents" / "router_maskableppo.zip"
SLOTS = {"blis_gym/Router-v0": "router", "blis_gym/Admission-v0": "admission",
         "blis_gym/PDDecider-v0": "pd", "blis_gym/Autoscaler-v0": "autoscaler"}


def _jobs(policies, seeds, config, env_id=ROUTER, scenario="short"):
    return [Job(env_id, SLOTS[env_id], p, scenario, config, s) for p in policies for s in seeds]


# ---- inputs --------------------------------------------------------------------------------------
def test_seed_ranges():
    assert parse_seeds("1000-1003") == [1000, 1001, 1002, 1003]
    assert parse_seeds("7") == [7]
    for bad in ("1019-1000", "abc", "1000-", "-3", "1.5-2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_seed_ranges_are_bounded_before_any_list_is_built():
    from blis_gym.harness.evaluate import MAX_EVAL_SEEDS
    assert len(parse_seeds(f"5-{4 + MAX_EVAL_SEEDS}")) == MAX_EVAL_SEEDS
    with pytest.raises(ConfigError, match=r"--seeds: 1,000,000,001 seeds; at most 10,000"):
        parse_seeds("0-1000000000")
    with pytest.raises(ConfigError, match=r"--seeds: must be a range .* <= 9223372036854775807"):
        parse_seeds("3-99999999999999999999")


def test_policy_names_per_slot_and_unknown_names_list_them():
    assert {"random", "default", "llm-d-default", "round-robin", "least-loaded"} <= set(policy_names("router"))
    assert {"probabilistic", "gaie-legacy", "always-admit"} <= set(policy_names("admission"))
    assert {"never", "always", "prefix-threshold"} <= set(policy_names("pd"))
    assert {"hpa", "wva"} <= set(policy_names("autoscaler")) and "external" not in policy_names("autoscaler")
    p = parse_policy("llm-d-default", "router")
    assert isinstance(p, Heuristic) and p.name == "default"
    with pytest.raises(ConfigError, match="unknown policy 'fastest'.*gaie-legacy, probabilistic"):
        parse_policy("fastest", "admission")
    with pytest.raises(ConfigError, match="cannot import"):
        parse_policy("no_such_module:act", "router")


def test_every_spec_has_a_valid_split_with_shifted_eval_scenarios():
    for env_id in SLOTS:
        split = spec_split(env_id)
        assert len(split.eval.scenarios) >= 4 and split.eval.seeds == (1000, 1019)
        # held-out workloads: no eval scenario is a training one, except the spec's own base
        # scenario, which is held out by its seeds only
        def kinds(part):
            return {json.dumps([e.scenario, e.overrides], sort_keys=True) for e in part.scenarios if e.name != "base"}
        assert not kinds(split.train) & kinds(split.eval), env_id


def test_split_errors_name_the_field():
    good = {"train": {"seeds": [0, 9]}, "validation": {"seeds": [10, 12]}, "eval": {"seeds": [20, 29]}}
    assert parse_split(good, "s").eval.seed_list == list(range(20, 30))
    with pytest.raises(ConfigError, match="overlap"):
        parse_split({**good, "eval": {"seeds": [5, 29]}}, "s")
    with pytest.raises(ConfigError, match=r"^s\.train\.seeds: .*first <= last"):
        parse_split({**good, "train": {"seeds": [9, 0]}}, "s")
    with pytest.raises(ConfigError, match=r"^s\.eval\.scenarios\.0\.rate"):
        parse_split({**good, "eval": {"seeds": [20, 29], "scenarios": [{"name": "x", "rate": 3}]}}, "s")


# ---- episodes ------------------------------------------------------------------------------------
def test_common_random_numbers_every_policy_sees_the_same_arrivals():
    res = [play(j) for j in _jobs(["llm-d-default", "round-robin", "random"], [1000, 1001], {"horizon_s": 5})]
    digest = {(r["row"]["policy"], r["row"]["seed"]): r["arrivals"] for r in res}
    for seed in (1000, 1001):
        assert digest[("llm-d-default", seed)] == digest[("round-robin", seed)] == digest[("random", seed)]
    assert digest[("random", 1000)] != digest[("random", 1001)]
    ttft = {r["row"]["policy"]: r["ttft_ms"].tobytes() for r in res if r["row"]["seed"] == 1000}
    assert len(set(ttft.values())) == 3            # and the policies did differ


def test_a_heuristic_plays_exactly_the_builtin_simulation():
    # round robin through the environment = the scenario run with round robin and no agent
    from blis_gym.envs import episode_kpi
    from blis_gym.envs.config import load_scenario_for, merge_config
    from blis_gym.schema.scenario import build
    from blis_gym.sim.simulation import Simulation
    row = play(_jobs(["round-robin"], [1000], {"horizon_s": 3})[0])["row"]
    cfg = parse_policy("round-robin", "router").env_config(
        merge_config(load_spec("router")["config"], {"horizon_s": 3}))
    scenario, base, _ = load_scenario_for(cfg)
    sim = Simulation(build(scenario.model_copy(update={"seed": 1000}), base_dir=base))
    summary = sim.run()
    assert row["ttft_p90_ms"] == summary["ttft_p90_ms"] and row["e2e_mean_ms"] == summary["e2e_mean_ms"]
    assert row["return"] == episode_kpi(sim, cfg["reward"])


def test_the_autoscaler_heuristic_plays_unclipped():
    cfg = parse_policy("wva", "autoscaler").env_config(load_spec("autoscaler")["config"])
    assert cfg["scale_step"] == 10 and cfg["info_default_action"]
    assert cfg["scenario_overrides"]["pools"][0]["autoscaler"]["policy"] == "wva"


def test_random_policy_is_seeded_per_episode():
    a, b = (play(j)["row"] for j in _jobs(["random"], [1000, 1000], {"horizon_s": 2}))
    assert a == b


def test_results_are_identical_whatever_the_worker_count(tmp_path):
    jobs = _jobs(["llm-d-default", "round-robin"], [1000, 1001, 1002], {"horizon_s": 2})
    for workers in (1, 2):
        res = evaluate(jobs, workers=workers, quiet=True)
        write_all(tmp_path / str(workers), res, env_id=ROUTER, policies=["llm-d-default", "round-robin"],
                  baseline="llm-d-default", scenarios=["short"], seeds=[1000, 1001, 1002])
    one, two = ((tmp_path / w / "results.csv").read_bytes() for w in ("1", "2"))
    assert one == two and one.count(b"\n") == 7
    s = json.loads((tmp_path / "1" / "summary.json").read_text())
    assert s["same_arrivals"] is True
    assert len(s["policies"]["round-robin"]["short"]["return"]["ci95"]) == 2
    d = s["paired"]["round-robin"]["short"]["return"]
    assert set(d) >= {"diff_mean", "ci95", "win_rate"} and 0 <= d["win_rate"] <= 1
    assert "llm-d-default" not in s["paired"]
    assert len(list((tmp_path / "1").glob("*.png"))) >= 2
    report = (tmp_path / "1" / "report.md").read_text()
    assert "## Scenario `short`" in report
    # three seeds: a warning in the report and no firm verdict
    assert "fewer than 10: every verdict is `too few seeds`" in report
    assert s["verdict"]["round-robin"]["verdict"] == "too few seeds"
    assert s["truncated"] == {"llm-d-default": {"short": 0}, "round-robin": {"short": 0}}


# ---- statistics ----------------------------------------------------------------------------------
def test_mean_ci_worked_example():
    m = stats.mean_ci([1.0, 2.0, 3.0, None, math.nan])
    assert m["mean"] == 2.0 and m["n"] == 3
    assert m["ci95"] == pytest.approx([2 - 4.3027 / math.sqrt(3), 2 + 4.3027 / math.sqrt(3)])
    assert stats.t975(1000) == pytest.approx(1.962, abs=1e-3)


def test_paired_difference_bootstrap_and_win_rate():
    d = stats.paired([12, 14, 13, 11], [10, 12, 11, 9], higher_is_better=True)
    assert d["diff_mean"] == 2 and d["ci95"] == [2, 2] and d["win_rate"] == 1
    lat = stats.paired([100, 90, 80, 70], [90, 90, 90, 90], higher_is_better=False)   # lower is better
    assert lat["win_rate"] == pytest.approx((2 + 0.5) / 4) and lat["diff_mean"] == -5
    assert lat["ci95"][0] < -5 < lat["ci95"][1]
    assert stats.paired([1, 5, 2], [2, 1, 3], True) == stats.paired([1, 5, 2], [2, 1, 3], True)   # fixed rng


# ---- checkpoints ---------------------------------------------------------------------------------
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped router checkpoint")
def test_shipped_router_checkpoint_plays_another_pod_count():
    pytest.importorskip("sb3_contrib")
    over = {"horizon_s": 2, "scenario_overrides": {"cluster": {"instances": 6}}}
    row = play(_jobs([str(SHIPPED)], [1000], over)[0])["row"]
    assert row["steps"] > 20 and math.isfinite(row["return"])


def _cli(*args):
    """The CLI in this process (click's runner): exit code and stderr."""
    from click.testing import CliRunner

    from blis_gym.cli import main
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stderr


@pytest.mark.parametrize("args, message", [
    (["blis_gym/Router-v9", "--policy", "random"], "unknown environment 'blis_gym/Router-v9'"),
    ([ROUTER, "--policy", "fastest"], "unknown policy 'fastest' for the router slot; allowed: random, default, least-loaded"),
    ([ROUTER, "--policy", "random", "--seeds", "10-1"], "--seeds"),
    (["blis_gym/Admission-v0", "--policy", "probabilistic", "--policy", str(SHIPPED)],
     "router_maskableppo.zip: trained on blis_gym/Router-v0 (its recipe's env_id), not on blis_gym/Admission-v0"),
    ([ROUTER, "--policy", "random", "--seeds", "3-99999999999999999999"], "--seeds: must be a range"),
    ([ROUTER, "--policy", "random", "--seeds", "0-1000000000"], "--seeds: 1,000,000,001 seeds"),
    ([ROUTER, "--policy", "math:sqrt"], "--policy: 'math:sqrt' takes (x, /); expected f(obs, info, env) -> action"),
    ([ROUTER, "--policy", "tests.test_harness:two_arguments"], "takes (obs, info); expected f(obs, info, env)"),
])
def test_eval_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    code, err = _cli("eval", *args, "--out", str(tmp_path), "--quiet")
    assert code == 2, err
    assert message in " ".join(err.split()) and len(err.strip().splitlines()) == 1


def test_train_writes_a_checkpoint_that_eval_accepts_and_its_train_yaml_reproduces(tmp_path):
    pytest.importorskip("stable_baselines3")
    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=64, n_envs=1, vec_env="dummy",
                         eval_freq=0, env_config={"horizon_s": 1},
                         hyperparameters={"n_steps": 32, "batch_size": 32, "n_epochs": 1})
    out = tmp_path / "a"
    res = train(recipe, out, quiet=True)
    assert {"model.zip", "train.yaml", "progress.csv", "learning_curve.png"} <= set(res["written"])
    again = train(load_recipe(out / "train.yaml"), tmp_path / "b", quiet=True)
    assert again["written"] == res["written"]
    from stable_baselines3 import PPO
    w1, w2 = (PPO.load(tmp_path / d / "model.zip", device="cpu").policy.state_dict() for d in ("a", "b"))
    assert all(np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)
    p = parse_policy(str(out / "model.zip"), "admission")
    row = play(Job("blis_gym/Admission-v0", "admission", p.text, "short", {"horizon_s": 1}, 1000))["row"]
    assert row["steps"] > 50


def test_a_checkpoint_is_evaluated_on_the_requests_it_was_trained_to_decide(tmp_path):
    pytest.importorskip("stable_baselines3")
    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=32, n_envs=1, vec_env="dummy",
                         eval_freq=0, env_config={"horizon_s": 1, "decide_classes": ["critical"]},
                         hyperparameters={"n_steps": 32, "batch_size": 32, "n_epochs": 1})
    train(recipe, tmp_path, quiet=True)
    p = parse_policy(str(tmp_path / "model.zip"), "admission")
    assert p.decide_classes == ("critical",)
    job = Job("blis_gym/Admission-v0", "admission", p.text, "short", {"horizon_s": 1}, 1000)
    every = play(Job("blis_gym/Admission-v0", "admission", "always-admit", "short", {"horizon_s": 1}, 1000))["row"]
    row = play(job)["row"]
    assert 0 < row["steps"] < every["steps"]          # ~30% of the arrivals are critical
    (tmp_path / "train.yaml").write_text("algo: ppo\nenv_config: {decide_classes: critical}\n")
    with pytest.raises(ConfigError, match="decide_classes must be a list"):
        parse_policy(str(tmp_path / "model.zip"), "admission")


def test_train_bad_recipe_is_one_line(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("env_id: blis_gym/Admission-v0\nalgo: ppo\nsteps: 10\nlearning_rate: 3\n")
    code, err = _cli("train", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "learning_rate" in err and len(err.strip().splitlines()) == 1
    code, err = _cli("train", ROUTER, "--algo", "ppo", "--steps", "10", "--out", str(tmp_path / "o"))
    assert code == 2 and "needs maskableppo" in err


@pytest.mark.slow
def test_ray_backend_gives_the_same_results(tmp_path):
    pytest.importorskip("ray")
    jobs = _jobs(["llm-d-default", "random"], [1000, 1001], {"horizon_s": 2})
    local = [r["row"] for r in evaluate(jobs, workers=1, quiet=True)]
    ray = [r["row"] for r in evaluate(jobs, backend="ray", quiet=True)]
    assert local == ray


def least_waiting(obs, info, env):
    """A user's router (docs/training-and-evaluation.md): the valid pod with the fewest waiting."""
    u = env.unwrapped
    waiting = np.where(u.action_masks(), obs[4:11 * u.max_pods:11], np.inf)
    return int(np.argmin(waiting))


def two_arguments(obs, info):
    return 0


def not_an_action(obs, info, env):
    return "pod-0"


def raises(obs, info, env):
    return {}["missing"]


@pytest.mark.parametrize("fn, message", [("not_an_action", "returned 'pod-0'; expected an action: an integer from 0"),
                                         ("raises", "raised KeyError: 'missing'")])
def test_a_users_function_that_misbehaves_mid_run_is_one_line(fn, message):
    with pytest.raises(ConfigError, match="--policy: tests.test_harness:" + fn) as e:
        play(_jobs([f"tests.test_harness:{fn}"], [1000], {"horizon_s": 2})[0])
    assert message in e.value.message


def test_a_checkpoint_trained_on_another_environment_is_refused_whatever_the_shapes():
    # a recipe naming Router-v0 beside an Admission-v0 evaluation: refused before any episode,
    # even where the observation and action shapes would match (2 pods)
    from blis_gym.harness.policies import Checkpoint
    import gymnasium as gym
    cp = Checkpoint("cp.zip", "admission", "cp.zip", "ppo", env_id=ROUTER)
    env = gym.make("blis_gym/Admission-v0")
    with pytest.raises(ConfigError, match="cp.zip: trained on blis_gym/Router-v0 .*not on blis_gym/Admission-v0"):
        cp.check(env)
    env.close()


def test_a_users_module_function_plays():
    row = play(_jobs(["tests.test_harness:least_waiting"], [1000], {"horizon_s": 2})[0])["row"]
    assert row["steps"] > 20


def test_an_error_in_a_worker_process_is_the_same_one_line_error():
    import pickle
    e = pickle.loads(pickle.dumps(ConfigError("--policy", "bad")))
    assert (e.field, e.message, str(e)) == ("--policy", "bad", "--policy: bad")


# ---- training on the split's scenario mix ---------------------------------------------------------
def test_training_episodes_draw_each_training_scenario_reproducibly():
    from blis_gym.harness.recipe import Recipe
    from blis_gym.harness.training_envs import ScenarioMix, train_configs
    env_id = "blis_gym/Admission-v0"
    spec = load_spec("admission")
    split = spec_split(env_id)
    recipe = Recipe(env_id=env_id, algo="ppo", steps=1, env_config={"horizon_s": 1})
    configs = train_configs(recipe, spec, split)
    assert len(configs) == len(split.train.scenarios) >= 2 and all(c["horizon_s"] == 1 for c in configs)

    import gymnasium as gym
    def drawn(seed):
        mix = ScenarioMix([gym.make(env_id, config=c) for c in configs])
        mix.reset(seed=seed)
        out = [mix.envs.index(mix.env)]
        for _ in range(30):
            mix.reset()
            out.append(mix.envs.index(mix.env))
        mix.close()
        return out
    first = drawn(7)
    assert first == drawn(7) and set(first) == set(range(len(configs)))


def test_the_per_pod_router_policy_reads_its_layout_through_the_scenario_mix():
    """PodPolicy's kwargs come from the vector env's get_attr("observer"), which must reach the
    environment the mix is playing."""
    pytest.importorskip("sb3_contrib")
    from stable_baselines3.common.vec_env import DummyVecEnv

    from blis_gym.harness.training_envs import make_train_env
    from blis_gym.harness.pod_network import pod_policy_kwargs
    rates = [{"horizon_s": 2, "scenario_overrides": {"workload": {"inference_perf": {"stages": [{"rate": r, "duration_s": 150}]}}}}
             for r in (19, 28)]
    venv = DummyVecEnv([lambda: make_train_env(ROUTER, rates, 0, 9, reward_scale=0.01)])
    kw = pod_policy_kwargs(venv)
    venv.close()
    assert kw["max_pods"] == 4 and kw["n_obs"] == venv.observation_space.shape[0]


def test_training_rewards_are_scaled_but_the_logged_return_is_not():
    from blis_gym.harness.training_envs import make_train_env
    cfg = [{"horizon_s": 5}]
    plain = make_train_env("blis_gym/Admission-v0", cfg, 3, 3)
    scaled = make_train_env("blis_gym/Admission-v0", cfg, 3, 3, reward_scale=0.01)
    totals = []
    for env in (plain, scaled):
        env.reset(seed=0)
        rewards, info = [], {}
        while "episode" not in info:
            _, r, term, trunc, info = env.step(1)
            rewards.append(r)
        totals.append((sum(rewards), info["episode"]["r"]))
        env.close()
    (raw, logged_raw), (small, logged_scaled) = totals
    assert raw > 0 and small == pytest.approx(raw * 0.01) and logged_scaled == pytest.approx(logged_raw)


def test_training_scenarios_must_share_their_spaces():
    import gymnasium as gym

    from blis_gym.harness.training_envs import ScenarioMix
    four = gym.make(ROUTER, config={"horizon_s": 1})
    six = gym.make(ROUTER, config={"horizon_s": 1, "scenario_overrides": {"cluster": {"instances": 6}}})
    with pytest.raises(ConfigError, match="split.train.scenarios.*max_pods"):
        ScenarioMix([four, six])


# ---- claims: the primary KPI pooled over scenarios --------------------------------------------------
def _table(rows):
    import pandas as pd
    t = pd.DataFrame(rows, columns=["policy", "scenario", "seed", "goodput_rps", "rejection_rate", "return"])
    t["end_reason"] = "drained"
    return t


def test_pooled_kpi_is_the_per_seed_mean_over_scenarios_and_the_verdict_follows_its_interval():
    from blis_gym.harness.claims import KpiSpec, pooled
    rows = []
    for seed in range(10):
        rows += [("base", "a", seed, 10 + seed, 0.2, 0), ("base", "b", seed, 20 + seed, 0.2, 0),
                 ("good", "a", seed, 11 + seed, 0.2, 0), ("good", "b", seed, 22 + seed, 0.2, 0),   # +1.5 pooled
                 ("greedy", "a", seed, 13 + seed, 0.5, 0), ("greedy", "b", seed, 23 + seed, 0.5, 0),
                 ("bad", "a", seed, 9 + seed, 0.2, 0), ("bad", "b", seed, 19 + seed, 0.1, 0),
                 ("noisy", "a", seed, 10 + seed + (1 if seed % 2 else -1), 0.2, 0),
                 ("noisy", "b", seed, 20 + seed, 0.2, 0)]
    kpis = KpiSpec(primary="goodput_rps", guards=["rejection_rate"])
    out = pooled(_table(rows), policies=["base", "good", "greedy", "bad", "noisy"], baseline="base",
                 scenarios=["a", "b"], kpis=kpis)
    assert out["pooled"]["base"]["goodput_rps"]["mean"] == pytest.approx(19.5)     # mean of 15 + seed
    assert out["pooled_paired"]["good"]["goodput_rps"]["diff_mean"] == pytest.approx(1.5)
    v = {p: out["verdict"][p]["verdict"] for p in out["verdict"]}
    assert v == {"good": "wins", "greedy": "ties", "bad": "loses", "noisy": "ties"}
    assert out["verdict"]["greedy"]["broken_guards"] == ["rejection_rate"]      # better, by shedding more
    assert "base" not in out["verdict"]


def test_every_spec_names_its_claim_and_a_bad_kpi_is_one_line():
    from blis_gym.harness.claims import KpiSpec, spec_kpis
    primaries = {env_id: spec_kpis(env_id).primary for env_id in SLOTS}
    assert primaries == {"blis_gym/Router-v0": "goodput_rps", "blis_gym/Admission-v0": "critical.goodput_rps",
                         "blis_gym/PDDecider-v0": "goodput_rps",
                         "blis_gym/Autoscaler-v0": "dollars_per_good_request"}
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="unknown KPI 'critical.dollars'"):
        KpiSpec(primary="critical.dollars")


# ---- warm start: behaviour cloning from a heuristic ------------------------------------------------
def test_warm_start_clones_a_deterministic_heuristic_before_training(tmp_path):
    pytest.importorskip("stable_baselines3")
    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=32, n_envs=1, vec_env="dummy",
                         eval_freq=0, env_config={"horizon_s": 3},
                         warm_start={"policy": "reject-all", "episodes": 2, "epochs": 40, "batch_size": 256},
                         hyperparameters={"n_steps": 32, "batch_size": 32, "n_epochs": 1, "learning_rate": 1e-6})
    res = train(recipe, tmp_path / "w", quiet=True)
    assert res["warm_start"]["samples"] > 200 and res["warm_start"]["agreement"] == 1.0
    assert res["warm_start"]["recall"] == {0: 1.0}
    # the saved policy rejects (action 0) on fresh episodes, as reject-all does
    row = play(Job("blis_gym/Admission-v0", "admission", str(tmp_path / "w" / "model.zip"), "s",
                   {"horizon_s": 2}, 1000))["row"]
    assert row["rejected_requests"] > 0 and row["rejection_rate"] == 1.0


def test_a_warm_started_run_validates_its_clone_before_the_first_update(tmp_path):
    """The clone is validated at step 0 and kept as model.zip unless RL beats it: here no later
    validation comes (eval_freq beyond the run), so model.zip is the clone of reject-all."""
    pytest.importorskip("stable_baselines3")
    import csv

    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=64, n_envs=1, vec_env="dummy",
                         eval_freq=10_000, env_config={"horizon_s": 3}, validation_seeds=(5000, 5000),
                         warm_start={"policy": "reject-all", "episodes": 2, "epochs": 40, "batch_size": 256},
                         hyperparameters={"n_steps": 32, "batch_size": 32, "n_epochs": 1, "learning_rate": 0.5})
    res = train(recipe, tmp_path / "w", quiet=True)
    assert res["best_validation_return"] is not None
    rows = [r for r in csv.DictReader(open(tmp_path / "w" / "progress.csv")) if r.get("eval/mean_reward")]
    assert [r["time/total_timesteps"] for r in rows] == ["0"]
    assert float(rows[0]["eval/mean_reward"]) == pytest.approx(res["best_validation_return"])
    row = play(Job("blis_gym/Admission-v0", "admission", str(tmp_path / "w" / "model.zip"), "s",
                   {"horizon_s": 2}, 1000))["row"]
    assert row["rejection_rate"] == 1.0


def test_warm_start_exploration_keeps_the_clone_stochastic(tmp_path):
    """Label smoothing 0.2 over two actions: the clone's optimum gives the heuristic's action
    0.8 + 0.2 / 2 = 0.9, and still picks it everywhere."""
    pytest.importorskip("stable_baselines3")
    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=32, n_envs=1, vec_env="dummy",
                         eval_freq=0, env_config={"horizon_s": 3},
                         warm_start={"policy": "reject-all", "episodes": 2, "epochs": 60, "batch_size": 256,
                                     "exploration": 0.2},
                         hyperparameters={"n_steps": 32, "batch_size": 32, "n_epochs": 1, "learning_rate": 1e-6})
    ws = train(recipe, tmp_path / "w", quiet=True)["warm_start"]
    assert ws["agreement"] == 1.0 and ws["p_demonstrated"] == pytest.approx(0.9, abs=0.03)


def test_train_cli_reports_how_well_the_clone_copies_its_heuristic(tmp_path):
    pytest.importorskip("stable_baselines3")
    from click.testing import CliRunner

    from blis_gym.cli import main
    recipe = tmp_path / "r.yaml"
    recipe.write_text("env_id: blis_gym/Admission-v0\nalgo: ppo\nsteps: 32\nn_envs: 1\nvec_env: dummy\n"
                      "eval_freq: 0\nenv_config: {horizon_s: 3}\n"
                      "warm_start: {policy: reject-all, episodes: 2, epochs: 40, batch_size: 256}\n"
                      "hyperparameters: {n_steps: 32, batch_size: 32, n_epochs: 1}\n")
    r = CliRunner().invoke(main, ["train", "--config", str(recipe), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "warm start: the clone picks the heuristic's action on 100.0% of" in r.stdout
    assert "(per action 0: 100.0%)" in r.stdout             # reject-all demonstrates one action


def test_clone_reports_recall_per_action_so_a_missed_rare_action_shows():
    """Agreement alone hides a clone that never takes a rare action: 2% of the demonstrated
    actions are rejections on observations that do not tell them apart."""
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym
    from stable_baselines3 import PPO

    from blis_gym.harness.recipe import WarmStart
    from blis_gym.harness.warm_start import Demonstrations, clone
    env = gym.make("blis_gym/Admission-v0", config={"horizon_s": 1})
    model = PPO("MlpPolicy", env, seed=0, device="cpu")
    obs = np.full((1000, env.observation_space.shape[0]), 0.5, dtype=np.float32)
    actions = np.ones(1000, dtype=np.int64)
    actions[::50] = 0
    demo = Demonstrations(obs, actions, np.zeros(1000, dtype=np.float32), None)
    res = clone(model, demo, WarmStart(policy="probabilistic", epochs=5, batch_size=250), seed=0)
    assert res["agreement"] == pytest.approx(0.98) and res["recall"] == {0: 0.0, 1: 1.0}


def test_warm_start_needs_a_heuristic_of_the_slot(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("env_id: blis_gym/Admission-v0\nalgo: ppo\nsteps: 10\nwarm_start: {policy: round-robin}\n")
    code, err = _cli("train", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "warm_start.policy" in err and "probabilistic" in err and len(err.strip().splitlines()) == 1


def test_validation_plays_every_training_scenario_on_every_validation_seed():
    import gymnasium as gym

    from blis_gym.harness.training_envs import EpisodeCycle
    envs = [gym.make(ROUTER, config={"horizon_s": 1}),
            gym.make(ROUTER, config={"horizon_s": 1, "scenario_overrides": {
                "workload": {"inference_perf": {"stages": [{"rate": 5, "duration_s": 150}]}}}})]
    cycle = EpisodeCycle(envs, [5000, 5001])
    played = []
    for _ in range(5):
        cycle.reset()
        played.append((envs.index(cycle.env), cycle.env.unwrapped.np_random_seed))
    assert played == [(0, 5000), (1, 5000), (0, 5001), (1, 5001), (0, 5000)]
