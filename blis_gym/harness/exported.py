"""Exported policies (`*.pt2`): a network from observation to action logits, saved by
`torch.export` (a program of torch operations, no Python class to import).

The RLlib backend (`blis_gym.harness.rllib`) writes its policies this way (`DIR/model.pt2`), so
`blis-gym eval --policy DIR/model.pt2` plays them with torch alone (the `rl` extra), without
Ray. The file carries its spaces (`blis_gym.json` inside the archive: `obs_dim`, `n_actions`,
`max_pods`, `env_id`), so a policy for another environment is refused in one line, and
evaluation pads a scenario with fewer pods to the policy's `max_pods` (the env's `max_pods`). The policy plays
greedily: the highest logit among the actions `action_masks()` allows.
"""
from __future__ import annotations

import functools
import json

import numpy as np

from ..errors import ConfigError

META = "blis_gym.json"


def save(net, path, *, obs_dim: int, n_actions: int, max_pods: int, env_id: str) -> None:
    """Export `net` (a torch module: float32 (1, obs_dim) -> (1, n_actions) logits) and
    write it with its spaces to `path` (`max_pods`: the pod slots of its observations)."""
    import torch
    with torch.no_grad():
        program = torch.export.export(net.eval(), (torch.zeros(1, obs_dim),))
    meta = json.dumps({"obs_dim": obs_dim, "n_actions": n_actions, "max_pods": max_pods, "env_id": env_id})
    torch.export.save(program, str(path), extra_files={META: meta})


@functools.lru_cache(maxsize=8)
def load(path: str):
    """(network, spaces) of an exported policy (cached per process, as SB3 checkpoints are)."""
    import torch
    torch.set_num_threads(1)
    files = {META: ""}
    try:
        net = torch.export.load(path, extra_files=files).module()
        meta = json.loads(files[META])
        meta = {"obs_dim": int(meta["obs_dim"]), "n_actions": int(meta["n_actions"]), "max_pods": int(meta["max_pods"]),
                "env_id": str(meta["env_id"])}
    except Exception as e:              # not an exported policy: one line, not a traceback
        raise ConfigError("--policy", f"{path}: cannot load it as an exported policy "
                                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return net, meta


def check(path: str, obs_space, act_space, label: str) -> None:
    """A one-line ConfigError if the exported policy does not fit this environment's spaces."""
    _, meta = load(path)
    if (meta["obs_dim"],) != tuple(obs_space.shape) or meta["n_actions"] != getattr(act_space, "n", None):
        raise ConfigError("--policy", f"{label}: the policy ({meta['env_id']}) expects observations of shape "
                                      f"({meta['obs_dim']},) and Discrete({meta['n_actions']}), the environment "
                                      f"gives {obs_space.shape} and {act_space} (a policy for another environment?)")


def greedy(path: str):
    """act(obs, mask) -> the valid action with the highest logit."""
    import torch
    net, _ = load(path)

    def act(obs: np.ndarray, mask: np.ndarray) -> int:
        with torch.no_grad():
            logits = net(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))[0].numpy()
        return int(np.argmax(np.where(mask, logits, -np.inf)))
    return act
