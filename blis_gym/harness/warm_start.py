"""Warm start: behaviour cloning from a heuristic before reinforcement learning.

An admission, P/D or autoscaling decision changes the reward of requests that finish hundreds
of decisions later, so an actor-critic started from random weights spends most of its budget
near a state-blind policy (a fixed admit probability, say). Starting from the slot's best
heuristic instead, the policy imitates its actions and the value head learns the discounted
returns of its episodes; the RL algorithm then only has to improve on it.

Demonstrations are recorded in the training environment itself, on the recipe's training
scenarios and seeds, with the heuristic as the scenario's built-in policy and its choice read
from `info["default_action"]` (in the agent's action space: the autoscaler's change clipped to
±scale_step), so the observations are the ones the agent will see.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass
class Demonstrations:
    obs: np.ndarray            # (n, obs_dim) float32
    actions: np.ndarray        # (n,) int64
    returns: np.ndarray        # (n,) float32: discounted return from each step to the episode's end
    masks: np.ndarray | None   # (n, n_actions) bool, for maskable policies


def heuristic(name: str, slot: str):
    """The heuristic `name` of `slot`, or a one-line ConfigError."""
    from .policies import Heuristic, heuristic_names
    if not isinstance(name, str) or name not in heuristic_names(slot):
        raise ConfigError("warm_start.policy", f"must be a heuristic of the {slot} slot: "
                                               f"{', '.join(heuristic_names(slot))}; got {name!r}")
    return Heuristic(name, slot, name)


def demonstrations(recipe, spec: dict, configs: list[dict], train_seeds: tuple[int, int],
                   gamma: float) -> Demonstrations:
    """`recipe.warm_start.episodes` episodes of the heuristic, cycling over the training
    scenarios, on seeds drawn from the training range by a generator seeded by the recipe."""
    import gymnasium as gym

    from ..envs.config import merge_config
    ws = recipe.warm_start
    p = heuristic(ws.policy, spec["slot"])
    rng = np.random.default_rng(recipe.seed)
    obs, actions, returns, masks = [], [], [], []
    for i in range(ws.episodes):
        full = merge_config(spec["config"], configs[i % len(configs)])
        cfg = p.env_config(full)
        if "scale_step" in full:
            cfg["scale_step"] = full["scale_step"]      # the agent's action space, not the heuristic's
        env = gym.make(recipe.env_id, config=cfg)
        o, info = env.reset(seed=int(rng.integers(train_seeds[0], train_seeds[1] + 1)))
        rewards = []
        while True:
            a = info["default_action"]
            obs.append(o)
            actions.append(a)
            if recipe.algo == "maskableppo":
                masks.append(env.unwrapped.action_masks().copy())
            o, r, terminated, truncated, info = env.step(a)
            rewards.append(r)
            if terminated or truncated:
                break
        env.close()
        returns.append(_discounted(np.asarray(rewards, dtype=np.float64) * recipe.reward_scale, gamma))
    return Demonstrations(np.asarray(obs, dtype=np.float32), np.asarray(actions, dtype=np.int64),
                          np.concatenate(returns).astype(np.float32), np.asarray(masks) if masks else None)


def _discounted(rewards: np.ndarray, gamma: float) -> np.ndarray:
    out = np.empty_like(rewards)
    acc = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out


def clone(model, demo: Demonstrations, ws, seed: int) -> dict:
    """Fit the model's policy to the demonstrations (cross-entropy on the actions, smoothed by
    `ws.exploration`, plus the value head's MSE on the returns, scaled by their variance so
    neither dominates); returns the final epoch's mean losses, the fraction of demonstrated
    actions the policy now picks (overall and per action) and the mean probability it gives them."""
    import torch
    pol = model.policy
    pol.set_training_mode(True)
    opt = torch.optim.Adam(pol.parameters(), lr=ws.learning_rate)
    gen = np.random.default_rng(seed)
    obs = torch.as_tensor(demo.obs)
    act = torch.as_tensor(demo.actions)
    ret = torch.as_tensor(demo.returns)
    var = float(ret.var()) if len(ret) > 1 else 1.0
    masks = None if demo.masks is None else torch.as_tensor(demo.masks)
    n = len(act)
    for _ in range(ws.epochs):
        ce_sum = v_sum = 0.0
        for idx in np.array_split(gen.permutation(n), max(1, n // ws.batch_size)):
            i = torch.as_tensor(idx)
            kw = {} if masks is None else {"action_masks": masks[i]}
            values, log_prob, _ = pol.evaluate_actions(obs[i], act[i], **kw)
            ce = -log_prob.mean()
            if ws.exploration:
                ce = (1 - ws.exploration) * ce + ws.exploration * _uniform_ce(pol, obs[i], kw)
            v = torch.mean((values.flatten() - ret[i]) ** 2) / max(var, 1e-8)
            opt.zero_grad()
            (ce + v).backward()
            opt.step()
            ce_sum += float(ce.detach()) * len(idx)
            v_sum += float(v.detach()) * len(idx)
    pol.set_training_mode(False)
    with torch.no_grad():
        dist = pol.get_distribution(obs, **({} if masks is None else {"action_masks": masks}))
        hit = dist.mode() == act
        agree = float(hit.float().mean())
        p_demo = float(dist.log_prob(act).exp().mean())
    # per demonstrated action: a rare action (a shedder's rejections) can be missed entirely
    # behind an agreement of 99%
    recall = {int(a): float(hit[act == a].float().mean()) for a in torch.unique(act)}
    return {"cross_entropy": ce_sum / n, "value_mse": v_sum / n, "agreement": agree,
            "p_demonstrated": p_demo, "samples": n, "recall": recall}


def _uniform_ce(pol, obs, mask_kw: dict):
    """Mean cross-entropy between the uniform distribution over the allowed actions and the
    policy's (the smoothing term of the cloning loss)."""
    import torch
    logp = pol.get_distribution(obs, **mask_kw).distribution.logits      # normalised log-probabilities
    allowed = mask_kw["action_masks"].bool() if mask_kw else torch.ones_like(logp, dtype=torch.bool)
    per_obs = torch.where(allowed, logp, torch.zeros_like(logp)).sum(1) / allowed.sum(1)
    return -per_obs.mean()
