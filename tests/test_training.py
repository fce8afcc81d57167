"""Training: MaskablePPO with the per-pod network on blis_gym/Router-v0 (agents/router.yaml).

The slow test trains the router recipe for a few thousand steps through `blis-gym train`'s
code and evaluates the result against llm-d's default profile on the same seed; the shipped
checkpoint is exercised by tests/test_harness.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("sb3_contrib")

AGENTS = Path(__file__).resolve().parent.parent / "agents"


@pytest.mark.slow
def test_router_recipe_learns_briefly_and_evaluates_with_finite_kpis(tmp_path):
    from blis_gym.harness.evaluate import Job, play
    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(AGENTS / "router.yaml", steps=3072, n_envs=2)
    recipe = recipe.model_copy(update={"env_config": {"horizon_s": 15.0}, "eval_freq": 2048,
                                       "validation_seeds": (5000, 5000), "vec_env": "dummy"})
    res = train(recipe, tmp_path, quiet=True)
    assert res["best_validation_return"] is not None
    assert (tmp_path / "model.zip").stat().st_size < 2 * 1024 * 1024
    for policy in (str(tmp_path / "model.zip"), "llm-d-default"):
        row = play(Job("blis_gym/Router-v0", "router", policy, "short", {"horizon_s": 20}, 1000))["row"]
        assert row["steps"] > 100 and all(math.isfinite(row[k]) for k in ("ttft_mean_ms", "goodput_rps", "return"))


def test_pod_policy_is_permutation_equivariant():
    # PodPolicy scores each pod with one shared network: permuting the pods of an observation
    # permutes the action logits, and the value does not change.
    import gymnasium as gym
    import numpy as np
    import torch as th
    from sb3_contrib import MaskablePPO

    import blis_gym  # noqa: F401
    from blis_gym.harness.pod_network import PF, PodPolicy, pod_policy_kwargs

    env = gym.make("blis_gym/Router-v0", config={"horizon_s": 5})
    model = MaskablePPO(PodPolicy, env, policy_kwargs=pod_policy_kwargs(env), n_steps=64, batch_size=64, seed=0,
                        device="cpu")
    obs, _ = env.reset(seed=3)
    for _ in range(30):                          # a state with some load on the pods
        obs, *_ = env.step(env.unwrapped.pending.default())
    n = env.unwrapped.max_pods
    perm = np.array([2, 0, 3, 1])[:n]
    moved = obs.copy()
    moved[:n * PF] = obs[:n * PF].reshape(n, PF)[perm].reshape(-1)
    policy = model.policy
    with th.no_grad():
        t = th.as_tensor(np.stack([obs, moved]))
        logits = policy.get_distribution(t).distribution.logits.numpy()
        values = policy.predict_values(t).numpy()
    assert np.allclose(logits[1], logits[0][perm], atol=1e-5)
    assert values[0] == pytest.approx(values[1], abs=1e-5)
    assert not np.allclose(logits[0], logits[0][0])   # the pods are told apart
