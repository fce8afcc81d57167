"""Fidelity: the calibrated step model, `blis-gym validate` end to end, and a deterministic fit."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.fidelity import PARAM_NAMES, CalibratedPhysics, load_calibration
from blis_gym.fidelity.calibrate import fit
from blis_gym.fidelity.validate import load_experiments, run_experiment

HEADER = ("exp_id,experiment,model,hardware,precision,tp,dp,max_num_batched_tokens,max_num_seqs,gpu_mem_util,"
          "cpu_offload,total_kv_blocks,cpu_kv_blocks,vllm_version,workload,workload_source,stage_index,"
          "stage_rate_rps,stage_duration_s,stage_num_requests,sp_num_groups,sp_prompts_per_group,"
          "sp_system_prompt_len,sp_question_len,sp_output_len,e2e_mean_ms,e2e_p90_ms,e2e_p99_ms,ttft_mean_ms,"
          "ttft_p90_ms,ttft_p99_ms,itl_derived_mean_ms,notes,source")


def _row(exp, model, stage, rate, dur, e2e, ttft, notes="", kv="8000"):
    return (f"{exp},{exp}-x,{model},H100,FP16,1,,2048,128,,False,{kv},0,0.15.1,tiny,test,{stage},{rate},{dur},"
            f"{int(float(rate or 0) * dur)},2,2,20,60,24,{e2e},{e2e * 1.1},{e2e * 1.2},{ttft},{ttft * 1.2},"
            f"{ttft * 1.5},,{notes},test")


@pytest.fixture
def small_csv(tmp_path):
    p = tmp_path / "agg.csv"
    rows = [HEADER,
            _row("a1", "Qwen/Qwen2.5-7B-Instruct", -1, "", 20, 200.0, 25.0),
            _row("a1", "Qwen/Qwen2.5-7B-Instruct", 0, 1.0, 10, 190.0, 24.0),
            _row("a1", "Qwen/Qwen2.5-7B-Instruct", 1, 2.0, 10, 210.0, 26.0),
            _row("u1", "nobody/unknown-model-9b", -1, "", 10, 200.0, 25.0),
            _row("u1", "nobody/unknown-model-9b", 0, 1.0, 10, 200.0, 25.0)]
    p.write_text("\n".join(rows) + "\n")
    return p


def test_step_model_is_physical():
    m = CalibratedPhysics("Qwen/Qwen2.5-7B-Instruct", "H100", 1)
    d1, d64 = m.decode_step_us(1, 1000), m.decode_step_us(64, 64 * 1000)
    assert 1 < d1 < d64                                   # more sequences, more KV to read
    assert m.step_time_us([(2048, 0, 2048)]) > m.step_time_us([(16, 0, 16)])
    # the same model on a GPU with less bandwidth and compute is slower
    assert CalibratedPhysics("Qwen/Qwen2.5-7B-Instruct", "A100-80GB", 1).decode_step_us(64, 64000) > d64
    assert CalibratedPhysics("Qwen/Qwen2.5-7B-Instruct", "L40S", 1).decode_step_us(64, 64000) > d64
    # MoE: a few tokens touch few experts, a big batch reads them all
    moe = CalibratedPhysics("RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic", "H100", 2)
    assert moe._weights(1) < moe._weights(256) <= moe._w_fixed + 16 * moe._w_expert + 1
    params, _ = load_calibration()
    assert set(PARAM_NAMES) <= set(params)


def test_validate_end_to_end(small_csv, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["validate", str(small_csv), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    with open(out / "validation.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["exp_id", "stage_index", "metric", "predicted", "actual", "ape"]
    assert {x["exp_id"] for x in rows} == {"a1"}
    assert {x["stage_index"] for x in rows} == {"-1", "0", "1"}
    assert {x["metric"] for x in rows} >= {"e2e_mean", "ttft_mean", "e2e_p99", "ttft_p90", "itl_mean"}
    for x in rows:
        assert float(x["predicted"]) > 0 and float(x["ape"]) >= 0
    s = json.loads((out / "summary.json").read_text())
    assert s["median_ape"]["e2e_mean"] is not None and s["median_ape"]["ttft_mean"] is not None
    assert s["skipped"][0]["exp_id"] == "u1" and "unknown model" in s["skipped"][0]["reason"]
    assert (out / "validation.svg").read_text().startswith("<svg")


def test_stage_split_and_itl(small_csv):
    e = next(x for x in load_experiments(small_csv) if x.exp_id == "a1")
    assert e.stages == [(1.0, 10.0), (2.0, 10.0)]
    assert e.actual[0]["itl_mean"] == pytest.approx((190.0 - 24.0) / 23)
    pred = run_experiment(e)
    assert pred["_completed"] == pred["_injected"] == 30
    assert pred[-1]["e2e_mean"] == pytest.approx((10 * pred[0]["e2e_mean"] + 20 * pred[1]["e2e_mean"]) / 30)


def test_validate_trace(tmp_path):
    p = tmp_path / "mine_requests.csv"
    lines = ["request_id,input_tokens,output_tokens,queued_s,ttft_ms,e2e_ms"]
    for i in range(12):
        lines.append(f"r{i},{200 + 10 * i},{20 + i},{i * 0.05:.3f},{30 + i},{300 + 10 * i}")
    p.write_text("\n".join(lines) + "\n")
    out = tmp_path / "tr"
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(out), "--quiet", "--model",
                                  "meta-llama/Llama-3.1-8B", "--hardware", "RTX-4090", "--kv-blocks", "2588"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "per_request" and s["completed"] == 12
    assert s["pearson_r"]["e2e"] is not None and s["per_request_mape"]["ttft"] >= 0


@pytest.mark.parametrize("content,needle", [(None, "no such file"), ("a,b\n1,2\n", "neither"),
                                            ("exp_id,model\n1,x\n", "missing column")])
def test_bad_input_exits_2(tmp_path, content, needle):
    p = tmp_path / "bad.csv"
    if content is not None:
        p.write_text(content)
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert needle in r.output and r.output.count("\n") <= 2


def test_fit_is_deterministic(small_csv):
    exps = [e for e in load_experiments(small_csv) if e.exp_id == "a1"]
    kw = {"free": ("api_us", "eta_mem"), "max_evals": 7, "stage_cap_s": None, "workers": 1}
    p1, l1, n1 = fit(exps, **kw)
    p2, l2, n2 = fit(exps, **kw)
    assert p1 == p2 and l1 == l2 and n1 == n2 == 7
    start = fit(exps, free=("api_us",), max_evals=1)[1]
    assert l1 <= start                                     # the search never goes uphill


def test_fit_on_a_worker_pool_gives_the_same_fit(small_csv):
    # the pool is blis_gym.parallel's (spawned workers that exit with their parent)
    exps = [e for e in load_experiments(small_csv) if e.exp_id == "a1"]
    kw = {"free": ("api_us", "eta_mem"), "max_evals": 5, "stage_cap_s": None}
    assert fit(exps, workers=2, **kw) == fit(exps, workers=1, **kw)


def test_calibrate_refuses_an_out_that_is_a_file(tmp_path):
    f = tmp_path / "calibrated.yaml"
    f.write_text("x")
    r = CliRunner().invoke(main, ["calibrate", "--out", str(f), "--quiet"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--out" in r.output


# ---- measurements beyond the calibration set: vLLM defaults, name variants, parallelism -------------
def _agg_row(exp, model, stage, rate, dur, *, dp="", seqs="", tokens="2048", kv="", util="", version="0.15.1",
             hw="H100", extra=""):
    return (f"{exp},{exp}-x,{model},{hw},BF16,1,{dp},{tokens},{seqs},{util},False,{kv},,{version},tiny,test,"
            f"{stage},{rate},{dur},{int(float(rate or 0) * dur)},2,2,20,60,24,200,220,240,25,30,37,,,test{extra}")


def _agg_file(tmp_path, rows, header=HEADER):
    p = tmp_path / "agg.csv"
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def test_empty_engine_settings_are_vllm_defaults(tmp_path):
    from blis_gym.sim.latency import load_hardware
    from blis_gym.sim.latency.hardware import vllm_batch_defaults
    model = "Qwen/Qwen3-30B-A3B-Instruct-2507"        # an -Instruct variant of the bundled qwen3-30b-a3b
    p = _agg_file(tmp_path, [_agg_row("e1", model, -1, "", 10, tokens=""), _agg_row("e1", model, 0, 1.0, 10, tokens="")])
    e = load_experiments(p)[0]
    assert (e.max_num_seqs, e.max_num_batched_tokens, e.total_kv_blocks, e.gpu_mem_util, e.dp) == (
        None, None, None, None, 1)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["skipped"] == [] and s["per_experiment"]["e1"]["completed"]["hybrid"] == 10
    # the defaults follow the GPU and the vLLM version (V1 engine from 0.8)
    h100, a100 = load_hardware("H100"), load_hardware("A100-80GB")
    assert vllm_batch_defaults(h100, "0.15.1") == (1024, 8192) and vllm_batch_defaults(a100, "0.15.1") == (256, 2048)
    assert vllm_batch_defaults(h100, "0.7.3") == (256, 2048)


@pytest.mark.parametrize("column_value, needle", [("seqs=abc", "max_num_seqs: agg.csv:2: not a number"),
                                                  ("dp=1.5", "dp: agg.csv:2: not a whole number"),
                                                  ("util=2", "gpu_mem_util: agg.csv:2: 2 is outside")])
def test_malformed_engine_settings_are_one_line(tmp_path, column_value, needle):
    key, value = column_value.split("=")
    p = _agg_file(tmp_path, [_agg_row("e1", "Qwen/Qwen2.5-7B-Instruct", 0, 1.0, 10, **{key: value})])
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 2 and needle in r.output and r.output.count("\n") == 1, r.output


def test_missing_engine_column_is_an_error(tmp_path):
    p = _agg_file(tmp_path, ["a1,Qwen/Qwen2.5-7B-Instruct,H100,1,2048,0,1,10,2,2,20,60,24,200,25"],
                  header=("exp_id,model,hardware,tp,max_num_batched_tokens,stage_index,stage_rate_rps,"
                          "stage_duration_s,sp_num_groups,sp_prompts_per_group,sp_system_prompt_len,"
                          "sp_question_len,sp_output_len,e2e_mean_ms,ttft_mean_ms"))
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 2 and "missing column(s) max_num_seqs" in r.output


@pytest.mark.parametrize("given, folder, weight_bytes", [
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b", 2.0),
    ("01-ai/Yi-34B-Chat", "yi-34b", 2.0),
    ("Qwen/Qwen3-8B-FP8", "qwen3-8b", 1.0),
    ("Qwen/Qwen3-14B-AWQ", "qwen3-14b", 0.5),
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout-17b-16e-instruct-fp8-dynamic", 2.0),
])
def test_name_variants_resolve_to_the_bundled_architecture(given, folder, weight_bytes):
    from blis_gym.sim.latency import load_model
    m, base = load_model(given), load_model(folder)
    assert (m.num_layers, m.hidden, m.num_experts, m.num_kv_heads) == (
        base.num_layers, base.hidden, base.num_experts, base.num_kv_heads)
    assert m.weight_bytes == weight_bytes           # the precision follows the given id


def test_unknown_model_says_how_to_supply_a_config(tmp_path):
    from importlib import resources

    from blis_gym.errors import ConfigError
    from blis_gym.sim.latency import load_model
    with pytest.raises(ConfigError, match="--model-config path/to/config.json"):
        load_model("nobody/unknown-model-9b")
    cfg = tmp_path / "config.json"
    cfg.write_text(resources.files("blis_gym").joinpath("data", "models", "qwen3-8b", "config.json").read_text())
    p = _agg_file(tmp_path, [_agg_row("u1", "nobody/unknown-model-9b", 0, 1.0, 10, kv="4000")])
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(out), "--quiet", "--model-config", str(cfg)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["skipped"] == [] and s["experiments"] == 1


def test_data_parallel_replicas_share_the_load_and_expert_parallel_needs_experts(tmp_path):
    model = "Qwen/Qwen2.5-7B-Instruct"
    p = _agg_file(tmp_path, [_agg_row("d2", model, 0, 4.0, 10, dp="2", kv="4000"),
                             _agg_row("d1", model, 0, 4.0, 10, dp="1", kv="4000")])
    e2, e1 = load_experiments(p)
    r2, r1 = run_experiment(e2), run_experiment(e1)
    assert r2["_completed"] == r1["_completed"] == 40
    assert r2[-1]["e2e_mean"] < r1[-1]["e2e_mean"]          # half the load per replica
    header = HEADER.replace(",source", ",source,expert_parallel")
    p = _agg_file(tmp_path, [_agg_row("x1", "Qwen/Qwen3-30B-A3B", 0, 1.0, 10, dp="2", kv="4000", extra=",true"),
                             _agg_row("x2", model, 0, 1.0, 10, kv="4000", extra=",true")], header=header)
    out = tmp_path / "ep"
    r = CliRunner().invoke(main, ["validate", str(p), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    (skip,) = s["skipped"]                         # the MoE DP2 + EP row is replayed, the dense one is not
    assert skip["exp_id"] == "x2" and "has no experts" in skip["reason"]


def test_validate_all_latency_models_side_by_side(small_csv, tmp_path):
    out = tmp_path / "all"
    r = CliRunner().invoke(main, ["validate", str(small_csv), "--out", str(out), "--latency-model", "all"])
    assert r.exit_code == 0, r.output
    assert "trained-physics" in r.output and "roofline" in r.output
    s = json.loads((out / "summary.json").read_text())
    assert list(s["median_ape"]) == ["hybrid", "calibrated", "trained-physics", "roofline"]
    assert all(s["median_ape"][k]["e2e_mean"] is not None for k in s["median_ape"])
    with open(out / "validation.csv") as f:
        rows = list(csv.DictReader(f))
    keys = {k: sorted((x["exp_id"], x["stage_index"], x["metric"]) for x in rows if x["latency_model"] == k)
            for k in s["median_ape"]}
    assert keys["hybrid"] == keys["calibrated"] == keys["trained-physics"] == keys["roofline"]      # the same rows
    # each model predicts differently
    e2e = {x["latency_model"]: x["predicted"] for x in rows if x["metric"] == "e2e_mean" and x["stage_index"] == "-1"}
    assert len(set(e2e.values())) == 4


# ---- shipped measurements, calibrate --out / --install, fetch-data --------------------------------
def test_shipped_trace_validates_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # nothing beside: the file comes from the package
    r = CliRunner().invoke(main, ["validate", "rtx4090_llama-3.1-8b_tp1_requests.csv", "--out", "v", "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert s["requests"] == s["completed"] == 300 and s["settings"]["hardware"] == "RTX-4090"


def test_calibrate_writes_to_out_and_installs_only_when_asked(tmp_path, monkeypatch):
    from importlib import resources

    from blis_gym.fidelity import calibrate as cal_mod
    shipped = resources.files("blis_gym").joinpath("data", "calibrated.yaml")
    before = shipped.read_bytes()
    monkeypatch.setattr(cal_mod, "DEFAULT_DATA", ("rtx4090_llama-3.1-8b_tp1_requests.csv",))
    r = CliRunner().invoke(main, ["calibrate", "--out", str(tmp_path / "c"), "--max-evals", "3", "--workers", "1",
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    fitted = (tmp_path / "c" / "calibrated.yaml").read_text()
    assert "rtx4090_llama-3.1-8b_tp1_requests" in fitted and shipped.read_bytes() == before
    written = {}
    monkeypatch.setattr("shutil.copyfile", lambda src, dst: written.setdefault(str(dst), src))
    r = CliRunner().invoke(main, ["calibrate", "--out", str(tmp_path / "c"), "--max-evals", "1", "--workers", "1",
                                  "--quiet", "--install"])
    assert r.exit_code == 0, r.output
    (target,) = written
    assert target.endswith("blis_gym/data/calibrated.yaml") and shipped.read_bytes() == before


def test_fetch_data_checks_hashes(tmp_path):
    import hashlib

    from blis_gym.fidelity.fetch import FILES, fetch_data
    assert len(FILES) == 26 and all(len(h) == 64 for _, h in FILES)
    mirror = tmp_path / "mirror"
    (mirror / "x").mkdir(parents=True)
    (mirror / "x" / "good.json").write_text('{"ok": 1}')
    (mirror / "x" / "bad.json").write_text('{"tampered": 1}')
    good = ("x/good.json", hashlib.sha256(b'{"ok": 1}').hexdigest())
    got = fetch_data(tmp_path / "d", base_url=mirror.as_uri(), files=(good,))
    assert [p.read_text() for p in got] == ['{"ok": 1}']
    from blis_gym.errors import ConfigError
    with pytest.raises(ConfigError, match="sha256 .* differs from the pinned"):
        fetch_data(tmp_path / "d", base_url=mirror.as_uri(), files=(("x/bad.json", good[1]),))
    assert not (tmp_path / "d" / "x" / "bad.json").exists()
    r = CliRunner().invoke(main, ["fetch-data", "--dest", str(tmp_path / "e"), "--mirror", (tmp_path / "no").as_uri()])
    assert r.exit_code == 2 and r.output.startswith("error: fetch-data: cannot download") and r.output.count("\n") == 1


@pytest.mark.parametrize("given, name", [("NVIDIA H100 80GB HBM3", "H100"), ("H100-80GB-SXM", "H100"),
                                         ("A100-SXM4-80GB", "A100-80GB"), ("NVIDIA L40S", "L40S")])
def test_gpu_names_as_measurement_sets_spell_them(given, name):
    from blis_gym.sim.latency import load_hardware
    assert load_hardware(given).name == name


# ---- the regularised fit and leave-one-out cross-validation -------------------------------------
def test_prior_penalty_worked_numbers():
    from blis_gym.fidelity.calibrate import PRIOR, PRIOR_START, penalty
    assert penalty(PRIOR_START, ("eta_mem", "step_us")) == 0.0           # the search starts at the prior
    # one spread away (0.85 / 1.2) costs ridge x 1; two spreads (centre x 3 x 3) cost ridge x 4
    assert PRIOR["eta_mem"] == (0.85, 1.2) and PRIOR["step_us"][1] == 3.0
    assert penalty({**PRIOR_START, "eta_mem": 0.85 / 1.2}, ("eta_mem",)) == pytest.approx(1.0)
    far = {**PRIOR_START, "step_us": PRIOR["step_us"][0] * 9}
    assert penalty(far, ("step_us",), ridge=0.5) == pytest.approx(2.0)
    assert penalty(far, ("eta_mem",)) == 0.0                                 # only free ones count
    assert set(PRIOR) == set(PARAM_NAMES) and all(c > 0 and s > 1 for c, s in PRIOR.values())


def test_the_default_fit_is_the_unregularised_one_that_made_the_shipped_coefficients(small_csv):
    """calibrated.yaml is reproducible: the default procedure starts where it started, moves its
    13 coefficients and adds no prior; --regularised starts at the prior."""
    from blis_gym.fidelity.calibrate import DEFAULT_START, PRIOR_START, REGULARISED, UNREGULARISED, loss
    exps = [e for e in load_experiments(small_csv) if e.exp_id == "a1"]
    params, objective, _ = fit(exps, max_evals=1, stage_cap_s=None)
    assert params == DEFAULT_START and len(UNREGULARISED.free) == 13
    assert objective == loss(exps, DEFAULT_START, {}, stage_cap_s=None)       # no penalty term
    params_r, objective_r, _ = fit(exps, max_evals=1, stage_cap_s=None, procedure=REGULARISED)
    assert params_r == PRIOR_START and params_r != DEFAULT_START
    assert objective_r == pytest.approx(loss(exps, PRIOR_START, {}, stage_cap_s=None, ape_cap=100.0, trace_weight=2.0))


def test_loss_caps_a_runaway_experiment(small_csv, monkeypatch):
    from blis_gym.fidelity import calibrate as cal_mod
    exps = [e for e in load_experiments(small_csv) if e.exp_id == "a1"]
    runaway = {si: {m: v * 1000 for m, v in e.items()} for si, e in exps[0].actual.items()}
    monkeypatch.setattr(cal_mod, "run_experiment", lambda e, *a, **k: runaway)
    # every metric 99 900 % off counts as the cap: the weights sum to 3.5
    assert cal_mod.loss(exps, load_calibration()[0], {}, ape_cap=100.0) == pytest.approx(3.5 * 100.0)
    assert cal_mod.loss(exps, load_calibration()[0], {}) == pytest.approx(3.5 * 99_900, rel=1e-3)   # uncapped


def _cv_csv(tmp_path):
    rows = [HEADER]
    for exp, model in (("q1", "Qwen/Qwen2.5-7B-Instruct"), ("q2", "Qwen/Qwen2.5-7B"),
                       ("l1", "meta-llama/Llama-2-7b-hf"), ("x1", "nobody/unknown-model-9b")):
        rows += [_row(exp, model, -1, "", 10, 200.0, 25.0), _row(exp, model, 0, 1.0, 10, 200.0, 25.0)]
    p = tmp_path / "cv.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_cv_folds_never_train_on_the_held_out_model(tmp_path):
    from blis_gym.fidelity.calibrate import load_cases
    from blis_gym.fidelity.crossval import case_model, cv_folds, usable
    cases, skipped = usable(load_cases([_cv_csv(tmp_path), "rtx4090_llama-3.1-8b_tp1_requests.csv"]))
    assert [s["exp_id"] for s in skipped] == ["x1"]
    folds = cv_folds(cases, "model")
    assert [k for k, _, _ in folds] == ["qwen2.5-7b", "llama-2-7b", "llama-3.1-8b"]
    held = {k: [c.exp_id for c in test] for k, _, test in folds}
    assert held["qwen2.5-7b"] == ["q1", "q2"]                 # name variants are one model
    assert held["llama-3.1-8b"] == ["rtx4090_llama-3.1-8b_tp1_requests"]
    for key, train, test in folds:
        assert all(case_model(c) != key for c in train) and all(case_model(c) == key for c in test)
        assert len(train) + len(test) == len(cases)
    gpu = cv_folds(cases, "gpu")
    assert [(k, len(test)) for k, _, test in gpu] == [("H100", 3), ("RTX-4090", 1)]


def test_cv_needs_two_models_and_a_known_kind(tmp_path):
    from blis_gym.errors import ConfigError
    from blis_gym.fidelity.calibrate import load_cases
    from blis_gym.fidelity.crossval import cv_folds
    one = load_cases(["rtx4090_llama-3.1-8b_tp1_requests.csv", "rtxpro6000_llama-3.1-8b_tp1_requests.csv"])
    with pytest.raises(ConfigError, match="at least two models"):
        cv_folds(one, "model")
    with pytest.raises(ConfigError, match="not one of model, gpu"):
        cv_folds(one, "family")
    r = CliRunner().invoke(main, ["calibrate", "--cv", "family", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--cv" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--cv", "model", "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "at least two models" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--cv", "model", "--install", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--cv" in r.output


def test_cross_validate_writes_the_table(tmp_path):
    data = _cv_csv(tmp_path)
    out = tmp_path / "cv"
    trace = "rtx4090_llama-3.1-8b_tp1_requests.csv"
    r = CliRunner().invoke(main, ["calibrate", "--cv", "model", "--data", str(data), "--data", trace,
                                  "--out", str(out), "--max-evals", "3", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "| **all held-out rows** | 4 |" in r.output and "skipped x1" in r.output
    with open(out / "cv_model.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(x["fold"], x["exp_id"]) for x in rows} == {("qwen2.5-7b", "q1"), ("qwen2.5-7b", "q2"),
                                                       ("llama-2-7b", "l1"), ("llama-3.1-8b", trace[:-4])}
    assert {x["metric"] for x in rows} == {"e2e_mean", "ttft_mean", "itl_mean", "e2e_p99", "ttft_p99"}
    for x in rows:
        for k in ("hybrid", "calibrated", "trained-physics", "roofline"):
            assert float(x[f"pred_{k}"]) > 0 and float(x[f"ape_{k}"]) >= 0
    doc = json.loads((out / "cv_model.json").read_text())
    folds = {f["held_out"]: f for f in doc["folds"]}
    assert folds["qwen2.5-7b"]["trained_on"] == ["l1", trace[:-4]]
    assert folds["llama-2-7b"]["trained_on"] == ["q1", "q2", trace[:-4]]
    assert folds["qwen2.5-7b"]["evaluations"] <= 3
    s = doc["summary"]
    assert set(s["by_model"]) == {"qwen2.5-7b", "llama-2-7b", "llama-3.1-8b"}
    assert set(s["by_gpu"]) == {"H100", "RTX-4090"} and s["by_workload"]["sharegpt trace"]["n"] == 1
    assert s["median_ape"]["calibrated"]["e2e_mean"] is not None and s["median_ape"]["hybrid"]["e2e_mean"] is not None
    # every fold refits the hybrid on its training cases only: different folds, different coefficients
    assert folds["qwen2.5-7b"]["hybrid"] != folds["llama-2-7b"]["hybrid"]
