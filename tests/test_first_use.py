"""What a newcomer meets first: the README's forms work, a missing extra is named in one line,
input that would change nothing is refused or noted, and short runs, plots and tables explain
themselves."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# ---- item 1: the README's gym.make works without importing blis_gym ------------------------------
def test_readme_gym_make_form_works_from_an_empty_folder(tmp_path):
    line = 'gym.make("blis_gym:blis_gym/Router-v0")'
    assert line in (ROOT / "README.md").read_text()
    code = f"import gymnasium as gym; env = {line}; print(env.reset(seed=0)[0].shape)"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "(59,)"


# ---- item 2: a missing extra is one line naming it --------------------------------------------
def test_train_without_the_rl_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)          # as if torch were not installed
    line = one_error_line(run("train", "blis_gym/Router-v0", "--algo", "ppo", "--steps", 1000, "--out", tmp_path / "X"))
    assert "pip install 'blis-gym[rl]'" in line
    assert not (tmp_path / "X").exists()


def test_eval_of_a_checkpoint_without_the_rl_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    line = one_error_line(run("eval", "blis_gym/Router-v0", "--policy", ROOT / "agents/router_maskableppo.zip",
                              "--seeds", 1000, "--out", tmp_path))
    assert line.startswith("error: --policy:") and "pip install 'blis-gym[rl]'" in line


def test_rllib_recipe_without_the_rllib_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray.rllib", None)
    line = one_error_line(run("train", "--config", ROOT / "agents/router_rllib.yaml", "--out", tmp_path / "X"))
    assert "pip install 'blis-gym[rllib]'" in line


def test_multi_agent_env_without_pettingzoo_names_the_extra(monkeypatch):
    import blis_gym.envs
    monkeypatch.setitem(sys.modules, "pettingzoo", None)
    monkeypatch.delitem(sys.modules, "blis_gym.envs.multi", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"rl extra .*pip install 'blis-gym\[rl\]'"):
        blis_gym.envs.multi_agent_env()


# ---- item 3: input that changes nothing ---------------------------------------------------------
def test_a_rate_beside_inference_perf_is_refused_naming_where_the_rate_lives():
    from blis_gym.schema.workload import parse_workload
    ip = {"num_groups": 2, "prompts_per_group": 2, "system_prompt_len": 100, "question_len": 10,
          "output_len": 10, "stages": [{"rate": 2, "duration_s": 5}]}
    with pytest.raises(ConfigError, match=r"never reads workload\.rate .*inference_perf\.stages"):
        parse_workload({"rate": 5, "inference_perf": ip})
    # with clients the workload's rate is theirs to share: still accepted
    parse_workload({"rate": 5, "inference_perf": ip, "horizon_s": 5,
                    "clients": [{"name": "c", "input": {"dist": "constant", "value": 10},
                                 "output": {"dist": "constant", "value": 10}}]})


def test_a_sweep_axis_an_inference_perf_base_never_reads_is_refused(tmp_path):
    sweep = tmp_path / "rate.yaml"
    sweep.write_text(yaml.safe_dump({"base": "cluster-4xh100-default", "grid": {"workload.rate": [5, 10, 20]}}))
    line = one_error_line(run("sweep", sweep, "--out", tmp_path / "out", "--quiet"))
    assert line.startswith("error: grid.workload.rate:") and "inference_perf.stages" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, parts", [
    ("cluster-4xh100-default", []),                      # constant arrivals, fixed lengths
    ("single-request", []),
    ("router-shared-prefix", ["arrivals"]),              # the same workload with Poisson arrivals
    ("default", ["arrivals", "lengths"]),
    ("lora-affinity", ["arrivals", "lengths", "adapters"]),
])
def test_random_parts_of_bundled_workloads(name, parts):
    from blis_gym.resources import scenario_path
    from blis_gym.schema.scenario import build, load_scenario
    from blis_gym.sim.workload.randomness import random_parts
    assert random_parts(build(load_scenario(scenario_path(name))).workload) == parts


def test_seeds_asked_of_a_workload_without_randomness_get_one_note(tmp_path):
    r = run("run", "single-request", "--seed", 7, "--quiet", "--out", tmp_path / "a")
    assert r.exit_code == 0 and r.output.count("note:") == 1 and "no random element" in r.output
    r = run("run", "default", "--seed", 7, "--quiet", "--out", tmp_path / "b")
    assert r.exit_code == 0 and "note:" not in r.output
    r = run("run", "single-request", "--quiet", "--out", tmp_path / "c")          # no seed asked
    assert r.exit_code == 0 and "note:" not in r.output


def test_sweep_seeds_on_a_deterministic_workload_get_one_note(tmp_path):
    from blis_gym.cli.sweep import _seed_note
    from blis_gym.sweep.spec import parse_sweep
    base = {"base": "single-request", "grid": {"tp": [1, 2]}}
    assert "no random element" in _seed_note(parse_sweep({**base, "seeds": 2}, tmp_path))
    assert _seed_note(parse_sweep(base, tmp_path)) is None                        # one seed: nothing to say
    assert _seed_note(parse_sweep({"base": "default", "seeds": 2}, tmp_path)) is None


# ---- item 4: a short training run explains itself -----------------------------------------------
def test_short_training_notes_say_why_there_is_no_validation_and_the_steps_trained():
    from blis_gym.cli.train_eval import _train_notes
    from blis_gym.harness.recipe import load_recipe
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=5000)
    lines = _train_notes(recipe, {"steps_trained": 8192, "rollout_steps": 8192, "best_validation_return": None,
                                  "written": ["model.zip"]})
    assert lines[0] == "trained 8,192 steps (5,000 asked): ppo learns from whole rollouts of 8,192 steps"
    assert "every 50,000 steps (eval_freq)" in lines[1] and "model.zip is the last model" in lines[1]
    done = _train_notes(recipe, {"steps_trained": 5000, "rollout_steps": 1, "best_validation_return": 12.34,
                                 "written": ["model.zip"]})
    assert done == ["best validation return: 12.3 (model.zip is that model)"]


def test_learning_curve_of_one_point_is_visible(tmp_path):
    import matplotlib.image as mpimg

    from blis_gym.harness.learning_curve import draw_learning_curve
    (tmp_path / "progress.csv").write_text("time/total_timesteps,rollout/ep_rew_mean,eval/mean_reward\n8192,-3.5,\n")
    assert draw_learning_curve(tmp_path / "progress.csv", tmp_path / "c.png", "t")
    img = mpimg.imread(tmp_path / "c.png")[..., :3]
    colour = [np.abs(img - np.array(c) / 255).sum(axis=-1) < 0.1 for c in ((31, 119, 180), (255, 127, 14))]
    assert colour[0].sum() > 10                  # the point is drawn (a marker), not an empty axes
    assert colour[1].sum() == 0                  # and the validation curve, without points, is not in the legend


# ---- items 5-7 -----------------------------------------------------------------------------------
def test_ctrl_c_in_a_sweep_says_the_same_command_resumes(tmp_path, monkeypatch):
    import blis_gym.sweep.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run_sweep", interrupted)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": "single-request", "grid": {"tp": [1, 2]}}))
    r = run("sweep", sweep, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 130 and "the same command resumes" in r.output and "Aborted" not in r.output


@pytest.mark.parametrize("value, text", [(9517.3, "9,517"), (12330.0, "12,330"), (0.9548, "0.9548"),
                                         (3600, "3,600"), (0.0, "0"), (0.000012, "1.20e-05")])
def test_compare_numbers_never_switch_to_exponent_notation_for_thousands(value, text):
    from blis_gym.cli.run import _number
    assert _number(value) == text


def test_pools_png_only_when_pools_change():
    from blis_gym.output.plots import _pools_change
    fixed = [{"pool": "default", "active": "4", "starting": "0"}] * 3
    assert not _pools_change(fixed)
    assert _pools_change(fixed + [{"pool": "default", "active": "5", "starting": "0"}])
    assert _pools_change(fixed + [{"pool": "decode", "active": "4", "starting": "0"}])


@pytest.mark.parametrize("args, want", [
    (["blis_gym/Admission-v0"], "error: --algo: required; allowed: maskableppo, ppo, a2c, dqn"),
    (["blis_gym/Admission-v0", "--algo", "sac"],
     "error: --algo: unknown algorithm 'sac'; allowed: maskableppo, ppo, a2c, dqn"),
    (["--algo", "ppo", "--steps", "10"], "error: ENV_ID: required (or a --config recipe that gives it)"),
])
def test_train_argument_errors_name_the_flag(tmp_path, args, want):
    assert one_error_line(run("train", *args, "--out", tmp_path / "X")) == want


def test_unknown_scenario_gets_did_you_mean(tmp_path):
    line = one_error_line(run("run", "cluster-4xh100-defualt", "--out", tmp_path))
    assert "did you mean cluster-4xh100-default" in line and "single-10k" not in line
    line = one_error_line(run("run", "xyzzy", "--out", tmp_path))
    assert "did you mean" not in line and "single-10k" in line          # nothing close: the list


def test_a_heuristic_plays_a_scenario_without_that_section():
    # round-robin's override nulls the router's scorers and picker; `default` has no router
    # section, so those nulls must delete nothing rather than reach the schema
    from blis_gym.envs.config import merge_data, scenario_data
    over = merge_data({}, {"router": {"policy": "round-robin", "scorers": None}})
    assert over == {"router": {"policy": "round-robin", "scorers": None}}      # composed: the None stays
    data, _ = scenario_data({"scenario": "default", "scenario_overrides": over})
    assert data["router"] == {"policy": "round-robin"}                         # applied: nothing to delete
    data, _ = scenario_data({"scenario": "cluster-4xh100-default", "scenario_overrides": {"cluster": {
        "instances": None}}})
    assert "instances" not in data["cluster"]                                  # an existing key is deleted
    from blis_gym.harness.evaluate import plan
    jobs, labels, seeds = plan("blis_gym/Router-v0", ["round-robin"], [1], ["default"])
    assert labels == ["default"] and len(jobs) == 1
