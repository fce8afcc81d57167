"""The `hybrid` step-time model and its least-squares fit."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.fidelity.calibrate import load_cases
from blis_gym.fidelity.hybrid_fit import BASIS, fit_hybrid, observe, prior_centre
from blis_gym.fidelity.validate import run_experiment
from blis_gym.sim.latency import TrainedPhysics, make_step_model
from blis_gym.sim.latency.hybrid import HYBRID_PARAMS, HybridPhysics, load_hybrid, start_params

TRACE = "rtx4090_llama-3.1-8b_tp1_requests.csv"
BATCHES = [((), 1, 500), ((), 64, 64 * 900), (((512, 0, 512),), 8, 8000), (((2048, 1024, 4096), (16, 0, 16)), 0, 0)]


def test_with_trained_physics_coefficients_the_steps_are_trained_physics():
    # Llama-3.1-8B: head_dim = hidden / heads, so only the coefficients can differ
    tp, hy = TrainedPhysics("meta-llama/Llama-3.1-8B", "H100", 1), HybridPhysics("meta-llama/Llama-3.1-8B", "H100", 1,
                                                                                params=start_params())
    for pre, n, ctx in BATCHES:
        assert hy.step_time_us(pre, n, ctx) == tp.step_time_us(pre, n, ctx)
    assert hy.decode_step_us(32, 32 * 700) == tp.decode_step_us(32, 32 * 700)
    assert (hy.output_token_us, hy.post_decode_us) == (tp.output_token_us, tp.post_decode_us)


def test_the_queueing_delay_follows_the_latest_step():
    p = {**start_params(), "api_us": 5000.0, "sched_steps": 1.5}
    m = HybridPhysics("meta-llama/Llama-3.1-8B", "H100", 1, params=p)
    assert m.queueing_us == 5000 and m.stateful
    step = m.decode_step_us(64, 64 * 900)
    assert m.queueing_us == int(5000 + 1.5 * step) == m.queueing_time_us(100)
    assert make_step_model("hybrid", "meta-llama/Llama-3.1-8B", "H100").kind == "hybrid"


def test_attention_sizes_come_from_the_real_head_dim():
    # Mistral-Nemo: 32 heads of 128 on a hidden size of 5120 (BLIS's hidden/heads says 160)
    tp = TrainedPhysics("mistralai/Mistral-Nemo-Instruct-2407", "H100", 1)
    hy = HybridPhysics("mistralai/Mistral-Nemo-Instruct-2407", "H100", 1, params=start_params())
    assert hy._kv_tok == pytest.approx(tp._kv_tok * 128 / 160)
    assert hy.decode_step_us(64, 64 * 2000) < tp.decode_step_us(64, 64 * 2000)


def test_bundled_coefficients_are_complete_and_checked(tmp_path):
    assert set(load_hybrid()) == set(HYBRID_PARAMS)
    bad = tmp_path / "h.yaml"
    bad.write_text("params: {b1a: -1}\n")
    from blis_gym.errors import ConfigError
    with pytest.raises(ConfigError, match="hybrid.params"):
        load_hybrid(bad)


def _agg(tmp_path, rate=2.0, models=("Qwen/Qwen2.5-7B-Instruct",)):
    from test_fidelity import HEADER, _row
    p = tmp_path / "agg.csv"
    rows = [HEADER]
    for i, m in enumerate(models):
        rows += [_row(f"a{i}", m, -1, "", 20, 200.0, 25.0), _row(f"a{i}", m, 0, rate, 20, 190.0, 24.0)]
    p.write_text("\n".join(rows) + "\n")
    return p


def test_the_fit_recovers_the_delay_that_made_the_data(tmp_path):
    from blis_gym.fidelity.hybrid_fit import solve
    # two models with different step times tell the fixed delay from the one that follows the step
    cases = load_cases([_agg(tmp_path, models=("Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-2-7b-hf"))])
    free = ("api_us", "sched_steps")
    truth = {**prior_centre(free), "api_us": 9000.0, "sched_steps": 1.4}
    rows = []
    for case in cases:
        made = run_experiment(case, truth, {}, latency_model="hybrid")[-1]
        case.actual[-1] = {**case.actual[-1], **{m: made[m] for m in ("e2e_mean", "ttft_mean", "itl_mean")}}
        rows.append(observe(case, prior_centre(free)))
    assert rows[0].basis.shape == (3, 10)
    got = solve(rows, prior_centre(free), free=free, ridge=0.0)
    assert got["sched_steps"] == pytest.approx(1.4, rel=0.1) and got["api_us"] == pytest.approx(9000, rel=0.1)
    # data that want a longer wait than two steps get two (vLLM takes new requests between steps)
    k = BASIS.index("sched_steps")
    late = [r._replace(measured=r.sim + 4.0 * r.basis[:, k]) for r in rows]      # exactly 4 steps more
    assert solve(late, prior_centre(free), free=("sched_steps",), ridge=0.0)["sched_steps"] == 2.0


def test_the_fit_is_deterministic_and_moves_only_what_it_frees():
    cases = load_cases([TRACE])
    a = fit_hybrid(cases, rounds=2, free=("b2b", "sched_steps"))
    b = fit_hybrid(cases, rounds=2, free=("b2b", "sched_steps"))
    assert a == b
    start = prior_centre(("b2b", "sched_steps"))
    assert all(a[k] == start[k] for k in HYBRID_PARAMS if k not in ("b2b", "sched_steps"))
    assert a["b2b"] >= 1.0                       # a KV read cannot beat the HBM bandwidth


def test_validate_scores_hybrid_by_default_and_beside_the_others(tmp_path):
    out = tmp_path / "v"
    r = CliRunner().invoke(main, ["validate", TRACE, "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["latency_model"] == "hybrid"
    r = CliRunner().invoke(main, ["validate", TRACE, "--out", str(out), "--latency-model", "all"])
    assert r.exit_code == 0 and "hybrid" in r.output, r.output
    s = json.loads((out / "summary.json").read_text())
    assert list(s["median_ape"]) == ["hybrid", "calibrated", "trained-physics", "roofline"]


def test_a_scenario_can_pick_hybrid():
    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation
    sc = parse_scenario({"model": "Qwen/Qwen3-14B", "latency_model": "hybrid",
                         "workload": {"num_requests": 20, "rate": 5, "input": {"dist": "constant", "value": 200},
                                      "output": {"dist": "constant", "value": 20}}})
    s = Simulation(build(sc)).run()
    assert s["completed_requests"] == 20


def test_run_experiment_uses_the_given_hybrid_coefficients(tmp_path):
    (e,) = load_cases([_agg(tmp_path, rate=1.0)])
    slow = {**load_hybrid(), "api_us": load_hybrid()["api_us"] + 50_000}
    fast, late = run_experiment(e, latency_model="hybrid"), run_experiment(e, slow, {}, latency_model="hybrid")
    assert late[-1]["ttft_mean"] == pytest.approx(fast[-1]["ttft_mean"] + 50.0, abs=0.01)


def _run_hybrid(name: str, horizon_s: float = 10.0) -> dict:
    import yaml

    from blis_gym.resources import scenario_path
    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation
    d = yaml.safe_load(open(scenario_path(name)))
    d["latency_model"] = "hybrid"
    d["workload"]["horizon_s"] = horizon_s
    return Simulation(build(parse_scenario(d))).run()


def test_the_2026_engine_settings_are_carried():
    # speculative decoding: the verified tokens per step make decoding faster, as with trained-physics
    spec, off = _run_hybrid("spec-decode"), _run_hybrid("spec-decode-off")
    assert spec["completed_requests"] > 0 and spec["itl_mean_ms"] < 0.5 * off["itl_mean_ms"]
    # DP2 + expert parallelism prices its all-to-all instead of being refused
    assert _run_hybrid("moe-dp-ep")["completed_requests"] > 0
