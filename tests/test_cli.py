"""The command line as a user runs it: worked numbers, determinism across processes, and one
clear line with exit status 2 for every kind of bad scenario."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "blis_gym.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=300)


@pytest.mark.parametrize("name, ttft, itl, e2e", [
    ("single-request", 29.899, 12.26, 1244.4),
    ("single-request-roofline", 22.43, 5.79, 595.3),
])
def test_single_request_worked_numbers(tmp_path, name, ttft, itl, e2e):
    p = cli("run", SCENARIOS / f"{name}.yaml", "--out", tmp_path, "--quiet")
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["ttft_mean_ms"] == pytest.approx(ttft, rel=0.005)
    assert s["itl_mean_ms"] == pytest.approx(itl, rel=0.005)
    assert s["e2e_mean_ms"] == pytest.approx(e2e, rel=0.005)
    header = (tmp_path / "requests.csv").read_text().splitlines()[0]
    assert header.startswith("request_id,") and "ttft_ms" in header


def test_run_prints_a_summary_table(tmp_path):
    p = cli("run", SCENARIOS / "single-request.yaml", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert "latency (ms)" in p.stdout and "TTFT" in p.stdout and "29.90" in p.stdout


def test_same_seed_same_bytes_across_processes_and_hash_seeds(tmp_path):
    outs = []
    for i, hs in enumerate(("0", "1")):
        d = tmp_path / f"run{i}"
        p = cli("run", SCENARIOS / "default.yaml", "--out", d, "--quiet", "--seed", "7",
                env={"PYTHONHASHSEED": hs})
        assert p.returncode == 0, p.stderr
        outs.append(((d / "summary.json").read_bytes(), (d / "requests.csv").read_bytes()))
    assert outs[0] == outs[1]
    d = tmp_path / "other-seed"
    assert cli("run", SCENARIOS / "default.yaml", "--out", d, "--quiet", "--seed", "8").returncode == 0
    assert (d / "summary.json").read_bytes() != outs[0][0]


BASE = yaml.safe_load((SCENARIOS / "single-request.yaml").read_text())


def with_(path: str, value):
    """The base scenario with one field (dotted path) set; value None deletes it."""
    import copy
    d = copy.deepcopy(BASE)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return d


BAD = [
    ("unknown top-level key", with_("replicas", 3), "replicas"),
    ("unknown vllm key", with_("vllm.max_batch", 3), "vllm.max_batch"),
    ("negative rate", with_("workload.rate", -1), "workload.rate"),
    ("zero rate", with_("workload.rate", 0), "workload.rate"),
    ("tp not dividing heads", with_("tp", 3), "tp"),
    ("unknown model", with_("model", "acme/none-7b"), "model"),
    ("unknown hardware", with_("hardware", "TPU9"), "hardware"),
    ("unknown latency model", with_("latency_model", "magic"), "latency_model"),
    ("prompt longer than max_model_len", with_("vllm.max_model_len", 256), "workload.input"),
    ("max_model_len beyond KV", with_("vllm.total_kv_blocks", 10) | {"vllm": {"total_kv_blocks": 10,
                                                                               "max_model_len": 4096}},
     "vllm.max_model_len"),
    ("gpu_memory_utilization above 1", with_("vllm.gpu_memory_utilization", 1.5),
     "vllm.gpu_memory_utilization"),
    ("unknown length distribution", with_("workload.input", {"dist": "zipf", "mean": 3}), "workload.input"),
    ("gaussian min above max", with_("workload.input", {"dist": "gaussian", "mean": 500, "min": 900, "max": 100}),
     "workload.input"),
    ("missing workload", with_("workload", None), "workload"),
    ("missing model", with_("model", None), "model"),
    ("no request count nor horizon", with_("workload.num_requests", None), "workload"),
    ("unknown scheduling policy", with_("vllm.scheduling_policy", "lifo"), "vllm.scheduling_policy"),
    ("negative max_num_seqs", with_("vllm.max_num_seqs", -4), "vllm.max_num_seqs"),
    ("model too big for the GPU", with_("model", "meta-llama/Llama-3.1-70B-Instruct"), "tp"),
    ("string where a number belongs", with_("workload.rate", "fast"), "workload.rate"),
    ("unknown arrival process", with_("workload.arrival", {"process": "bursty"}), "workload.arrival"),
    ("unknown routing policy", with_("router", {"policy": "telepathy"}), "router.policy"),
    ("unknown scorer", with_("router", {"policy": "weighted", "scorers": [{"name": "queue"}, {"name": "vibes"}]}),
     "router.scorers[1].name"),
    ("negative scorer weight", with_("router", {"policy": "weighted", "scorers": [{"name": "queue", "weight": -2}]}),
     "router.scorers[0].weight"),
    ("unknown admission policy", with_("gateway", {"admission": {"policy": "bouncer"}}), "gateway.admission"),
]


@pytest.mark.parametrize("label, data, field", BAD, ids=[b[0] for b in BAD])
def test_bad_scenario_gets_one_line_and_status_2(tmp_path, label, data, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    p = cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert p.returncode == 2, (label, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert field in lines[0], (field, lines[0])


def test_bad_files(tmp_path):
    p = cli("run", tmp_path / "missing.yaml", "--quiet")
    assert p.returncode == 2 and "no such file" in p.stderr
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    p = cli("run", bad, "--quiet")
    assert p.returncode == 2 and "not valid YAML" in p.stderr and "Traceback" not in p.stderr
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    p = cli("run", lst, "--quiet")
    assert p.returncode == 2 and "mapping" in p.stderr


TRACES = [
    ("missing column", "arrival_s,input_tokens\n0.1,100\n", "output_tokens"),
    ("negative tokens", "arrival_s,input_tokens,output_tokens\n0.1,100,20\n0.2,-5,20\n", "trace.csv:3: negative"),
    ("time going backwards", "arrival_s,input_tokens,output_tokens\n0.5,100,20\n0.2,100,20\n",
     "trace.csv:3: arrival_s goes backwards"),
    ("not a number", "arrival_s,input_tokens,output_tokens\n0.5,lots,20\n", "trace.csv:2: input_tokens is not a number"),
]


@pytest.mark.parametrize("label, text, needle", TRACES, ids=[t[0] for t in TRACES])
def test_malformed_trace_gets_one_line_and_status_2(tmp_path, label, text, needle):
    (tmp_path / "trace.csv").write_text(text)
    data = with_("workload", {"trace": {"path": "trace.csv", "format": "csv"}})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    p = cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert p.returncode == 2, (label, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert needle in lines[0] and "workload.trace" in lines[0], lines[0]
