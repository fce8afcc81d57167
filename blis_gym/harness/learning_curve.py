"""learning_curve.png: a training run's episode returns and validation returns against steps."""
from __future__ import annotations

from pathlib import Path


def draw_learning_curve(csv_path: Path, png: Path, title: str) -> bool:
    """Training episodes' mean return and the validation return against steps."""
    import pandas as pd
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return False
    log = pd.read_csv(csv_path)
    if "time/total_timesteps" not in log:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    drawn = 0
    for col, label in (("rollout/ep_rew_mean", "training episodes (mean of the last 100)"),
                       ("eval/mean_reward", "validation seeds (deterministic)")):
        d = log[["time/total_timesteps", col]].dropna() if col in log else None
        if d is None or d.empty:              # no legend entry for a curve without points
            continue
        # markers where the points are few: a short run's single point is otherwise invisible
        marker = "o" if col.startswith("eval") or len(d) <= 20 else None
        ax.plot(d["time/total_timesteps"], d[col], marker=marker, ms=3, label=label)
        drawn += len(d)
    if not drawn:
        ax.text(0.5, 0.5, "no training episode ended and no validation ran", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("steps")
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True
