"""Register every environment spec in the repository's `envs/` folder with Gymnasium.

Each `envs/<name>.yaml` gives an id (`blis_gym/<Name>-v<N>`) and an entry point; the spec's
file name is passed as `env_spec`, so several specs may share one class (e.g. a router on
another scenario). Runs on `import blis_gym.envs`.
"""
from __future__ import annotations

import gymnasium as gym

from .config import SPEC_DIR, load_spec

REGISTERED: dict[str, str] = {}       # id -> spec file


def register_all() -> list[str]:
    ids = []
    if not SPEC_DIR.is_dir():
        return ids
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        spec = load_spec(path)
        env_id = spec["id"]
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=spec["entry_point"], kwargs={"env_spec": path.stem},
                         max_episode_steps=None, nondeterministic=False)
        REGISTERED[env_id] = path.stem
        ids.append(env_id)
    return ids


register_all()
