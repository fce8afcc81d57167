"""A training recipe (`agents/<slot>.yaml`, `blis-gym train --config`): the environment, the
algorithm and backend, hyperparameters, seeds, warm start; read with the command line's values
over it, and written back beside the model it trained."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, pydantic_error, read_yaml
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


def write_recipe(recipe: Recipe, path: Path) -> None:
    import yaml
    data = recipe.model_dump(mode="json", exclude_none=True)
    path.write_text("# written by blis-gym train; `blis-gym train --config` this file to train it again\n"
                    + yaml.safe_dump(data, sort_keys=False))
