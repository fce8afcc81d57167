"""The claim an evaluation supports: the slot's primary KPI, pooled over the held-out scenarios,
paired by seed against the baseline, with guards that must not get worse.

An env spec names its KPIs (`kpi:` in `envs/*.yaml`):

    kpi:
      primary: critical.goodput_rps        # the column of results.csv the claim is about
      secondary: [critical.ttft_p90_ms]    # reported beside it
      guards: [sheddable.rejection_rate]   # must be no worse than the baseline's

Pooling: per seed, the mean of the KPI over the evaluated scenarios (each scenario counts
equally), so a seed is one paired observation across every held-out workload. The verdict
against the baseline is

- `wins`: the paired 95% interval of the primary KPI lies entirely on the better side of 0 and
  no guard's mean difference is on its worse side;
- `loses`: the interval lies entirely on the worse side of 0;
- `ties` otherwise (a win on the primary KPI that breaks a guard is a tie, with the guard named).
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
        from .evaluate import CLASS_KPIS, KPIS
        for name in [v] if isinstance(v, str) else v:
            base = name.rsplit(".", 1)[-1]
            if not (base in KPIS and ("." not in name or base in CLASS_KPIS)):
                raise ValueError(f"unknown KPI {name!r}; allowed: {', '.join(KPIS)}, or <class>.<kpi> for "
                                 f"{', '.join(CLASS_KPIS)}")
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


def pooled(table, *, policies: list[str], baseline: str, scenarios: list[str], kpis: KpiSpec) -> dict:
    """summary.json's `kpi`, `pooled` ({policy: {kpi: mean_ci}}), `pooled_paired` ({policy: {kpi:
    paired}}) and `verdict` ({policy: {verdict, primary, broken_guards}}) entries."""
    from .evaluate import higher_is_better
    out: dict = {"kpi": kpis.model_dump(), "pooled": {}, "pooled_paired": {}, "verdict": {}}
    names = [k for k in kpis.names if k in table.columns]
    base = {k: pooled_values(table, baseline, scenarios, k) for k in names}
    for p in policies:
        mine = {k: pooled_values(table, p, scenarios, k) for k in names}
        out["pooled"][p] = {k: stats.mean_ci(v) for k, v in mine.items()}
        if p == baseline:
            continue
        pair = {k: stats.paired(mine[k], base[k], higher_is_better(k)) for k in names}
        out["pooled_paired"][p] = pair
        out["verdict"][p] = verdict(pair, kpis)
    return out


def verdict(pair: dict, kpis: KpiSpec) -> dict:
    """wins / ties / loses on the primary KPI (see the module doc)."""
    d = pair.get(kpis.primary)
    if d is None:
        return {"verdict": None, "kpi": kpis.primary, "broken_guards": [],
                "note": "the primary KPI is undefined on these scenarios"}
    broken = [g for g in kpis.guards if _side(pair.get(g), mean=True) < 0]
    side = _side(d)
    word = "wins" if side > 0 and not broken else "loses" if side < 0 else "ties"
    return {"verdict": word, "kpi": kpis.primary, "broken_guards": broken}


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
