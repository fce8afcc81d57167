"""validate's checks: the meta file's shape, --stage-cap, requests that can never be served, a
run that scores nothing (exit 2, one line), and which rows are labelled `train`."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner
from test_fidelity import HEADER, _row

from blis_gym.cli import main

MODEL = "meta-llama/Llama-3.1-8B"


def _trace(tmp_path, meta) -> str:
    p = tmp_path / "mine_requests.csv"
    lines = ["request_id,input_tokens,output_tokens,queued_s,ttft_ms,e2e_ms"]
    lines += [f"r{i},{200 + 10 * i},{20 + i},{i * 0.05:.3f},{30 + i},{300 + 10 * i}" for i in range(12)]
    p.write_text("\n".join(lines) + "\n")
    (tmp_path / "mine_meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return str(p)


def _validate(*args):
    return CliRunner().invoke(main, ["validate", *map(str, args), "--quiet"])


def _one_error_line(r, needle):
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and r.output.startswith("error: ") and needle in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("meta, needle", [
    ("[1, 2]", "mine_meta.json: must be a JSON object (got list)"),
    ("null", "mine_meta.json: must be a JSON object (got NoneType)"),
    ({"model": MODEL, "hardware": "H100"}, "mine_meta.json.hardware: must be a JSON object"),
    ({"model": MODEL, "hardware": {"device_name": "H100"}, "engine_kwargs": [1]},
     "mine_meta.json.engine_kwargs: must be a JSON object"),
    ({"model": MODEL, "hardware": {"device_name": "H100"}, "kv_cache": "x"}, "mine_meta.json.kv_cache: must be"),
    ({"model": 5, "hardware": {"device_name": "H100"}}, "mine_meta.json.model: input should be a valid string"),
    ({"model": MODEL, "engine_kwargs": {"tensor_parallel_size": "2"}},
     "mine_meta.json.engine_kwargs.tensor_parallel_size: input should be a valid integer"),
])
def test_a_malformed_meta_file_is_one_line(tmp_path, meta, needle):
    _one_error_line(_validate(_trace(tmp_path, meta), "--out", tmp_path / "o"), needle)


def test_a_meta_file_with_null_sections_uses_the_defaults(tmp_path):
    meta = {"model": MODEL, "hardware": {"device_name": "NVIDIA H100 80GB HBM3"}, "engine_kwargs": None,
            "kv_cache": None}
    r = _validate(_trace(tmp_path, meta), "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["completed"] == 12 and s["settings"]["tp"] == 1 and s["settings"]["hardware"] == "H100"


@pytest.mark.parametrize("cap", ["-1", "nan", "0", "inf"])
def test_stage_cap_must_be_a_positive_length(tmp_path, cap):
    agg = tmp_path / "agg.csv"
    agg.write_text("\n".join([HEADER, _row("a1", "Qwen/Qwen2.5-7B-Instruct", 0, 1.0, 10, 190.0, 24.0)]) + "\n")
    _one_error_line(_validate(agg, f"--stage-cap={cap}", "--out", tmp_path / "o"), "--stage-cap: must be a number")


def test_requests_that_can_never_be_served_say_why_and_fail(tmp_path):
    meta = {"model": MODEL, "hardware": {"device_name": "H100"}, "engine_kwargs": {"max_model_len": 1}}
    r = _validate(_trace(tmp_path, meta), "--out", tmp_path / "o")
    _one_error_line(r, "no experiment could be scored: mine_requests: 12 of 12 requests not completed: "
                       "12 dropped (prompt of 200 tokens >= max_model_len 1)")
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["completed"] == 0 and "max_model_len 1" in s["skipped"][0]["reason"]


def test_a_file_whose_every_experiment_is_refused_fails(tmp_path):
    agg = tmp_path / "agg.csv"
    agg.write_text("\n".join([HEADER, _row("u1", "nobody/unknown-model-9b", 0, 1.0, 10, 200.0, 25.0),
                              _row("u2", "nobody/unknown-model-9b", 0, 1.0, 10, 200.0, 25.0)]) + "\n")
    r = _validate(agg, "--out", tmp_path / "o", "--latency-model", "all")
    _one_error_line(r, "agg.csv: no experiment could be scored: u1: unknown model 'nobody/unknown-model-9b'")
    assert "(and 1 more, reasons in summary.json)" in r.output
    assert len(json.loads((tmp_path / "o" / "summary.json").read_text())["skipped"]) == 2


def _splits(out) -> dict:
    with open(out / "validation.csv") as f:
        return {(r["exp_id"], r["latency_model"]): r["split"] for r in csv.DictReader(f)}


def test_only_rows_of_the_fitted_file_are_labelled_train(tmp_path):
    from blis_gym.fidelity import load_calibration
    params, inter = load_calibration()
    cal = tmp_path / "cal.yaml"
    cal.write_text(json.dumps({"params": params, "interconnect": inter,
                               "fit": {"data": "fitted.csv", "trained_on": ["a1"], "holdout": ["a2"]}}))
    rows = [HEADER] + [_row(x, "Qwen/Qwen2.5-7B-Instruct", 0, 1.0, 5, 190.0, 24.0) for x in ("a1", "a2", "a3")]
    for name in ("fitted.csv", "other.csv"):
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        r = _validate(tmp_path / name, "--calibration", cal, "--out", tmp_path / name[:-4], "--latency-model", "all")
        assert r.exit_code == 0, r.output
    fitted, other = _splits(tmp_path / "fitted"), _splits(tmp_path / "other")
    assert [fitted[(x, "calibrated")] for x in ("a1", "a2", "a3")] == ["train", "holdout", "unseen"]
    assert set(other.values()) == {"unseen"}          # the same experiments in another file: not fitted
    assert fitted[("a1", "roofline")] == "unseen"      # nothing fitted


def test_trained_physics_rows_are_train_only_in_its_fitting_set(tmp_path):
    from blis_gym.fidelity.fit_record import fit_record, split_of
    rec = fit_record("trained-physics")
    assert split_of(rec, "h100_trainval_aggregates.csv", "64") == "train"
    assert split_of(rec, "outside.csv", "64") == "unseen"
    assert split_of(rec, "rtx4090_llama-3.1-8b_tp1_requests.csv", "rtx4090_llama-3.1-8b_tp1_requests",
                    trace=True) == "trace"
