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
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, pydantic_error, read_yaml, require_extra
from .policies import ALGOS


class WarmStart(BaseModel):
    """Behaviour cloning from one of the slot's heuristics before RL: the policy learns the
    heuristic's actions (cross-entropy) and the value head its discounted returns (MSE) on
    `episodes` recorded episodes of the training scenarios, then the algorithm fine-tunes it."""
    model_config = ConfigDict(extra="forbid")

    policy: str                                           # a heuristic of the slot, by name
    episodes: int = Field(default=20, gt=0, le=10_000)
    epochs: int = Field(default=10, gt=0, le=1000)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=1024, gt=0)
    # Label smoothing: the clone learns to pick the heuristic's action with probability
    # 1 − exploration (the rest spread over the allowed actions), so RL starts from a policy
    # that still tries what the heuristic never does (e.g. shedding a critical request).
    exploration: float = Field(default=0.0, ge=0, lt=1)


class RllibSettings(BaseModel):
    """How many processes RLlib spreads the recipe over (`backend: rllib`); what it learns is the
    recipe's `hyperparameters` (RLlib's PPO names) and `policy_kwargs` (its model config)."""
    model_config = ConfigDict(extra="forbid")

    num_env_runners: int = Field(default=0, ge=0)          # 0: sample in the training process
    num_envs_per_env_runner: int = Field(default=1, ge=1)
    num_learners: int = Field(default=0, ge=0)             # 0: learn in the training process


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env_id: str
    algo: Literal[ALGOS]
    backend: Literal["sb3", "rllib"] = "sb3"              # rllib: Ray RLlib (blis_gym.harness.rllib)
    rllib: Optional[RllibSettings] = None
    steps: int = Field(gt=0)
    seed: int = Field(default=0, ge=0)
    n_envs: int = Field(default=4, ge=1)
    vec_env: Literal["subproc", "dummy"] = "subproc"
    env_config: dict = Field(default_factory=dict)        # training episodes (e.g. a shorter horizon_s)
    policy: str = "auto"                                  # auto: PodPolicy for the router, else MlpPolicy
    policy_kwargs: dict = Field(default_factory=dict)
    hyperparameters: dict = Field(default_factory=dict)   # the algorithm's; learning_rate_final: linear decay
    eval_freq: int = Field(default=50_000, ge=0)          # steps between validations (0: none)
    train_seeds: Optional[tuple[int, int]] = None         # default: the spec's split
    validation_seeds: Optional[tuple[int, int]] = None
    warm_start: Optional[WarmStart] = None                # behaviour cloning from a heuristic first
    # The learner sees rewards × reward_scale (the logged and validation returns stay unscaled):
    # returns of hundreds saturate a tanh value network, whose critic then predicts a constant.
    reward_scale: float = Field(default=1.0, gt=0)
    description: Optional[str] = None
    package_version: Optional[str] = None                 # written for the record; not checked


# the command line's name of a recipe field it sets
FLAGS = {"env_id": "ENV_ID", "algo": "--algo", "steps": "--steps", "seed": "--seed", "n_envs": "--n-envs"}


def load_recipe(path: Path | None, **overrides) -> Recipe:
    """A recipe from a YAML file (if any) with the command line's values over it; an error
    about a value the command line gave (or should have given) names its flag."""
    data = read_yaml(path, "--config", mapping=True) if path is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        err = pydantic_error(e, root=Recipe, whole="recipe")
        if err.field in FLAGS and (err.field in given or path is None):
            if err.field == "algo":
                what = f"unknown algorithm {data['algo']!r}" if "algo" in data else "required"
                raise ConfigError("--algo", f"{what}; allowed: {', '.join(ALGOS)}") from None
            if err.field not in data:
                raise ConfigError(FLAGS[err.field], "required (or a --config recipe that gives it)") from None
            raise ConfigError(FLAGS[err.field], err.message) from None
        raise ConfigError(f"{path or 'train'}: {err.field}", err.message) from None


# ---- environments --------------------------------------------------------------------------------
class SeedRange(gym.Wrapper):
    """Resets with seeds drawn uniformly from [lo, hi] (the split's training seeds) by its own
    generator, seeded by the first seeded reset."""

    def __init__(self, env, lo: int, hi: int):
        super().__init__(env)
        self.lo, self.hi = lo, hi
        self.rng = np.random.default_rng(lo)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self.env.reset(seed=int(self.rng.integers(self.lo, self.hi + 1)), options=options)

    def action_masks(self):
        return self.env.unwrapped.action_masks()


class _EnvSwitch(gym.Env):
    """Plays one of several environments of the same spaces at a time; subclasses choose which
    at each reset."""

    def __init__(self, envs: list):
        self.envs = envs
        self.env = envs[0]
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        for e in envs[1:]:
            if e.observation_space != self.observation_space or e.action_space != self.action_space:
                raise ConfigError("split.train.scenarios", "the training scenarios must share their observation "
                                                           "and action spaces (set config.max_pods)")

    def step(self, action):
        return self.env.step(action)

    def action_masks(self):
        return self.env.unwrapped.action_masks()

    @property
    def observer(self):
        """The playing environment's observer (the per-pod policy reads its layout)."""
        return self.env.unwrapped.observer

    def close(self):
        for e in self.envs:
            e.close()


class ScenarioMix(_EnvSwitch):
    """Training episodes: each reset plays one of the training scenarios, drawn uniformly by a
    generator seeded with the reset's seed (so an episode's seed fixes its scenario; an unseeded
    reset continues the sequence)."""

    def __init__(self, envs: list):
        super().__init__(envs)
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.env = self.envs[int(self.rng.integers(len(self.envs)))]
        return self.env.reset(seed=seed, options=options)


class EpisodeCycle(_EnvSwitch):
    """Validation episodes: every validation seed on every training scenario, in turn (seed by
    seed, the scenarios in order)."""

    def __init__(self, envs: list, seeds: list[int]):
        super().__init__(envs)
        self.seeds, self.i = seeds, 0

    def reset(self, *, seed=None, options=None):
        seed_index, env_index = divmod(self.i % (len(self.envs) * len(self.seeds)), len(self.envs))
        self.i += 1
        self.env = self.envs[env_index]
        return self.env.reset(seed=self.seeds[seed_index], options=options)


class ScaledReward(gym.RewardWrapper):
    """Rewards × scale, outside the Monitor (which logs the unscaled episode returns)."""

    def __init__(self, env, scale: float):
        super().__init__(env)
        self.scale = scale

    def reward(self, reward):
        return reward * self.scale

    def action_masks(self):
        return self.env.unwrapped.action_masks()


def _make_train_env(env_id: str, configs: list[dict], lo: int, hi: int, reward_scale: float = 1.0):
    import blis_gym  # noqa: F401  (registers the ids in a subprocess worker)
    from stable_baselines3.common.monitor import Monitor
    envs = [gym.make(env_id, config=c) for c in configs]
    env = Monitor(SeedRange(envs[0] if len(envs) == 1 else ScenarioMix(envs), lo, hi))
    return env if reward_scale == 1.0 else ScaledReward(env, reward_scale)


def train_configs(recipe: Recipe, spec: dict, split) -> list[dict]:
    """The env configs of the training episodes: each of the split's training scenarios with
    the recipe's `env_config` over it (the spec's base scenario without a split)."""
    from ..envs.config import merge_data
    entries = split.train.scenarios if split is not None else []
    configs = [merge_data(e.env_config(spec["config"]), recipe.env_config) for e in entries]
    return configs or [recipe.env_config]


def validation_configs(recipe: Recipe, spec: dict, split, train: list[dict]) -> list[dict]:
    """The env configs validation plays: the split's validation scenarios with the recipe's
    `env_config` over them, else the training ones."""
    from ..envs.config import merge_data
    entries = (split.validation.scenarios or []) if split is not None else []
    return [merge_data(e.env_config(spec["config"]), recipe.env_config) for e in entries] or train


def _make_validation_env(env_id: str, configs: list[dict], seeds: list[int]):
    import blis_gym  # noqa: F401
    from stable_baselines3.common.monitor import Monitor
    return Monitor(EpisodeCycle([gym.make(env_id, config=c) for c in configs], seeds))


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
    _write_recipe(record, out / "train.yaml")
    if recipe.backend == "rllib":
        from .rllib import train_rllib
        return train_rllib(recipe, configs, train_seeds, val_seeds, out, quiet=quiet)

    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
    torch.set_num_threads(1)
    make = functools.partial(_make_train_env, recipe.env_id, configs, *train_seeds, recipe.reward_scale)
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
    callbacks = [_validation_callback(recipe, val_configs, val_seeds, out)] if recipe.eval_freq else []
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
    if _learning_curve(out / "progress.csv", out / "learning_curve.png", recipe.env_id):
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


def full_episode_configs(configs: list[dict]) -> list[dict]:
    """Validation plays the training configs without their episode cut."""
    return [{k: v for k, v in c.items() if k not in ("horizon_s", "max_requests")} for c in configs]


def _validation_callback(recipe: Recipe, configs: list[dict], seeds: list[int], out: Path):
    """Every `eval_freq` steps: the validation seeds on every validation scenario, full episodes
    (the training configs without their episode cut); the best mean return's model is kept."""
    from stable_baselines3.common.vec_env import DummyVecEnv
    full = full_episode_configs(configs)
    env = DummyVecEnv([lambda: _make_validation_env(recipe.env_id, full, seeds)])
    freq = max(1, recipe.eval_freq // recipe.n_envs)
    kw = dict(n_eval_episodes=len(seeds) * len(full), eval_freq=freq, best_model_save_path=str(out), deterministic=True,
              verbose=0)
    if recipe.algo == "maskableppo":
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
        return MaskableEvalCallback(env, **kw)
    from stable_baselines3.common.callbacks import EvalCallback
    return EvalCallback(env, **kw)


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


def _write_recipe(recipe: Recipe, path: Path) -> None:
    import yaml
    data = recipe.model_dump(mode="json", exclude_none=True)
    path.write_text("# written by blis-gym train; `blis-gym train --config` this file to train it again\n"
                    + yaml.safe_dump(data, sort_keys=False))


def _learning_curve(csv_path: Path, png: Path, title: str) -> bool:
    """Training episodes' mean return and the validation return against steps."""
    import pandas as pd
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return False
    log = pd.read_csv(csv_path)
    if "time/total_timesteps" not in log:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    drawn = 0
    for col, label in (("rollout/ep_rew_mean", "training episodes (mean of the last 100)"),
                       ("eval/mean_reward", "validation seeds (deterministic)")):
        d = log[["time/total_timesteps", col]].dropna() if col in log else None
        if d is None or d.empty:              # no legend entry for a curve without points
            continue
        # markers where the points are few: a short run's single point is otherwise invisible
        marker = "o" if col.startswith("eval") or len(d) <= 20 else None
        ax.plot(d["time/total_timesteps"], d[col], marker=marker, ms=3, label=label)
        drawn += len(d)
    if not drawn:
        ax.text(0.5, 0.5, "no training episode ended and no validation ran", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("steps")
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True
