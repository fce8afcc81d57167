"""Speed and memory of the simulator on the reference workloads.

    python benchmarks/speed.py                      # all workloads, a table
    python benchmarks/speed.py single-10k --repeat 3
    python benchmarks/speed.py --json speed.json    # {"workload": {"requests_per_s": x, "peak_rss_mb": y}}
    python benchmarks/speed.py router-env-4 router-env-64   # {"router-env-4": {"steps_per_s": x, "peak_rss_mb": y}}

Each workload runs in its own process, so its peak RSS is its own. `requests_per_s` is the
number of simulated requests divided by the wall time of building and running the simulation
(interpreter start-up and imports excluded); with --repeat the median is reported.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# workload name -> (scenario file, overrides applied to the parsed YAML)
WORKLOADS: dict[str, tuple[str, dict]] = {
    "single-10k": ("scenarios/single-10k.yaml", {}),
    "cluster-4x-10k": ("scenarios/cluster-4x-10k.yaml", {}),
    "cluster-4x-100k-overload": ("scenarios/cluster-4x-10k.yaml",
                                 {"name": "cluster-4x-100k-overload", "workload": {"rate": 100, "num_requests": 100000}}),
    "pd-chat-10k": ("scenarios/pd-chat-threshold16.yaml",
                    {"name": "pd-chat-10k", "workload": {"num_requests": 10000, "horizon_s": None}}),
}


def _router_env(pods: int, requests: int) -> dict:
    """Router environment config: `pods` replicas at moderate load (6 req/s each, ~70% busy),
    short prompts and outputs (128 +- 32 in, 16 +- 4 out)."""
    return {"scenario": "cluster-4xh100-default", "max_backlog": None, "scenario_overrides": {
        "name": f"router-env-{pods}", "cluster": {"instances": pods},
        "workload": {"inference_perf": None, "rate": 6.0 * pods, "arrival": {"process": "poisson"},
                     "input": {"dist": "gaussian", "mean": 128, "std": 32, "min": 8, "max": 512},
                     "output": {"dist": "gaussian", "mean": 16, "std": 4, "min": 2, "max": 64},
                     "num_requests": requests}}}


# environment workloads: name -> (registered id, config); a random valid policy (uniform over the
# action mask) steps one episode; reported as steps_per_s (decisions per wall-second, reset included)
ENV_WORKLOADS: dict[str, tuple[str, dict]] = {
    "router-env-4": ("blis_gym/Router-v0", _router_env(4, 20000)),
    "router-env-64": ("blis_gym/Router-v0", _router_env(64, 40000)),
}


def run_env(name: str) -> dict:
    import random

    import gymnasium as gym

    import blis_gym  # noqa: F401  (registers the environments)

    env_id, config = ENV_WORKLOADS[name]
    env = gym.make(env_id, config=config)
    rng = random.Random(0)
    u = env.unwrapped
    t0 = time.perf_counter()
    env.reset(seed=42)
    steps, done, info = 0, False, {}
    while not done:
        mask = u.action_masks()
        valid = mask.nonzero()[0]
        _, _, terminated, truncated, info = env.step(int(valid[int(rng.random() * len(valid))]))
        steps += 1
        done = terminated or truncated
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = info["summary"]
    return {"requests": s["injected_requests"], "steps": steps, "wall_s": wall, "steps_per_s": steps / wall,
            "requests_per_s": s["injected_requests"] / wall, "peak_rss_mb": peak_kb / 1024,
            "simulated_s": s["duration_s"]}


def merge(base: dict, over: dict) -> dict:
    """`over` merged into `base` recursively; a None value deletes the key."""
    from blis_gym.envs.config import merge_data
    return merge_data(base, over)


def run_one(name: str) -> dict:
    import yaml

    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation

    if name in ENV_WORKLOADS:
        return run_env(name)
    path, overrides = WORKLOADS[name]
    data = merge(yaml.safe_load((ROOT / path).read_text()), overrides)
    sc = parse_scenario(data)
    t0 = time.perf_counter()
    sim = Simulation(build(sc, base_dir=(ROOT / path).parent))
    summary = sim.run()
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"requests": summary["injected_requests"], "wall_s": wall,
            "requests_per_s": summary["injected_requests"] / wall, "peak_rss_mb": peak_kb / 1024,
            "simulated_s": summary["duration_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", help=f"subset of: {', '.join([*WORKLOADS, *ENV_WORKLOADS])}")
    ap.add_argument("--repeat", type=int, default=1, help="runs per workload (median reported)")
    ap.add_argument("--json", type=Path, help="write the results to this file")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    known = [*WORKLOADS, *ENV_WORKLOADS]
    names = args.workloads or known
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown workload {unknown[0]!r}; known: {', '.join(known)}")
    results = {}
    print(f"{'workload':<28}{'requests':>10}{'wall s':>9}{'req/s':>11}{'peak MB':>9}{'sim s':>10}")
    for name in names:
        runs = []
        for _ in range(args.repeat):
            p = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"{name} failed:\n{p.stderr}")
            runs.append(json.loads(p.stdout))
        rate = statistics.median(r["requests_per_s"] for r in runs)
        rss = max(r["peak_rss_mb"] for r in runs)
        r0 = runs[0]
        print(f"{name:<28}{r0['requests']:>10}{statistics.median(r['wall_s'] for r in runs):>9.2f}"
              f"{rate:>11.0f}{rss:>9.0f}{r0['simulated_s']:>10.1f}")
        results[name] = {"requests_per_s": round(rate, 1), "peak_rss_mb": round(rss, 1)}
        if name in ENV_WORKLOADS:
            steps = statistics.median(r["steps_per_s"] for r in runs)
            print(f"{'':<28}{r0['steps']:>10} steps{steps:>15.0f} steps/s")
            results[name] = {"steps_per_s": round(steps, 1), "peak_rss_mb": round(rss, 1)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
