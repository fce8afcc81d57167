"""`blis-gym eval` and `blis-gym train` (registered in blis_gym/cli/__init__.py).

Only click is imported here: gymnasium, torch, SB3, pandas and matplotlib load inside the
commands, so `blis-gym --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path

import click

from .common import fail, note_seed


@click.command("eval")
@click.argument("env_id")
@click.option("--policy", "policies", multiple=True, required=True,
              help="A heuristic of the slot by name, 'random', a checkpoint .zip, an exported policy .pt2, "
                   "or module:function (repeat).")
@click.option("--baseline", default=None, help="The policy every other is paired with (default: the first).")
@click.option("--seeds", default=None, help="FIRST-LAST (inclusive) or one seed (default: the spec's eval seeds).")
@click.option("--scenario", "scenarios", multiple=True,
              help="A bundled scenario name or a YAML file (repeat; default: the spec's held-out eval scenarios).")
@click.option("--workers", type=int, default=None, help="Parallel episodes (default: the machine's cores).")
@click.option("--backend", default="process", show_default=True, help="process, or ray (the ray extra).")
@click.option("--address", default=None, help="Ray cluster address (default: a local Ray instance).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for results.csv, summary.json, report.md and the plots (default: results/eval/<env>).")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def eval_command(env_id, policies, baseline, seeds, scenarios, workers, backend, address, out_dir, quiet):
    """Evaluate policies on ENV_ID (e.g. blis_gym/Router-v0) on the same seeds (common random
    numbers), paired against --baseline, with 95% confidence intervals."""
    from ..errors import ConfigError
    out_dir = out_dir or Path("results") / "eval" / env_id.rsplit("/", 1)[-1]
    try:
        import blis_gym.envs  # noqa: F401  (registers the ids)
        from ..harness.claims import spec_kpis
        from ..harness.evaluate import evaluate, parse_seeds, plan
        from ..harness.report import write_all
        policies = list(policies)
        baseline = baseline or policies[0]
        if baseline not in policies:
            raise ConfigError("--baseline", f"must be one of the --policy values ({', '.join(policies)}), "
                              f"got {baseline!r}")
        seed_list = parse_seeds(seeds) if seeds is not None else None
        jobs, labels, seed_list = plan(env_id, policies, seed_list, list(scenarios) or None)
        _warn_few_seeds(len(seed_list))
        kpis = spec_kpis(env_id)
        if len(seed_list) > 1 and not quiet:
            _note_seeds(env_id, jobs)
        results = evaluate(jobs, workers=workers, backend=backend, address=address, quiet=quiet)
        written = write_all(out_dir, results, env_id=env_id, policies=policies, baseline=baseline,
                            scenarios=labels, seeds=seed_list, kpis=kpis)
    except ConfigError as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out: cannot write {out_dir}: {e.strerror}")
    if not quiet:
        _print_table(out_dir, policies, baseline, labels)
        click.echo(f"wrote {out_dir}/: {', '.join(written)}")


def _warn_few_seeds(n: int) -> None:
    from ..harness.claims import MIN_SEEDS, TOO_FEW
    if n < MIN_SEEDS:
        click.echo(f"warning: {n} seed{'s' * (n != 1)}, fewer than {MIN_SEEDS}: every verdict will be "
                   f"'{TOO_FEW}' (use --seeds with at least {MIN_SEEDS}, 20 is better)", err=True)


def _note_seeds(env_id: str, jobs) -> None:
    """One note per evaluation scenario whose workload no seed changes."""
    from ..envs.config import load_scenario_for, load_spec, merge_config
    from ..harness.split import spec_name
    spec_config = load_spec(spec_name(env_id))["config"]
    done = set()
    for job in jobs:
        if job.scenario not in done:
            done.add(job.scenario)
            note_seed(f"scenario {job.scenario}", load_scenario_for(merge_config(spec_config, job.config))[2].workload)


def _print_table(out_dir: Path, policies, baseline, labels) -> None:
    """The primary KPI per scenario and pooled, paired against the baseline, with the verdict."""
    import json

    from rich.console import Console
    from rich.table import Table
    s = json.loads((out_dir / "summary.json").read_text())
    kpi = s["kpi"]["primary"]
    t = Table(title=f"{kpi}: mean [95% CI]; paired difference against {baseline} [95% CI], win rate")
    for col in ("scenario", "policy", kpi, "difference", "wins", "verdict"):
        t.add_column(col)

    def row(sc, p, m, d, verdict=""):
        diff = wins = ""
        if d is not None and d["diff_mean"] is not None:
            diff = f"{d['diff_mean']:+.4g} [{d['ci95'][0]:+.4g}, {d['ci95'][1]:+.4g}]"
            wins = f"{d['win_rate']:.0%}"
        mean = "–" if m is None or m["mean"] is None else f"{m['mean']:.4g} [{m['ci95'][0]:.4g}, {m['ci95'][1]:.4g}]"
        t.add_row(sc, p, mean, diff, wins, verdict)

    for sc in labels:
        for p in policies:
            row(sc, p, s["policies"][p][sc].get(kpi), s["paired"].get(p, {}).get(sc, {}).get(kpi))
    from ..harness.report import _verdict_text
    for p in policies:
        row("pooled", p, s["pooled"][p].get(kpi), s["pooled_paired"].get(p, {}).get(kpi), _verdict_text(s, p))
    Console().print(t)


@click.command("train")
@click.argument("env_id", required=False)
@click.option("--algo", default=None,
              help="maskableppo, ppo, a2c or dqn (required unless --config gives it).")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A recipe YAML (agents/<slot>.yaml, or a DIR/train.yaml to train it again).")
@click.option("--steps", type=int, default=None, help="Environment steps to train for.")
@click.option("--seed", type=int, default=None, help="Training seed (default 0).")
@click.option("--n-envs", type=int, default=None, help="Environment copies (subprocess workers; default 4).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for model.zip, train.yaml, progress.csv and the learning curve.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(env_id, algo, config, steps, seed, n_envs, out_dir, quiet):
    """Train a policy for ENV_ID with SB3 / sb3-contrib (the rl extra), or on Ray RLlib with a
    recipe's `backend: rllib` (the rllib extra), keeping the checkpoint that does best on the
    spec's held-out validation seeds."""
    from ..errors import ConfigError
    try:
        if config is not None and not config.is_file():
            raise ConfigError("--config", f"no recipe file {str(config)!r}")
        import blis_gym.envs  # noqa: F401
        from ..harness.recipe import load_recipe
        from ..harness.train import train
        recipe = load_recipe(config, env_id=env_id, algo=algo, steps=steps, seed=seed, n_envs=n_envs)
        result = train(recipe, out_dir, quiet=quiet)
    except ConfigError as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out: cannot write {out_dir}: {e.strerror}")
    if not quiet:
        ws = result["warm_start"]
        if ws is not None:
            per = ", ".join(f"{a}: {r:.1%}" for a, r in sorted(ws["recall"].items()))
            click.echo(f"warm start: the clone picks the heuristic's action on {ws['agreement']:.1%} of "
                       f"{ws['samples']} decisions (per action {per}), with probability "
                       f"{ws['p_demonstrated']:.3f} on average")
        for line in _train_notes(recipe, result):
            click.echo(line)
        click.echo(f"wrote {out_dir}/: {', '.join(result['written'])}")


def _train_notes(recipe, result: dict) -> list[str]:
    """What a short or unusual run should say: steps trained beyond those asked (whole
    rollouts), and why there is no validation return."""
    lines = []
    done, rollout = result["steps_trained"], result["rollout_steps"]
    if done > recipe.steps:
        lines.append(f"trained {done:,} steps ({recipe.steps:,} asked): {recipe.algo} learns from whole rollouts "
                     f"of {rollout:,} steps")
    best = result["best_validation_return"]
    model = result["written"][0]
    if best is not None:
        lines.append(f"best validation return: {best:.1f} ({model} is that model)")
    elif recipe.eval_freq == 0:
        lines.append(f"no validation (eval_freq: 0): {model} is the last model")
    else:
        lines.append(f"no validation yet: it runs every {recipe.eval_freq:,} steps (eval_freq) and training "
                     f"stopped at {done:,}; {model} is the last model")
    return lines
