"""agents/analysis.py, the script behind docs/results.md's figures on training and validation
data: a rule that follows the built-in policy reproduces that heuristic's KPI exactly."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from click.testing import CliRunner

AGENTS = Path(__file__).resolve().parent.parent / "agents"


def test_following_the_built_in_policy_reproduces_the_heuristic_on_every_training_scenario(monkeypatch):
    monkeypatch.syspath_prepend(str(AGENTS))           # as `python agents/analysis.py` runs
    sys.modules.pop("analysis", None)
    import analysis
    r = CliRunner().invoke(analysis.main, ["rules", "blis_gym/PDDecider-v0", "train", "0-0", "never", "rules:follow",
                                           "--residual-over", "never"])
    assert r.exit_code == 0, r.output
    kpi = {}
    for line in r.output.splitlines():
        scenario, policy, _, value = line.split()[:4]
        kpi.setdefault(scenario, {})[policy] = float(value)
    assert set(kpi) == {"base", "rag-3k-1.5", "rag-6k-1", "codegen-0.2", "pooled"}
    assert all(v["never"] == v["rules:follow"] for v in kpi.values())
    assert kpi["base"]["never"] > 0 and re.search(r"\(1 seeds\)", r.output)
