"""One episode on the simulator, independent of Gymnasium: the part every environment shares.

`Episode` owns a `Simulation` with some slots bound to external agents, one `SloReward` per
agent (fed by the simulator's final-state hooks), and the rules that end an episode. A
single-agent environment uses one slot and one reward; a multi-agent wrapper (PettingZoo AEC)
binds several slots, gives each agent its own reward, and reads `pending.slot` to know whose
turn it is.
"""
from __future__ import annotations


import numpy as np
from gymnasium import spaces

from ..sim.cluster.signals import as_int
from ..sim.simulation import Simulation
from .rewards import SloReward

END_DRAINED = "drained"            # the workload ended and the system emptied: terminated
END_HORIZON = "horizon"            # the simulator stopped at the horizon: truncated
END_MAX_REQUESTS = "max_requests"  # truncated
END_BACKLOG = "backlog"            # runaway backlog: truncated


class Episode:
    def __init__(self, sim_cfg, slots, reward_cfgs: dict, max_requests: int | None = None,
                 max_backlog: int | None = None):
        self.sim = sim = Simulation(sim_cfg, external=set(slots))
        self.rewards = {name: SloReward(rc, sim) for name, rc in reward_cfgs.items()}
        for rw in self.rewards.values():
            sim.final_hooks.append(rw.on_final)
        self.max_requests = max_requests
        self.max_backlog = max_backlog
        self.planned_horizon_us = sim.cfg.horizon_us     # before a cut moves it (0: none)
        self.terminated = False
        self.truncated = False
        self.end_reason = ""
        self.decisions = 0
        self.pending = sim.run_until_decision()
        self._check_end()

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def decide(self, action):
        """Answer the pending decision (ValueError, nothing changed, if invalid); advance."""
        self.pending = self.sim.decide(action)
        self.decisions += 1
        self._check_end()
        return self.pending

    def _check_end(self) -> None:
        sim = self.sim
        if self.pending is None:
            # run_until_decision returned None: no event left within the horizon
            if sim.cfg.horizon_us and (sim.loop.heap or sim.injected > sim.finished):
                self.truncated, self.end_reason = True, END_HORIZON
            else:
                self.terminated, self.end_reason = True, END_DRAINED
            return
        if self.max_requests is not None and sim.injected > self.max_requests:
            self._stop(END_MAX_REQUESTS)
        elif self.max_backlog is not None and sim.injected - sim.finished > self.max_backlog:
            self._stop(END_BACKLOG)

    def _stop(self, reason: str) -> None:
        """Cut the run now: the requests in the system are recorded in their current state (the
        one awaiting the agent's decision as still in the gateway) and the run's duration (and
        cost) ends at this moment."""
        sim = self.sim
        sim.cfg.horizon_us = max(1, sim.loop.now)   # this episode's own copy of the configuration
        sim.close()
        sim.pending = None
        self.pending = None
        self.truncated, self.end_reason = True, reason

    def now_us(self) -> int:
        return self.sim.end_time_us() if self.done else self.sim.loop.now

    def take_reward(self, agent: str) -> float:
        return self.rewards[agent].take(self.now_us())

    def summary(self) -> dict:
        return self.sim.summary()


def int_action(action, n: int, what: str, space) -> int:
    """`action` as an int in 0..n-1 (Python and numpy integers, one-element integer arrays), or a
    ValueError naming `what` and the allowed range."""
    a = as_int(action)
    if a is None:
        hint = " (None is only for a terminated or truncated agent)" if action is None else ""
        raise ValueError(f"{what} must be an integer in 0..{n - 1} (action_space {space}), got {action!r} "
                         f"of type {type(action).__name__}{hint}")
    if not 0 <= a < n:
        raise ValueError(f"{what} {a} is out of range: action_space {space} allows 0..{n - 1}")
    return a


def slot_action_space(slot: str, max_pods: int, flow_control: bool, scale_step: int) -> spaces.Discrete:
    """The action space of a decision slot: router, a pod index (0..max_pods-1); admission,
    0 reject / 1 admit (/ 2 queue, with flow control); pd, 0 prefill locally / 1 disaggregate;
    autoscaler, 0..2k for a change of -k..+k replicas (k = scale_step)."""
    if slot == "router":
        return spaces.Discrete(max_pods)
    if slot == "admission":
        return spaces.Discrete(3 if flow_control else 2)
    if slot == "pd":
        return spaces.Discrete(2)
    return spaces.Discrete(2 * scale_step + 1)


def rng_state(rng: np.random.Generator | None):
    """A generator's state for pickling (None for none)."""
    return rng.bit_generator.state if rng is not None else None


def rng_from_state(state) -> np.random.Generator:
    """The generator whose state `rng_state` returned."""
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng
