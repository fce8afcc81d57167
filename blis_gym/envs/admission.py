"""blis_gym/Admission-v0: the learner is the gateway's admission controller."""
from __future__ import annotations

from .base import BlisEnv


class AdmissionEnv(BlisEnv):
    """
    ## Description

    One step per arriving request: the agent admits or rejects it (HTTP 429
    `rejected-by-agent`), or, when the scenario has gateway flow control, queues it in the
    flow-control queue (which dispatches it when the pool is not saturated). Routing, P/D and
    autoscaling keep the scenario's built-in policies. Default spec: `envs/admission.yaml`
    (scenario `overload-probabilistic`: 4 Qwen3-14B replicas offered 110 req/s, 30% critical,
    70% sheddable; the built-in policy is llm-d's probabilistic admitter).

    ## Action Space

    `Discrete(2)`: 0 reject, 1 admit; `Discrete(3)` with flow control: 2 queue. Anything else
    raises ValueError.

    ## Observation Space

    `Box(0, 1, (max_pods * 11 + request + cluster features,), float32)`: the pods' scraped
    signals as the admitter sees them, the request (input length, priority, SLO class, turn,
    cached prefix per pod) and the cluster (flow-control queue, backlog, time...). See
    `blis_gym.envs.observations`.

    ## Rewards

    As every blis_gym env (`blis_gym.envs.rewards`): credit w[class] for each request that
    completes within its class's targets (here the scenario's `slo_targets`), minus
    penalty[class] for each rejected or timed-out request of priority ≥ 0 (critical), landing
    when each request finishes. Defaults in `envs/admission.yaml`.

    ## Starting State, Episode End, Arguments, Vectorized environment

    As `RouterEnv` (terminated when drained; truncated at the horizon, `max_requests`, or
    `max_backlog`; final `info["summary"]`).

    ## Version History

    - v0: initial version.
    """

    SPEC = "admission"
    SLOT = "admission"

