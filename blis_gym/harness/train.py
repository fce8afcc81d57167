"""Training: SB3 / sb3-contrib on vector environments, with held-out validation.

A recipe (YAML: the shipped ones are `agents/<slot>.yaml`; `blis-gym train` writes the one it
ran as `DIR/train.yaml`) names the environment, the algorithm, its hyperparameters and the
seeds. Training episodes reset with seeds drawn from the spec's `split.train.seeds`, each on
one of `split.train.scenarios` drawn at random (a mix of workloads the eval scenarios do not
contain: domain randomisation, so the policy cannot learn one load by heart); every
`eval_freq` steps the policy plays the `split.validation.seeds` on the validation scenarios (full
episodes, deterministic) and the best checkpoint so far is kept as `DIR/model.zip`
(`DIR/last.zip` is the final one).
DIR also gets `progress.csv` (SB3's log), `learning_curve.png`, TensorBoard logs when
tensorboard is installed, and `train.yaml`, from which `blis-gym train --config DIR/train.yaml`
trains the same model again.

The router under MaskablePPO uses `blis_gym.harness.pod_network.PodPolicy` (`policy: auto`), the
per-pod network that also plays clusters of another size.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

from ..errors import ConfigError, require_extra
from .learning_curve import draw_learning_curve
from .recipe import Recipe, write_recipe
from .training_envs import full_episode_configs, make_train_env, make_validation_env, train_configs, validation_configs


# ---- training ------------------------------------------------------------------------------------
def train(recipe: Recipe, out: Path, *, quiet: bool = False) -> dict:
    """Train as the recipe says; write DIR's files; return what was written and the best
    validation return."""
    import functools

    from .. import __version__
    from ..envs.config import load_spec
    from .split import spec_name, spec_split

    spec = load_spec(spec_name(recipe.env_id))
    slot = spec["slot"]
    split = spec_split(recipe.env_id) if "split" in spec else None
    if split is None and (recipe.train_seeds is None or recipe.validation_seeds is None):
        spec_split(recipe.env_id)                    # the one-line error: no split to take seeds from
    train_seeds = recipe.train_seeds or split.train.seeds
    lo, hi = recipe.validation_seeds or split.validation.seeds
    val_seeds = list(range(lo, hi + 1))
    if recipe.backend == "rllib":
        from .rllib import check_recipe
        check_recipe(recipe)
        policy = None
    else:
        policy = _check_sb3_recipe(recipe, slot)
    configs = train_configs(recipe, spec, split)
    if recipe.warm_start is not None:
        from .warm_start import heuristic
        heuristic(recipe.warm_start.policy, slot)
    for c in configs:
        gym.make(recipe.env_id, config=c).close()                     # a bad env_config fails here, in one line

    out.mkdir(parents=True, exist_ok=True)
    record = recipe.model_copy(update={"package_version": __version__, "train_seeds": tuple(train_seeds),
                                       "validation_seeds": (val_seeds[0], val_seeds[-1])})
    write_recipe(record, out / "train.yaml")
    if recipe.backend == "rllib":
        from .rllib import train_rllib
        return train_rllib(recipe, configs, train_seeds, val_seeds, out, quiet=quiet)

    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
    torch.set_num_threads(1)
    make = functools.partial(make_train_env, recipe.env_id, configs, *train_seeds, recipe.reward_scale)
    vec_cls = SubprocVecEnv if recipe.vec_env == "subproc" and recipe.n_envs > 1 else DummyVecEnv
    venv = vec_cls([make] * recipe.n_envs)
    venv.seed(recipe.seed)
    model = _build(recipe, policy, venv)
    if recipe.warm_start is not None:
        from .warm_start import clone, demonstrations
        demo = demonstrations(recipe, spec, configs, train_seeds, model.gamma)
        cloned = clone(model, demo, recipe.warm_start, seed=recipe.seed)
    tb = _has_tensorboard()
    model.set_logger(configure(str(out), ["csv", "tensorboard"] if tb else ["csv"]))
    val_configs = validation_configs(recipe, spec, split, configs)
    callbacks = [_validation_callback(recipe, val_configs, val_seeds, out,
                                      from_start=recipe.warm_start is not None)] if recipe.eval_freq else []
    # validation runs one env in this process whatever the training vector env: SB3 warns of it
    warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
    try:
        model.learn(total_timesteps=recipe.steps, callback=callbacks + ([] if quiet else [_progress(recipe.steps)]))
    finally:
        venv.close()
    model.save(out / "last.zip")
    best = out / "best_model.zip"
    if best.is_file():
        shutil.move(best, out / "model.zip")
    else:
        shutil.copy(out / "last.zip", out / "model.zip")
    written = ["model.zip", "last.zip", "train.yaml", "progress.csv"]
    if draw_learning_curve(out / "progress.csv", out / "learning_curve.png", recipe.env_id):
        written.append("learning_curve.png")
    best_val = callbacks[0].best_mean_reward if callbacks else None
    return {"written": written, "best_validation_return": None if best_val in (None, -np.inf) else float(best_val),
            "tensorboard": tb, "warm_start": cloned if recipe.warm_start is not None else None,
            "steps_trained": int(model.num_timesteps), "rollout_steps": _rollout_steps(model)}


def _check_sb3_recipe(recipe: Recipe, slot: str) -> str:
    """The SB3 policy class name the recipe trains, or a one-line ConfigError."""
    require_extra("rl", "train", "training", "torch", "stable_baselines3", "sb3_contrib")
    if recipe.rllib is not None:
        raise ConfigError("rllib", "settings for backend: rllib; this recipe trains on sb3")
    policy = recipe.policy
    if policy == "auto":
        policy = "pod" if (slot == "router" and recipe.algo == "maskableppo") else "MlpPolicy"
    if slot == "router" and recipe.algo != "maskableppo":
        raise ConfigError("--algo", "the router needs maskableppo: its valid pods change with every request "
                          "(action masks); ppo, a2c and dqn would pick unavailable pods")
    if policy == "pod" and (slot != "router" or recipe.algo != "maskableppo"):
        raise ConfigError("policy", "pod (PodPolicy) is the router's per-pod network, for maskableppo only")
    if recipe.warm_start is not None and recipe.algo == "dqn":
        raise ConfigError("warm_start", "behaviour cloning needs an actor-critic algorithm (ppo, a2c, maskableppo)")
    return policy


def _rollout_steps(model) -> int:
    """The steps SB3 collects between updates, so training stops at a multiple of them:
    n_steps × n_envs for the on-policy algorithms, one step of every env for DQN."""
    return int(getattr(model, "n_steps", 1)) * int(model.n_envs)


def _build(recipe: Recipe, policy: str, venv):
    from stable_baselines3.common.utils import LinearSchedule
    hp = dict(recipe.hyperparameters)
    final = hp.pop("learning_rate_final", None)
    if final is not None:
        hp["learning_rate"] = LinearSchedule(hp.get("learning_rate", 3e-4), final, 1.0)
    kwargs = dict(recipe.policy_kwargs)
    if policy == "pod":
        from .pod_network import PodPolicy, pod_policy_kwargs
        kwargs = pod_policy_kwargs(venv, **kwargs)
        policy = PodPolicy
    if recipe.algo == "maskableppo":
        from sb3_contrib import MaskablePPO as cls
    else:
        import stable_baselines3
        cls = getattr(stable_baselines3, recipe.algo.upper())
    try:
        return cls(policy, venv, seed=recipe.seed, device="cpu", verbose=0, policy_kwargs=kwargs or None, **hp)
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError("hyperparameters", f"{recipe.algo}: {e}") from None


def _validation_callback(recipe: Recipe, configs: list[dict], seeds: list[int], out: Path, *,
                         from_start: bool = False):
    """Every `eval_freq` steps: the validation seeds on every validation scenario, full episodes
    (the training configs without their episode cut); the best mean return's model is kept.
    `from_start` also validates the model before the first update (the warm start's clone), so
    RL that never beats its starting point ships that starting point, not a worse departure."""
    from stable_baselines3.common.vec_env import DummyVecEnv
    full = full_episode_configs(configs)
    env = DummyVecEnv([lambda: make_validation_env(recipe.env_id, full, seeds)])
    freq = max(1, recipe.eval_freq // recipe.n_envs)
    kw = dict(n_eval_episodes=len(seeds) * len(full), eval_freq=freq, best_model_save_path=str(out), deterministic=True,
              verbose=0)
    if recipe.algo == "maskableppo":
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback as cls
    else:
        from stable_baselines3.common.callbacks import EvalCallback as cls
    if not from_start:
        return cls(env, **kw)

    class FromStart(cls):
        def _on_training_start(self) -> None:
            super()._on_training_start()
            self._on_step()                   # n_calls is 0 here, so this is a validation at step 0

    return FromStart(env, **kw)


def _progress(total: int):
    """A rich progress bar of the steps done (SB3's own needs tqdm)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn
    from stable_baselines3.common.callbacks import BaseCallback

    class RichProgress(BaseCallback):
        def _on_training_start(self):
            self.bar = Progress(TextColumn("steps"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.task = self.bar.add_task("steps", total=total)
            self.bar.start()

        def _on_step(self) -> bool:
            self.bar.update(self.task, completed=self.num_timesteps)
            return True

        def _on_training_end(self):
            self.bar.stop()

    return RichProgress()


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False
