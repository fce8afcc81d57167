"""Pictures of runs: what `blis-gym plot`, `blis-gym run --plot` and `blis-gym compare` draw.

A run is the folder `blis-gym run` writes (summary.json, requests.csv, timeseries.csv and, when
the cluster has pools, pools.csv). `plot_run` draws one run; `plot_compare` overlays the
latency CDFs of several. matplotlib comes from the `plot` extra and is imported only here, with
its non-interactive Agg backend (files only, no display needed).
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import ConfigError

RUN_FILES = ("summary.json", "requests.csv", "timeseries.csv")
LATENCIES = (("ttft_ms", "TTFT (ms)"), ("e2e_ms", "E2E latency (ms)"))


def pyplot():
    """matplotlib.pyplot on the Agg backend; a ConfigError if a broken install lacks it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("matplotlib", "not installed; plots need it: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def check_run_dir(run_dir: Path, field: str = "RUN_DIR") -> Path:
    """`run_dir` if it holds a run's files, else a ConfigError naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(field, f"no such folder: {run_dir}")
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise ConfigError(field, f"{run_dir} is not a run folder of `blis-gym run` (missing {', '.join(missing)})")
    return run_dir


def load_summary(run_dir: Path, field: str = "RUN_DIR") -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(field, f"{run_dir / 'summary.json'} is not valid JSON") from None


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def completed_latencies(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{SLO class: {"ttft_ms": values, "e2e_ms": values}} over the completed requests."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: {k: [] for k, _ in LATENCIES})
    for r in _rows(run_dir / "requests.csv"):
        if r["state"] == "completed":
            for k, _ in LATENCIES:
                out[r["slo_class"]][k].append(float(r[k]))
    return {c: {k: np.sort(np.asarray(v)) for k, v in d.items()} for c, d in sorted(out.items())}


def instance_series(run_dir: Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{"waiting" | "kv_usage": {instance: (times in s, values)}} from timeseries.csv."""
    acc: dict[str, dict[str, tuple[list, list]]] = {c: defaultdict(lambda: ([], [])) for c in ("waiting", "kv_usage")}
    for r in _rows(run_dir / "timeseries.csv"):
        for col, per in acc.items():
            t, v = per[r["instance"]]
            t.append(float(r["time_s"]))
            v.append(float(r[col]))
    return {c: {k: (np.asarray(t), np.asarray(v)) for k, (t, v) in per.items()} for c, per in acc.items()}


def _cdf(ax, values: np.ndarray, label: str) -> None:
    if len(values):
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=label)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_instance(plt, series: dict, ylabel: str, title: str, path: Path, integer: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (t, v) in series.items():
        ax.plot(t, v, label=name, linewidth=1)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if integer:                            # whole requests: no 0.5 ticks
        ax.yaxis.get_major_locator().set_params(integer=True)
    if len(series) <= 12:                  # a legend of dozens of pods hides the plot
        ax.legend(fontsize="small", ncol=2)
    return _save(plt, fig, path)


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Draw a run's PNGs into `out_dir` (default: the run folder) and return their paths:
    latency_cdf.png (TTFT and E2E per SLO class), waiting.png and kv_usage.png (per instance over
    time) and, when the run has several pools or one that changes size, pools.png (pool sizes and
    cumulative dollars over time)."""
    plt = pyplot()
    run_dir = check_run_dir(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    title = load_summary(run_dir).get("scenario", run_dir.name)
    written = []

    by_class = completed_latencies(run_dir)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, label) in zip(axes, LATENCIES):
        for cls, lat in by_class.items():
            _cdf(ax, lat[key], cls)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of completed requests")
        ax.set_title(f"{title}: {label.split(' (')[0]} CDF")
        ax.grid(alpha=0.3)
        if by_class:
            ax.legend(fontsize="small")
    written.append(_save(plt, fig, out_dir / "latency_cdf.png"))

    series = instance_series(run_dir)
    written.append(_per_instance(plt, series["waiting"], "waiting requests", f"{title}: queue per instance",
                                 out_dir / "waiting.png", integer=True))
    written.append(_per_instance(plt, series["kv_usage"], "KV-cache use (fraction of blocks)",
                                 f"{title}: KV use per instance", out_dir / "kv_usage.png"))

    if (run_dir / "pools.csv").is_file() and _pools_change(rows := _rows(run_dir / "pools.csv")):
        written.append(_plot_pools(plt, rows, title, out_dir / "pools.png"))
    return written


def _pools_change(rows: list[dict]) -> bool:
    """Whether pools.png has something to show: several pools, or a pool whose size changes (a
    scenario without `pools:` runs one fixed pool: its size would be a flat line)."""
    return len({r["pool"] for r in rows}) > 1 or len({(r["active"], r["starting"]) for r in rows}) > 1


def _plot_pools(plt, rows: list[dict], title: str, out: Path) -> Path:
    fig, (size_ax, cost_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for pool in dict.fromkeys(r["pool"] for r in rows):
        mine = [r for r in rows if r["pool"] == pool]
        t = np.asarray([float(r["time_s"]) for r in mine])
        size_ax.step(t, [int(r["active"]) for r in mine], where="post", label=f"{pool}: active")
        size_ax.step(t, [int(r["active"]) + int(r["starting"]) for r in mine], where="post",
                     linestyle="--", label=f"{pool}: active + starting")
        cost_ax.plot(t, [float(r["dollars"]) for r in mine], label=pool)
    size_ax.yaxis.get_major_locator().set_params(integer=True)
    size_ax.set_ylabel("instances")
    size_ax.set_title(f"{title}: pool size and cost")
    size_ax.legend(fontsize="small")
    cost_ax.set_ylabel("dollars (cumulative)")
    cost_ax.set_xlabel("simulated time (s)")
    cost_ax.legend(fontsize="small")
    return _save(plt, fig, out)


def plot_compare(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """One PNG: the TTFT and E2E CDFs of every run (all SLO classes together), overlaid; each
    run named by `labels` (default: its folder)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run_dir, name in zip(run_dirs, labels or [str(d) for d in run_dirs]):
        lat = completed_latencies(check_run_dir(run_dir))
        for ax, (key, _) in zip(axes, LATENCIES):
            _cdf(ax, np.sort(np.concatenate([d[key] for d in lat.values()] or [np.empty(0)])), name)
    for ax, (_, label) in zip(axes, LATENCIES):
        ax.set_title(f"{label.split(' (')[0]} CDF, completed requests")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of completed requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return _save(plt, fig, Path(out))
