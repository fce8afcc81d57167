"""Policies that play an environment slot, by a short text spec (`blis-gym eval --policy P`).

- a built-in heuristic of the slot by its scenario name (`heuristic_names(slot)`; the router's
  default profile also answers to `llm-d-default`): the environment is made with that slot's
  built-in set to it (`scenario_overrides`) and plays what the built-in would choose
  (`info["default_action"]`, which consumes the built-in's own random draws), so the episode
  is the built-in simulation's, with the same rewards as any other policy;
- `random`: uniform over the valid actions (`action_masks()`), seeded by the episode's seed;
- a saved SB3 checkpoint (`*.zip`) whose algorithm is recorded beside it: `<name>.yaml` next
  to the zip or the `train.yaml` that `blis-gym train` writes in the same folder (key `algo`);
- an exported policy (`*.pt2`, what the RLlib backend writes: `blis_gym.harness.exported`),
  played greedily among the valid actions;
- `module:function`: a user's `f(obs, info, env) -> action`.

Every policy plays through the same Gymnasium environment on the same seeds, so each sees the
same arrivals (common random numbers) and differences are the policies'.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, read_yaml, require_extra

ALGOS = ("maskableppo", "ppo", "a2c", "dqn")
RANDOM = "random"
ALIASES = {"router": {"llm-d-default": "default"}}
# registered names that are not complete policies: a weighted router needs its scorers; an
# external autoscaler is an agent's slot
NOT_HEURISTICS = ("weighted", "external")


def heuristic_names(slot: str) -> list[str]:
    """The registered policies a scenario can name for `slot` that decide by themselves (new
    ones registered in `blis_gym.policies.registry` appear here too)."""
    from ..policies import registry
    if slot not in ("router", "admission", "pd", "autoscaler"):
        raise ConfigError("slot", f"unknown slot {slot!r}")
    return [n for n in registry.names(slot) if n not in NOT_HEURISTICS]


def policy_names(slot: str) -> list[str]:
    """Every name `--policy` takes for `slot` (besides checkpoints and module:function)."""
    names = [RANDOM, *heuristic_names(slot), *ALIASES.get(slot, {})]
    return list(dict.fromkeys(names))


Actor = Callable[[np.ndarray, dict], int]


@dataclass(frozen=True)
class Policy:
    """A parsed policy spec; `text` is its label in results."""
    text: str
    slot: str

    def env_config(self, cfg: dict) -> dict:
        """The environment config (full, as the spec merged with the scenario's) to play in."""
        return cfg

    def check(self, env) -> None:
        """Raise ConfigError if the policy cannot play `env` (e.g. a checkpoint's shapes)."""

    def actor(self, env, seed: int) -> Actor:
        raise NotImplementedError


@dataclass(frozen=True)
class Heuristic(Policy):
    name: str = ""

    def env_config(self, cfg: dict) -> dict:
        from ..envs.config import merge_data, scenario_data
        over = {"router": {"router": {"policy": self.name, "scorers": None, "picker": None}},
                "admission": {"gateway": {"admission": self.name}},
                "pd": {"pd": {"decider": self.name}}}.get(self.slot)
        cfg = {**cfg, "info_default_action": True}
        if self.slot == "autoscaler":
            # every autoscaled pool gets this policy; the env's step clips the built-in's change to
            # +-scale_step, so widen it to the largest pool: the heuristic plays unclipped
            data, _ = scenario_data(cfg)
            pools = [dict(p) for p in data.get("pools") or []]
            for p in pools:
                if p.get("autoscaler"):
                    p["autoscaler"] = {**p["autoscaler"], "policy": self.name}
            over = {"pools": pools}
            cfg["scale_step"] = max([int(p.get("max_instances") or p.get("instances") or 1) for p in pools] + [1])
        base = cfg.get("scenario_overrides") or {}
        if self.slot == "router" and isinstance(base.get("router"), dict):
            # merge_data would drop the None values (deletions) against the existing router entry;
            # they must reach the scenario, or a scenario's own scorers stay (e.g. lora-affinity's)
            base = {**base, "router": {**base["router"], **over["router"]}}
            over = {}
        cfg["scenario_overrides"] = merge_data(base, over)
        return cfg

    def actor(self, env, seed: int) -> Actor:
        return lambda obs, info: info["default_action"]


@dataclass(frozen=True)
class Random(Policy):
    def actor(self, env, seed: int) -> Actor:
        rng = np.random.default_rng(seed)
        u = env.unwrapped
        return lambda obs, info: int(rng.choice(np.flatnonzero(u.action_masks())))


@dataclass(frozen=True)
class Checkpoint(Policy):
    path: str = ""
    algo: str = ""
    decide_classes: tuple[str, ...] | None = None
    extended: bool = False              # trained on the extended observation (its recipe says)
    residual_overrides: str | None = None   # residual: its recipe's scenario_overrides (JSON)
    env_id: str | None = None           # the environment its recipe trained it on
    scale_step: int | None = None       # autoscaler: the replicas per tick its actions span (its recipe's)

    def env_config(self, cfg: dict) -> dict:
        if self.decide_classes is not None:
            cfg = {**cfg, "decide_classes": list(self.decide_classes)}
        if self.scale_step is not None:
            cfg = {**cfg, "scale_step": self.scale_step}
        if self.extended:
            cfg = {**cfg, "observation": {**cfg["observation"], "extended": True}}
        if self.residual_overrides is not None:
            # the built-in policy it follows (action 0) is part of the policy: the recipe's
            from ..envs.config import merge_data
            over = merge_data(cfg.get("scenario_overrides") or {}, json.loads(self.residual_overrides))
            cfg = {**cfg, "residual": True, "scenario_overrides": over}
        return cfg

    def check(self, env) -> None:
        # shapes can match across environments (a 2-pod Router-v0 and Admission-v0): the
        # recipe says which one the checkpoint's actions mean something in
        here = env.spec.id if env.spec is not None else None
        if self.env_id is not None and here is not None and self.env_id != here:
            raise ConfigError("--policy", f"{self.text}: trained on {self.env_id} (its recipe's env_id), "
                                          f"not on {here}")
        self.network(env)

    def network(self, env):
        """The checkpoint's policy network for `env`'s spaces (a ConfigError if it cannot play it)."""
        return _fitted(self.path, self.algo, env.observation_space, env.action_space, self.text)

    def actor(self, env, seed: int) -> Actor:
        net = self.network(env)
        u = env.unwrapped
        if self.algo == "maskableppo":
            return lambda obs, info: int(net.predict(obs, deterministic=True, action_masks=u.action_masks())[0])
        return lambda obs, info: int(net.predict(obs, deterministic=True)[0])


@dataclass(frozen=True)
class Exported(Checkpoint):
    """An exported policy (`*.pt2`, `blis_gym.harness.exported`: what the RLlib backend writes),
    played like a checkpoint (its recipe's decide_classes and layout) on its own pod slots."""

    def env_config(self, cfg: dict) -> dict:
        from . import exported
        if cfg.get("max_pods") is None:         # observations padded to the pod slots it was trained on
            cfg = {**cfg, "max_pods": exported.load(self.path)[1]["max_pods"]}
        return super().env_config(cfg)

    def check(self, env) -> None:
        from . import exported
        exported.check(self.path, env.observation_space, env.action_space, self.text)

    def actor(self, env, seed: int) -> Actor:
        from . import exported
        self.check(env)
        act, u = exported.greedy(self.path), env.unwrapped
        return lambda obs, info: act(obs, u.action_masks())


@dataclass(frozen=True)
class UserFunction(Policy):
    def actor(self, env, seed: int) -> Actor:
        fn = _user_function(self.text)
        n = env.action_space.n

        def act(obs, info):
            try:
                a = fn(obs, info, env)
            except Exception as e:     # the user's code: one line naming it, not a traceback
                raise ConfigError("--policy", f"{self.text} raised {type(e).__name__}: {e}") from None
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < n:
                raise ConfigError("--policy", f"{self.text} returned {a!r}; expected an action: an integer "
                                              f"from 0 to {n - 1}")
            return int(a)
        return act


def parse_policy(text: str, slot: str) -> Policy:
    """The policy a `--policy` text names for `slot`, or a one-line ConfigError."""
    if not isinstance(text, str) or not text:
        raise ConfigError("--policy", "must be a policy name, a checkpoint .zip or module:function")
    if text == RANDOM:
        return Random(text, slot)
    name = ALIASES.get(slot, {}).get(text, text)
    if name in heuristic_names(slot):
        return Heuristic(text, slot, name)
    if text.endswith(".zip"):
        side, recipe = checkpoint_recipe(Path(text))
        env_id = recipe.get("env_id")
        if env_id is not None and not isinstance(env_id, str):
            raise ConfigError("--policy", f"{side}: env_id must be an environment id, got {env_id!r}")
        algo = checkpoint_algo(side, recipe)
        require_extra("rl", "--policy", f"playing the {algo} checkpoint {text}", "torch", "stable_baselines3",
                      *(["sb3_contrib"] if algo == "maskableppo" else []))
        return Checkpoint(text, slot, text, algo, checkpoint_decide_classes(side, recipe),
                          checkpoint_extended(recipe), checkpoint_residual(recipe), env_id,
                          checkpoint_scale_step(side, recipe))
    if text.endswith(".pt2"):
        if not Path(text).is_file():
            raise ConfigError("--policy", f"no exported policy file {text!r}")
        require_extra("rl", "--policy", f"playing the exported policy {text}", "torch")
        side = next((s for s in (Path(text).with_suffix(".yaml"), Path(text).parent / "train.yaml") if s.is_file()),
                    None)
        recipe = read_yaml(side, "--policy", mapping=True) if side else {}
        return Exported(text, slot, text, "", checkpoint_decide_classes(side, recipe), checkpoint_extended(recipe),
                        checkpoint_residual(recipe), scale_step=checkpoint_scale_step(side, recipe))
    if ":" in text:
        _user_function(text)
        return UserFunction(text, slot)
    raise ConfigError("--policy", f"unknown policy {text!r} for the {slot} slot; allowed: "
                      f"{', '.join(policy_names(slot))}, a checkpoint .zip, an exported policy .pt2, or "
                      f"module:function")


def checkpoint_recipe(path: Path) -> tuple[Path, dict]:
    """The recipe recorded beside a checkpoint (`<name>.yaml`, else the folder's train.yaml)."""
    if not path.is_file():
        raise ConfigError("--policy", f"no checkpoint file {str(path)!r}")
    for side in (path.with_suffix(".yaml"), path.parent / "train.yaml"):
        if side.is_file():
            return side, read_yaml(side, "--policy", mapping=True)
    raise ConfigError("--policy", f"{path}: no {path.with_suffix('.yaml').name} or train.yaml beside it "
                      f"recording its algorithm (algo: {' | '.join(ALGOS)})")


def checkpoint_algo(side: Path, recipe: dict) -> str:
    """The algorithm the recipe `side` records."""
    algo = recipe.get("algo")
    if algo not in ALGOS:
        raise ConfigError("--policy", f"{side}: algo must be one of {', '.join(ALGOS)}, got {algo!r}")
    return algo


def checkpoint_decide_classes(side: Path, recipe: dict) -> tuple[str, ...] | None:
    """The SLO classes the checkpoint was trained to decide (its recipe's
    `env_config.decide_classes`; None: every request). Which requests a policy decides is part
    of the policy, so evaluation plays it the same way."""
    classes = (recipe.get("env_config") or {}).get("decide_classes")
    if classes is None:
        return None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ConfigError("--policy", f"{side}: env_config.decide_classes must be a list of SLO class names, "
                          f"got {classes!r}")
    return tuple(classes)


def checkpoint_scale_step(side: Path | None, recipe: dict) -> int | None:
    """The autoscaler's replicas per tick the checkpoint's actions span (its recipe's
    `env_config.scale_step`; None: the env's own). Its action a means a change of a − k, so it
    is played with the k it was trained with."""
    k = (recipe.get("env_config") or {}).get("scale_step")
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError("--policy", f"{side}: env_config.scale_step must be a whole number >= 1, got {k!r}")
    return k


def checkpoint_extended(recipe: dict) -> bool:
    """Whether the checkpoint was trained on the extended observation (`env_config.observation.
    extended` in its recipe): it is played on that layout, the others on the first one."""
    obs = (recipe.get("env_config") or {}).get("observation") or {}
    return obs.get("extended") is True


def checkpoint_residual(recipe: dict) -> str | None:
    """A residual checkpoint (`env_config.residual: true`): the scenario_overrides of its recipe,
    which set the built-in policy its action 0 follows (JSON); None otherwise."""
    cfg = recipe.get("env_config") or {}
    if cfg.get("residual") is not True:
        return None
    return json.dumps(cfg.get("scenario_overrides") or {}, sort_keys=True)


def _user_function(text: str):
    mod, _, attr = text.rpartition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError("--policy", f"cannot import {text!r} ({e}); give module:function with the module "
                          f"on the Python path") from None
    if not callable(fn):
        raise ConfigError("--policy", f"{text!r} is not callable; expected f(obs, info, env) -> action")
    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        raise ConfigError("--policy", f"{text!r} takes {inspect.signature(fn)}; expected f(obs, info, env) -> action") \
            from None
    except ValueError:              # no signature to read (some builtins): its first call tells
        pass
    return fn


@functools.lru_cache(maxsize=8)
def load_model(path: str, algo: str):
    """The SB3 model of a checkpoint (cached per process: every episode of a worker reuses it)."""
    import torch
    torch.set_num_threads(1)
    from . import pod_network
    # checkpoints saved before the per-pod network moved here name its class by its old module
    sys.modules.setdefault("blis_gym.policies.learned", pod_network)
    if algo == "maskableppo":
        from sb3_contrib import MaskablePPO as cls
    else:
        import stable_baselines3
        cls = getattr(stable_baselines3, algo.upper())
    try:
        return cls.load(path, device="cpu")
    except Exception as e:           # a corrupt or foreign zip: one line, not a traceback
        raise ConfigError("--policy", f"{path}: cannot load it as a {algo} checkpoint ({type(e).__name__}: {e})") \
            from None


def _fitted(path: str, algo: str, obs_space, act_space, label: str):
    """The checkpoint's policy network for this environment's spaces. A per-pod `PodPolicy`
    (router) scores each pod with one shared network, so it is rebuilt for another number of
    pods; any other policy must match the shapes it was trained on."""
    model = load_model(path, algo)
    net = model.policy
    same = (model.observation_space.shape == obs_space.shape
            and getattr(model.action_space, "n", None) == getattr(act_space, "n", None))
    if same:
        return net
    from .pod_network import PodPolicy
    if isinstance(net, PodPolicy):
        globs = net.pod_args["n_obs"] - net.pod_args["req0"]
        pods, rest = divmod(int(obs_space.shape[0]) - globs, net.pod_args["pf"])
        extra = int(net.pod_args.get("residual", False))     # a residual router's "follow" action
        if rest == 0 and pods + extra == act_space.n:
            return _pod_policy_for(path, algo, int(obs_space.shape[0]), pods)
    raise ConfigError("--policy", f"{label}: the checkpoint expects observations of shape "
                      f"{model.observation_space.shape} and {model.action_space}, the environment gives "
                      f"{obs_space.shape} and {act_space} (a checkpoint for another environment?)")


@functools.lru_cache(maxsize=8)
def _pod_policy_for(path: str, algo: str, n_obs: int, n_pods: int):
    from gymnasium import spaces

    from .pod_network import PodPolicy
    net = load_model(path, algo).policy
    args = net._get_constructor_parameters()
    globs = net.pod_args["n_obs"] - net.pod_args["req0"]
    obs_space = spaces.Box(0.0, 1.0, (n_obs,), np.float32)
    extra = int(net.pod_args.get("residual", False))
    args.update(observation_space=obs_space, action_space=spaces.Discrete(n_pods + extra), max_pods=n_pods,
                n_obs=n_obs, req0=n_obs - globs, drop=[])        # `drop` lives in the loaded `keep` buffer
    args["lr_schedule"] = lambda _: 0.0                          # never trained: no optimizer steps
    new = PodPolicy(**args)
    new.load_state_dict(net.state_dict())
    new.set_training_mode(False)
    return new
