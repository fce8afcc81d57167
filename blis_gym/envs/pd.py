"""blis_gym/PDDecider-v0: the learner decides prefill/decode disaggregation."""
from __future__ import annotations

from .base import BlisEnv


class PDDeciderEnv(BlisEnv):
    """
    ## Description

    One step per request that could be disaggregated (a P/D scenario, a prefill pod available):
    the router has chosen the decode pod; the agent decides whether the prompt is prefilled
    there (0) or on a prefill pod, its KV then moved to the decode pod (1). The prefill pod is
    picked by the scenario's prefill profile. Default spec: `envs/pd.yaml` (scenario
    `pd-chat-threshold16`: 1 prefill + 3 decode Llama-3.1-70B TP4 instances, multi-turn chat
    on 5,000-token system prompts; built-in decider: llm-d's prefix threshold N = 16).

    ## Action Space

    `Discrete(2)`: 0 prefill locally, 1 disaggregate.

    ## Observation Space

    The common layout (`blis_gym.envs.observations`), with the chosen decode pod flagged
    (`target`) and two extras: the fraction of the prompt the decode pod already caches (the
    decider's own estimate) and the uncached prompt tokens (log-scaled).

    ## Rewards

    As every blis_gym env (`blis_gym.envs.rewards`); defaults in `envs/pd.yaml`.

    ## Starting State, Episode End, Arguments, Vectorized environment

    As `RouterEnv`.

    ## Version History

    - v0: initial version.
    """

    SPEC = "pd"
    SLOT = "pd"

    def _info_extra(self, info: dict, p) -> None:
        info["decode_pod"] = int(p.pool)
