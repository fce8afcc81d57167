"""`blis-gym sweep SWEEP.yaml --out DIR`: run a sweep (only its missing points), then write the
results table, the frontier CSV, the Pareto plot and the charts. Heavy imports happen inside
the command."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import fail, note


@click.command()
@click.argument("sweep_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sweep folder (default: results/sweeps/<sweep name>). Rerun with the same folder to resume.")
@click.option("--workers", type=int, default=None, help="Processes (default: the cores available).")
@click.option("--backend", type=click.Choice(["process", "ray"]), default="process", show_default=True,
              help="Where points run: a local process pool, or Ray (pip install 'blis-gym[ray]').")
@click.option("--address", default=None, help="Ray cluster address (default: a local Ray instance).")
@click.option("--plot/--no-plot", default=True, show_default=True,
              help="Draw the frontier (frontier.csv, pareto.png) and the sweep file's charts.")
@click.option("--plot-only", is_flag=True, help="Only redraw the frontier and charts of the points in --out.")
@click.option("--latency", default=None, help="Latency column of the frontier (default: the sweep's, ttft_p90_ms).")
@click.option("--slo", type=float, default=None, help="Latency SLO of the frontier, in that column's unit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def sweep(sweep_file: Path | None, out_dir: Path | None, workers: int | None, backend: str, address: str | None,
          plot: bool, plot_only: bool, latency: str | None, slo: float | None, quiet: bool) -> None:
    """Run every point of SWEEP_FILE (a base scenario and the axes to vary; see docs/sweeps.md;
    or a bundled study by name: capacity, admission, pd) that --out does not hold yet, and write results.parquet, results.csv, frontier.csv,
    pareto.png and the sweep file's charts there."""

    from ..errors import ConfigError

    try:
        if plot_only:
            if out_dir is None:
                raise ConfigError("--out", "--plot-only needs the sweep folder")
            _plot(out_dir, None, latency, slo, quiet)
            return
        if sweep_file is None:
            raise ConfigError("SWEEP_FILE", "give a sweep file (or --plot-only --out DIR)")
        if address is not None and backend != "ray":
            raise ConfigError("--address", "only with --backend ray")
        if workers is not None and workers < 1:
            raise ConfigError("--workers", f"must be at least 1, not {workers}")
        _run(sweep_file, out_dir, workers, backend, address, plot, latency, slo, quiet)
    except ConfigError as e:
        fail(str(e))


def _run(sweep_file, out_dir, workers, backend, address, plot, latency, slo, quiet) -> None:
    import time

    from rich.console import Console

    from ..sweep.runner import run_sweep
    from ..sweep.spec import load_sweep

    sw = load_sweep(sweep_file)
    out_dir = out_dir or Path("results") / "sweeps" / sw.spec.name
    err = Console(stderr=True)
    seeds_note = _seed_note(sw)
    if seeds_note is not None:
        note(seeds_note)

    def started(total: int, todo: int) -> None:
        if not quiet:
            err.print(f"{sw.spec.name}: {total} points, {total - todo} already in {out_dir}, "
                      f"{todo} points to run", highlight=False, soft_wrap=True)
    t0 = time.perf_counter()
    try:
        table = run_sweep(sw, out_dir, workers=workers, backend=backend, address=address, quiet=quiet,
                          on_start=started)
    except KeyboardInterrupt:
        # every finished point is already saved; the same command runs only the missing ones
        err.print(f"interrupted: the finished points are in {out_dir}; the same command resumes the sweep",
                  highlight=False, soft_wrap=True)
        sys.exit(130)
    written = ["results.parquet", "results.csv"]
    if plot:
        written += _plot(out_dir, table, latency, slo, quiet)
    if not quiet:
        infeasible = int(table["reason"].notna().sum()) if len(table) else 0
        Console().print(f"{len(table)} points ({infeasible} infeasible) in {time.perf_counter() - t0:.1f} s; "
                        f"wrote {out_dir}/: {', '.join(written)}", highlight=False, soft_wrap=True)


def _seed_note(sw) -> str | None:
    """The note for `seeds:` on a sweep whose points have no random element in their workloads
    (then every seed repeats the same runs), else None."""
    if sw.spec.seeds is None or len({p.data.get("seed") for p in sw.points}) < 2:
        return None
    from ..schema.scenario import build, parse_scenario
    from ..sim.workload.randomness import seed_note
    notes = [seed_note(sw.spec.name, build(parse_scenario(p.data), base_dir=sw.base_dir).workload)
             for p in sw.points]
    if any(n is None for n in notes):
        return None
    return f"seeds: {notes[0]}" if len(sw.points) == 1 else f"seeds: every point of {notes[0]}"


def _plot(out_dir: Path, table, latency, slo, quiet) -> list[str]:
    """The sweep file's charts, and its frontier (frontier.csv, pareto.png); the files written."""
    import json

    from ..sweep.charts import write_charts
    from ..sweep.runner import MANIFEST, load_results
    from ..sweep.spec import ChartSpec

    if table is None:
        table = load_results(out_dir)
    meta = json.loads((out_dir / MANIFEST).read_text())
    written = write_charts(out_dir, table, [ChartSpec(**c) for c in meta.get("charts", [])])
    if meta.get("pareto") is not None:
        _frontier(out_dir, table, meta, latency, slo, quiet)
        written += ["frontier.csv", "pareto.png"]
    return written


def _frontier(out_dir: Path, table, meta: dict, latency, slo, quiet) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..errors import ConfigError
    from ..sweep.pareto import write_frontier
    from ..sweep.spec import ParetoSpec

    spec = ParetoSpec(**meta["pareto"])
    if latency is not None or slo is not None:
        spec = spec.model_copy(update={k: v for k, v in (("latency", latency), ("slo", slo)) if v is not None})
    if slo is not None and slo <= 0:
        raise ConfigError("--slo", f"must be > 0, not {slo}")
    front = write_frontier(out_dir, table, spec, meta.get("name", out_dir.name))
    if quiet:
        return
    best = front[front["best"]]
    t = Table(title=f"best per {spec.budget} budget" + (f" ({spec.latency} <= {spec.slo:g})" if spec.slo else ""))
    for col in ("tier", *meta["columns"], spec.latency, spec.throughput, "dollars_per_hour"):
        t.add_column(col.rsplit(".", 1)[-1], justify="right", overflow="fold")   # the last part names it
    for _, r in best.iterrows():
        t.add_row(*(_fmt(r.get(c)) for c in ("tier", *meta["columns"], spec.latency, spec.throughput,
                                              "dollars_per_hour")))
    Console().print(t)


def _fmt(v) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
