"""Register every bundled environment spec (`envs/*.yaml`) with Gymnasium.

Each spec gives an id (`blis_gym/<Name>-v<N>`) and an entry point; the spec's file name is
passed as `env_spec`, so several specs may share one class (e.g. a router on another
scenario). `import blis_gym` calls `register_all` once gymnasium is imported (see
`blis_gym/__init__.py`), so the ids exist whichever of the two is imported first.
"""
from __future__ import annotations

import gymnasium as gym
import yaml

from ..resources import env_spec_paths

# The bundled specs are read at every `import blis_gym` for their id and entry point only (a spec is
# validated in full when its environment is made): libyaml's loader, where PyYAML has it, reads
# them several times faster than the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

REGISTERED: dict[str, str] = {}       # id -> spec file


def register_all() -> list[str]:
    ids = []
    for path in env_spec_paths():
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        env_id = spec["id"]
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=spec["entry_point"], kwargs={"env_spec": path.stem},
                         max_episode_steps=None, nondeterministic=False)
        REGISTERED[env_id] = path.stem
        ids.append(env_id)
    return ids


register_all()
