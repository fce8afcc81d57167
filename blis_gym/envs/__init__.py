"""Gymnasium environments over the simulator's decision points (one per slot).

    import blis_gym, gymnasium as gym
    env = gym.make("blis_gym/Router-v0", config={"horizon_s": 60}, render_mode="ansi")

Registered on import (ids and specs in the repository's `envs/` folder):
`blis_gym/Router-v0`, `blis_gym/Admission-v0`, `blis_gym/PDDecider-v0`, `blis_gym/Autoscaler-v0`.

The multi-agent PettingZoo AEC environment (admission, router, P/D decider and autoscaler as
agents) is `multi_agent_env(config=..., render_mode=...)` (`blis_gym.envs.multi`; imported on
first use, as it needs pettingzoo, from the `rl` extra).
"""
from .admission import AdmissionEnv
from .autoscaler import AutoscalerEnv
from .base import BlisEnv
from .core import Episode
from .observations import Observer
from .pd import PDDeciderEnv
from .registration import REGISTERED, register_all
from .replay import replay
from .rewards import SloReward, episode_kpi
from .router import RouterEnv

__all__ = ["AdmissionEnv", "AutoscalerEnv", "BlisEnv", "Episode", "Observer", "PDDeciderEnv", "REGISTERED",
           "RouterEnv", "SloReward", "episode_kpi", "register_all", "replay", "MultiAgentEnv", "multi_agent_env"]


def __getattr__(name):
    # lazy: blis_gym.envs.multi imports pettingzoo (an optional dependency)
    if name in ("MultiAgentEnv", "multi_agent_env"):
        import importlib
        import importlib.util
        if importlib.util.find_spec("pettingzoo") is None:
            raise ModuleNotFoundError(f"blis_gym.envs.{name} needs the rl extra (pettingzoo is not installed): "
                                      f"pip install 'blis-gym[rl]'", name="pettingzoo")
        return getattr(importlib.import_module(".multi", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
