"""blis_gym/Autoscaler-v0: the learner scales serving pools."""
from __future__ import annotations

from .base import BlisEnv


class AutoscalerEnv(BlisEnv):
    """
    ## Description

    One step per autoscaler tick of a pool (every `interval_s` of the pool's autoscaler spec):
    the agent scales that pool down, holds, or scales it up. New replicas wait for a node to be
    provisioned and the model to load, as the scenario says; removed ones drain first. With
    several autoscaled pools, ticks alternate and the observation flags the pool. Routing and
    admission keep the scenario's built-in policies. Default spec: `envs/autoscaler.yaml`
    (scenario `autoscale-bursty`: Qwen3-14B replicas on 1-GPU H100 nodes, 1 to 10, 4 req/s with
    two 40 req/s bursts; the built-in policy is a KEDA/HPA-style autoscaler).

    ## Action Space

    `Discrete(2k + 1)` with k = `scale_step` (default 1, so Discrete(3)): action a changes the
    pool's desired replicas by a − k (0 = down one, 1 = hold, 2 = up one), clamped to the
    pool's [min, max].

    ## Observation Space

    The common layout (`blis_gym.envs.observations`) with the pool's pods flagged (`target`)
    and extras: one flag per pool, then replicas (active + starting), active, starting,
    draining and the minimum, each divided by the pool's maximum.

    ## Rewards

    `blis_gym.envs.rewards` with the GPU cost: `− cost_weight · Δdollars` of provisioned nodes
    since the previous tick, besides the SLO credit and penalties (defaults in
    `envs/autoscaler.yaml`).

    ## Starting State, Episode End, Arguments, Vectorized environment

    As `RouterEnv`. `info["pool"]` names the pool of the tick; with `info_default_action` the
    built-in autoscaler's change is clipped to ±k.

    ## Version History

    - v0: initial version.
    """

    SPEC = "autoscaler"
    SLOT = "autoscaler"

    def _action_space(self):
        self.scale_step = int(self.config["scale_step"])
        return super()._action_space()

    def _to_sim(self, a: int):
        return a - self.scale_step

    def _from_sim(self, a) -> int:
        k = self.scale_step
        return int(max(-k, min(k, int(a)))) + k

    def _info_extra(self, info: dict, p) -> None:
        info["pool"] = p.pool.cfg.name
