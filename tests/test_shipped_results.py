"""The committed evaluations (agents/results/<slot>/) and the checkpoints they score: each is a
claim docs/results.md makes, so each must hold the shape that claim needs (enough seeds, cut
episodes counted, a verdict by the rule) and the shipped learned policies must not collapse.
The slow test replays the shipped router on workloads outside every split of its env."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from blis_gym.harness.claims import VERDICTS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "agents" / "results"
SLOTS = {"router": "blis_gym/Router-v0", "admission": "blis_gym/Admission-v0", "pd": "blis_gym/PDDecider-v0",
         "autoscaler": "blis_gym/Autoscaler-v0"}
OUTSIDE = ("router-outside-bursts", "router-outside-load-1.5x", "router-outside-mixed-gpus")


def _summary(slot: str) -> dict:
    return json.loads((RESULTS / slot / "summary.json").read_text())


def _learned(summary: dict) -> list[str]:
    return [p for p in summary["policies_order"] if p.endswith((".zip", ".pt2"))]


@pytest.mark.parametrize("slot", SLOTS)
def test_each_slot_has_a_learned_policy_scored_on_20_held_out_seeds(slot):
    s = _summary(slot)
    assert s["env_id"] == SLOTS[slot] and s["n_seeds"] >= 20
    learned = _learned(s)
    assert learned and all((ROOT / p).is_file() for p in learned)
    for p in s["policies_order"]:
        assert set(s["truncated"][p]) == set(s["scenarios"])         # cut episodes counted per scenario
    for p in learned:
        v = s["verdict"][p]
        assert v["verdict"] in VERDICTS and v["kpi"] == s["kpi"]["primary"]
        assert v["verdict"] != "collapses", f"{slot}: {p} collapses on {v['collapses_on']}"


@pytest.mark.parametrize("slot", SLOTS)
def test_each_shipped_checkpoint_plays_its_environment_as_it_was_trained(slot):
    """A checkpoint is played with its recipe's residual heuristic, observation layout, decision
    scope and (autoscaler) scale_step: planning an evaluation checks its spaces against the env."""
    pytest.importorskip("sb3_contrib")
    from blis_gym.harness.evaluate import plan
    from blis_gym.harness.policies import parse_policy
    s = _summary(slot)
    for p in _learned(s):
        plan(SLOTS[slot], [str(ROOT / p)], seeds=[1000], scenarios=s["scenarios"][:1])
        assert parse_policy(str(ROOT / p), slot).residual_overrides is not None


def test_a_checkpoint_with_a_bad_scale_step_is_one_clear_error(tmp_path):
    import shutil

    import yaml

    from blis_gym.errors import ConfigError
    from blis_gym.harness.policies import parse_policy
    pytest.importorskip("stable_baselines3")
    zip_ = tmp_path / "a.zip"
    shutil.copy(ROOT / "agents" / "autoscaler_residual_ppo.zip", zip_)
    recipe = yaml.safe_load((ROOT / "agents" / "autoscaler_residual_ppo.yaml").read_text())
    assert parse_policy(str(ROOT / "agents" / "autoscaler_residual_ppo.zip"), "autoscaler").scale_step == 9
    recipe["env_config"]["scale_step"] = 0
    zip_.with_suffix(".yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"env_config.scale_step must be a whole number >= 1, got 0"):
        parse_policy(str(zip_), "autoscaler")


@pytest.mark.parametrize("slot", SLOTS)
def test_results_csv_has_a_row_per_policy_scenario_and_seed(slot):
    s = _summary(slot)
    rows = list(csv.DictReader((RESULTS / slot / "results.csv").open()))
    lo, hi = s["seeds"]
    assert len(rows) == len(s["policies_order"]) * len(s["scenarios"]) * (hi - lo + 1)
    assert {r["policy"] for r in rows} == set(s["policies_order"])


@pytest.mark.slow
def test_the_shipped_router_keeps_nine_tenths_of_predicted_latency_outside_every_split(tmp_path):
    """Seed 3000 on each workload outside the router's splits (bursts, a mixed H100/A100 pool,
    1.5x load): the shipped router's goodput is at least 0.9x predicted-latency's."""
    pytest.importorskip("sb3_contrib")
    from blis_gym.harness.evaluate import evaluate, plan
    learned = _learned(_summary("router"))[0]
    jobs, _, _ = plan("blis_gym/Router-v0", [str(ROOT / learned), "predicted-latency"], seeds=[3000],
                      scenarios=list(OUTSIDE))
    rows = [r["row"] for r in evaluate(jobs, workers=1, quiet=True)]
    good = {(r["policy"] == "predicted-latency", r["scenario"]): r["goodput_rps"] for r in rows}
    for sc in OUTSIDE:
        assert good[(False, sc)] >= 0.9 * good[(True, sc)], sc
