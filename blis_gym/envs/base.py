"""The Gymnasium environment shared by the four single-agent environments.

`BlisEnv` binds one decision slot of the simulator to the learner (the others keep the built-in
policies the scenario names), steps once per decision of that slot, and pays the SLO-aware
reward of `blis_gym.envs.rewards` as events happen. Subclasses fix the slot, the env spec and
the action space; the docstrings of `RouterEnv`, `AdmissionEnv`, `PDDeciderEnv` and
`AutoscalerEnv` document each one.
"""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..errors import ConfigError
from ..schema.scenario import build
from .config import check_config, load_scenario_for, load_spec, merge_config
from .core import Episode, int_action, rng_from_state, rng_state, slot_action_space
from .observations import Observer

AGENT = "agent"


class BlisEnv(gym.Env):
    """Base class: see the module docstring. Use a subclass (or `gym.make`)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    SPEC = ""          # env spec name in envs/ (overridable with env_spec=)
    SLOT = ""

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def default_config(cls) -> dict:
        """The configuration of this environment's spec (a fresh copy: edit and pass as config)."""
        return load_spec(cls.SPEC)["config"]

    def __init__(self, config: dict | None = None, render_mode: str | None = None, env_spec: str | None = None):
        spec = load_spec(env_spec or self.SPEC)
        if spec["slot"] != self.SLOT:
            raise ConfigError("env_spec.slot", f"{spec['path']} is for the {spec['slot']!r} slot, "
                                               f"not {type(self).__name__}'s {self.SLOT!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError("render_mode", f"unknown {render_mode!r}; allowed: ansi, rgb_array")
        self.env_spec = env_spec
        self.env_id = spec["id"]
        self.user_config = config
        self.config = merge_config(spec["config"], config)
        check_config(self.config)
        self.render_mode = render_mode
        self._scenario, self._base_dir, probe = load_scenario_for(self.config)
        self.n_pods = len(probe.instances)
        self.pool_names = [p.name for p in probe.pools or []]
        self.flow_control = probe.gateway.flow_control is not None
        self.observer = Observer(self.SLOT, self.config, self.n_pods, self.pool_names)
        self.max_pods = self.observer.max_pods
        self.observation_space = self.observer.space
        self.action_space = self._action_space()
        self.episode: Episode | None = None
        self.actions: list[int] = []
        self.sim_seed: int | None = None
        self.episode_return = 0.0
        self.recent: deque = deque(maxlen=self.config["render_recent"])
        self.residual = bool(self.config["residual"])
        self._n_base = int(self.action_space.n)           # the slot's own actions
        if self.residual:
            self.action_space = spaces.Discrete(self._n_base + 1)
        self._n_actions = int(self.action_space.n)
        self._memo = (None, None)                          # (pending, the built-in policy's action)

    def _action_space(self) -> spaces.Discrete:
        return slot_action_space(self.SLOT, self.max_pods, self.flow_control, self.config["scale_step"])

    # ---- residual: action 0 follows the built-in policy (the scenario's heuristic) ------------
    def heuristic_action(self, p) -> int:
        """The env action (of the slot's own actions) the scenario's built-in policy takes at
        `p`, asked once per decision (its random draws are consumed once)."""
        if self._memo[0] is not p:
            self._memo = (p, self._from_sim(p.default()))
        return self._memo[1]

    def _slot_action(self, a: int, p) -> int:
        """The slot's action for env action a: with `residual`, 0 is the built-in's choice and
        k the slot's action k − 1."""
        if not self.residual:
            return a
        return self.heuristic_action(p) if a == 0 else a - 1

    def _observe(self, p):
        obs = self.observer.build(p)
        if self.residual and p is not None:
            self.observer.mark_choice(obs, self.heuristic_action(p))
        return obs

    def _to_sim(self, a: int):
        """The simulator's action for env action a (identity but for the autoscaler)."""
        return a

    def _from_sim(self, a) -> int:
        """The env action for a simulator action (the built-in policy's choice)."""
        return -1 if a is None else int(a)

    # ---- the live decision ----------------------------------------------------------------
    @property
    def pending(self):
        """The simulator's pending decision (`Pending`: slot, time_us, request, pods, mask, pool,
        and `default()`, the built-in policy's choice), or None at the end of an episode."""
        return self.episode.pending if self.episode is not None else None

    @property
    def sim(self):
        return self.episode.sim if self.episode is not None else None

    def action_masks(self) -> np.ndarray:
        """Valid actions now (sb3-contrib MaskablePPO calls this): a bool array of action_space.n
        (with `residual`, action 0, following the built-in policy, is always valid)."""
        m = self._slot_masks()
        return np.concatenate(([True], m)) if self.residual else m

    def _slot_masks(self) -> np.ndarray:
        """Valid actions of the slot's own action space."""
        return np.ones(self._n_base, dtype=bool)

    # ---- Gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise ConfigError("reset.options", f"unknown option {sorted(options)[0]!r}; reset takes none")
        sim_seed = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        self._start(int(sim_seed))
        return self._observe(self.episode.pending), self._info()

    def _start(self, sim_seed: int) -> None:
        sc = self._scenario.model_copy(update={"seed": sim_seed})
        cfg = build(sc, base_dir=self._base_dir)
        self.sim_seed = sim_seed
        self.actions = []
        self.recent.clear()
        self.episode_return = 0.0
        c = self.config
        self.episode = Episode(cfg, {self.SLOT}, {AGENT: c["reward"]}, c["max_requests"], c["max_backlog"])
        self.observer.attach(self.episode.sim)
        self._decide_others()
        if self.episode.pending is None:
            what = "" if c["decide_classes"] is None else f" on a request of {c['decide_classes']}"
            raise ConfigError("config.scenario", f"the scenario never asks the {self.SLOT} slot for a decision"
                                                 f"{what} (see the env spec {self.SPEC!r})")

    def _decide_others(self) -> None:
        """Requests outside `decide_classes` get the scenario's built-in policy, without a step
        (their rewards land in the agent's next step, as any other request's)."""
        classes = self.config["decide_classes"]
        ep = self.episode
        if classes is None:
            return
        while ((p := ep.pending) is not None and not (ep.terminated or ep.truncated)
               and p.request is not None and p.request.slo_class not in classes):
            ep.decide(p.default())

    def _action(self, action) -> int:
        """The action as an int, or a ValueError saying what is wrong."""
        return int_action(action, self._n_actions, f"{self.env_id}: the action", self.action_space)

    def step(self, action):
        ep = self.episode
        if ep is None:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        p = ep.pending
        if p is None:
            raise RuntimeError(f"{self.env_id}: the episode is over (terminated or truncated); call reset()")
        a = self._action(action)
        slot_a = self._slot_action(a, p)
        self._check_valid(slot_a, p)
        try:
            ep.decide(self._to_sim(slot_a))
        except ValueError as e:
            raise ValueError(f"{self.env_id}: {e}") from None
        self._decide_others()
        self.actions.append(a)
        self.recent.append((p.time_us, p.request.id if p.request is not None else -1, a))
        reward = ep.take_reward(AGENT)
        self.episode_return += reward
        obs = self._observe(ep.pending)
        return obs, reward, ep.terminated, ep.truncated, self._info()

    def _check_valid(self, a: int, p) -> None:
        """Slot-specific validity (the router's mask); raise ValueError."""

    def _info(self) -> dict:
        ep = self.episode
        p = ep.pending
        if p is not None:
            info = {"time_s": p.time_us / 1e6, "request_id": p.request.id if p.request is not None else -1}
            self._info_extra(info, p)
            if self.residual:
                info["default_action"] = 0                 # follow the built-in policy
                info["heuristic_action"] = self.heuristic_action(p)
            elif self.config["info_default_action"]:
                info["default_action"] = self._from_sim(p.default())
            return info
        sim = ep.sim
        return {"time_s": ep.now_us() / 1e6, "request_id": -1, "end_reason": ep.end_reason,
                "episode_return": self.episode_return, "summary": ep.summary(),
                "decisions": ep.decisions, "seed": self.sim_seed, "events": sim.loop.events}

    def _info_extra(self, info: dict, p) -> None:
        pass

    # ---- render ---------------------------------------------------------------------------
    def render(self):
        from .render import render
        return render(self)

    def render_status(self) -> str:
        """The dashboard's status: the episode return so far."""
        return f"return={self.episode_return:.3f}"

    def close(self):
        self.episode = None

    # ---- pickling: the configuration, the seed and the actions; restored by replay ----------
    def __getstate__(self):
        rng = self._np_random
        return {"config": self.user_config, "render_mode": self.render_mode, "env_spec": self.env_spec,
                "sim_seed": self.sim_seed if self.episode is not None else None, "actions": list(self.actions),
                "np_random": rng_state(rng),
                "np_random_seed": self._np_random_seed, "spec": self.spec}

    def __setstate__(self, state):
        self.__init__(state["config"], state["render_mode"], state["env_spec"])
        self.spec = state["spec"]
        if state["sim_seed"] is not None:
            self._start(state["sim_seed"])
            for a in state["actions"]:
                self.step(a)
        if state["np_random"] is not None:
            self._np_random = rng_from_state(state["np_random"])
            self._np_random_seed = state["np_random_seed"]
