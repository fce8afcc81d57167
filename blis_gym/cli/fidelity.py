"""`blis-gym validate`, `calibrate` and `fetch-data`: replay measured vLLM runs against the step-time
models, fit the calibrated coefficients, and download the public measurements."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from .common import err_console, fail, fmt



@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results/validate"),
              show_default=True, help="Output folder for validation.csv, summary.json and validation.svg.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Coefficients file of the calibrated model (default: the bundled blis_gym/data/calibrated.yaml).")
@click.option("--stage-cap", "stage_cap_s", type=float, default=None,
              help="Cut every load stage to this many seconds (faster, approximate).")
@click.option("--only", multiple=True, help="Only these exp_id values (repeatable).")
@click.option("--model", default=None, help="Per-request trace: model (default: from *_meta.json).")
@click.option("--hardware", default=None, help="Per-request trace: GPU (default: from *_meta.json).")
@click.option("--tp", type=int, default=None, help="Per-request trace: tensor-parallel degree.")
@click.option("--kv-blocks", "kv_blocks", type=int, default=None, help="Per-request trace: KV blocks.")
@click.option("--max-num-seqs", type=int, default=None, help="Per-request trace: vLLM max_num_seqs.")
@click.option("--max-num-batched-tokens", type=int, default=None, help="Per-request trace: token budget.")
@click.option("--latency-model", default="hybrid", show_default=True,
              type=click.Choice(["hybrid", "calibrated", "trained-physics", "roofline", "all"], case_sensitive=False),
              help="Step-time model to score; `all` scores each on the same rows, side by side.")
@click.option("--model-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A HuggingFace config.json for models that are not bundled.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def validate(file: Path, out_dir: Path, calibration: Path | None, stage_cap_s: float | None, only: tuple,
             model, hardware, tp, kv_blocks, max_num_seqs, max_num_batched_tokens, latency_model: str,
             model_config: Path | None, quiet: bool) -> None:
    """Replay measured vLLM runs (an aggregates CSV like BLIS's h100_trainval_aggregates.csv,
    or a per-request trace) and report predicted against measured E2E, TTFT and ITL."""
    from ..fidelity.validate import validate_file

    if model_config is not None and not model_config.is_file():
        fail(f"--model-config: no such file: {model_config}")
    overrides = {"model": model, "hardware": hardware, "tp": tp, "total_kv_blocks": kv_blocks,
                 "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens}
    kw = dict(calibration=calibration, stage_cap_s=stage_cap_s, only=list(only) or None, overrides=overrides,
              latency_model=latency_model.lower(), model_config=model_config)
    try:
        if quiet or not sys.stderr.isatty():
            summary = validate_file(file, out_dir, **kw)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err_console, transient=True) as bar:
                task = bar.add_task("validating", total=None)
                summary = validate_file(file, out_dir, progress=_progress_cb(bar, task), **kw)
    except ConfigError as e:
        fail(str(e))
    from ..fidelity.outcome import nothing_scored
    why = nothing_scored(summary)
    if why:                  # summary.json (with every reason) is written; the run still failed
        fail(why)
    if quiet:
        return
    console = Console()
    t = Table(title=f"sim vs real: {file.name}", show_header=True, header_style="bold")
    t.add_column("metric")
    if summary.get("latency_model") == "all":         # one column per step-time model
        kinds = list(summary["median_ape"])
        for k in kinds:
            t.add_column(f"{k}\nmedian APE %", justify="right")
        t.add_column("n", justify="right")
        for m in summary["median_ape"][kinds[0]]:
            t.add_row(m, *(fmt(summary["median_ape"][k][m]) for k in kinds), str(summary["n"][kinds[0]][m]))
    else:
        t.add_column("median APE %", justify="right")
        t.add_column("mean APE %", justify="right")
        t.add_column("n", justify="right")
        for m, v in (summary.get("median_ape") or {}).items():
            t.add_row(m, fmt(v), fmt(summary["mean_ape"][m]), str(summary["n"][m]))
    console.print(t)
    for split, s in (summary.get("by_split") or {}).items():
        console.print(f"{split}: median APE E2E mean {fmt(s['median_ape']['e2e_mean'])}%, "
                      f"TTFT mean {fmt(s['median_ape']['ttft_mean'])}%", highlight=False)
    if summary.get("pearson_r"):
        console.print(f"per-request Pearson r: TTFT {summary['pearson_r']['ttft']}, E2E {summary['pearson_r']['e2e']}",
                      highlight=False)
    for s in summary.get("skipped", []):
        console.print(f"skipped {s['exp_id']}: {s['reason']}", highlight=False)
    console.print(f"wrote {out_dir}/", highlight=False)


@click.command()
@click.option("--data", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Aggregates CSV or per-request trace to fit (repeatable; default: the measurement files "
                   "shipped in blis_gym/data/measurements/).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results/calibrate"),
              show_default=True, help="Folder for the fitted calibrated.yaml.")
@click.option("--install", is_flag=True,
              help="Also replace the package's own blis_gym/data/calibrated.yaml with the fit.")
@click.option("--holdout", default=None, help="Comma-separated exp_ids kept out of the fit (default: 64,65,66).")
@click.option("--max-evals", type=int, default=None,
              help="Simulator evaluations at most (default: 360 for a fit, 40 per fold with --cv).")
@click.option("--workers", type=int, default=2, show_default=True, help="Processes evaluating candidates.")
@click.option("--cv", type=click.Choice(["model", "gpu"]), default=None,
              help="Cross-validate instead of fitting once: leave one model (or GPU) out, refit on the rest, "
                   "score the held-out experiments next to trained-physics and roofline; writes "
                   "OUT/cv_<model|gpu>.csv and .json (docs/fidelity.md).")
@click.option("--regularised", is_flag=True,
              help="Fit with the prior (as the cross-validation folds do) instead of the unregularised fit "
                   "that produced the shipped coefficients.")
@click.option("--latency-model", "latency_model", default=None,
              type=click.Choice(["hybrid", "calibrated", "all"], case_sensitive=False),
              help="Which model to fit: hybrid (ridge least squares, OUT/hybrid.yaml) or calibrated (pattern "
                   "search, OUT/calibrated.yaml; the default). With --cv: which models to refit per fold "
                   "(default all); trained-physics and roofline are always scored.")
@click.option("--quiet", is_flag=True, help="No progress log.")
def calibrate(data: tuple, out_dir: Path, install: bool, holdout: str | None, max_evals: int | None, workers: int,
              cv: str | None, regularised: bool, latency_model: str | None, quiet: bool) -> None:
    """Fit a step-time model's coefficients (`calibrated`: deterministic pattern search; `hybrid`:
    ridge least squares) and write them to OUT/; the package's coefficients change only with
    --install."""
    import shutil

    from ..fidelity.calibrate import DEFAULT_DATA, DEFAULT_HOLDOUT, MAX_EVALS
    from ..fidelity.calibrate import calibrate as run_fit

    hold = tuple(x.strip() for x in holdout.split(",") if x.strip()) if holdout is not None else DEFAULT_HOLDOUT
    if (max_evals is not None and max_evals < 1) or workers < 1:
        fail("--max-evals and --workers must be >= 1")
    if cv and (install or holdout is not None):
        fail("--cv: cross-validation neither installs nor takes --holdout (every model is held out in turn)")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out: {out_dir} exists and is not a folder")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", highlight=False)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out: cannot create {out_dir}: {e.strerror}")
    kind = (latency_model or ("all" if cv else "calibrated")).lower()
    if cv:
        fitted = ("hybrid", "calibrated") if kind == "all" else (kind,)
        kinds = [k for k in ("hybrid", "calibrated", "trained-physics", "roofline")
                 if k in fitted or k in ("trained-physics", "roofline")]
        _cross_validate(list(data) or list(DEFAULT_DATA), cv, out_dir, max_evals, workers, quiet, log, kinds)
        return
    if kind == "all":
        fail("--latency-model all: only with --cv (a fit makes one model's coefficients)")
    if kind == "hybrid":
        _fit_hybrid(list(data) or list(DEFAULT_DATA), out_dir, hold, install, quiet, log)
        return
    out_file = out_dir / "calibrated.yaml"
    try:
        res = run_fit(list(data) or DEFAULT_DATA, out_file, holdout=hold, max_evals=max_evals or MAX_EVALS,
                      workers=workers, regularised=regularised, log=log)
    except ConfigError as e:
        fail(str(e))
    installed = ""
    if install:
        target = Path(__file__).resolve().parents[1] / "data" / "calibrated.yaml"
        shutil.copyfile(out_file, target)
        from ..sim.latency.calibrated import _load_yaml
        _load_yaml.cache_clear()
        installed = f" and installed it as {target}"
    if not quiet:
        Console().print(f"objective (loss + prior penalty, if any) {res['objective']:.3f} after {res['evaluations']} "
                        f"evaluations; wrote {out_file}{installed}", highlight=False)


def _fit_hybrid(data: list, out_dir: Path, holdout: tuple, install: bool, quiet: bool, log) -> None:
    """`calibrate --latency-model hybrid`: OUT/hybrid.yaml (and the package's with --install)."""
    from ..fidelity.hybrid_fit import calibrate_hybrid

    try:
        calibrate_hybrid(data, out_dir / "hybrid.yaml", holdout=holdout, install=install, log=log)
    except ConfigError as e:
        fail(str(e))
    if not quiet:
        Console().print(f"wrote {out_dir / 'hybrid.yaml'}{' and installed it' if install else ''}", highlight=False)


def _cross_validate(data: list, by: str, out_dir: Path, max_evals: int | None, workers: int, quiet: bool,
                    log, kinds: list) -> None:
    """`calibrate --cv`: the leave-one-out table, printed and written to OUT/cv_<by>.{csv,json}."""
    from ..fidelity.calibrate import load_cases
    from ..fidelity.crossval import CV_MAX_EVALS, cross_validate, format_cv, write_cv

    try:
        res = cross_validate(load_cases(data), by, max_evals=max_evals or CV_MAX_EVALS, workers=workers, log=log,
                             kinds=kinds)
        paths = write_cv(out_dir, res)
    except ConfigError as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out: cannot write {out_dir}: {e.strerror or e}")
    if quiet:
        return
    console = Console(soft_wrap=True)          # table lines stay whole (they are Markdown rows)
    console.print(f"leave-one-{by}-out, median APE % (E2E mean / TTFT mean / ITL / E2E p99 / TTFT p99) over "
                  f"held-out experiments:", highlight=False)
    for line in format_cv(res):
        console.print(line, highlight=False, markup=False)
    first = res["kinds"][0]
    for w in res["summary"]["default_worse"]:
        other = next(k for k in w if k not in ("group", "name", "metric", first))
        console.print(f"{first} worse than {other} on {w['metric']}: {w['group']} {w['name']} "
                      f"({w[first]} vs {w[other]})", highlight=False)
    for s in res["skipped"]:
        console.print(f"skipped {s['exp_id']}: {s['reason']}", highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False)


@click.command(name="fetch-data")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("measurements/inference-sim-training"),
              show_default=True, help="Folder to download into.")
@click.option("--mirror", default=None,
              help="Base URL to fetch from instead of GitHub at the pinned commit (a mirror or a file:// folder).")
@click.option("--quiet", is_flag=True, help="No progress log.")
def fetch_data(dest: Path, mirror: str | None, quiet: bool) -> None:
    """Download the measured runs blis-gym cannot redistribute (inference-sim/training, no
    licence) at a pinned commit, keeping only files whose sha256 matches."""
    from ..fidelity.fetch import COMMIT, REPO
    from ..fidelity.fetch import fetch_data as run_fetch

    try:
        files = run_fetch(dest, base_url=mirror,
                          log=None if quiet else (lambda m: err_console.print(m, highlight=False, soft_wrap=True)))
    except ConfigError as e:
        fail(str(e))
    if not quiet:
        Console().print(f"{len(files)} files of {REPO}@{COMMIT[:8]} in {dest}/ (sha256 checked)", highlight=False)


# ---- fidelity: validate against measured vLLM runs, calibrate the step-time model ----------------
def _progress_cb(bar, task):
    def cb(done, total, label=""):
        bar.update(task, completed=done, total=total, description=str(label))
    return cb
