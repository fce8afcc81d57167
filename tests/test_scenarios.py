"""The bundled cluster scenarios show the directions llm-d's own results show."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def run(name: str, tmp_path: Path, *extra, env=None) -> dict:
    out = tmp_path / name
    p = subprocess.run([sys.executable, "-m", "blis_gym.cli", "run", str(ROOT / "scenarios" / f"{name}.yaml"),
                        "--out", str(out), "--quiet", *extra], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr
    return json.loads((out / "summary.json").read_text())


def test_prefix_aware_default_profile_beats_round_robin(tmp_path):
    d = run("cluster-4xh100-default", tmp_path)
    rr = run("cluster-4xh100-round-robin", tmp_path)
    assert 0 <= rr["prefix_cache_hit_rate"] < d["prefix_cache_hit_rate"] <= 1
    assert d["ttft_mean_ms"] < rr["ttft_mean_ms"]
    for s in (d, rr):
        assert s["injected_requests"] == s["completed_requests"] + s["timed_out_requests"] + s["dropped_requests"]


def test_probabilistic_admitter_protects_critical_tail(tmp_path):
    legacy = run("overload-gaie-legacy", tmp_path)
    prob = run("overload-probabilistic", tmp_path)
    crit_l, crit_p = legacy["per_class"]["critical"], prob["per_class"]["critical"]
    assert crit_p["ttft_p90_ms"] < crit_l["ttft_p90_ms"]
    # only sheddable traffic is ever rejected, with llm-d's status codes
    assert crit_l["rejected_requests"] == crit_p["rejected_requests"] == 0
    assert set(legacy["rejection_reasons"]) <= {"429 rejected-saturated"}
    assert set(prob["rejection_reasons"]) <= {"500 rejected-probabilistic"}
    # per-class blocks carry the top-level field names
    assert set(legacy) >= set(crit_l) - {"good_requests", "goodput_rps", "slo_attainment", "slo_targets"}
    for s in (legacy, prob):
        total = sum(s[k] for k in ("completed_requests", "rejected_requests", "timed_out_requests",
                                   "dropped_requests", "still_queued", "still_running", "still_in_transit",
                                   "still_in_gateway"))
        assert total == s["injected_requests"]


def test_cluster_run_is_identical_across_processes(tmp_path):
    a = run("overload-probabilistic", tmp_path / "a", env={"PYTHONHASHSEED": "0"})
    b = run("overload-probabilistic", tmp_path / "b", env={"PYTHONHASHSEED": "1"})
    assert a == b
