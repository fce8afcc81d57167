"""Charts a sweep file asks for: one KPI against one column, a line (or a group of bars when
the column is not numeric) per value of `by`, one panel per value of `panel`."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from .spec import ChartSpec


def chart_file(spec: ChartSpec) -> str:
    name = f"chart-{spec.y}-vs-{spec.x}" + (f"-by-{spec.by}" if spec.by else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png"


def draw(table, spec: ChartSpec, path: Path, where: str) -> None:
    """Points with the same x, group and panel (several seeds) are averaged."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    for field in ("x", "y", "by", "panel"):
        col = getattr(spec, field)
        if col is not None and len(table) and col not in table.columns:
            raise ConfigError(f"{where}.{field}", f"no column {col!r} in the results")
    ok = table[table["reason"].isna()] if len(table) else table
    panels = list(dict.fromkeys(ok[spec.panel])) if spec.panel and len(ok) else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(1 + 4.5 * len(panels), 4.2), dpi=110, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        d = ok if panel is None else ok[ok[spec.panel] == panel]
        groups = list(dict.fromkeys(d[spec.by])) if spec.by and len(d) else [None]
        numeric = len(d) > 0 and pd.api.types.is_numeric_dtype(d[spec.x]) and not pd.api.types.is_bool_dtype(d[spec.x])
        xs = list(dict.fromkeys(d[spec.x])) if len(d) else []
        width = 0.8 / len(groups)
        for k, group in enumerate(groups):
            g = d if group is None else d[d[spec.by] == group]
            mean = g.groupby(spec.x, sort=False)[spec.y].mean()
            label = None if group is None else str(group)
            if numeric:
                mean = mean.sort_index()
                ax.plot(mean.index, mean.values, marker="o", label=label)
            else:
                ax.bar([xs.index(v) + (k - (len(groups) - 1) / 2) * width for v in mean.index], mean.values,
                       width, label=label)
        if not numeric:
            ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=30, ha="right", fontsize=8)
        if spec.logy:
            ax.set_yscale("log")
        ax.set_xlabel(spec.x)
        ax.set_ylabel(spec.y)
        ax.set_title(f"{spec.panel} = {panel}" if panel is not None else spec.title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if spec.by:
            ax.legend(fontsize=7, title=spec.by, title_fontsize=7)
    if spec.panel and spec.title:
        fig.suptitle(spec.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_charts(out_dir: Path, table, charts: list[ChartSpec]) -> list[str]:
    """Draw each chart into out_dir; the file names written."""
    names = []
    for i, spec in enumerate(charts):
        name = chart_file(spec)
        draw(table, spec, out_dir / name, f"charts.{i}")
        names.append(name)
    return names
