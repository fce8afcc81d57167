"""`blis-gym run`, `scenarios`, `plot` and `compare`: simulate a scenario, list the bundled ones,
draw a run's pictures, and put runs side by side."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ConfigError
from ..sim.limits import MAX_SEED
from .common import err_console, fail, fmt, note_seed


@click.command()
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
    from ..output.files import check_out_dir, write_run
    from ..resources import scenario_path
    from ..schema.scenario import build, load_scenario
    from ..sim.simulation import Simulation

    ctx = click.get_current_context()
    for name in ("top_k", "every", "max_decisions", "window_ms"):
        if not decision_trace and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            fail(f"--{name.replace('_', '-')}: only with --decision-trace")
    try:
        if plot:
            from ..output.plots import pyplot
            pyplot()                       # a missing matplotlib fails now, not after the run
        path = scenario_path(scenario)
        sc = load_scenario(path, {"seed": seed} if seed is not None else None)
        cfg = build(sc, base_dir=path.parent)
        if seed is not None:
            note_seed(sc.name, cfg.workload)
        if decision_trace:
            from ..output.decision_trace import check_traceable
            check_traceable(cfg)
        if export_trace:
            from ..output.trace_export import check_exportable
            check_exportable(cfg.workload)
        sim = Simulation(cfg, external={"router"} if decision_trace else ())
        out_dir = out_dir or Path("results") / sc.name
        check_out_dir(out_dir)
    except ConfigError as e:
        fail(str(e))
    log = None
    if export_trace:
        from ..output.trace_export import RequestLog
        log = RequestLog(sim)
    t0 = time.perf_counter()
    if decision_trace:
        from ..output.decision_trace import Sampling
        summary, rows = _run_with_progress(sim, quiet, Sampling(top_k, every, max_decisions, window_ms * 1000))
    else:
        summary, rows = _run_with_progress(sim, quiet), None
    wall = time.perf_counter() - t0

    def extra(folder: Path) -> list[Path]:
        written = []
        if rows is not None:
            from ..output.decision_trace import write_decision_trace
            written.append(write_decision_trace(rows, folder / "decision_trace.csv"))
        if log is not None:
            from ..output.trace_export import write_trace
            written.append(write_trace(sim, log, folder / "requests.csv", folder / "trace.csv"))
        return written + (_plot_orfail(folder) if plot else [])
    try:
        written = write_run(sim, summary, out_dir, extra=extra)
    except OSError as e:
        fail(f"--out: cannot write {out_dir}: {e.strerror or e}")
    if not quiet:
        _print_summary(summary, wall)
        Console().print(f"wrote {out_dir}/: {', '.join(written)}", highlight=False)


def _plot_orfail(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    from ..output.plots import plot_run
    try:
        return plot_run(run_dir, out_dir)
    except ConfigError as e:
        fail(str(e))


@click.command()
def scenarios() -> None:
    """List the bundled scenarios (run one by name: `blis-gym run NAME`)."""
    import yaml

    from ..resources import bundled_scenarios
    bundled = bundled_scenarios()
    width = max(map(len, bundled), default=0)
    for name, path in bundled.items():
        data = yaml.safe_load(path.read_text()) or {}
        click.echo(f"{name:<{width}}  {str(data.get('description', '')).strip()}")


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the PNGs (default: RUN_DIR).")
def plot(run_dir: Path, out_dir: Path | None) -> None:
    """Draw PNGs of a run folder written by `blis-gym run`: TTFT and E2E CDFs per SLO class,
    waiting queue and KV use per instance over time, and pool sizes and dollars over time
    (matplotlib)."""
    for p in _plot_orfail(run_dir, out_dir):
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


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the runs' overlaid TTFT and E2E CDFs to this PNG.")
def compare(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Compare runs of `blis-gym run` (two or more folders): their KPIs side by side, each
    relative to the first run, and (with --out) their latency CDFs overlaid."""
    from ..output.plots import check_run_dir, load_summary, plot_compare

    if len(run_dirs) < 2:
        fail("RUN_DIRS: give at least two run folders to compare")
    try:
        summaries = [load_summary(check_run_dir(d, "RUN_DIRS"), "RUN_DIRS") for d in run_dirs]
    except ConfigError as e:
        fail(str(e))
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
            fail(str(e))


def _fmt_kpi(v, base, first: bool) -> str:
    if v is None:
        return "-"
    text = _number(v)
    if first or base is None:
        return text
    if base == 0:
        return text if v == 0 else f"{text} (new)"
    return f"{text} ({100 * (v - base) / abs(base):+.1f}%)"


def _run_with_progress(sim, quiet: bool, sampling=None):
    """The run's summary; with `sampling` (a decision_trace.Sampling), (summary, trace rows)."""
    def go(progress=None):
        if sampling is None:
            return sim.run(progress=progress)
        from ..output.decision_trace import run_traced
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
        t.add_row(label, *[fmt(s.get(f"{name}_{c}_ms")) for c in ("mean", "p50", "p90", "p99")])
    console.print(t)
    if len(s.get("per_class", {})) > 1:
        pc = Table(title="per SLO class", header_style="bold", box=box.SIMPLE_HEAD)
        for col in ("class", "done / in", "rejected", "timed out", "TTFT p90", "E2E p90"):
            pc.add_column(col, justify="left" if col == "class" else "right")
        for name, b in s["per_class"].items():
            pc.add_row(name, f"{b['completed_requests']} / {b['injected_requests']}", str(b["rejected_requests"]),
                       str(b["timed_out_requests"]), fmt(b["ttft_p90_ms"]), fmt(b["e2e_p90_ms"]))
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
                         f"{pd['transfers']} ({fmt(pd['transfer_mean_ms'])} / {fmt(pd['transfer_p99_ms'])} ms)"))
    off = s.get("kv_offload")
    if off:
        rows.append(("KV hits GPU / CPU / fs / miss", " / ".join(
            f"{off[k]:.3f}" for k in ("gpu_hit_rate", "cpu_hit_rate", "fs_hit_rate", "miss_rate"))))
        rows.append(("KV blocks offloaded / reloaded",
                     f"{off['blocks_offloaded']} / {off['blocks_reloaded']} ({off['loads']} loads, "
                     f"{off['reload_time_ms_total'] / 1000:.2f} s)"))
    rows.append(("simulated / wall time", f"{s['duration_s']:.2f} s / {wall:.2f} s"))
    return rows


def _number(v) -> str:
    """A KPI for a table: thousands as whole numbers with separators (12,330, never 1.233e+04),
    the rest to 4 significant digits."""
    if isinstance(v, int) or (isinstance(v, float) and abs(v) >= 1000):
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
