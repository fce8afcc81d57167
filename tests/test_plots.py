"""`blis-gym plot`, `blis-gym run --plot`, `blis-gym compare` and the terminal summary at 80
columns, on short runs of bundled scenarios."""
from __future__ import annotations

import io
import json
import sys

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from blis_gym.cli import main
from blis_gym.cli.run import _print_summary
from blis_gym.resources import bundled_scenarios

pytest.importorskip("matplotlib")


def _short(tmp_path, name: str, horizon_s: float):
    """A bundled scenario cut to `horizon_s` simulated seconds, as a file in tmp_path."""
    data = yaml.safe_load(bundled_scenarios()[name].read_text())
    data["workload"]["horizon_s"] = horizon_s
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(tmp_path, name, horizon_s, *extra):
    out = tmp_path / f"run-{name}"
    r = CliRunner().invoke(main, ["run", str(_short(tmp_path, name, horizon_s)), "--out", str(out), "--quiet", *extra])
    assert r.exit_code == 0, r.output
    return out


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_cluster_run(tmp_path):
    run = _run(tmp_path, "cluster-4xh100-default", 20)
    r = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "png")])
    assert r.exit_code == 0, r.output
    pngs = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert {"latency_cdf.png", "waiting.png", "kv_usage.png"} <= set(pngs)
    assert all(_is_png(tmp_path / "png" / p) for p in pngs)


def test_run_plot_draws_pool_size_and_cost_for_autoscale_bursty(tmp_path):
    run = _run(tmp_path, "autoscale-bursty", 60, "--plot")
    assert _is_png(run / "pools.png") and _is_png(run / "latency_cdf.png")


def test_compare_prints_both_runs_kpis_with_relative_differences(tmp_path):
    a, b = _run(tmp_path, "cluster-4xh100-default", 15), _run(tmp_path, "cluster-4xh100-round-robin", 15)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    out = tmp_path / "cmp.png"
    r = CliRunner().invoke(main, ["compare", str(a), str(b), "--out", str(out)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if ln.split()[:1] == ["ttft_p90_ms"])
    change = 100 * (sb["ttft_p90_ms"] - sa["ttft_p90_ms"]) / sa["ttft_p90_ms"]
    assert f"{sa['ttft_p90_ms']:.4g}" in row and f"{sb['ttft_p90_ms']:.4g} ({change:+.1f}%)" in row
    assert _is_png(out)
    assert max(map(len, r.output.splitlines())) <= 80


def test_compare_and_plot_refuse_a_folder_that_is_not_a_run(tmp_path):
    r = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert r.exit_code == 2 and "RUN_DIR" in r.output and "summary.json" in r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path)])
    assert r.exit_code == 2 and "at least two" in r.output


def _summary_lines(run) -> list[str]:
    buf = io.StringIO()
    _print_summary(json.loads((run / "summary.json").read_text()), 1.0,
                   Console(file=buf, width=80, force_terminal=False))
    return buf.getvalue().splitlines()


def test_summary_shows_what_is_still_running_rejections_and_cost_within_80_columns(tmp_path):
    lines = _summary_lines(_run(tmp_path, "overload-probabilistic", 20))
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    s = json.loads((tmp_path / "run-overload-probabilistic" / "summary.json").read_text())
    assert s["still_running"] > 0 and f"{s['still_running']} running" in text
    reason, n = next(iter(s["rejection_reasons"].items()))
    assert any(reason in ln and ln.rstrip().endswith(str(n)) for ln in lines)
    assert f"${s['cost']['dollars']:.2f}" in text


def test_summary_of_a_pd_run_shows_the_disaggregated_share(tmp_path):
    lines = _summary_lines(_run(tmp_path, "pd-chat-threshold16", 20))
    assert max(map(len, lines)) <= 80
    row = next(ln for ln in lines if "P/D disaggregated" in ln)
    assert "%" in row
    assert any(ln.strip().startswith("pool decode") for ln in lines)     # cost per pool


def test_missing_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    run = _run(tmp_path, "single-request", 10)
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # as if not installed
    r = CliRunner().invoke(main, ["plot", str(run)])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "pip install matplotlib" in r.output


def test_run_plot_without_matplotlib_fails_before_simulating(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(main, ["run", "single-request", "--plot", "--quiet", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "pip install matplotlib" in r.output and not (tmp_path / "o").exists()
