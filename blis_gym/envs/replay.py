"""Replay: an episode's seed and actions reproduce it bit for bit."""
from __future__ import annotations

import gymnasium as gym


def replay(env, seed: int, actions, config: dict | None = None) -> dict:
    """Run the episode of `seed` with `actions` (e.g. `env.unwrapped.actions` of a recorded
    episode) and return {"return", "steps", "terminated", "truncated", "info"} (the last info:
    with `summary` when the episode ended).

    `env` is a registered id (made with `config`) or an environment. The actions must not run
    past the end of the episode; fewer actions replay a prefix of it."""
    own = isinstance(env, str)
    if own:
        env = gym.make(env, config=config)
    try:
        obs, info = env.reset(seed=seed)
        total, steps, terminated, truncated = 0.0, 0, False, False
        for a in actions:
            if terminated or truncated:
                raise ValueError(f"replay: the episode ended after {steps} actions, {len(actions)} were given")
            obs, r, terminated, truncated, info = env.step(a)
            total += r
            steps += 1
        return {"return": total, "steps": steps, "terminated": terminated, "truncated": truncated, "info": info}
    finally:
        if own:
            env.close()
