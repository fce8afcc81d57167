"""What validate writes: validation.csv, summary.json and validation.svg (predicted against
measured, plain SVG: no plotting dependency)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from blis_gym.errors import ConfigError
from blis_gym.output.finite_json import dumps as json_dumps

from .scoring import _round


def write_outputs(out: Path, rows: list[dict], summary: dict, plot: bool = True) -> list[str]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", f"cannot create {out}: {e.strerror}") from None
    cols = ("exp_id", "stage_index", "metric", "predicted", "actual", "ape", "signed_error_pct", "model",
            "hardware", "workload", "tp", "split", "latency_model")
    with open(out / "validation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_round(r[c]) if isinstance(r.get(c), float) else r.get(c, "") for c in cols])
    s = {k: v for k, v in summary.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json_dumps(s) + "\n")
    written = ["validation.csv", "summary.json"]
    if plot and rows:
        first = rows[0].get("latency_model")        # one model per plot: the first compared
        write_svg_plot(out / "validation.svg", [r for r in rows if r.get("latency_model") == first])
        written.append("validation.svg")
    return written


# ---- plot (plain SVG: no plotting dependency) -------------------------------------------------
def write_svg_plot(path: Path, rows: list[dict]) -> None:
    """Predicted against measured on log-log axes, one panel per metric family."""
    panels = (("E2E (ms)", ("e2e_mean", "e2e_p90", "e2e_p99")), ("TTFT (ms)", ("ttft_mean", "ttft_p90", "ttft_p99")),
              ("ITL (ms)", ("itl_mean",)))
    colours = {"train": "#1f77b4", "holdout": "#d62728", "trace": "#2ca02c", "unseen": "#9467bd"}
    markers = {"mean": "circle", "p90": "square", "p99": "diamond"}
    W, H, pad = 330, 330, 48
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * 3}" height="{H + 40}" '
              f'font-family="sans-serif" font-size="11">'), '<rect width="100%" height="100%" fill="white"/>']
    for pi, (title, metrics) in enumerate(panels):
        pts = [r for r in rows if r["metric"] in metrics and r["predicted"] > 0 and r["actual"] > 0
               and not math.isnan(r["predicted"])]
        x0 = pi * W
        parts.append(f'<text x="{x0 + W / 2}" y="16" text-anchor="middle" font-weight="bold">{title}: '
                     f'predicted vs measured</text>')
        if not pts:
            continue
        vals = [r["predicted"] for r in pts] + [r["actual"] for r in pts]
        lo, hi = math.log10(min(vals)) - 0.05, math.log10(max(vals)) + 0.05

        def sx(v, x0=x0, lo=lo, hi=hi):
            return x0 + pad + (math.log10(v) - lo) / (hi - lo) * (W - pad - 12)

        def sy(v, lo=lo, hi=hi):
            return 24 + (H - pad) - (math.log10(v) - lo) / (hi - lo) * (H - pad - 12)
        a, b = 10 ** lo, 10 ** hi
        parts.append(f'<rect x="{x0 + pad}" y="{24 + 12}" width="{W - pad - 12}" height="{H - pad - 12}" '
                     f'fill="none" stroke="#888"/>')
        parts.append(f'<line x1="{sx(a):.1f}" y1="{sy(a):.1f}" x2="{sx(b):.1f}" y2="{sy(b):.1f}" stroke="#aaa" '
                     f'stroke-dasharray="4,3"/>')
        for f_ in (0.9, 1.1):
            parts.append(f'<line x1="{sx(a):.1f}" y1="{sy(a * f_):.1f}" x2="{sx(b / f_):.1f}" y2="{sy(b):.1f}" '
                         f'stroke="#ddd"/>' if f_ > 1 else
                         f'<line x1="{sx(a / f_):.1f}" y1="{sy(a):.1f}" x2="{sx(b):.1f}" y2="{sy(b * f_):.1f}" '
                         f'stroke="#ddd"/>')
        for k in range(math.ceil(lo), math.floor(hi) + 1):
            v = 10 ** k
            parts.append(f'<text x="{sx(v):.1f}" y="{H + 2}" text-anchor="middle">{v:g}</text>')
            parts.append(f'<text x="{x0 + pad - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        parts.append(f'<text x="{x0 + W / 2}" y="{H + 18}" text-anchor="middle">measured</text>')
        parts.append(f'<text x="{x0 + 12}" y="{24 + H / 2}" transform="rotate(-90 {x0 + 12} {24 + H / 2})" '
                     f'text-anchor="middle">predicted</text>')
        for r in pts:
            c = colours.get(r.get("split", "train"), "#1f77b4")
            x, y = sx(r["actual"]), sy(r["predicted"])
            kind = markers[r["metric"].split("_")[1]]
            tip = (f'<title>{r["exp_id"]} stage {r["stage_index"]} {r["metric"]}: predicted {r["predicted"]:.1f}, '
                   f'measured {r["actual"]:.1f} ({r["signed_error_pct"]:+.1f}%)</title>')
            if kind == "circle":
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}" fill-opacity="0.7">{tip}</circle>')
            elif kind == "square":
                parts.append(f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="none" '
                             f'stroke="{c}">{tip}</rect>')
            else:
                parts.append(f'<path d="M{x:.1f},{y - 4:.1f} L{x + 4:.1f},{y:.1f} L{x:.1f},{y + 4:.1f} '
                             f'L{x - 4:.1f},{y:.1f} Z" fill="none" stroke="{c}">{tip}</path>')
    parts.append(f'<text x="8" y="{H + 36}">filled circle = mean, square = p90, diamond = p99; blue = fitted '
                 f'experiments, red = held out, purple = not seen by the fit, green = per-request trace; '
                 f'dashed = exact, grey = ±10%</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
