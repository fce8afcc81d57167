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


def test_calibrate_needs_an_explicit_data_file():
    # the measurements behind the shipped fit cannot be redistributed: no default path
    r = CliRunner().invoke(main, ["calibrate", "--quiet"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--data" in r.output
