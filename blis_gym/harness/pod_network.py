"""A per-pod, permutation-equivariant actor-critic for blis_gym's router (MaskablePPO).

Needs the `rl` extra (torch, sb3-contrib): `pip install 'blis-gym[rl]'`.

The router's observation is a flat vector: `max_pods` rows of `pf` per-pod features, then the
request's features (from `req0`), then the cluster's (from `cl0`). A flat MLP has to learn the
same "is this pod a good place for this request" rule once per pod slot, and it sees the pods in
a fixed order, so it easily collapses onto one slot. Here:

- actor: one small MLP, shared by every pod, scores pod i from
  [pod i's features, pod i's features minus their mean over the present pods, the request and
  cluster features]; the logits are the per-pod scores (padding and unavailable pods are removed
  by MaskablePPO's action mask). Permuting the pods permutes the logits, whatever the number of
  pods the network was trained with.
- critic: another shared per-pod MLP whose embeddings are pooled (mean and max over the present
  pods) and joined with the request and cluster features to predict the value.

Global features listed in `drop` (by default `cluster.time`, whose scale depends on the
episode's horizon and so differs between short training episodes and full evaluation episodes)
are zeroed before they reach either network.

`PodPolicy` is a `MaskableActorCriticPolicy`: use `MaskablePPO(PodPolicy, env,
policy_kwargs=pod_policy_kwargs(env))`; `agents/router.yaml` is the full recipe
(`blis-gym train --config agents/router.yaml`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn

from blis_gym.envs.observations import PF


def pod_policy_kwargs(env, hidden: int = 64, drop: tuple[str, ...] = ("cluster.time",)) -> dict:
    """policy_kwargs for PodPolicy from a (vector of) router environment(s)."""
    if hasattr(env, "get_attr"):                      # an SB3 VecEnv
        observer = env.get_attr("observer")[0]
    else:
        observer = env.unwrapped.observer
    names = observer.feature_names()
    n_obs = len(names)
    drop_idx = [names.index(d) for d in drop if d in names]
    residual = int(env.action_space.n) == observer.max_pods + 1      # action 0: follow the built-in
    return {"max_pods": int(observer.max_pods), "pf": int(observer.pf), "req0": int(observer.req0), "n_obs": n_obs,
            "drop": drop_idx, "hidden": hidden, **({"residual": True} if residual else {})}


class PodNet(nn.Module):
    """The mlp_extractor: (flat obs) -> (per-pod logits, value latent)."""

    def __init__(self, max_pods: int, pf: int, req0: int, n_obs: int, drop: list[int], hidden: int,
                 activation_fn: type[nn.Module] = nn.Tanh, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.max_pods, self.pf, self.req0 = max_pods, pf, req0
        n_glob = n_obs - req0
        keep = th.ones(n_glob)
        for i in drop:
            if i >= req0:
                keep[i - req0] = 0.0
        self.register_buffer("keep", keep)
        n_in = 2 * pf + n_glob
        self.actor = nn.Sequential(nn.Linear(n_in, hidden), activation_fn(), nn.Linear(hidden, hidden), activation_fn())
        self.score = nn.Linear(hidden, 1)
        self.critic_pod = nn.Sequential(nn.Linear(n_in, hidden), activation_fn())
        self.critic = nn.Sequential(nn.Linear(2 * hidden + n_glob, hidden), activation_fn())
        # residual (the env's action 0 follows the built-in policy): one more logit, from the actor's
        # embeddings pooled over the present pods, before the per-pod scores
        self.follow = nn.Linear(hidden, 1) if residual else None
        self.latent_dim_pi = max_pods + residual
        self.latent_dim_vf = hidden

    def _inputs(self, obs: th.Tensor):
        b = obs.shape[0]
        pods = obs[:, :self.max_pods * self.pf].reshape(b, self.max_pods, self.pf)
        present = pods[:, :, 0:1]                                            # (B, M, 1)
        n = present.sum(dim=1, keepdim=True).clamp(min=1.0)
        mean = (pods * present).sum(dim=1, keepdim=True) / n                 # (B, 1, PF)
        glob = obs[:, self.req0:] * self.keep                                # (B, G)
        x = th.cat([pods, (pods - mean) * present, glob.unsqueeze(1).expand(b, self.max_pods, -1)], dim=-1)
        return x, present, glob

    def _actor(self, x, present):
        h = self.actor(x)
        scores = self.score(h).squeeze(-1)                                   # (B, M)
        if self.follow is None:
            return scores
        pooled = (h * present).sum(dim=1) / present.sum(dim=1).clamp(min=1.0)
        return th.cat([self.follow(pooled), scores], dim=-1)                 # (B, 1 + M)

    def _critic(self, x, present, glob):
        h = self.critic_pod(x)                                               # (B, M, H)
        n = present.sum(dim=1).clamp(min=1.0)
        mean = (h * present).sum(dim=1) / n
        mx = (h * present - 1e4 * (1.0 - present)).max(dim=1).values
        return self.critic(th.cat([mean, mx, glob], dim=-1))

    def forward(self, features: th.Tensor):
        x, present, glob = self._inputs(features)
        return self._actor(x, present), self._critic(x, present, glob)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        x, present, _ = self._inputs(features)
        return self._actor(x, present)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self._critic(*self._inputs(features))


class PodPolicy(MaskableActorCriticPolicy):
    """MaskableActorCriticPolicy whose logits are per-pod scores of a shared MLP (see module doc)."""

    def __init__(self, observation_space, action_space, lr_schedule, max_pods: int, req0: int, n_obs: int,
                 pf: int = PF, drop: list[int] | None = None, hidden: int = 64, residual: bool = False, **kwargs):
        self.pod_args = {"max_pods": max_pods, "pf": pf, "req0": req0, "n_obs": n_obs,
                         "drop": list(drop or []), "hidden": hidden, **({"residual": True} if residual else {})}
        if int(np.prod(observation_space.shape)) != n_obs or action_space.n != max_pods + residual:
            raise ValueError(f"PodPolicy: observation of {n_obs} features and {max_pods + residual} actions expected, got "
                             f"{observation_space.shape} and {action_space.n}")
        kwargs.setdefault("activation_fn", nn.Tanh)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.pod_args)
        return data

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PodNet(activation_fn=self.activation_fn, **self.pod_args)

    def _build(self, lr_schedule) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()                # the logits are the per-pod scores
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            self.mlp_extractor.apply(lambda m: self.init_weights(m, gain=np.sqrt(2)))
            self.init_weights(self.mlp_extractor.score, gain=0.01)   # start near uniform
            self.init_weights(self.value_net, gain=1.0)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
