"""A PettingZoo AEC environment: llm-d's admission, router, P/D decider and autoscaler as agents.

    from blis_gym.envs import multi_agent_env
    env = multi_agent_env(config={"horizon_s": 60}, render_mode="ansi")
    env.reset(seed=0)
    for agent in env.agent_iter():
        obs, reward, terminated, truncated, info = env.last()
        action = None if terminated or truncated else env.action_space(agent).sample(info["action_mask"])
        env.step(action)

One simulator (`blis_gym.envs.core.Episode`) with several decision slots bound to agents. The
simulator runs until one of them must decide; that agent is `agent_selection` and the others
wait (agent-environment cycle, AEC: the decision points are event-driven, never simultaneous,
so there is no ParallelEnv). The agents are named after their slots: `admission`, `router`,
`pd` and `autoscaler`. The full documentation (spaces, rewards, arguments) is `docs/envs.md`.

- Agents present: those of `config["agents"]` (default: every slot the scenario has); the P/D
  agent needs a prefill pool and the autoscaler an autoscaled pool (asking for one the scenario
  lacks is a ConfigError). Slots that are not agents keep the scenario's built-in policies.
- Spaces: each agent's are its single-agent environment's (`RouterEnv`, `AdmissionEnv`,
  `PDDeciderEnv`, `AutoscalerEnv`): a flat `Box(0, 1)` observation built by `Observer(slot)`
  and a `Discrete` action. The valid actions are `infos[agent]["action_mask"]` (an int8 array of
  the action space's size; PettingZoo's `action_space(agent).sample(mask)` takes it): for the
  router the pods that can take the request (padding slots excluded), all ones for the other
  agents on their turn, all zeros while an agent waits or is done. A waiting agent observes the
  cluster without a request (the request block and the slot extras are zero).
- Rewards: one `SloReward` per agent, each with its own reward config (defaults: the four env
  specs' `reward` sections). Every step hands every live agent what its reward accrued since the
  previous step, so an agent's cumulative reward (`last()`) collects everything that happened
  since its own previous turn, and the sum of an agent's rewards over the episode equals
  `episode_kpi(sim, config["rewards"][agent])`.
- End: when the simulator ends (drained: terminated; horizon, `max_requests`, `max_backlog`:
  truncated) every agent is terminated or truncated at once; each then steps `None` once, as
  PettingZoo asks. The final infos hold `summary`, `end_reason` and the agent's `episode_return`.
- Seeding: `reset(seed=s)` runs the simulator with seed s (arrivals, lengths and prefixes come
  from their own random streams, so they do not depend on the agents' actions); `reset()`
  without a seed draws the next seed from the environment's generator.
"""
from __future__ import annotations

import copy
from collections import deque

import numpy as np
import yaml
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from ..errors import ConfigError
from ..resources import bundled_scenarios
from ..schema.scenario import build
from ..sim.simulation import SLOTS
from .config import BASE_CONFIG, check_config, load_scenario_for, load_spec, merge_config
from .core import Episode, int_action, rng_from_state, rng_state, slot_action_space
from .observations import Observer

SPEC_OF = {"admission": "admission", "router": "router", "pd": "pd", "autoscaler": "autoscaler"}


def default_scenario() -> dict:
    """The default scenario, inline: `scenarios/pd-chat-threshold16.yaml` (1 prefill + 3 decode
    Llama-3.1-70B TP4 instances, multi-turn chat on 5,000-token system prompts, llm-d's prefix
    threshold decider N = 16) with the decode pool autoscaled (HPA-style, 2-4 instances, 15 s
    ticks, 60 s scale-down stabilisation, 30 s provisioning + 30 s load) and a 120 s horizon."""
    data = yaml.safe_load(bundled_scenarios()["pd-chat-threshold16"].read_text())
    data["name"] = "pd-chat-autoscaled"
    data["pools"] = [
        {"name": "prefill", "role": "prefill", "instances": 1},
        {"name": "decode", "role": "decode", "instances": 3, "min_instances": 2, "max_instances": 4,
         "provisioning_delay_s": 30, "load_time_s": 30,
         "autoscaler": {"policy": "hpa", "interval_s": 15, "metrics": {"waiting": 1, "running": 16},
                        "scale_up_stabilization_s": 0, "scale_down_stabilization_s": 60}},
    ]
    data["workload"] = {**data["workload"], "horizon_s": 120}
    return data


def _base_config() -> dict:
    c = copy.deepcopy(BASE_CONFIG)
    del c["reward"], c["decide_classes"]       # rewards per agent; every agent decides every request
    c.update({
        "scenario": default_scenario(),
        "horizon_s": None,                    # the scenario's (120 s for the default)
        "max_backlog": 2000,
        # which slots are agents: null = every slot the scenario has, else a list of slot names
        "agents": None,
        # one reward config per agent (the keys of blis_gym.envs.config BASE_CONFIG["reward"]);
        # defaults: the reward section of each single-agent env spec (envs/<slot>.yaml)
        "rewards": {slot: load_spec(SPEC_OF[slot])["config"]["reward"] for slot in SLOTS},
    })
    return c


def _rekey(e: ConfigError, agent: str) -> ConfigError:
    return ConfigError(e.field.replace("config.reward", f"config.rewards.{agent}", 1), e.message)


def merge_multi_config(base: dict, over: dict | None) -> dict:
    """`over` merged into `base` (unknown keys are ConfigErrors naming them); `rewards.<agent>`
    merges into that agent's reward section key by key."""
    if over is None:
        return copy.deepcopy(base)
    if not isinstance(over, dict):
        raise ConfigError("config", f"must be a mapping of settings, got {type(over).__name__}")
    over = dict(over)
    rw = over.pop("rewards", None)
    scenario = over.pop("scenario", None)
    out = merge_config(base, over)
    if scenario is not None:                  # a name, a path or a mapping: replaces the default
        out["scenario"] = copy.deepcopy(scenario)
    if rw is not None:
        if not isinstance(rw, dict):
            raise ConfigError("config.rewards", f"must be a mapping of agent -> reward settings, got {rw!r}")
        for agent, v in rw.items():
            if agent not in SLOTS:
                raise ConfigError(f"config.rewards.{agent}", f"unknown agent; allowed: {', '.join(SLOTS)}")
            try:
                out["rewards"][agent] = merge_config({"reward": out["rewards"][agent]}, {"reward": v})["reward"]
            except ConfigError as e:
                raise _rekey(e, agent) from None
    return out


class MultiAgentEnv(AECEnv):
    """The AEC environment (see the module docstring and docs/envs.md). Build it with
    `blis_gym.envs.multi_agent_env(config=..., render_mode=...)` (wrapped in PettingZoo's
    OrderEnforcingWrapper) or `MultiAgentEnv(config=..., render_mode=...)` (raw)."""

    metadata = {"name": "blis_gym_multi_v0", "render_modes": ["ansi", "rgb_array"], "render_fps": 4,
                "is_parallelizable": False}

    @classmethod
    def default_config(cls) -> dict:
        """The default configuration (a fresh copy: edit and pass as config)."""
        return _base_config()

    def __init__(self, config: dict | None = None, render_mode: str | None = None):
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError("render_mode", f"unknown {render_mode!r}; allowed: ansi, rgb_array")
        self.user_config = config
        self.config = c = merge_multi_config(_base_config(), config)
        for agent in SLOTS:
            try:
                check_config({**c, "reward": c["rewards"][agent]})
            except ConfigError as e:
                raise _rekey(e, agent) from None
        self.render_mode = render_mode
        self.env_id = "blis_gym multi-agent (AEC)"
        self._scenario, self._base_dir, probe = load_scenario_for(c)
        self.n_pods = len(probe.instances)
        self.pool_names = [p.name for p in probe.pools or []]
        self.flow_control = probe.gateway.flow_control is not None
        present = {"admission", "router"}
        if any(ic.role == "prefill" for ic in probe.instances):
            present.add("pd")
        if any(p.autoscaler is not None for p in probe.pools or []):
            present.add("autoscaler")
        self.possible_agents = self._agents(c["agents"], present)
        self.scale_step = int(c["scale_step"])
        self.observers = {a: Observer(a, c, self.n_pods, self.pool_names) for a in self.possible_agents}
        self.max_pods = next(iter(self.observers.values())).max_pods
        self.observation_spaces = {a: o.space for a, o in self.observers.items()}
        self.action_spaces = {a: self._action_space(a) for a in self.possible_agents}
        self.observer = next(iter(self.observers.values()))      # for render
        self.agents = []
        self.episode: Episode | None = None
        self.sim_seed: int | None = None
        self.actions: list[tuple] = []          # every step() call, (agent, action or None): replayable
        self.returns: dict[str, float] = {}
        self.turns: dict[str, int] = {}
        self.recent: deque = deque(maxlen=c["render_recent"])
        self._np_random = None
        self._np_random_seed = None

    @staticmethod
    def _agents(wanted, present: set) -> list[str]:
        if wanted is None:
            return [s for s in SLOTS if s in present]
        if not isinstance(wanted, (list, tuple)) or not wanted or not all(isinstance(a, str) for a in wanted):
            raise ConfigError("config.agents", f"must be null or a non-empty list of slots ({', '.join(SLOTS)}), "
                                               f"got {wanted!r}")
        for a in wanted:
            if a not in SLOTS:
                raise ConfigError("config.agents", f"unknown agent {a!r}; allowed: {', '.join(SLOTS)}")
            if a not in present:
                why = "a prefill pool" if a == "pd" else "an autoscaled pool"
                raise ConfigError("config.agents", f"{a!r}: the scenario has no {why}, so it never decides")
        if len(set(wanted)) != len(wanted):
            raise ConfigError("config.agents", f"duplicate agents in {wanted!r}")
        return [s for s in SLOTS if s in wanted]

    def _action_space(self, agent: str) -> spaces.Discrete:
        return slot_action_space(agent, self.max_pods, self.flow_control, self.scale_step)

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    @property
    def np_random(self) -> np.random.Generator:
        if self._np_random is None:
            self._np_random, self._np_random_seed = seeding.np_random()
        return self._np_random

    @property
    def pending(self):
        """The simulator's pending decision (its `slot` is `agent_selection`), None at the end."""
        return self.episode.pending if self.episode is not None else None

    @property
    def sim(self):
        return self.episode.sim if self.episode is not None else None

    # ---- PettingZoo API ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        """Start an episode. `options` is accepted and ignored (PettingZoo's api_test passes some)."""
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            sim_seed = int(seed)
        else:
            sim_seed = int(self.np_random.integers(0, 2**31 - 1))
        self._start(sim_seed)

    def _start(self, sim_seed: int) -> None:
        sc = self._scenario.model_copy(update={"seed": sim_seed})
        cfg = build(sc, base_dir=self._base_dir)
        c = self.config
        self.sim_seed = sim_seed
        self.actions = []
        self.recent.clear()
        self.agents = list(self.possible_agents)
        self.episode = ep = Episode(cfg, set(self.agents), {a: c["rewards"][a] for a in self.agents},
                                    c["max_requests"], c["max_backlog"])
        for o in self.observers.values():
            o.attach(ep.sim)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.returns = {a: 0.0 for a in self.agents}
        self.turns = {a: 0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self._skip_agent_selection = None
        self._after_decision()

    def observe(self, agent: str) -> np.ndarray:
        if self.episode is None:
            raise RuntimeError(f"{self.env_id}: call reset() before observe()")
        if agent not in self.observers:
            raise ValueError(f"{self.env_id}: unknown agent {agent!r}; agents: {', '.join(self.possible_agents)}")
        p = self.episode.pending
        return self.observers[agent].build(p if p is not None and p.slot == agent else None)

    def action_mask(self, agent: str) -> np.ndarray:
        """The valid actions of `agent` now (int8, action_space(agent).n): zeros unless it is its turn."""
        n = int(self.action_spaces[agent].n)
        m = np.zeros(n, dtype=np.int8)
        p = self.pending
        if p is not None and p.slot == agent:
            if agent == "router":
                m[:self.n_pods] = p.mask
            else:
                m[:] = 1
        return m

    def _action(self, agent: str, action) -> int:
        a = int_action(action, int(self.action_spaces[agent].n), f"{self.env_id}: the {agent} action",
                       self.action_spaces[agent])
        if agent == "router" and a >= self.n_pods:
            raise ValueError(f"{self.env_id}: router action {a} is a padding slot: the scenario has {self.n_pods} "
                             f"pods (0..{self.n_pods - 1}); see infos['router']['action_mask']")
        return a

    def step(self, action) -> None:
        ep = self.episode
        if ep is None:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            self.actions.append((agent, None))
            return
        p = ep.pending
        a = self._action(agent, action)
        try:
            ep.decide(a - self.scale_step if agent == "autoscaler" else a)
        except ValueError as e:
            raise ValueError(f"{self.env_id}: {e}") from None
        self.actions.append((agent, a))
        self.turns[agent] += 1
        self.recent.append((p.time_us, p.request.id if p.request is not None else -1, f"{agent} {a}"))
        self._cumulative_rewards[agent] = 0.0
        self._after_decision()

    def _after_decision(self) -> None:
        """Hand out the rewards accrued since the last decision; pick the next agent; infos."""
        ep = self.episode
        for a in self.agents:
            r = ep.take_reward(a)
            self.rewards[a] = r
            self.returns[a] += r
        self._accumulate_rewards()
        p = ep.pending
        if p is None:
            for a in self.agents:
                self.terminations[a] = ep.terminated
                self.truncations[a] = ep.truncated
            summary = ep.summary()
            self.infos = {a: {"time_s": ep.now_us() / 1e6, "request_id": -1, "end_reason": ep.end_reason,
                              "episode_return": self.returns[a], "turns": self.turns[a], "summary": summary,
                              "seed": self.sim_seed, "events": ep.sim.loop.events,
                              "action_mask": self.action_mask(a)} for a in self.agents}
            self.agent_selection = self.agents[0]
            return
        self.agent_selection = p.slot
        t = p.time_us / 1e6
        self.infos = {a: {"time_s": t, "action_mask": self.action_mask(a)} for a in self.agents}
        info = self.infos[p.slot]
        info["request_id"] = p.request.id if p.request is not None else -1
        if p.slot == "pd":
            info["decode_pod"] = int(p.pool)
        elif p.slot == "autoscaler":
            info["pool"] = p.pool.cfg.name
        if self.config["info_default_action"]:
            d = p.default()
            if p.slot == "autoscaler":
                k = self.scale_step
                info["default_action"] = int(max(-k, min(k, int(d)))) + k
            else:
                info["default_action"] = -1 if d is None else int(d)

    # ---- render, close ----------------------------------------------------------------------------
    def render(self):
        from .render import render
        return render(self)

    def render_status(self) -> str:
        """The dashboard's status: whose turn it is and every agent's return so far."""
        rets = "  ".join(f"{a}={r:.3f}" for a, r in self.returns.items())
        return f"turn: {self.agent_selection}  returns: {rets}"

    def close(self) -> None:
        self.episode = None

    # ---- pickling: the configuration, the seed and the step() calls; restored by replay -------------
    def __getstate__(self):
        rng = self._np_random
        return {"config": self.user_config, "render_mode": self.render_mode,
                "sim_seed": self.sim_seed if self.episode is not None else None, "actions": list(self.actions),
                "np_random": rng_state(rng),
                "np_random_seed": self._np_random_seed}

    def __setstate__(self, state):
        self.__init__(state["config"], state["render_mode"])
        if state["sim_seed"] is not None:
            self._start(state["sim_seed"])
            for _agent, a in state["actions"]:
                self.step(a)
        if state["np_random"] is not None:
            self._np_random = rng_from_state(state["np_random"])
            self._np_random_seed = state["np_random_seed"]


raw_env = MultiAgentEnv


def env(config: dict | None = None, render_mode: str | None = None) -> AECEnv:
    """The AEC environment wrapped in PettingZoo's OrderEnforcingWrapper (the PettingZoo idiom)."""
    return wrappers.OrderEnforcingWrapper(MultiAgentEnv(config=config, render_mode=render_mode))


def multi_agent_env(config: dict | None = None, render_mode: str | None = None) -> AECEnv:
    """`env(config, render_mode)`: see the module docstring."""
    return env(config=config, render_mode=render_mode)
