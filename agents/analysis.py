"""The figures docs/results.md quotes about the residual agents, from training and validation
data only (never the held-out split):

    python agents/analysis.py follow blis_gym/Router-v0 agents/router_residual_maskableppo.zip
    python agents/analysis.py rules blis_gym/PDDecider-v0 train 0-9 never rules:pd_uncached_4000

`follow`: over one validation episode per validation scenario (seed 5000, played greedily), how
often a residual checkpoint departs from its heuristic and the probability it gives "follow".
`rules`: policies (heuristic names, checkpoints or module:function, as `blis-gym eval` takes
them) played on the training or validation scenarios of an env's split, the primary KPI per
scenario and pooled. The rules are in `agents/rules.py` (`rules:NAME`).
"""
from __future__ import annotations

import collections

import click
import numpy as np


def _split_configs(env_id: str, part: str) -> tuple[dict, list]:
    from blis_gym.envs.config import load_spec
    from blis_gym.harness.split import spec_name, spec_split
    spec = load_spec(spec_name(env_id))
    split = spec_split(env_id)
    scenarios = split.train.scenarios if part == "train" else (split.validation.scenarios or split.train.scenarios)
    return spec, scenarios


@click.group()
def main():
    """Figures about the residual agents, on training and validation data."""


@main.command()
@click.argument("env_id")
@click.argument("checkpoint")
@click.option("--seed", default=5000, show_default=True, help="A validation seed.")
def follow(env_id: str, checkpoint: str, seed: int):
    """How often CHECKPOINT (a residual policy) departs from its heuristic."""
    import gymnasium as gym
    import torch

    import blis_gym  # noqa: F401
    from blis_gym.envs.config import merge_config
    from blis_gym.harness.policies import parse_policy
    if not checkpoint.endswith(".zip"):
        raise click.BadParameter(f"a residual SB3 checkpoint (.zip) is needed, got {checkpoint!r}")
    spec, scenarios = _split_configs(env_id, "validation")
    policy = parse_policy(checkpoint, spec["slot"])
    for entry in scenarios:
        env = gym.make(env_id, config=policy.env_config(merge_config(spec["config"], entry.env_config(spec["config"]))))
        net = policy.network(env)
        act = policy.actor(env, seed)
        u = env.unwrapped
        obs, info = env.reset(seed=seed)
        p_follow, departures = [], 0
        while True:
            with torch.no_grad():
                masks = {"action_masks": u.action_masks()} if policy.algo == "maskableppo" else {}
                dist = net.get_distribution(net.obs_to_tensor(obs)[0], **masks)
                p_follow.append(float(dist.distribution.probs[0, 0]))
            a = act(obs, info)
            departures += a != 0
            obs, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                break
        env.close()
        click.echo(f"{entry.name}: {len(p_follow):,} decisions, {departures} greedy departures, "
                   f"P(follow) mean {np.mean(p_follow):.4f}, min {np.min(p_follow):.4f}")


@main.command()
@click.argument("env_id")
@click.argument("part", type=click.Choice(["train", "validation"]))
@click.argument("seeds")
@click.argument("policies", nargs=-1, required=True)
@click.option("--residual-over", default=None, help="Make the scenario's built-in policy this heuristic "
              "(what agents.rules' functions build on), as a residual recipe's scenario_overrides do.")
@click.option("--decide", default=None, help="decide_classes, comma-separated (e.g. critical).")
def rules(env_id: str, part: str, seeds: str, policies: tuple[str, ...], residual_over: str | None,
          decide: str | None):
    """POLICIES on the PART scenarios of ENV_ID's split, seeds FIRST-LAST: the primary KPI."""
    from blis_gym.envs.config import merge_data
    from blis_gym.harness.claims import spec_kpis
    from blis_gym.harness.evaluate import Job, evaluate, parse_seeds
    spec, scenarios = _split_configs(env_id, part)
    slot, kpi = spec["slot"], spec_kpis(env_id).primary
    over = {"admission": {"gateway": {"admission": residual_over}},
            "pd": {"pd": {"decider": residual_over}}}.get(slot, {}) if residual_over else {}
    jobs = []
    for p in policies:
        for entry in scenarios:
            cfg = entry.env_config(spec["config"])
            cfg = {**cfg, "scenario_overrides": merge_data(cfg.get("scenario_overrides") or {}, over)}
            if decide:
                cfg["decide_classes"] = decide.split(",")
            jobs += [Job(env_id, slot, p, entry.name, cfg, s) for s in parse_seeds(seeds)]
    table = collections.defaultdict(list)
    for res in evaluate(jobs, quiet=True):
        table[res["row"]["policy"], res["row"]["scenario"]].append(res["row"][kpi])
    for entry in scenarios:
        for p in policies:
            click.echo(f"{entry.name:24s} {p:40s} {kpi} {np.mean(table[p, entry.name]):.4f}")
    for p in policies:
        pooled = np.mean([table[p, e.name] for e in scenarios], axis=0)
        click.echo(f"pooled {p:40s} {kpi} {pooled.mean():.4f} ({len(pooled)} seeds)")


if __name__ == "__main__":
    main()
