"""The command line: `blis-gym run SCENARIO [--seed N] [--out DIR]`.

Bad input (scenario, file, option) prints one line naming the field and exits with status 2.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import ConfigError

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "default.yaml"
# the team's reference data sits beside the checkout (../shared), as in CI
GROUNDTRUTH = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "groundtruth"
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blis-gym")
def main() -> None:
    """blis-gym: simulate llm-d serving clusters, fast and deterministically."""


@main.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: results/<scenario name>).")
@click.option("--quiet", is_flag=True, help="No progress bar and no table; just write the files.")
def run(scenario: Path | None, seed: int | None, out_dir: Path | None, quiet: bool) -> None:
    """Run SCENARIO (default: the bundled scenarios/default.yaml), print a summary table and
    write summary.json, requests.csv and timeseries.csv."""
    from .scenario import build, load_scenario
    from .sim.simulation import Simulation

    path = scenario or DEFAULT_SCENARIO
    try:
        sc = load_scenario(path, {"seed": seed} if seed is not None else None)
        cfg = build(sc, base_dir=path.parent)
        sim = Simulation(cfg)
    except ConfigError as e:
        _fail(str(e))
    out_dir = out_dir or Path("results") / sc.name
    t0 = time.perf_counter()
    summary = _run_with_progress(sim, quiet)
    wall = time.perf_counter() - t0
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"--out: cannot create {out_dir}: {e.strerror}")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sim.metrics.write_requests_csv(out_dir / "requests.csv")
    sim.metrics.write_timeseries_csv(out_dir / "timeseries.csv")
    written = ["summary.json", "requests.csv", "timeseries.csv"]
    if sim.pools:
        sim.metrics.write_pools_csv(out_dir / "pools.csv")
        written.append("pools.csv")
    if sim.gateway is not None and sim.gateway.decisions is not None:
        _write_decisions(sim.gateway, out_dir / "decisions.csv")
        written.append("decisions.csv")
    if not quiet:
        _print_summary(summary, wall)
        Console().print(f"wrote {out_dir}/: {', '.join(written)}", highlight=False)


def _write_decisions(gateway, path: Path) -> None:
    """One row per (routing decision, candidate pod): its total, scorer scores, and whether chosen."""
    import csv
    names = [p.name for p in gateway.pods]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("time_s", "request_id", "pod", "total", "chosen", "scores"))
        for rec in gateway.decisions:
            t, rid, scores = rec[:3]
            chosen = rec[3] if len(rec) > 3 else -1
            for i, total, parts in scores:
                detail = ";".join(f"{k}={v:.6g}" for k, v in parts.items())
                w.writerow((f"{t / 1e6:.6f}", rid, names[i], f"{total:.6g}", int(i == chosen), detail))


def _run_with_progress(sim, quiet: bool) -> dict:
    total = sim.cfg.workload.num_requests or None
    if quiet or not sys.stderr.isatty():
        return sim.run()
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("run", total=total)
        return sim.run(progress=lambda done, _total: bar.update(task, completed=done))


def _print_summary(s: dict, wall: float) -> None:
    console = Console()
    t = Table(title=f"{s['scenario']} (seed {s['seed']})", show_header=True, header_style="bold")
    t.add_column("metric")
    for col in ("mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    for name, label in (("ttft", "TTFT (ms)"), ("itl", "ITL (ms)"), ("e2e", "E2E (ms)"),
                        ("scheduling_delay", "sched. delay (ms)")):
        t.add_row(label, *[_fmt(s.get(f"{name}_{c}_ms")) for c in ("mean", "p50", "p90", "p99")])
    console.print(t)
    if len(s.get("per_class", {})) > 1:
        pc = Table(title="per SLO class", show_header=True, header_style="bold")
        for col in ("class", "completed / injected", "rejected", "timed out", "TTFT mean", "TTFT p90", "E2E mean"):
            pc.add_column(col, justify="right")
        for name, b in s["per_class"].items():
            pc.add_row(name, f"{b['completed_requests']} / {b['injected_requests']}", str(b["rejected_requests"]),
                       str(b["timed_out_requests"]), _fmt(b["ttft_mean_ms"]), _fmt(b["ttft_p90_ms"]),
                       _fmt(b["e2e_mean_ms"]))
        console.print(pc)
    c = Table(show_header=False, box=None)
    c.add_column(style="bold")
    c.add_column(justify="right")
    rows = [("requests completed / injected", f"{s['completed_requests']} / {s['injected_requests']}"),
            ("timed out / dropped / rejected",
             f"{s['timed_out_requests']} / {s['dropped_requests']} / {s['rejected_requests']}"),
            ("throughput", f"{s['requests_per_s']:.3f} req/s, {s['output_tokens_per_s']:.1f} output tok/s"),
            ("preemptions", str(s["preemption_count"])),
            ("prefix-cache hit rate", f"{s['prefix_cache_hit_rate']:.3f}"),
            ("simulated / wall time", f"{s['duration_s']:.2f} s / {wall:.2f} s")]
    for k, v in rows:
        c.add_row(k, v)
    console.print(c)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


# ---- fidelity: validate against measured vLLM runs, calibrate the step-time model ----------------
def _progress_cb(bar, task):
    def cb(done, total, label=""):
        bar.update(task, completed=done, total=total, description=str(label))
    return cb


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results/validate"),
              show_default=True, help="Output folder for validation.csv, summary.json and validation.svg.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Coefficients file (default: the bundled blis_gym/data/calibrated.yaml).")
@click.option("--stage-cap", "stage_cap_s", type=float, default=None,
              help="Cut every load stage to this many seconds (faster, approximate).")
@click.option("--only", multiple=True, help="Only these exp_id values (repeatable).")
@click.option("--model", default=None, help="Per-request trace: model (default: from *_meta.json).")
@click.option("--hardware", default=None, help="Per-request trace: GPU (default: from *_meta.json).")
@click.option("--tp", type=int, default=None, help="Per-request trace: tensor-parallel degree.")
@click.option("--kv-blocks", "kv_blocks", type=int, default=None, help="Per-request trace: KV blocks.")
@click.option("--max-num-seqs", type=int, default=None, help="Per-request trace: vLLM max_num_seqs.")
@click.option("--max-num-batched-tokens", type=int, default=None, help="Per-request trace: token budget.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def validate(file: Path, out_dir: Path, calibration: Path | None, stage_cap_s: float | None, only: tuple,
             model, hardware, tp, kv_blocks, max_num_seqs, max_num_batched_tokens, quiet: bool) -> None:
    """Replay measured vLLM runs (an aggregates CSV like groundtruth/h100_trainval_aggregates.csv,
    or a per-request trace) and report predicted against measured E2E, TTFT and ITL."""
    from .fidelity.validate import validate_file

    overrides = {"model": model, "hardware": hardware, "tp": tp, "total_kv_blocks": kv_blocks,
                 "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens}
    kw = dict(calibration=calibration, stage_cap_s=stage_cap_s, only=list(only) or None, overrides=overrides)
    try:
        if quiet or not sys.stderr.isatty():
            summary = validate_file(file, out_dir, **kw)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err_console, transient=True) as bar:
                task = bar.add_task("validating", total=None)
                summary = validate_file(file, out_dir, progress=_progress_cb(bar, task), **kw)
    except ConfigError as e:
        _fail(str(e))
    if quiet:
        return
    console = Console()
    t = Table(title=f"sim vs real: {file.name}", show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("median APE %", justify="right")
    t.add_column("mean APE %", justify="right")
    t.add_column("n", justify="right")
    for m, v in (summary.get("median_ape") or {}).items():
        t.add_row(m, _fmt(v), _fmt(summary["mean_ape"][m]), str(summary["n"][m]))
    console.print(t)
    for split, s in (summary.get("by_split") or {}).items():
        console.print(f"{split}: median APE E2E mean {_fmt(s['median_ape']['e2e_mean'])}%, "
                      f"TTFT mean {_fmt(s['median_ape']['ttft_mean'])}%", highlight=False)
    if summary.get("pearson_r"):
        console.print(f"per-request Pearson r: TTFT {summary['pearson_r']['ttft']}, E2E {summary['pearson_r']['e2e']}",
                      highlight=False)
    for s in summary.get("skipped", []):
        console.print(f"skipped {s['exp_id']}: {s['reason']}", highlight=False)
    console.print(f"wrote {out_dir}/", highlight=False)


@main.command()
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Aggregates CSV to fit (default: the shared groundtruth h100_trainval_aggregates.csv).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the coefficients (default: blis_gym/data/calibrated.yaml).")
@click.option("--holdout", default=None, help="Comma-separated exp_ids kept out of the fit (default: 64,65,66).")
@click.option("--max-evals", type=int, default=360, show_default=True, help="Simulator evaluations at most.")
@click.option("--workers", type=int, default=2, show_default=True, help="Processes evaluating candidates.")
@click.option("--quiet", is_flag=True, help="No progress log.")
def calibrate(data: Path | None, out_file: Path | None, holdout: str | None, max_evals: int, workers: int,
              quiet: bool) -> None:
    """Fit the `calibrated` step-time model's coefficients (deterministic pattern search)."""
    from .fidelity.calibrate import DEFAULT_HOLDOUT
    from .fidelity.calibrate import calibrate as run_fit

    data = data or GROUNDTRUTH / "h100_trainval_aggregates.csv"
    out_file = out_file or Path(__file__).resolve().parent / "data" / "calibrated.yaml"
    hold = tuple(x.strip() for x in holdout.split(",") if x.strip()) if holdout is not None else DEFAULT_HOLDOUT
    if max_evals < 1 or workers < 1:
        _fail("--max-evals and --workers must be >= 1")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", highlight=False)
    try:
        res = run_fit(data, out_file, holdout=hold, max_evals=max_evals, workers=workers, log=log)
    except ConfigError as e:
        _fail(str(e))
    if not quiet:
        Console().print(f"loss {res['loss']:.3f} after {res['evaluations']} evaluations; wrote {out_file}",
                        highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
