"""The capacity-planning view of a sweep: per budget tier (GPUs by default), the configurations
no other configuration within the budget beats on both latency and throughput, and the best
one that meets the latency SLO."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .spec import ParetoSpec


def frontier(table, spec: ParetoSpec):
    """One row per (tier, frontier point), tiers ascending, each tier's frontier by latency.

    A tier B holds the points that ran with budget <= B; its frontier is the points for which
    no point of the tier has both lower-or-equal latency and higher throughput. `best` marks
    the tier's highest-throughput frontier point within the SLO (lowest latency if no SLO),
    ties to the smaller budget."""
    import pandas as pd

    for col in (spec.latency, spec.throughput, spec.budget):
        if len(table) and col not in table.columns:
            raise ConfigError("pareto", f"no column {col!r} in the results; some are: "
                                        f"{', '.join(c for c in table.columns if c.endswith('_ms'))[:300]}")
    if not len(table):
        return pd.DataFrame(columns=["tier", "best", *table.columns])
    ok = table[table["reason"].isna() & table[spec.latency].notna() & table[spec.throughput].notna()]
    tiers = spec.tiers or sorted(ok[spec.budget].dropna().unique())
    parts = []
    for tier in tiers:
        pool = ok[ok[spec.budget] <= tier].sort_values(
            [spec.latency, spec.throughput, spec.budget, "key"], ascending=[True, False, True, True])
        best_y, keep = -float("inf"), []
        for idx, y in zip(pool.index, pool[spec.throughput]):
            if y > best_y:
                keep.append(idx)
                best_y = y
        front = pool.loc[keep].copy()
        front.insert(0, "best", False)
        front.insert(0, "tier", tier)
        meets = front if spec.slo is None else front[front[spec.latency] <= spec.slo]
        if len(meets):
            pick = (meets.sort_values([spec.latency]).index[0] if spec.slo is None else
                    meets.sort_values([spec.throughput, spec.budget, spec.latency],
                                      ascending=[False, True, True]).index[0])
            front.loc[pick, "best"] = True
        parts.append(front)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["tier", "best", *table.columns])


def plot(table, front, spec: ParetoSpec, path: Path, title: str) -> None:
    """Every point (grey), each tier's frontier (a step line), the best per tier (a star) and
    the SLO (a dashed line), throughput against latency on a log axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ok = table[table["reason"].isna()] if len(table) else table
    if len(ok):
        ax.scatter(ok[spec.latency], ok[spec.throughput], s=10, color="0.75", label="every point", zorder=1)
    tiers = list(dict.fromkeys(front["tier"])) if len(front) else []
    colours = plt.get_cmap("viridis")([i / max(1, len(tiers) - 1) for i in range(len(tiers))])
    for tier, colour in zip(tiers, colours):
        f = front[front["tier"] == tier]
        ax.step(f[spec.latency], f[spec.throughput], where="post", color=colour, marker="o", ms=3,
                label=f"{spec.budget} <= {tier:g}", zorder=2)
        best = f[f["best"]]
        ax.scatter(best[spec.latency], best[spec.throughput], marker="*", s=220, color=colour,
                   edgecolors="black", linewidths=0.6, zorder=3)
    if spec.slo is not None:
        ax.axvline(spec.slo, color="crimson", linestyle="--", linewidth=1.2, label=f"SLO {spec.slo:g}")
    if len(ok) and (ok[spec.latency] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(spec.latency)
    ax.set_ylabel(spec.throughput)
    ax.set_title(f"{title}: Pareto frontier per {spec.budget} budget (stars: best within the SLO)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if len(ok):
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_frontier(out_dir: Path, table, spec: ParetoSpec, title: str):
    """DIR/frontier.csv and DIR/pareto.png; returns the frontier."""
    front = frontier(table, spec)
    front.to_csv(out_dir / "frontier.csv", index=False)
    plot(table, front, spec, out_dir / "pareto.png", title)
    return front
