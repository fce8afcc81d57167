"""The environments training plays: seeds drawn from the split's range, a mix of training
scenarios, the validation cycle over every validation seed and scenario, scaled rewards; and the
env configs of the recipe's training and validation episodes. Used by both backends (SB3 and
RLlib)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from ..errors import ConfigError
from .recipe import Recipe


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


def make_train_env(env_id: str, configs: list[dict], lo: int, hi: int, reward_scale: float = 1.0):
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


def make_validation_env(env_id: str, configs: list[dict], seeds: list[int]):
    import blis_gym  # noqa: F401
    from stable_baselines3.common.monitor import Monitor
    return Monitor(EpisodeCycle([gym.make(env_id, config=c) for c in configs], seeds))


def full_episode_configs(configs: list[dict]) -> list[dict]:
    """Validation plays the training configs without their episode cut."""
    return [{k: v for k, v in c.items() if k not in ("horizon_s", "max_requests")} for c in configs]
