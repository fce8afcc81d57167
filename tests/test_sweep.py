"""blis-gym sweep: expansion, clear errors before any point runs, infeasible points as rows,
identical results whatever the workers or interruptions, the Pareto frontier."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError
from blis_gym.sweep import load_results, load_sweep, parse_sweep, run_point, run_sweep
from blis_gym.sweep.pareto import frontier
from blis_gym.sweep.spec import ParetoSpec

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "model": "Qwen/Qwen3-14B",
    "hardware": "H100",
    "sample_interval_s": 0,
    "workload": {"rate": 5, "num_requests": 40,
                 "input": {"dist": "gaussian", "mean": 512, "std": 128, "min": 16, "max": 2048},
                 "output": {"dist": "gaussian", "mean": 48, "std": 16, "min": 4, "max": 256}},
}


def tiny(**extra) -> dict:
    return {"name": "tiny", "scenario": BASE, "grid": {"cluster.instances": [1, 2], "workload.rate": [5, 40]},
            **extra}


def write(tmp_path: Path, sweep: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blis_gym.cli", "sweep", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, **kw)


# ---- expansion ---------------------------------------------------------------------------------
def test_grid_times_points_times_seeds_in_file_order():
    sw = parse_sweep(tiny(points=[{"vllm.max_num_seqs": 8}, {"vllm.max_num_seqs": 64}], seeds=[1, 2]), ROOT)
    assert len(sw.points) == 2 * 2 * 2 * 2
    assert sw.columns == ["cluster.instances", "workload.rate", "vllm.max_num_seqs"]
    first = sw.points[0]
    assert first.params == {"cluster.instances": 1, "workload.rate": 5, "vllm.max_num_seqs": 8}
    assert first.data["seed"] == 1 and first.data["cluster"] == {"instances": 1}
    assert [p.data["seed"] for p in sw.points[:4]] == [1, 2, 1, 2]
    assert len({p.key for p in sw.points}) == len(sw.points)


def test_a_count_of_seeds_starts_at_the_scenarios_seed_and_keys_are_stable():
    sw = parse_sweep(tiny(seeds=3), ROOT)
    assert [p.data["seed"] for p in sw.points[:3]] == [42, 43, 44]
    assert [p.key for p in parse_sweep(tiny(seeds=3), ROOT).points] == [p.key for p in sw.points]


def test_an_axis_a_point_leaves_alone_shows_the_base_value_and_duplicates_run_once():
    sw = parse_sweep(tiny(points=[{"vllm.enable_prefix_caching": False}, {"tp": 1}]), ROOT)
    params = [p.params for p in sw.points[:2]]
    assert params[1]["vllm.enable_prefix_caching"] is True          # the base's (default) value
    assert params[0]["tp"] == 1
    # {"tp": 1} is the base itself (tp defaults to 1): the same scenario, so the same key
    assert len(sw.points) == 4 * 2


def test_a_value_shared_through_a_yaml_alias_is_refined_per_point(tmp_path):
    text = """
scenario: {model: Qwen/Qwen3-14B}
points:
  - {workload: &w {num_requests: 20, rate: 1, input: {dist: constant, value: 8}, output: {dist: constant, value: 8}}, workload.rate: 2}
  - {workload: *w, workload.rate: 3}
"""
    (tmp_path / "s.yaml").write_text(text)
    sw = load_sweep(tmp_path / "s.yaml")
    assert [p.data["workload"]["rate"] for p in sw.points] == [2, 3]


def test_random_samples_are_reproducible_and_in_range():
    spec = tiny(random={"samples": 5, "seed": 7, "axes": {"workload.rate": {"uniform": [1, 3]},
                                                           "vllm.max_num_seqs": {"randint": [4, 6]}}})
    spec["grid"] = {}
    a, b = parse_sweep(spec, ROOT), parse_sweep(spec, ROOT)
    assert [p.params for p in a.points] == [p.params for p in b.points]
    assert len(a.points) == 5
    assert all(1 <= p.params["workload.rate"] <= 3 and p.params["vllm.max_num_seqs"] in (4, 5, 6) for p in a.points)


def test_randint_reaches_the_int64_ends():
    sw = parse_sweep(tiny(grid={}, random={"samples": 3, "axes": {"seed": {"randint": [2**63 - 1, 2**63 - 1]}}}),
                     ROOT)
    assert [p.params["seed"] for p in sw.points] == [2**63 - 1]      # the same point three times runs once


def test_base_by_bundled_name_and_list_items_by_index():
    sw = parse_sweep({"base": "pd-chat-never", "grid": {"pools.1.instances": [2, 3]}}, ROOT)
    assert [p.data["pools"][1]["instances"] for p in sw.points] == [2, 3]
    assert sw.points[0].data["name"] == "pd-chat-never"


# ---- bad sweep files: one line naming the axis, exit 2, nothing run -----------------------------
@pytest.mark.parametrize("change, named", [
    ({"grid": {"vllm.max_batch": [1, 2]}}, "grid.vllm.max_batch: unknown field"),
    ({"grid": {"tp": []}}, "grid.tp: empty axis"),
    ({"grid": {"tp": ["two"]}}, "grid.tp: "),
    ({"points": [{"workload.rate": -1}]}, "points.workload.rate: "),
    ({"grid": {"workload.rate.mean": [1]}}, "grid.workload.rate.mean: workload.rate is not a mapping"),
    ({"random": {"samples": 2, "axes": {"tp": {"uniform": [2, 1]}}}}, "random.axes.tp"),
    ({"gird": {"tp": [1]}}, "gird: unknown field"),
    ({"seeds": 0}, "seeds: "),
    ({"seeds": []}, "seeds: empty list"),
    # issue 30: random axes with infinite, NaN or out-of-range ends; sizes bounded before anything is built
    ({"random": {"samples": 2, "axes": {"workload.rate": {"uniform": [1, float("inf")]}}}},
     "random.axes.workload.rate.1: input should be a finite number"),
    ({"random": {"samples": 2, "axes": {"workload.rate": {"loguniform": [float("nan"), 3]}}}},
     "random.axes.workload.rate.loguniform.0: input should be a finite number"),
    ({"random": {"samples": 2, "axes": {"workload.rate": {"uniform": [-1e308, 1e308]}}}},
     "high - low must be a finite number"),
    ({"random": {"samples": 2, "axes": {"cluster.instances": {"randint": [0, 2**70]}}}},
     "random.axes.cluster.instances.randint.1: input should be less than or equal to 9223372036854775807"),
    ({"seeds": 10**9}, "seeds: must be a count from 1 to 100,000"),
    ({"seeds": [-1]}, "seeds.0: input should be greater than or equal to 0"),
    ({"random": {"samples": 1, "seed": -1, "axes": {"workload.rate": {"uniform": [1, 2]}}}},
     "random.seed: input should be greater than or equal to 0"),
    ({"random": {"samples": 10**9, "axes": {"workload.rate": {"uniform": [1, 2]}}}},
     "random.samples: input should be less than or equal to 100000"),
    ({"grid": {f"a{i}": list(range(10)) for i in range(8)}}, "sweep: 100,000,000 (grid) = 100,000,000 points; "
                                                            "at most 100,000"),
    ({"seeds": 1000, "random": {"samples": 1000, "axes": {"workload.rate": {"uniform": [1, 2]}}}},
     "sweep: 4 (grid) x 1,000 (random.samples) x 1,000 (seeds) = 4,000,000 points"),
])
def test_bad_sweep_files_fail_before_any_point_runs(tmp_path, change, named):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["sweep", str(write(tmp_path, {**tiny(), **change})), "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


def test_blis_gym_run_on_a_sweep_file_says_what_it_is():
    r = CliRunner().invoke(main, ["run", str(ROOT / "scenarios" / "studies" / "pd.yaml")])
    assert r.exit_code == 2 and "this is a sweep file" in r.stderr


def test_an_unknown_base_names_the_bundled_scenarios():
    with pytest.raises(ConfigError, match="base: no bundled scenario or file 'nope'; bundled: .*default"):
        parse_sweep({"base": "nope"}, ROOT)


# ---- running -----------------------------------------------------------------------------------
def test_infeasible_points_are_rows_with_a_reason():
    base = {**BASE, "model": "meta-llama/Llama-3.1-70B-Instruct"}
    rows = [run_point(base, {"tp": tp, "workload.input": {"dist": "constant", "value": 2000}}) for tp in (1, 2, 4)]
    assert "does not fit on 1 x H100" in rows[0]["reason"]
    assert "not below max_model_len" in rows[1]["reason"]          # TP2: KV too small for a prompt
    assert rows[2]["reason"] is None and rows[2]["completed_requests"] == 40
    assert "ttft_p90_ms" not in rows[0]
    assert [r["gpus"] for r in rows] == [1, 2, 4]
    assert rows[2]["dollars_per_hour"] == pytest.approx(4 * 4.096)


def test_run_point_gives_the_overrides_the_key_and_flattened_kpis():
    row = run_point(BASE, {"cluster.instances": 2})
    assert row["cluster.instances"] == 2 and row["instances"] == 2 and row["seed"] == 42
    assert row["per_class.standard.completed_requests"] == 40 and row["cost.gpu_hours"] > 0
    assert row["key"] == run_point({**BASE, "cluster": {"instances": 2}})["key"]


def test_workers_1_and_2_give_identical_results(tmp_path):
    sw = parse_sweep(tiny(), ROOT)
    one = run_sweep(sw, tmp_path / "one", workers=1, quiet=True)
    two = run_sweep(sw, tmp_path / "two", workers=2, quiet=True)
    pd.testing.assert_frame_equal(one, two)
    assert (tmp_path / "one" / "results.csv").read_bytes() == (tmp_path / "two" / "results.csv").read_bytes()
    assert len(one) == 4 and one["reason"].isna().all()
    pd.testing.assert_frame_equal(load_results(tmp_path / "one"), pd.read_parquet(tmp_path / "one" / "results.parquet"))


def test_sigkill_halfway_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    sweep = tiny(points=[{"vllm.max_num_seqs": n} for n in (4, 8, 16, 32)])
    path = write(tmp_path, sweep)
    total = 16
    run_sweep(load_sweep(path), tmp_path / "whole", workers=1, quiet=True)

    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "blis_gym.cli", "sweep", str(path), "--out", str(out),
                             "--workers", "2", "--no-plot", "--quiet"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / "points").glob("*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list((out / "points").glob("*.json")))
    assert 3 <= finished < total and not (out / "results.csv").exists()

    again = cli(path, "--out", out, "--workers", "1", "--no-plot")
    assert again.returncode == 0, again.stderr
    assert f"{total - finished} points to run" in again.stderr
    assert (out / "results.csv").read_bytes() == (tmp_path / "whole" / "results.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "results.parquet"))

    done = CliRunner().invoke(main, ["sweep", str(path), "--out", str(out), "--no-plot"])
    assert "0 points to run" in done.stderr


def _processes_in_group(pgid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:       # field 5: the process group
            found.append(int(pid))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigkill_of_the_sweep_alone_leaves_no_worker_behind(tmp_path):
    # kill -9 of the sweep process only (not its group): its pool workers and the resource
    # tracker must go too, closing its stdout and stderr (a caller reading them then sees EOF)
    busy = {**BASE, "workload": {**BASE["workload"], "num_requests": 3000, "rate": 50}}
    path = write(tmp_path, {"scenario": busy, "grid": {"cluster.instances": [1, 2, 3, 4]}})
    proc = subprocess.Popen([sys.executable, "-m", "blis_gym.cli", "sweep", str(path), "--out", str(tmp_path / "out"),
                             "--workers", "2", "--no-plot", "--quiet"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_processes_in_group(proc.pid)) < 4 and time.monotonic() < deadline:   # the sweep, 2 workers,
            time.sleep(0.05)                                                             # the resource tracker
        assert len(_processes_in_group(proc.pid)) >= 3 and proc.poll() is None
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while _processes_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_in_group(proc.pid) == []
        proc.stdout.read(), proc.stderr.read()      # EOF at once: nobody else holds them open
    finally:
        for pid in _processes_in_group(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_the_plot_and_frontier_are_written_and_redrawn_with_another_slo(tmp_path):
    out = tmp_path / "out"
    chart = {"x": "workload.rate", "y": "ttft_mean_ms", "by": "cluster.instances"}
    r = CliRunner().invoke(main, ["sweep", str(write(tmp_path, tiny(pareto={"slo": 1000}, charts=[chart]))),
                                  "--out", str(out), "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "pareto.png").stat().st_size > 10_000
    assert (out / "chart-ttft_mean_ms-vs-workload.rate-by-cluster.instances.png").stat().st_size > 10_000
    before = pd.read_csv(out / "frontier.csv")
    assert before["best"].sum() == before["tier"].nunique() == 2
    (out / "pareto.png").unlink()
    r = CliRunner().invoke(main, ["sweep", "--plot-only", "--out", str(out), "--slo", "0.001", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "pareto.png").exists() and not pd.read_csv(out / "frontier.csv")["best"].any()


def test_a_chart_of_a_column_the_results_lack_is_named(tmp_path):
    sweep = tiny(charts=[{"x": "workload.rate", "y": "ttft_p42_ms"}], pareto=None)
    sweep["grid"] = {"workload.rate": [5]}
    r = CliRunner().invoke(main, ["sweep", str(write(tmp_path, sweep)), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 2 and "charts.0.y: no column 'ttft_p42_ms'" in r.stderr


def test_load_results_of_a_folder_that_is_no_sweep(tmp_path):
    with pytest.raises(ConfigError, match="not a sweep folder"):
        load_results(tmp_path)


# ---- the frontier ------------------------------------------------------------------------------
def test_frontier_per_budget_tier_and_the_best_within_the_slo():
    t = pd.DataFrame({
        "key": list("abcdef"), "reason": [None] * 5 + ["does not fit"],
        "gpus": [4, 4, 4, 8, 8, 2],
        "ttft_p90_ms": [100, 200, 300, 150, 900, None],
        "output_tokens_per_s": [1000, 900, 2000, 3000, 5000, None],
    })
    f = frontier(t, ParetoSpec(slo=500))
    four = f[f["tier"] == 4]
    assert list(four["key"]) == ["a", "c"]               # b is beaten by a (faster and more)
    assert list(four[four["best"]]["key"]) == ["c"]
    eight = f[f["tier"] == 8]
    assert list(eight["key"]) == ["a", "d", "e"]         # a 4-GPU point fits an 8-GPU budget too
    assert list(eight[eight["best"]]["key"]) == ["d"]    # e is above the SLO
    assert "f" not in set(f["key"])


# ---- the studies -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, at_least", [("capacity", 100), ("admission", 16), ("pd", 12)])
def test_the_studies_expand_and_validate(name, at_least):
    sw = load_sweep(ROOT / "scenarios" / "studies" / f"{name}.yaml")
    assert len(sw.points) >= at_least
    assert [p.key for p in load_sweep(name).points] == [p.key for p in sw.points]   # by its bundled name


@pytest.mark.slow
def test_capacity_study_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    study = ROOT / "scenarios" / "studies" / "capacity.yaml"
    whole = cli(study, "--out", tmp_path / "whole", "--workers", "2")
    assert whole.returncode == 0, whole.stderr
    for f in ("results.parquet", "results.csv", "frontier.csv", "pareto.png"):
        assert (tmp_path / "whole" / f).exists()
    n = len(pd.read_parquet(tmp_path / "whole" / "results.parquet"))
    assert n >= 100

    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "blis_gym.cli", "sweep", str(study), "--out", str(out),
                             "--workers", "2", "--quiet"], cwd=ROOT, start_new_session=True)
    while len(list((out / "points").glob("*.json"))) < n // 2 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((out / "points").glob("*.json"))) < n
    again = cli(study, "--out", out, "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert (out / "results.csv").read_bytes() == (tmp_path / "whole" / "results.csv").read_bytes()
    assert "0 points to run" in cli(study, "--out", out).stderr


@pytest.mark.slow
def test_ray_backend_gives_the_pool_results(tmp_path):
    ray = pytest.importorskip("ray")
    sw = parse_sweep(tiny(), ROOT)
    pool = run_sweep(sw, tmp_path / "pool", workers=2, quiet=True)
    try:
        on_ray = run_sweep(sw, tmp_path / "ray", backend="ray", quiet=True)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(pool, on_ray)
