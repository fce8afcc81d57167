"""blis_gym/Router-v0: the learner is llm-d's Endpoint Picker."""
from __future__ import annotations

import numpy as np

from .base import BlisEnv


class RouterEnv(BlisEnv):
    """
    ## Description

    One step per routing decision of an llm-d cluster simulated by blis_gym: a request has passed
    gateway admission (and flow control, if on) and the agent picks the pod that serves it,
    seeing what llm-d's EPP sees (the metrics scraper's stale snapshot, the router's own
    in-flight counts and its approximate prefix-cache index). Admission, P/D and autoscaling keep
    the built-in policies the scenario names (override them with `config["scenario_overrides"]`).
    Default spec: `envs/router.yaml` (scenario `router-shared-prefix`: 4 Qwen3-14B replicas,
    48 groups of 6,000-token shared system prompts, Poisson arrivals at 24 req/s).

    ## Action Space

    `Discrete(max_pods)`: the index of the pod. `action_masks()` (used by sb3-contrib
    MaskablePPO) is False for padding slots and for pods that cannot take the request (loading,
    draining, off, or of the wrong role in P/D). An out-of-range, masked or non-integer action
    raises ValueError naming the problem and changes nothing.

    ## Observation Space

    `Box(0, 1, (max_pods * 11 + request + cluster features,), float32)`: per pod presence,
    availability, role, waiting, running, KV use, in-flight requests and tokens, the fraction of
    this request's prompt blocks in the pod's prefix cache (the router's approximate index), and
    target (unused here); the request's input length, priority, SLO class and session turn; the
    cluster's available fraction, flow-control queue, backlog, time, snapshot age and mean KV
    use. Every feature is listed in `blis_gym.envs.observations` and by
    `env.unwrapped.observer.feature_names()`.

    ## Rewards

    Events land when they happen (see `blis_gym.envs.rewards`):
    `r = Σ_completed w[class]·1[TTFT ≤ ttft[class] ∧ ITL ≤ itl[class]] − Σ_(rejected or timed out,
    priority ≥ 0) penalty[class] − cost_weight·Δdollars`, defaults in `envs/router.yaml`. The
    episode return equals `blis_gym.envs.rewards.episode_kpi(sim, config["reward"])`.

    ## Starting State

    The simulator runs from t = 0 to the first routing decision. `reset(seed=s)` fixes every
    random stream (arrivals, lengths, prefixes, policy tie-breaks); the same seed gives the same
    arrivals whatever the agent does.

    ## Episode End

    terminated: the workload ended and every request finished. truncated: the horizon
    (`horizon_s`, else the scenario's), `max_requests` routed requests, or more than
    `max_backlog` requests in the system. The last `info` holds `summary` (the run's KPIs, as
    `blis_gym run` writes them: TTFT/ITL/E2E percentiles per class, goodput, rejections, cost),
    `end_reason` and `episode_return`.

    ## Arguments

    `gym.make("blis_gym/Router-v0", config={...}, render_mode="ansi" | "rgb_array")`; config keys
    and defaults: `RouterEnv.default_config()` (documented in `blis_gym.envs.config`).
    `info_default_action=True` puts the default profile's choice in `info["default_action"]`
    (it consumes the router's tie-break draws, as the built-in run does).

    ## Vectorized environment

    Works with Gymnasium's SyncVectorEnv/AsyncVectorEnv and SB3's DummyVecEnv/SubprocVecEnv
    (an environment pickles as its configuration, seed and actions, and is rebuilt by replay).
    Worker processes must import blis_gym to know the ids: give the id as
    `"blis_gym:blis_gym/Router-v0"` (e.g. to SB3's `make_vec_env`), or a factory that imports it.

    ## Version History

    - v0: initial version.
    """

    SPEC = "router"
    SLOT = "router"

    _mask_pods = None

    def _slot_masks(self) -> np.ndarray:
        p = self.pending
        pods = p.mask if p is not None else [True] * self.n_pods
        if pods != self._mask_pods:               # availability rarely changes: reuse the array
            self._mask_pods = pods
            self._mask = np.zeros(self._n_base, dtype=bool)
            self._mask[:self.n_pods] = pods
        return self._mask.copy()

    def _check_valid(self, a: int, p) -> None:
        if a >= self.n_pods:
            raise ValueError(f"{self.env_id}: action {a} is a padding slot: the scenario has {self.n_pods} pods "
                             f"(0..{self.n_pods - 1}); see action_masks()")

    def _info_extra(self, info: dict, p) -> None:
        pass
