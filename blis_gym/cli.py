"""The command line: `blis-gym run SCENARIO [--seed N] [--out DIR] [--plot]`, `blis-gym scenarios`,
`blis-gym plot RUN_DIR`, `blis-gym compare RUN_A RUN_B ...`, `blis-gym validate`, `blis-gym calibrate`,
`blis-gym observe --url URL --workload SCENARIO --out DIR`.

Bad input (scenario, file, option) prints one line naming the field and exits with status 2.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import ConfigError
from .sim.limits import MAX_SEED

err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())     # `blis-gym` alone prints the help


class _Group(click.Group):
    """A bad option or argument of any command (wherever it is defined), or of the group itself,
    gets one line and exit status 2, not click's usage block."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            if isinstance(e, _HELP):
                raise
            _fail(e.format_message())

    def invoke(self, ctx):
        try:                            # parses the command's arguments, then runs it
            return super().invoke(ctx)
        except click.UsageError as e:
            _fail(e.format_message())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blis-gym")
def main() -> None:
    """blis-gym: simulate llm-d serving clusters, fast and deterministically."""


@main.command()
@click.argument("scenario", required=False, default="default")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Override the scenario's seed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: results/<scenario name>).")
@click.option("--quiet", is_flag=True, help="No progress bar and no table; just write the files.")
@click.option("--plot", is_flag=True, help="Also draw the run's PNG plots (as `blis-gym plot`).")
@click.option("--decision-trace", is_flag=True,
              help="Also write decision_trace.csv: for routing decisions, each candidate's scores and the "
                   "counterfactual regret of the best-scored alternatives (each costs a forked simulation).")
@click.option("--top-k", type=click.IntRange(1, 1024), default=2, show_default=True,
              help="--decision-trace: alternatives simulated per decision (the best-scored other candidates).")
@click.option("--every", type=click.IntRange(1, None), default=1, show_default=True,
              help="--decision-trace: trace every N-th routing decision.")
@click.option("--max-decisions", type=click.IntRange(0, None), default=0, show_default=True,
              help="--decision-trace: trace at most this many decisions (0: no limit).")
@click.option("--window-ms", type=click.IntRange(0, None), default=0, show_default=True,
              help="--decision-trace: also compare the requests in the system or arriving within this window "
                   "(ms) after each decision, each branch running until they have all ended (0: off).")
@click.option("--export-trace", is_flag=True,
              help="Also write trace.csv: the run's requests as a csv trace `run` can replay, with their results.")
def run(scenario: str, seed: int | None, out_dir: Path | None, quiet: bool, plot: bool, decision_trace: bool,
        top_k: int, every: int, max_decisions: int, window_ms: int, export_trace: bool) -> None:
    """Run SCENARIO (a YAML file, or the name of a bundled scenario: see `blis-gym scenarios`;
    default: `default`), print a summary table and write summary.json, requests.csv and
    timeseries.csv (and decision_trace.csv, trace.csv with the options that ask for them)."""
    from .output.files import check_out_dir, write_run
    from .resources import scenario_path
    from .schema.scenario import build, load_scenario
    from .sim.simulation import Simulation

    ctx = click.get_current_context()
    for name in ("top_k", "every", "max_decisions", "window_ms"):
        if not decision_trace and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            _fail(f"--{name.replace('_', '-')}: only with --decision-trace")
    try:
        if plot:
            from .output.plots import pyplot
            pyplot()                       # a missing matplotlib fails now, not after the run
        path = scenario_path(scenario)
        sc = load_scenario(path, {"seed": seed} if seed is not None else None)
        cfg = build(sc, base_dir=path.parent)
        if seed is not None:
            _note_seed(sc.name, cfg.workload)
        if decision_trace:
            from .output.decision_trace import check_traceable
            check_traceable(cfg)
        if export_trace:
            from .output.trace_export import check_exportable
            check_exportable(cfg.workload)
        sim = Simulation(cfg, external={"router"} if decision_trace else ())
        out_dir = out_dir or Path("results") / sc.name
        check_out_dir(out_dir)
    except ConfigError as e:
        _fail(str(e))
    log = None
    if export_trace:
        from .output.trace_export import RequestLog
        log = RequestLog(sim)
    t0 = time.perf_counter()
    if decision_trace:
        from .output.decision_trace import Sampling
        summary, rows = _run_with_progress(sim, quiet, Sampling(top_k, every, max_decisions, window_ms * 1000))
    else:
        summary, rows = _run_with_progress(sim, quiet), None
    wall = time.perf_counter() - t0

    def extra(folder: Path) -> list[Path]:
        written = []
        if rows is not None:
            from .output.decision_trace import write_decision_trace
            written.append(write_decision_trace(rows, folder / "decision_trace.csv"))
        if log is not None:
            from .output.trace_export import write_trace
            written.append(write_trace(sim, log, folder / "requests.csv", folder / "trace.csv"))
        return written + (_plot_or_fail(folder) if plot else [])
    try:
        written = write_run(sim, summary, out_dir, extra=extra)
    except OSError as e:
        _fail(f"--out: cannot write {out_dir}: {e.strerror or e}")
    if not quiet:
        _print_summary(summary, wall)
        Console().print(f"wrote {out_dir}/: {', '.join(written)}", highlight=False)


def _note_seed(label: str, workload) -> None:
    """Say it when the seeds asked for cannot change the requests (see sim/workload/randomness.py)."""
    from .sim.workload.randomness import seed_note
    note = seed_note(label, workload)
    if note is not None:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def _plot_or_fail(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    from .output.plots import plot_run
    try:
        return plot_run(run_dir, out_dir)
    except ConfigError as e:
        _fail(str(e))


@main.command()
def scenarios() -> None:
    """List the bundled scenarios (run one by name: `blis-gym run NAME`)."""
    import yaml

    from .resources import bundled_scenarios
    bundled = bundled_scenarios()
    width = max(map(len, bundled), default=0)
    for name, path in bundled.items():
        data = yaml.safe_load(path.read_text()) or {}
        click.echo(f"{name:<{width}}  {str(data.get('description', '')).strip()}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the PNGs (default: RUN_DIR).")
def plot(run_dir: Path, out_dir: Path | None) -> None:
    """Draw PNGs of a run folder written by `blis-gym run`: TTFT and E2E CDFs per SLO class,
    waiting queue and KV use per instance over time, and pool sizes and dollars over time
    (matplotlib)."""
    for p in _plot_or_fail(run_dir, out_dir):
        Console().print(f"wrote {p}", highlight=False)


# the KPIs `compare` puts side by side: summary.json keys (dotted for a field of a block)
COMPARED_KPIS = ("completed_requests", "rejected_requests", "timed_out_requests", "requests_per_s",
                 "output_tokens_per_s", "ttft_mean_ms", "ttft_p90_ms", "ttft_p99_ms", "itl_mean_ms",
                 "e2e_mean_ms", "e2e_p90_ms", "e2e_p99_ms", "slo_attainment", "goodput_rps",
                 "prefix_cache_hit_rate", "preemption_count", "cost.gpu_hours", "cost.dollars",
                 "pd.disaggregated_fraction", "lora.adapter_loads")


def _kpi(summary: dict, key: str):
    v = summary
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the runs' overlaid TTFT and E2E CDFs to this PNG.")
def compare(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Compare runs of `blis-gym run` (two or more folders): their KPIs side by side, each
    relative to the first run, and (with --out) their latency CDFs overlaid."""
    from .output.plots import check_run_dir, load_summary, plot_compare

    if len(run_dirs) < 2:
        _fail("RUN_DIRS: give at least two run folders to compare")
    try:
        summaries = [load_summary(check_run_dir(d, "RUN_DIRS"), "RUN_DIRS") for d in run_dirs]
    except ConfigError as e:
        _fail(str(e))
    console = Console()
    labels = [chr(ord("A") + i) if i < 26 else str(i) for i in range(len(run_dirs))]
    for label, d, s in zip(labels, run_dirs, summaries):
        console.print(f"{label}: {d} ({s.get('scenario', '?')}, seed {s.get('seed', '?')})", highlight=False)
    t = Table(header_style="bold", box=box.SIMPLE_HEAD, caption="(relative difference against A)")
    t.add_column("KPI", no_wrap=True)
    for label in labels:
        t.add_column(label, justify="right")
    for key in COMPARED_KPIS:
        values = [_kpi(s, key) for s in summaries]
        if all(v is None for v in values):
            continue
        t.add_row(key, *[_fmt_kpi(v, values[0], first=(i == 0)) for i, v in enumerate(values)])
    console.print(t)
    if out is not None:
        try:
            names = [f"{label}: {s.get('scenario', d.name)} (seed {s.get('seed', '?')})"
                     for label, d, s in zip(labels, run_dirs, summaries)]
            console.print(f"wrote {plot_compare(list(run_dirs), out, names)}", highlight=False)
        except ConfigError as e:
            _fail(str(e))


def _fmt_kpi(v, base, first: bool) -> str:
    if v is None:
        return "-"
    text = _number(v)
    if first or base is None:
        return text
    if base == 0:
        return text if v == 0 else f"{text} (new)"
    return f"{text} ({100 * (v - base) / abs(base):+.1f}%)"


def _number(v) -> str:
    """A KPI for a table: thousands as whole numbers with separators (12,330, never 1.233e+04),
    the rest to 4 significant digits."""
    if isinstance(v, int) or (isinstance(v, float) and abs(v) >= 1000):
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _run_with_progress(sim, quiet: bool, sampling=None):
    """The run's summary; with `sampling` (a decision_trace.Sampling), (summary, trace rows)."""
    def go(progress=None):
        if sampling is None:
            return sim.run(progress=progress)
        from .output.decision_trace import run_traced
        return run_traced(sim, sampling, progress=progress)

    total = sim.cfg.workload.num_requests or None
    if quiet or not sys.stderr.isatty():
        return go()
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("run", total=total)
        return go(progress=lambda done, _total: bar.update(task, completed=done))


def _print_summary(s: dict, wall: float, console: Console | None = None) -> None:
    """The run's summary in a terminal: latency percentiles, per-class outcomes, where every
    request ended (still running at the horizon, rejected by reason), cost and the P/D share;
    laid out to fit 80 columns."""
    console = console or Console()
    t = Table(title=f"{s['scenario']} (seed {s['seed']})", header_style="bold", box=box.SIMPLE_HEAD)
    t.add_column("latency (ms)")
    for col in ("mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    for name, label in (("ttft", "TTFT"), ("itl", "ITL"), ("e2e", "E2E"), ("scheduling_delay", "sched. delay")):
        t.add_row(label, *[_fmt(s.get(f"{name}_{c}_ms")) for c in ("mean", "p50", "p90", "p99")])
    console.print(t)
    if len(s.get("per_class", {})) > 1:
        pc = Table(title="per SLO class", header_style="bold", box=box.SIMPLE_HEAD)
        for col in ("class", "done / in", "rejected", "timed out", "TTFT p90", "E2E p90"):
            pc.add_column(col, justify="left" if col == "class" else "right")
        for name, b in s["per_class"].items():
            pc.add_row(name, f"{b['completed_requests']} / {b['injected_requests']}", str(b["rejected_requests"]),
                       str(b["timed_out_requests"]), _fmt(b["ttft_p90_ms"]), _fmt(b["e2e_p90_ms"]))
        console.print(pc)
    c = Table(show_header=False, box=None)
    c.add_column(style="bold", overflow="fold")
    c.add_column(justify="right", overflow="fold")
    for k, v in _summary_rows(s, wall):
        c.add_row(k, v)
    console.print(c)


def _summary_rows(s: dict, wall: float) -> list[tuple[str, str]]:
    still = {"running": s.get("still_running", 0), "queued": s.get("still_queued", 0),
             "in transit": s.get("still_in_transit", 0), "in the gateway": s.get("still_in_gateway", 0),
             "in P/D transfer": s.get("still_in_pd_transfer", 0)}
    rows = [("requests completed / injected", f"{s['completed_requests']} / {s['injected_requests']}"),
            ("still in flight at the end", ", ".join(f"{n} {k}" for k, n in still.items() if n) or "0"),
            ("timed out / dropped / rejected",
             f"{s['timed_out_requests']} / {s['dropped_requests']} / {s['rejected_requests']}")]
    if "evicted_requests" in s:
        rows.append(("evicted in flight (sheddable)", str(s["evicted_requests"])))
    for kind in ("rejection", "drop", "timeout"):
        for reason, n in (s.get(f"{kind}_reasons") or {}).items():
            rows.append((f"  {kind}: {reason}", str(n)))
    rows += [("throughput", f"{s['requests_per_s']:.3f} req/s, {s['output_tokens_per_s']:.1f} tok/s"),
             ("preemptions", str(s["preemption_count"])),
             ("prefix-cache hit rate", f"{s['prefix_cache_hit_rate']:.3f}")]
    lora = s.get("lora")
    if lora:
        rows.append(("LoRA adapter loads", f"{lora['adapter_loads']} ({lora['adapter_load_time_ms']:.1f} ms) "
                                           f"of {lora['adapters']} adapters"))
        rows.append(("  adapters per batch", f"peak {lora['peak_adapters_in_batch']}, max_loras {lora['max_loras']}"))
    if s.get("slo_attainment") is not None:
        rows.append(("SLO attainment / goodput", f"{s['slo_attainment']:.3f} / {s['goodput_rps']:.3f} req/s"))
    cost = s.get("cost")
    if cost:
        rows.append(("GPU-hours / dollars", f"{cost['gpu_hours']:.3f} / ${cost['dollars']:.2f}"))
        pools = cost.get("per_pool") or {}
        for name, p in pools.items() if len(pools) > 1 else ():
            rows.append((f"  pool {name}", f"{p['gpu_hours']:.3f} / ${p['dollars']:.2f}, peak {p['peak_gpus']} GPUs"))
    pd = s.get("pd")
    if pd:
        share = pd["disaggregated_fraction"]
        rows.append(("P/D disaggregated / decided",
                     f"{pd['disaggregated_requests']} / {pd['decided_requests']}"
                     + (f" ({100 * share:.1f}%)" if share is not None else "")))
        if pd.get("transfers"):
            rows.append(("KV transfers (mean / p99)",
                         f"{pd['transfers']} ({_fmt(pd['transfer_mean_ms'])} / {_fmt(pd['transfer_p99_ms'])} ms)"))
    off = s.get("kv_offload")
    if off:
        rows.append(("KV hits GPU / CPU / fs / miss", " / ".join(
            f"{off[k]:.3f}" for k in ("gpu_hit_rate", "cpu_hit_rate", "fs_hit_rate", "miss_rate"))))
        rows.append(("KV blocks offloaded / reloaded",
                     f"{off['blocks_offloaded']} / {off['blocks_reloaded']} ({off['loads']} loads, "
                     f"{off['reload_time_ms_total'] / 1000:.2f} s)"))
    rows.append(("simulated / wall time", f"{s['duration_s']:.2f} s / {wall:.2f} s"))
    return rows


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
@click.option("--latency-model", default="calibrated", show_default=True,
              type=click.Choice(["calibrated", "trained-physics", "roofline", "all"], case_sensitive=False),
              help="Step-time model to score; `all` scores each on the same rows, side by side.")
@click.option("--model-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A HuggingFace config.json for models that are not bundled.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def validate(file: Path, out_dir: Path, calibration: Path | None, stage_cap_s: float | None, only: tuple,
             model, hardware, tp, kv_blocks, max_num_seqs, max_num_batched_tokens, latency_model: str,
             model_config: Path | None, quiet: bool) -> None:
    """Replay measured vLLM runs (an aggregates CSV like BLIS's h100_trainval_aggregates.csv,
    or a per-request trace) and report predicted against measured E2E, TTFT and ITL."""
    from .fidelity.validate import validate_file

    if model_config is not None and not model_config.is_file():
        _fail(f"--model-config: no such file: {model_config}")
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
        _fail(str(e))
    from .fidelity.outcome import nothing_scored
    why = nothing_scored(summary)
    if why:                  # summary.json (with every reason) is written; the run still failed
        _fail(why)
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
            t.add_row(m, *(_fmt(summary["median_ape"][k][m]) for k in kinds), str(summary["n"][kinds[0]][m]))
    else:
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
@click.option("--quiet", is_flag=True, help="No progress log.")
def calibrate(data: tuple, out_dir: Path, install: bool, holdout: str | None, max_evals: int | None, workers: int,
              cv: str | None, regularised: bool, quiet: bool) -> None:
    """Fit the `calibrated` step-time model's coefficients (deterministic pattern search) and
    write them to OUT/calibrated.yaml; the package's coefficients change only with --install."""
    import shutil

    from .fidelity.calibrate import DEFAULT_DATA, DEFAULT_HOLDOUT, MAX_EVALS
    from .fidelity.calibrate import calibrate as run_fit

    hold = tuple(x.strip() for x in holdout.split(",") if x.strip()) if holdout is not None else DEFAULT_HOLDOUT
    if (max_evals is not None and max_evals < 1) or workers < 1:
        _fail("--max-evals and --workers must be >= 1")
    if cv and (install or holdout is not None):
        _fail("--cv: cross-validation neither installs nor takes --holdout (every model is held out in turn)")
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"--out: {out_dir} exists and is not a folder")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", highlight=False)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"--out: cannot create {out_dir}: {e.strerror}")
    if cv:
        _cross_validate(list(data) or list(DEFAULT_DATA), cv, out_dir, max_evals, workers, quiet, log)
        return
    out_file = out_dir / "calibrated.yaml"
    try:
        res = run_fit(list(data) or DEFAULT_DATA, out_file, holdout=hold, max_evals=max_evals or MAX_EVALS,
                      workers=workers, regularised=regularised, log=log)
    except ConfigError as e:
        _fail(str(e))
    installed = ""
    if install:
        target = Path(__file__).resolve().parent / "data" / "calibrated.yaml"
        shutil.copyfile(out_file, target)
        from .sim.latency.calibrated import _load_yaml
        _load_yaml.cache_clear()
        installed = f" and installed it as {target}"
    if not quiet:
        Console().print(f"objective (loss + prior penalty, if any) {res['objective']:.3f} after {res['evaluations']} "
                        f"evaluations; wrote {out_file}{installed}", highlight=False)


def _cross_validate(data: list, by: str, out_dir: Path, max_evals: int | None, workers: int, quiet: bool,
                    log) -> None:
    """`calibrate --cv`: the leave-one-out table, printed and written to OUT/cv_<by>.{csv,json}."""
    from .fidelity.calibrate import load_cases
    from .fidelity.crossval import CV_MAX_EVALS, cross_validate, format_cv, write_cv

    try:
        res = cross_validate(load_cases(data), by, max_evals=max_evals or CV_MAX_EVALS, workers=workers, log=log)
        paths = write_cv(out_dir, res)
    except ConfigError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"--out: cannot write {out_dir}: {e.strerror or e}")
    if quiet:
        return
    console = Console(soft_wrap=True)          # table lines stay whole (they are Markdown rows)
    console.print(f"leave-one-{by}-out, median APE % (E2E mean / TTFT mean / ITL) over held-out experiments:",
                  highlight=False)
    for line in format_cv(res):
        console.print(line, highlight=False, markup=False)
    for w in res["summary"]["calibrated_worse_than_trained_physics_e2e"]:
        console.print(f"calibrated worse than trained-physics on E2E: {w['group']} {w['name']} "
                      f"({w['calibrated']} vs {w['trained-physics']})", highlight=False)
    for s in res["skipped"]:
        console.print(f"skipped {s['exp_id']}: {s['reason']}", highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False)


@main.command(name="fetch-data")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("measurements/inference-sim-training"),
              show_default=True, help="Folder to download into.")
@click.option("--mirror", default=None,
              help="Base URL to fetch from instead of GitHub at the pinned commit (a mirror or a file:// folder).")
@click.option("--quiet", is_flag=True, help="No progress log.")
def fetch_data(dest: Path, mirror: str | None, quiet: bool) -> None:
    """Download the measured runs blis-gym cannot redistribute (inference-sim/training, no
    licence) at a pinned commit, keeping only files whose sha256 matches."""
    from .fidelity.fetch import COMMIT, REPO
    from .fidelity.fetch import fetch_data as run_fetch

    try:
        files = run_fetch(dest, base_url=mirror,
                          log=None if quiet else (lambda m: err_console.print(m, highlight=False, soft_wrap=True)))
    except ConfigError as e:
        _fail(str(e))
    if not quiet:
        Console().print(f"{len(files)} files of {REPO}@{COMMIT[:8]} in {dest}/ (sha256 checked)", highlight=False)


@main.command()
@click.option("--url", required=True,
              help="The server's base URL (vLLM or llm-d's gateway), e.g. http://localhost:8000.")
@click.option("--workload", "workload", required=True,
              help="A bundled scenario's name or a scenario file: its workload (and seed) is what is sent.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for observed_requests.csv, observed_meta.json, observed_itl.jsonl and metrics.csv.")
@click.option("--api", type=click.Choice(["completions", "chat"]), default="completions", show_default=True,
              help="/v1/completions or /v1/chat/completions (both streamed).")
@click.option("--model", default=None, help="The served model to ask for (default: the first of /v1/models).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Override the scenario's seed.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests in flight at most; a request due while all are busy waits (its send time is recorded).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop sending after this many seconds (the ones in flight finish).")
@click.option("--max-requests", type=click.IntRange(min=1), default=None, help="Stop after sending this many.")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Seconds a request may take (the scenario's timeout_s when shorter).")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="After Ctrl-C: seconds to wait for the requests in flight before cancelling them.")
@click.option("--metrics-url", default=None,
              help="Where to scrape Prometheus /metrics (default: --url; e.g. a vLLM pod behind a gateway).")
@click.option("--no-metrics", is_flag=True, help="Do not scrape /metrics.")
@click.option("--metrics-interval", "metrics_interval_s", type=click.FloatRange(min=0.1), default=2.0,
              show_default=True, help="Seconds between scrapes.")
@click.option("--no-ignore-eos", is_flag=True,
              help="Do not send vLLM's ignore_eos/min_tokens (output lengths then end at EOS).")
@click.option("--hardware", default=None, help="For validate: the server's GPU (H100, A100-80GB, ...).")
@click.option("--tp", type=click.IntRange(1, 64), default=None,
              help="For validate: the server's tensor-parallel degree.")
@click.option("--kv-blocks", type=click.IntRange(min=2), default=None, help="For validate: the server's GPU KV blocks.")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=None, help="For validate: vLLM max_num_seqs.")
@click.option("--max-num-batched-tokens", type=click.IntRange(min=1), default=None,
              help="For validate: vLLM max_num_batched_tokens.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def observe(url, workload, out_dir, api, model, seed, max_concurrency, duration_s, max_requests, request_timeout_s,
            drain_timeout_s, metrics_url, no_metrics, metrics_interval_s, no_ignore_eos, hardware, tp, kv_blocks,
            max_num_seqs, max_num_batched_tokens, quiet) -> None:
    """Drive a real OpenAI-compatible server with a scenario's workload (the requests `blis-gym
    run` simulates for that seed) and record each request's send time, TTFT, inter-token times
    and E2E in the per-request format `blis-gym validate` replays. Ctrl-C stops sending and keeps
    what was recorded (exit status 130)."""
    from .observe import ObserveConfig
    from .observe import observe as run_observe

    def log(msg: str) -> None:
        if not quiet or msg.startswith("warning"):
            err_console.print(msg, highlight=False, soft_wrap=True)

    cfg = ObserveConfig(url=url, workload=workload, out_dir=out_dir, api=api, model=model, seed=seed,
                        max_concurrency=max_concurrency, duration_s=duration_s, max_requests=max_requests,
                        request_timeout_s=request_timeout_s, drain_timeout_s=drain_timeout_s,
                        metrics_url="" if no_metrics else metrics_url, metrics_interval_s=metrics_interval_s,
                        ignore_eos=not no_ignore_eos,
                        engine={"hardware": hardware, "tp": tp, "kv_blocks": kv_blocks, "max_num_seqs": max_num_seqs,
                                "max_num_batched_tokens": max_num_batched_tokens})
    try:
        meta = run_observe(cfg, log)
    except ConfigError as e:
        _fail(str(e))
    except KeyboardInterrupt:             # before the first request: nothing to keep
        err_console.print("interrupted before anything was sent", highlight=False)
        sys.exit(130)
    by = ", ".join(f"{n} {s}" for s, n in meta["requests_by_status"].items()) or "none"
    if not quiet:
        Console().print(f"{meta['requests_sent']} requests sent ({by}); {meta['stopped']}; wrote {out_dir}/",
                        highlight=False)
    if meta["interrupted"]:
        sys.exit(130)


# ---- commands defined elsewhere (their modules import only click at the top) ---------------------
from .harness.cli import eval_command, train_command  # noqa: E402
from .sweep.cli import sweep  # noqa: E402  (the command imports its heavy parts when run)

main.add_command(sweep)
main.add_command(eval_command)
main.add_command(train_command)


if __name__ == "__main__":  # pragma: no cover
    main()
