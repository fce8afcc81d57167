"""Training: MaskablePPO on blis_gym/Router-v0 (the recipe in agents/train_router.py).

The slow test trains for a few thousand steps and evaluates against llm-d's default profile on
the same seed; the fast one loads the shipped checkpoint (if present) and plays a short episode
(30 simulated seconds, so that some requests complete and TTFT is defined)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("sb3_contrib")

AGENTS = Path(__file__).resolve().parent.parent / "agents"
CHECKPOINT = AGENTS / "router_maskableppo.zip"


def _recipe():
    spec = importlib.util.spec_from_file_location("train_router", AGENTS / "train_router.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finite(row: dict) -> bool:
    return all(math.isfinite(row[k]) for k in ("ttft_mean_ms", "goodput_rps", "return"))


@pytest.mark.slow
def test_maskable_ppo_learns_and_evaluates_with_finite_kpis(tmp_path):
    r = _recipe()
    model = r.train(timesteps=3072, train_horizon=15.0, n_envs=2, seed=0)
    assert model.num_timesteps >= 3072
    path = tmp_path / "router.zip"
    model.save(path)
    assert path.stat().st_size < 2 * 1024 * 1024
    # a longer horizon than training, so that requests complete whatever the policy (TTFT defined)
    res = r.evaluate({"maskableppo": lambda: r.make_model_policy(model), "llm-d-default": lambda: r.llmd_default},
                     seeds=[1000], config={"horizon_s": 20})
    for name, row in res.items():
        assert _finite(row), (name, row)
        assert row["episodes"][0]["steps"] > 100
    assert res["llm-d-default"]["goodput_rps"] > 0


@pytest.mark.skipif(not CHECKPOINT.is_file(), reason="no shipped checkpoint (run agents/train_router.py)")
def test_shipped_checkpoint_loads_and_plays_a_short_episode():
    from sb3_contrib import MaskablePPO
    r = _recipe()
    assert CHECKPOINT.stat().st_size < 2 * 1024 * 1024
    model = MaskablePPO.load(CHECKPOINT, device="cpu")
    res = r.evaluate({"maskableppo": lambda: r.make_model_policy(model)}, seeds=[1000], config={"horizon_s": 30})
    row = res["maskableppo"]
    assert _finite(row) and row["episodes"][0]["steps"] > 100


def test_pod_policy_is_permutation_equivariant():
    # PodPolicy scores each pod with one shared network: permuting the pods of an observation
    # permutes the action logits, and the value does not change.
    import gymnasium as gym
    import numpy as np
    import torch as th
    from sb3_contrib import MaskablePPO

    import blis_gym  # noqa: F401
    from blis_gym.policies.learned import PF, PodPolicy, pod_policy_kwargs

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
