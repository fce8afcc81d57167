"""Load sweep of the P/D deciders on the bundled P/D workloads (the table in
docs/pd-and-autoscaling.md).

    python benchmarks/pd_sweep.py                  # chat and codegen, a markdown table
    python benchmarks/pd_sweep.py chat --rates 2,10

Each row runs `scenarios/pd-<workload>-edpp.yaml` at one arrival rate (new sessions per
second) with its decider replaced by `never`, `prefix-threshold` N = 16 and the file's EDPP.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATES = {"chat": [2, 6, 10, 16], "codegen": [0.1, 0.2, 0.3, 0.4]}


def run(workload: str, rate: float, decider) -> dict:
    from blis_gym.errors import read_yaml
    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation

    data = read_yaml(ROOT / "scenarios" / f"pd-{workload}-edpp.yaml", "scenario")
    data["workload"]["rate"] = rate
    if decider is not None:
        data["pd"]["decider"] = decider
    return Simulation(build(parse_scenario(data))).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", metavar="WORKLOAD", help="chat, codegen (default: both)")
    ap.add_argument("--rates", help="comma-separated session rates (default: per workload)")
    a = ap.parse_args()
    for w in a.workloads:
        if w not in RATES:
            ap.error(f"unknown workload {w!r}; allowed: {', '.join(RATES)}")
    print("| workload | sessions/s | never `ttft_mean_ms` | threshold16 | edpp | edpp `pd.disaggregated_fraction` |")
    print("|---|---|---|---|---|---|")
    for w in a.workloads or RATES:
        rates = [float(x) for x in a.rates.split(",")] if a.rates else RATES[w]
        for rate in rates:
            never = run(w, rate, "never")
            thr = run(w, rate, {"policy": "prefix-threshold", "threshold": 16})
            edpp = run(w, rate, None)
            print(f"| {w} | {rate:g} | {never['ttft_mean_ms']:.1f} | {thr['ttft_mean_ms']:.1f} | "
                  f"{edpp['ttft_mean_ms']:.1f} | {edpp['pd']['disaggregated_fraction']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
