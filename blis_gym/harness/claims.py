"""The claim an evaluation supports: the slot's primary KPI, pooled over the held-out scenarios,
paired by seed against the baseline, with guards that must not get worse.

An env spec names its KPIs (`kpi:` in `envs/*.yaml`):

    kpi:
      primary: critical.goodput_rps        # the column of results.csv the claim is about
      secondary: [critical.ttft_p90_ms]    # reported beside it
      guards: [sheddable.rejection_rate]   # must be no worse than the baseline's

Pooling: per seed, the mean of the KPI over the evaluated scenarios (each scenario counts
equally), so a seed is one paired observation across every held-out workload. The verdict of a
policy against the baseline is, in this order:

- `too few seeds`: fewer than 10 seeds (`MIN_SEEDS`): no firm claim either way;
- `collapses`: on some scenario the policy is worse than the baseline on the primary KPI by
  more than 10% of the baseline's mean (`COLLAPSE_FRACTION`), with the paired 95% interval of
  the difference clear of 0: a policy that wins on the pool but falls apart on one held-out
  workload is not better;
- `wins`: the paired 95% interval of the pooled primary KPI lies entirely on the better side of
  0, no guard's mean difference is on its worse side, and the policy's episodes were cut (by
  the backlog limit) no more often than the baseline's;
- `loses`: the interval lies entirely on the worse side of 0;
- `ties` otherwise (a win on the primary KPI that breaks a guard, or with more cut episodes, is
  a tie, with the reason named).

`per_scenario` keeps, per policy and scenario, the primary KPI's means, the paired difference
and whether it collapses there; `truncated` the number of cut episodes per policy and scenario.
"""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import pydantic_error
from . import stats


class KpiSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary: str = "return"
    secondary: list[str] = Field(default_factory=list)
    guards: list[str] = Field(default_factory=list)

    @field_validator("primary", "secondary", "guards")
    @classmethod
    def _known(cls, v):
        from .kpi_names import CLASS_KPIS, KPIS, OPTIONAL_KPIS
        for name in [v] if isinstance(v, str) else v:
            base = name.rsplit(".", 1)[-1]
            if not (base in KPIS and ("." not in name or base in CLASS_KPIS)
                    or name in OPTIONAL_KPIS):
                raise ValueError(f"unknown KPI {name!r}; allowed: {', '.join([*KPIS, *OPTIONAL_KPIS])}, or "
                                 f"<class>.<kpi> for {', '.join(CLASS_KPIS)}")
        return v

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([self.primary, *self.secondary, *self.guards, "return"]))


def spec_kpis(env_id: str) -> KpiSpec:
    """The KPI contract of a registered environment (return alone when its spec names none)."""
    from ..envs.config import load_spec
    from .split import spec_name
    data: Optional[dict] = load_spec(spec_name(env_id)).get("kpi")
    try:
        return KpiSpec.model_validate(data or {})
    except ValidationError as e:
        raise pydantic_error(e, f"{spec_name(env_id)}.kpi", root=KpiSpec) from None


def pooled_values(table, policy: str, scenarios: list[str], kpi: str) -> list[Optional[float]]:
    """Per seed (in seed order), the mean of `kpi` over `scenarios`; None where a scenario
    leaves it undefined."""
    rows = table[(table.policy == policy) & table.scenario.isin(scenarios)]
    wide = rows.pivot(index="seed", columns="scenario", values=kpi).sort_index()
    return [None if r.isna().any() else float(r.mean()) for _, r in wide.iterrows()]


MIN_SEEDS = 10
COLLAPSE_FRACTION = 0.10
TOO_FEW = "too few seeds"
VERDICTS = ("wins", "ties", "loses", "collapses", TOO_FEW)     # every verdict `verdict` gives


def truncated_counts(table, policies: list[str], scenarios: list[str]) -> dict:
    """{policy: {scenario: episodes cut short}} (`harness.scoring.CUT_REASONS`)."""
    from .scoring import CUT_REASONS
    cut = table.end_reason.isin(CUT_REASONS)
    return {p: {s: int((cut & (table.policy == p) & (table.scenario == s)).sum()) for s in scenarios}
            for p in policies}


def pooled(table, *, policies: list[str], baseline: str, scenarios: list[str], kpis: KpiSpec,
           n_seeds: int | None = None) -> dict:
    """summary.json's `kpi`, `pooled` ({policy: {kpi: mean_ci}}), `pooled_paired` ({policy: {kpi:
    paired}}), `per_scenario`, `truncated` and `verdict` ({policy: {verdict, ...}}) entries."""
    from .kpi_names import has_range, higher_is_better
    n_seeds = n_seeds if n_seeds is not None else table.seed.nunique()
    out: dict = {"kpi": kpis.model_dump(), "pooled": {}, "pooled_paired": {}, "per_scenario": {},
                 "truncated": truncated_counts(table, policies, scenarios), "verdict": {}}
    names = [k for k in kpis.names if k in table.columns]
    base = {k: pooled_values(table, baseline, scenarios, k) for k in names}
    for p in policies:
        mine = {k: pooled_values(table, p, scenarios, k) for k in names}
        out["pooled"][p] = {k: stats.mean_ci(v, bounded=has_range(k)) for k, v in mine.items()}
        if p == baseline:
            continue
        pair = {k: stats.paired(mine[k], base[k], higher_is_better(k)) for k in names}
        out["pooled_paired"][p] = pair
        if kpis.primary in table.columns:
            out["per_scenario"][p] = {s: scenario_check(table, p, baseline, s, kpis.primary) for s in scenarios}
        cuts = (sum(out["truncated"][p].values()), sum(out["truncated"][baseline].values()))
        out["verdict"][p] = verdict(pair, kpis, n_seeds=n_seeds, per_scenario=out["per_scenario"].get(p, {}),
                                    truncated=cuts)
    return out


def scenario_check(table, policy: str, baseline: str, scenario: str, kpi: str) -> dict:
    """The primary KPI on one scenario: both means, the paired difference and whether the
    policy collapses there (worse by more than COLLAPSE_FRACTION of the baseline's mean, the
    interval clear of 0)."""
    from .kpi_names import higher_is_better
    def values(p):
        rows = table[(table.policy == p) & (table.scenario == scenario)].sort_values("seed")
        return [None if v is None or v != v else float(v) for v in rows[kpi]]
    mine, base = values(policy), values(baseline)
    d = stats.paired(mine, base, higher_is_better(kpi))
    b = stats.mean_ci(base)["mean"]
    worse = _side(d) < 0 and b is not None and abs(d["diff_mean"]) > COLLAPSE_FRACTION * abs(b)
    return {"mean": stats.mean_ci(mine)["mean"], "baseline_mean": b, "diff_mean": d["diff_mean"],
            "ci95": d["ci95"], "n": d["n"], "collapses": bool(worse)}


def verdict(pair: dict, kpis: KpiSpec, *, n_seeds: int = MIN_SEEDS, per_scenario: dict | None = None,
            truncated: tuple[int, int] = (0, 0)) -> dict:
    """The verdict on the primary KPI (see the module doc), with what decided it."""
    collapsed = [s for s, c in (per_scenario or {}).items() if c["collapses"]]
    out = {"verdict": None, "kpi": kpis.primary, "broken_guards": [], "collapses_on": collapsed,
           "truncated": truncated[0], "baseline_truncated": truncated[1]}
    d = pair.get(kpis.primary)
    if d is None:
        return {**out, "note": "the primary KPI is undefined on these scenarios"}
    broken = [g for g in kpis.guards if _side(pair.get(g), mean=True) < 0]
    side = _side(d)
    more_cuts = truncated[0] > truncated[1]
    if n_seeds < MIN_SEEDS:
        word = TOO_FEW
    elif collapsed:
        word = "collapses"
    elif side > 0 and not broken and not more_cuts:
        word = "wins"
    else:
        word = "loses" if side < 0 else "ties"
    out.update(verdict=word, broken_guards=broken)
    if word == "ties" and side > 0 and more_cuts:
        out["note"] = "cut by the backlog limit more often than the baseline"
    return out


def _side(d: Optional[dict], mean: bool = False) -> int:
    """+1 if the paired difference is on the better side of 0 (its whole interval, or its mean),
    -1 if on the worse side, 0 if undecided."""
    if not d or d["diff_mean"] is None:
        return 0
    sign = 1 if d["better"] == "higher" else -1
    if mean:
        return (d["diff_mean"] * sign > 0) - (d["diff_mean"] * sign < 0)
    lo, hi = (x * sign for x in d["ci95"])
    lo, hi = min(lo, hi), max(lo, hi)
    return 1 if lo > 0 else -1 if hi < 0 else 0
