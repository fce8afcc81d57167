"""The files of an evaluation: results.csv, summary.json, report.md and PNG plots.

- `results.csv`: one row per policy × scenario × seed (the episode's return and KPIs);
- `summary.json`: `policies.<policy>.<scenario>.<kpi>` = {mean, ci95, n} and, against the
  baseline, `paired.<policy>.<scenario>.<kpi>` = {diff_mean, ci95, win_rate, n, better}
  (methods in `blis_gym.harness.stats`); the env's KPI contract (`kpi`), the KPIs pooled over
  the scenarios per seed (`pooled`, `pooled_paired`) and each policy's `verdict` against the
  baseline on the primary KPI (`blis_gym.harness.claims`), the primary KPI per scenario
  (`per_scenario`, with where a policy collapses) and the cut episodes per policy and scenario
  (`truncated`);
- `report.md`: the same as tables;
- `kpis.png` (headline KPIs per policy with their 95% intervals), `cdf_ttft.png` and
  `cdf_e2e.png` (per policy, all seeds' completed requests), `paired_return.png` (the paired
  return difference per seed against the baseline).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import claims, stats
from .kpi_names import has_range, higher_is_better

HEADLINE = ("return", "goodput_rps", "slo_attainment", "ttft_p90_ms", "e2e_p90_ms", "dollars")


def write_all(out: Path, results: list[dict], *, env_id: str, policies: list[str], baseline: str,
              scenarios: list[str], seeds: list[int], kpis=None) -> list[str]:
    """Write every file into `out`; returns their names."""
    import pandas as pd
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([r["row"] for r in results])
    table.to_csv(out / "results.csv", index=False, lineterminator="\n")
    summary = summarize(table, env_id=env_id, policies=policies, baseline=baseline, scenarios=scenarios,
                        seeds=seeds)
    summary.update(claims.pooled(table, policies=policies, baseline=baseline, scenarios=scenarios,
                                 kpis=kpis or claims.KpiSpec(), n_seeds=len(seeds)))
    summary["same_arrivals"] = _same_arrivals(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(markdown(summary))
    return ["results.csv", "summary.json", "report.md", *plots(out, table, results, summary)]


def rescore(out: Path, env_id: str, kpis=None) -> list[str]:
    """Rewrite `out`'s summary.json and report.md from its results.csv with the current rules
    (verdicts, intervals, cut-episode counts) and redraw kpis.png and paired_return.png, without
    playing an episode: for evaluations whose episodes are unchanged. results.csv and the CDFs
    (they need every request's latency) are left as they are; the policies, their
    order, the baseline, the scenarios and `same_arrivals` are read from the old summary."""
    import pandas as pd
    from .claims import spec_kpis
    old = json.loads((out / "summary.json").read_text())
    table = pd.read_csv(out / "results.csv")
    seeds = sorted(int(x) for x in table.seed.unique())
    args = dict(policies=old["policies_order"], baseline=old["baseline"], scenarios=old["scenarios"])
    summary = summarize(table, env_id=env_id, seeds=seeds, **args)
    summary.update(claims.pooled(table, kpis=kpis or spec_kpis(env_id), n_seeds=len(seeds), **args))
    summary["same_arrivals"] = old["same_arrivals"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(markdown(summary))
    return ["summary.json", "report.md", *kpi_plots(out, table, summary)]


def kpi_columns(table) -> list[str]:
    skip = {"policy", "scenario", "seed", "steps", "end_reason"}
    return [c for c in table.columns if c not in skip]


def summarize(table, *, env_id, policies, baseline, scenarios, seeds) -> dict:
    cols = kpi_columns(table)
    out: dict = {"env_id": env_id, "baseline": baseline, "seeds": [seeds[0], seeds[-1]], "n_seeds": len(seeds),
                 "scenarios": scenarios, "policies_order": policies,
                 "method": {"ci95": "Student t over seeds; percentile bootstrap of the mean for fractions and "
                            "latencies (it stays in their range)", "paired": "per-seed difference policy - baseline, "
                            f"percentile bootstrap of its mean ({stats.BOOTSTRAP_SAMPLES} resamples, generator "
                            f"seed {stats.BOOTSTRAP_SEED}); win_rate: seeds where the policy is better, ties 1/2"},
                 "policies": {}, "paired": {}}
    for p in policies:
        out["policies"][p] = {}
        for s in scenarios:
            rows = table[(table.policy == p) & (table.scenario == s)].sort_values("seed")
            out["policies"][p][s] = {c: stats.mean_ci(_values(rows[c]), bounded=has_range(c)) for c in cols}
            if p == baseline:
                continue
            base = table[(table.policy == baseline) & (table.scenario == s)].sort_values("seed")
            out["paired"].setdefault(p, {})[s] = {
                c: stats.paired(_values(rows[c]), _values(base[c]), higher_is_better(c)) for c in cols}
    return out


def _values(series) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in series]


def _same_arrivals(results: list[dict]) -> bool:
    """True if every policy saw the same arrivals on each (scenario, seed)."""
    seen: dict = {}
    for r in results:
        key = (r["row"]["scenario"], r["row"]["seed"])
        if seen.setdefault(key, r["arrivals"]) != r["arrivals"]:
            return False
    return True


def _fmt(x) -> str:
    if x is None:
        return "–"
    a = abs(x)
    return f"{x:,.0f}" if a >= 1000 else f"{x:.1f}" if a >= 10 else f"{x:.3g}"


def markdown(summary: dict) -> str:
    base = summary["baseline"]
    lines = [f"# Evaluation of {summary['env_id']}", "",
             f"Seeds {summary['seeds'][0]}-{summary['seeds'][1]} ({summary['n_seeds']} per policy and scenario, "
             f"the same for every policy); baseline `{base}`. Intervals are 95%: {summary['method']['ci95']} for "
             f"means; {summary['method']['paired']}.", ""]
    if not summary["same_arrivals"]:
        lines += ["Note: on some seeds the policies did not see identical arrival times. This is expected "
                  "when the workload has multi-turn sessions (a follow-up turn arrives a think time after "
                  "the previous answer, so it depends on the policy) or when episodes are cut at different "
                  "moments; the random draws themselves are common to every policy.", ""]
    if summary["n_seeds"] < claims.MIN_SEEDS:
        lines += [f"**Warning: {summary['n_seeds']} seeds, fewer than {claims.MIN_SEEDS}: every verdict is "
                  f"`{claims.TOO_FEW}`.**", ""]
    lines += _claim_lines(summary) + _scenario_lines(summary)
    for s in summary["scenarios"]:
        lines += [f"## Scenario `{s}`", "", "| policy | " + " | ".join(HEADLINE) + " | cut |",
                  "|---|" + "---|" * (len(HEADLINE) + 1)]
        for p in summary["policies_order"]:
            cells = []
            for k in HEADLINE:
                m = summary["policies"][p][s].get(k)
                cells.append("–" if m is None or m["mean"] is None else
                             f"{_fmt(m['mean'])} [{_fmt(m['ci95'][0])}, {_fmt(m['ci95'][1])}]")
            lines.append(f"| `{p}` | " + " | ".join(cells) + f" | {summary['truncated'][p][s]} |")
        lines += ["", f"Paired against `{base}` (difference of means [95% CI], win rate):", "",
                  "| policy | " + " | ".join(HEADLINE) + " |", "|---|" + "---|" * len(HEADLINE)]
        for p in summary["policies_order"]:
            if p == base:
                continue
            cells = []
            for k in HEADLINE:
                d = summary["paired"][p][s].get(k)
                cells.append("–" if d is None or d["diff_mean"] is None else
                             f"{_fmt(d['diff_mean'])} [{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}], "
                             f"{d['win_rate']:.0%}")
            lines.append(f"| `{p}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Plots: `kpis.png`, `cdf_ttft.png`, `cdf_e2e.png`, `paired_return.png`.", ""]
    return "\n".join(lines)


def _claim_lines(summary: dict) -> list[str]:
    """The pooled KPIs per policy and each policy's verdict against the baseline."""
    kpi, base = summary["kpi"], summary["baseline"]
    names = [k for k in dict.fromkeys([kpi["primary"], *kpi["secondary"], *kpi["guards"]])
             if k in summary["pooled"][base]]
    lines = [f"## Pooled over the {len(summary['scenarios'])} scenarios", "",
             f"Primary KPI `{kpi['primary']}`" + (f"; guards (no worse than `{base}`): "
                                                  + ", ".join(f"`{g}`" for g in kpi["guards"]) if kpi["guards"] else "")
             + ". Per seed, each KPI is averaged over the scenarios; the difference is paired by seed.", "",
             "| policy | " + " | ".join(names) + " | cut | verdict |", "|---|" + "---|" * (len(names) + 2)]
    for p in summary["policies_order"]:
        cells = []
        for k in names:
            m = summary["pooled"][p][k]
            cell = "–" if m["mean"] is None else f"{_fmt(m['mean'])} [{_fmt(m['ci95'][0])}, {_fmt(m['ci95'][1])}]"
            d = summary["pooled_paired"].get(p, {}).get(k)
            if d and d["diff_mean"] is not None:
                cell += f"; Δ {_fmt(d['diff_mean'])} [{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}], {d['win_rate']:.0%}"
            cells.append(cell)
        lines.append(f"| `{p}` | " + " | ".join(cells) + f" | {sum(summary['truncated'][p].values())} | "
                     f"{_verdict_text(summary, p)} |")
    return lines + ["", "`cut`: episodes cut by the backlog limit, scored to their horizon (their unserved "
                    "requests missed, their cost running on).", ""]


def _verdict_text(summary: dict, p: str) -> str:
    if p == summary["baseline"]:
        return "baseline"
    v = summary["verdict"][p]
    why = [f"breaks {', '.join(v['broken_guards'])}"] if v["broken_guards"] else []
    why += [f"on {', '.join(v['collapses_on'])}"] if v.get("collapses_on") else []
    why += [v["note"]] if v.get("note") else []
    return (v["verdict"] or "–") + (f" ({'; '.join(why)})" if why else "")


def _scenario_lines(summary: dict) -> list[str]:
    """The primary KPI per held-out scenario: the robustness half of the verdict."""
    kpi, base = summary["kpi"]["primary"], summary["baseline"]
    others = [p for p in summary["policies_order"] if p in summary.get("per_scenario", {})]
    if not others:
        return []
    lines = [f"## `{kpi}` per scenario", "",
             f"Difference against `{base}` [95% CI]; **collapses** where it is worse by more than "
             f"{claims.COLLAPSE_FRACTION:.0%} of `{base}`'s mean with the interval clear of 0.", "",
             f"| scenario | `{base}` | " + " | ".join(f"`{p}`" for p in others) + " |",
             "|---|---|" + "---|" * len(others)]
    for s in summary["scenarios"]:
        cells = []
        for p in others:
            c = summary["per_scenario"][p][s]
            cell = "–" if c["diff_mean"] is None else (
                f"{_fmt(c['mean'])}; Δ {_fmt(c['diff_mean'])} [{_fmt(c['ci95'][0])}, {_fmt(c['ci95'][1])}]")
            cells.append(cell + (" **collapses**" if c["collapses"] else ""))
        b = next(iter(summary["per_scenario"].values()))[s]["baseline_mean"]
        lines.append(f"| `{s}` | {_fmt(b)} | " + " | ".join(cells) + " |")
    return lines + [""]


# ---- plots ---------------------------------------------------------------------------------------
def plots(out: Path, table, results: list[dict], summary: dict) -> list[str]:
    return kpi_plots(out, table, summary) + cdf_plots(out, results, summary)


def kpi_plots(out: Path, table, summary: dict) -> list[str]:
    """kpis.png and paired_return.png: from results.csv's table and the summary alone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "blis-gym"})
    policies, scenarios = summary["policies_order"], summary["scenarios"]
    written = []

    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(2.6 * len(HEADLINE), 2.8 + 0.15 * len(policies)))
    for ax, k in zip(axes, HEADLINE):
        for i, p in enumerate(policies):
            xs, ms, err = [], [], [[], []]
            for j, s in enumerate(scenarios):
                m = summary["policies"][p][s].get(k)
                if m is None or m["mean"] is None:
                    continue
                xs.append(j + (i - (len(policies) - 1) / 2) * 0.8 / max(len(policies), 1))
                ms.append(m["mean"])
                err[0].append(m["mean"] - m["ci95"][0])
                err[1].append(m["ci95"][1] - m["mean"])
            ax.errorbar(xs, ms, yerr=err, fmt="o", ms=3, capsize=2, label=_short(p))
        ax.set_title(k)
        if k.endswith("_ms"):
            ax.set_yscale("log")                 # latencies of good and bad policies differ by 100x
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=30, ha="right")
    _legend(axes[0])
    fig.suptitle(f"{summary['env_id']}: mean over seeds, 95% CI")
    written.append(_save(fig, out / "kpis.png"))

    others = [p for p in policies if p != summary["baseline"]]
    if others:
        fig, axes = plt.subplots(1, len(scenarios), figsize=(3.6 * len(scenarios), 3), squeeze=False)
        for ax, s in zip(axes[0], scenarios):
            base = table[(table.policy == summary["baseline"]) & (table.scenario == s)].set_index("seed")["return"]
            for p in others:
                mine = table[(table.policy == p) & (table.scenario == s)].set_index("seed")["return"]
                d = (mine - base).dropna()
                line, = ax.plot(d.index, d.values, "o-", ms=3, label=_short(p))
                lo, hi = summary["paired"][p][s]["return"]["ci95"]
                if lo is not None:
                    ax.axhspan(lo, hi, color=line.get_color(), alpha=0.15)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_title(s)
            ax.set_xlabel("seed")
            ax.xaxis.get_major_locator().set_params(integer=True)      # seeds are whole numbers
        axes[0][0].set_ylabel(f"return − {_short(summary['baseline'])}")
        _legend(axes[0][0])
        written.append(_save(fig, out / "paired_return.png"))
    return written


def cdf_plots(out: Path, results: list[dict], summary: dict) -> list[str]:
    """cdf_ttft.png and cdf_e2e.png: every completed request's latency, per policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "blis-gym"})
    policies, scenarios = summary["policies_order"], summary["scenarios"]
    written = []
    for key, name in (("ttft_ms", "TTFT"), ("e2e_ms", "E2E latency")):
        fig, axes = plt.subplots(1, len(scenarios), figsize=(3.6 * len(scenarios), 3), squeeze=False)
        for ax, s in zip(axes[0], scenarios):
            for p in policies:
                import numpy as np
                v = [r[key] for r in results if r["row"]["policy"] == p and r["row"]["scenario"] == s]
                v = np.sort(np.concatenate(v)) if v else np.zeros(0)
                if len(v):
                    ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=_short(p))
            ax.set_xscale("log")
            ax.set_xlabel(f"{name} (ms)")
            ax.set_title(s)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("fraction of completed requests")
        _legend(axes[0][0])
        fig.suptitle(f"{summary['env_id']}: {name} CDF per policy, all seeds", fontsize=8)
        written.append(_save(fig, out / f"cdf_{key.split('_')[0]}.png"))

    return written


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def _short(p: str) -> str:
    return Path(p).name if p.endswith((".zip", ".pt2")) else p


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path.name
