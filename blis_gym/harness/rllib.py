"""Training on Ray RLlib: `backend: rllib` in a recipe (`agents/router_rllib.yaml`), and the
multi-agent environment under RLlib. Needs the `rllib` extra (`pip install 'blis-gym[rllib]'`).

A recipe with `backend: rllib` trains RLlib's PPO (new API stack) on the same training episodes
as the SB3 backend (the split's training seeds and scenario mix, `env_config`, `reward_scale`).
The recipe's `hyperparameters` are RLlib's `PPOConfig.training()` arguments (`lr`, `gamma`,
`lambda_`, `train_batch_size_per_learner`, `minibatch_size`, `num_epochs`, `entropy_coeff`, ...),
`policy_kwargs` its model config (`fcnet_hiddens`, ...), and `rllib:` says how many processes
sample and learn (`RllibSettings`). Observations reach the network as
`{"observations": obs, "action_mask": mask}` and `MaskedPPOModule` puts −inf on the logits of
masked actions, so the router never picks a pod that cannot take the request.

What `blis-gym train` writes for it: `model.pt2` (the exported policy with the best validation
return, else the last; `blis-gym eval --policy DIR/model.pt2` plays it with torch alone),
`last.pt2`, `rllib_checkpoint/` (the whole algorithm: `restore(path)` resumes it),
`train.yaml`, `progress.csv` and `learning_curve.png`.

Ray starts in-process unless `RAY_ADDRESS` names a cluster: then the env runners and learners
of `rllib:` are placed on the cluster's nodes and nothing else in the recipe changes.

The multi-agent PettingZoo environment under RLlib: `rllib_multi_agent_env(config)` (an RLlib
`MultiAgentEnv`: PettingZoo's AEC environment through RLlib's `PettingZooEnv`, with masks in the
observations) and `multi_agent_ppo(config)` (a `PPOConfig` with one policy per agent).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np

from ..errors import ConfigError, require_extra

TRAIN_ENV = "blis_gym_rllib"            # the names the env creators are registered under in Ray
MULTI_ENV = "blis_gym_rllib_multi"


def check_recipe(recipe) -> None:
    """One ConfigError for what the RLlib backend does not take (before anything is written)."""
    require_extra("rllib", "backend", "backend: rllib", "ray.rllib", "torch")
    if recipe.algo != "ppo":
        raise ConfigError("algo", f"backend: rllib trains ppo (with action masks), not {recipe.algo}")
    for field, instead in (("n_envs", "rllib.num_envs_per_env_runner"), ("vec_env", "rllib.num_env_runners")):
        if field in recipe.model_fields_set:
            raise ConfigError(field, f"an sb3 setting; with backend: rllib use {instead}")
    if recipe.policy != "auto":
        raise ConfigError("policy", "backend: rllib trains its default network (set its size in policy_kwargs, "
                                    "e.g. fcnet_hiddens: [64, 64])")
    if recipe.warm_start is not None:
        raise ConfigError("warm_start", "behaviour cloning is for the sb3 backend")


# ---- environments --------------------------------------------------------------------------------
class MaskedObservation(gym.ObservationWrapper):
    """Observations as `{"observations": obs, "action_mask": mask}` (float32; 1 = allowed)."""

    def __init__(self, env):
        super().__init__(env)
        n = int(env.action_space.n)
        self.observation_space = gym.spaces.Dict({"observations": env.observation_space,
                                                  "action_mask": gym.spaces.Box(0.0, 1.0, (n,), np.float32)})

    def observation(self, obs):
        return {"observations": obs, "action_mask": self.env.unwrapped.action_masks().astype(np.float32)}


def make_train_env(env_config: dict):
    """The training episodes of a recipe (its `env_config` as `train_rllib` passes it)."""
    import blis_gym  # noqa: F401  (registers the ids in an env runner process)
    from .training_envs import ScaledReward, ScenarioMix, SeedRange
    envs = [gym.make(env_config["env_id"], config=c) for c in env_config["configs"]]
    env = SeedRange(envs[0] if len(envs) == 1 else ScenarioMix(envs), *env_config["seeds"])
    scale = env_config.get("reward_scale", 1.0)
    return MaskedObservation(env if scale == 1.0 else ScaledReward(env, scale))


def _masked_module():
    """MaskedPPOModule: RLlib's default PPO module with masked logits (built on first use:
    RLlib loads only with the extra)."""
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.columns import Columns

    class MaskedPPOModule(DefaultPPOTorchRLModule):
        """The network sees `observations`; `action_mask` adds −inf (clamped) to masked logits."""

        def __init__(self, *, observation_space=None, **kwargs):
            super().__init__(observation_space=observation_space["observations"], **kwargs)

        @staticmethod
        def _split(batch):
            obs = batch[Columns.OBS]
            if isinstance(obs, dict):
                batch = {**batch, Columns.OBS: obs["observations"], "action_mask": obs["action_mask"]}
            return batch

        @staticmethod
        def _mask(out, mask):
            out[Columns.ACTION_DIST_INPUTS] = out[Columns.ACTION_DIST_INPUTS] + torch.clamp(torch.log(mask), min=-1e9)
            return out

        def _forward_inference(self, batch, **kwargs):
            batch = self._split(batch)
            return self._mask(super()._forward_inference(batch, **kwargs), batch["action_mask"])

        def _forward_exploration(self, batch, **kwargs):
            batch = self._split(batch)
            return self._mask(super()._forward_exploration(batch, **kwargs), batch["action_mask"])

        def _forward_train(self, batch, **kwargs):
            batch = self._split(batch)
            return self._mask(super()._forward_train(batch, **kwargs), batch["action_mask"])

        def compute_values(self, batch, embeddings=None):
            return super().compute_values(self._split(batch), embeddings)

    return MaskedPPOModule


def _logits(module):
    """A torch module: observations -> the policy's unmasked logits (what `exported` saves)."""
    import torch
    from ray.rllib.core.columns import Columns

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.module = module

        def forward(self, obs):
            mask = torch.ones(obs.shape[0], module.action_space.n)
            out = self.module._forward_inference({Columns.OBS: {"observations": obs, "action_mask": mask}})
            return out[Columns.ACTION_DIST_INPUTS]

    return Logits()


def _quiet_rllib() -> None:
    """Ray's and RLlib's notices (token auth, new API stack, deprecations) are not the user's to
    act on."""
    import logging
    for name in ("ray", "ray.rllib"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _start_ray():
    """Connect to RAY_ADDRESS's cluster, or start Ray in this process; True if this call started it."""
    import ray
    _quiet_rllib()
    if ray.is_initialized():
        return False
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    return True


# ---- training ------------------------------------------------------------------------------------
def ppo_config(recipe, configs: list[dict], train_seeds):
    """RLlib's PPOConfig for a recipe (its env runners, learners, hyperparameters and model)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from .recipe import RllibSettings
    _quiet_rllib()
    register_env(TRAIN_ENV, make_train_env)
    s = recipe.rllib or RllibSettings()
    env_config = {"env_id": recipe.env_id, "configs": configs, "seeds": tuple(train_seeds),
                  "reward_scale": recipe.reward_scale}
    config = (PPOConfig().environment(TRAIN_ENV, env_config=env_config)
              .env_runners(num_env_runners=s.num_env_runners, num_envs_per_env_runner=s.num_envs_per_env_runner)
              .learners(num_learners=s.num_learners)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=_masked_module(),
                                                     model_config=dict(recipe.policy_kwargs) or None))
              .debugging(seed=recipe.seed))
    try:
        return config.training(**recipe.hyperparameters)
    except (TypeError, ValueError) as e:
        raise ConfigError("hyperparameters", f"rllib ppo: {e}") from None


def train_rllib(recipe, configs: list[dict], train_seeds, val_seeds: list[int], out: Path, *,
                quiet: bool = False) -> dict:
    """Train as the recipe says on RLlib; validate every `eval_freq` steps (the exported policy
    plays the validation seeds on every training scenario, full episodes, greedily); write DIR's
    files; return what `train` returns."""
    import ray
    import torch

    from . import exported
    from .learning_curve import draw_learning_curve
    from .training_envs import full_episode_configs
    torch.set_num_threads(1)
    config = ppo_config(recipe, configs, train_seeds)
    started = _start_ray()
    try:
        algo = config.build_algo()
    except Exception as e:                  # RLlib validates the config here (batch sizes, ...)
        if started:
            ray.shutdown()
        raise ConfigError("hyperparameters", f"rllib ppo: {str(e).strip().splitlines()[0]}") from None
    probe = gym.make(recipe.env_id, config=configs[0])
    shape = {"obs_dim": int(probe.observation_space.shape[0]), "n_actions": int(probe.action_space.n),
             "max_pods": int(probe.unwrapped.observer.max_pods), "env_id": recipe.env_id}
    probe.close()
    full = full_episode_configs(configs)

    def export() -> None:
        exported.save(_logits(algo.get_module()), out / "last.pt2", **shape)
        exported.load.cache_clear()                       # the same path, new weights

    rows, best, steps, next_val = [], None, 0, recipe.eval_freq or None
    bar = None if quiet else _bar(recipe.steps)
    try:
        while steps < recipe.steps:
            result = algo.train()
            steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
            row = {"time/total_timesteps": steps,
                   "rollout/ep_rew_mean": _unscaled(result["env_runners"].get("episode_return_mean"), recipe)}
            if next_val is not None and steps >= next_val:
                export()
                ret = validation_return(str(out / "last.pt2"), recipe.env_id, full, val_seeds)
                row["eval/mean_reward"] = ret
                if best is None or ret > best:
                    best = ret
                    shutil.copy(out / "last.pt2", out / "model.pt2")
                next_val = (steps // recipe.eval_freq + 1) * recipe.eval_freq
            rows.append(row)
            if bar is not None:
                bar[0].update(bar[1], completed=min(steps, recipe.steps))
        export()
        algo.save_to_path(str((out / "rllib_checkpoint").resolve()))
    finally:
        if bar is not None:
            bar[0].stop()
        algo.stop()
        if started:
            ray.shutdown()
    if best is None:
        shutil.copy(out / "last.pt2", out / "model.pt2")
    _write_progress(rows, out / "progress.csv")
    written = ["model.pt2", "last.pt2", "rllib_checkpoint/", "train.yaml", "progress.csv"]
    if draw_learning_curve(out / "progress.csv", out / "learning_curve.png", recipe.env_id):
        written.append("learning_curve.png")
    return {"written": written, "best_validation_return": best, "tensorboard": False, "warm_start": None,
            "steps_trained": steps, "rollout_steps": int(config.total_train_batch_size)}


def _unscaled(value, recipe):
    return None if value is None or not np.isfinite(value) else float(value) / recipe.reward_scale


def validation_return(policy_path: str, env_id: str, configs: list[dict], seeds: list[int]) -> float:
    """The mean return of the exported policy, greedy, over every seed on every config."""
    from . import exported
    act = exported.greedy(policy_path)
    returns = []
    for c in configs:
        env = gym.make(env_id, config=c)
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(act(obs, env.unwrapped.action_masks()))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
    return float(np.mean(returns))


def _write_progress(rows: list[dict], path: Path) -> None:
    cols = ["time/total_timesteps", "rollout/ep_rew_mean", "eval/mean_reward"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r[c] for c in cols})


def _bar(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    bar = Progress(TextColumn("steps"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("steps", total=total)
    bar.start()
    return bar, task


def restore(path):
    """The RLlib algorithm saved in `DIR/rllib_checkpoint` (single- or multi-agent), ready to
    train on: its env creators are registered first (Ray knows them by name only)."""
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.tune.registry import register_env
    _start_ray()
    _quiet_rllib()
    register_env(TRAIN_ENV, make_train_env)
    register_env(MULTI_ENV, rllib_multi_agent_env)
    return Algorithm.from_checkpoint(str(Path(path).resolve()))


# ---- the multi-agent environment -----------------------------------------------------------------
def rllib_multi_agent_env(config: dict | None = None):
    """The PettingZoo AEC environment (`blis_gym.envs.multi_agent_env`) as an RLlib
    `MultiAgentEnv`: RLlib's `PettingZooEnv` over it, each agent observing
    `{"observations": obs, "action_mask": mask}`. RLlib's env creators pass `config` (the
    multi-agent env's config: agents, scenario, rewards, horizon_s, ...)."""
    require_extra("rllib", "rllib_multi_agent_env", "the multi-agent environment under RLlib", "ray.rllib",
                  "pettingzoo")
    from pettingzoo.utils.wrappers import BaseWrapper
    from ray.rllib.env.wrappers.pettingzoo_env import PettingZooEnv

    from ..envs import multi_agent_env

    class MaskedAEC(BaseWrapper):
        def observation_space(self, agent):
            n = int(self.env.action_space(agent).n)
            return gym.spaces.Dict({"observations": self.env.observation_space(agent),
                                    "action_mask": gym.spaces.Box(0.0, 1.0, (n,), np.float32)})

        def observe(self, agent):
            return {"observations": self.env.observe(agent),
                    "action_mask": self.env.unwrapped.action_mask(agent).astype(np.float32)}

    return PettingZooEnv(MaskedAEC(multi_agent_env(config=dict(config or {}))))


def multi_agent_ppo(config: dict | None = None, model_config: dict | None = None):
    """A PPOConfig training one masked PPO policy per agent of the multi-agent environment
    (policy id = agent name); add `.training(...)`, `.env_runners(...)` and `build_algo()`."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    _quiet_rllib()
    register_env(MULTI_ENV, rllib_multi_agent_env)
    agents = sorted(rllib_multi_agent_env(config).possible_agents)
    module = _masked_module()
    specs = {a: RLModuleSpec(module_class=module, model_config=model_config) for a in agents}
    return (PPOConfig().environment(MULTI_ENV, env_config=dict(config or {}))
            .multi_agent(policies=set(agents), policy_mapping_fn=_agent_policy)
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs)))


def _agent_policy(agent_id, episode, **kwargs):
    return agent_id
