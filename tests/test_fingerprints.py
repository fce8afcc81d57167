"""Fingerprints: the bytes every bundled scenario and every environment produces.

Each bundled scenario (shortened where it is long) is run through the CLI, and the sha256 of each
file it writes (summary.json, requests.csv, timeseries.csv, pools.csv, decisions.csv) is compared
with tests/fingerprints.json. Each registered environment plays a few seeded episodes with fixed
action policies; the hash covers observations, rewards, end flags and the final summary.

A refactoring must leave every hash unchanged. A change that alters outputs on purpose
regenerates them and says which changed:

    python tests/test_fingerprints.py --update
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
EXPECTED = Path(__file__).resolve().parent / "fingerprints.json"

# Shortened workloads (merged into the scenario's `workload`) keep the test fast; each still
# exercises what its scenario is about (overload, P/D transfers, scale-up and scale-down, ...).
SHORTEN = {
    "autoscale-bursty": {"horizon_s": 420},
    "cluster-4x-10k": {"num_requests": 600},
    "cluster-4xh100-default": {"horizon_s": 30},
    "cluster-4xh100-latency-aware": {"horizon_s": 30},
    "cluster-4xh100-round-robin": {"horizon_s": 30},
    "overload-gaie-legacy": {"horizon_s": 20},
    "overload-probabilistic": {"horizon_s": 20},
    "pd-chat-always": {"horizon_s": 60},
    "pd-chat-edpp": {"horizon_s": 60},
    "pd-chat-never": {"horizon_s": 60},
    "pd-chat-threshold16": {"horizon_s": 60},
    "pd-codegen-always": {"horizon_s": 250},
    "pd-codegen-edpp": {"horizon_s": 250},
    "pd-codegen-never": {"horizon_s": 250},
    "pd-codegen-threshold16": {"horizon_s": 250},
    "router-outside-bursts": {"horizon_s": 30},
    "router-outside-load-1.5x": {"horizon_s": 30},
    "router-outside-mixed-gpus": {"horizon_s": 30},
    "router-shared-prefix": {"horizon_s": 30},
    "single-10k": {"num_requests": 600},
}
# Scenarios also run with the routing-decision trace on (decisions.csv).
TRACED = ("router-shared-prefix", "pd-chat-threshold16")

# (env id, config, seeds); fixed action policies below. Short episodes, every registered id.
ENV_CASES = [
    ("blis_gym/Router-v0", {"max_requests": 120}, (0, 1)),
    ("blis_gym/Admission-v0", {"max_requests": 200}, (0, 1)),
    ("blis_gym/PDDecider-v0", {"horizon_s": 40}, (0, 1)),
    ("blis_gym/Autoscaler-v0", {"horizon_s": 420}, (0, 1)),
]
POLICIES = ("first", "cycle", "sample", "builtin")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- scenarios --------------------------------------------------------------------------------
def scenario_cases() -> list[tuple[str, str, bool]]:
    """(case name, scenario file stem, trace decisions) for every bundled scenario."""
    cases = [(p.stem, p.stem, False) for p in sorted(SCENARIOS.glob("*.yaml"))]
    cases += [(f"{name}+decisions", name, True) for name in TRACED]
    return cases


def scenario_hashes(stem: str, traced: bool, tmp: Path) -> dict[str, str]:
    from click.testing import CliRunner

    from blis_gym.cli import main
    data = yaml.safe_load((SCENARIOS / f"{stem}.yaml").read_text())
    data["workload"] = {**data.get("workload", {}), **SHORTEN.get(stem, {})}
    if traced:
        data["cluster"] = {**data.get("cluster", {}), "trace_decisions": True}
    data.setdefault("name", stem)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp / "out"
    result = CliRunner().invoke(main, ["run", str(path), "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {f.name: _sha(f.read_bytes()) for f in sorted(out.iterdir()) if f.is_file()}


# ---- environments -----------------------------------------------------------------------------
def _act(env, policy: str, t: int, rng: np.random.Generator) -> int:
    valid = np.flatnonzero(env.action_masks())
    if policy == "first":
        return int(valid[0])
    if policy == "cycle":
        return int(valid[t % len(valid)])
    if policy == "sample":
        return int(rng.choice(valid))
    a = env._from_sim(env.pending.default())        # the scenario's built-in policy
    return a if a in valid else int(valid[0])


def env_hash(env_id: str, config: dict, seed: int, policy: str) -> str:
    import gymnasium as gym

    import blis_gym.envs  # noqa: F401  (registers the ids)
    env = gym.make(env_id, config=copy.deepcopy(config)).unwrapped
    h = hashlib.sha256()
    obs, _ = env.reset(seed=seed)
    h.update(np.asarray(obs).tobytes())
    rng = np.random.default_rng(seed)
    t, done, info = 0, False, {}
    while not done:
        obs, reward, terminated, truncated, info = env.step(_act(env, policy, t, rng))
        h.update(np.asarray(obs).tobytes())
        h.update(np.float64(reward).tobytes())
        h.update(bytes((terminated, truncated)))
        done = terminated or truncated
        t += 1
    h.update(f"steps={t};{info['end_reason']}".encode())
    h.update(json.dumps(info["summary"], sort_keys=True).encode())
    return h.hexdigest()


def env_cases() -> list[tuple[str, str, dict, int, str]]:
    return [(f"{env_id}/seed{seed}/{policy}", env_id, config, seed, policy)
            for env_id, config, seeds in ENV_CASES for seed in seeds for policy in POLICIES]


# ---- the checks -------------------------------------------------------------------------------
def _expected() -> dict:
    return json.loads(EXPECTED.read_text())


@pytest.mark.parametrize("name,stem,traced", scenario_cases(), ids=[c[0] for c in scenario_cases()])
def test_scenario_fingerprint(name, stem, traced, tmp_path):
    want = _expected()["scenarios"].get(name)
    assert want is not None, f"no fingerprint for {name}: run python tests/test_fingerprints.py --update"
    assert scenario_hashes(stem, traced, tmp_path) == want


@pytest.mark.parametrize("name,env_id,config,seed,policy", env_cases(), ids=[c[0] for c in env_cases()])
def test_env_fingerprint(name, env_id, config, seed, policy):
    want = _expected()["envs"].get(name)
    assert want is not None, f"no fingerprint for {name}: run python tests/test_fingerprints.py --update"
    assert env_hash(env_id, config, seed, policy) == want


def test_every_registered_env_is_fingerprinted():
    from blis_gym.envs import REGISTERED
    assert set(REGISTERED) <= {c[0] for c in ENV_CASES}


# ---- regenerating -----------------------------------------------------------------------------
def compute_all() -> dict:
    import tempfile
    out: dict = {"scenarios": {}, "envs": {}}
    with tempfile.TemporaryDirectory() as d:
        for name, stem, traced in scenario_cases():
            out["scenarios"][name] = scenario_hashes(stem, traced, Path(d) / name)
    for name, env_id, config, seed, policy in env_cases():
        out["envs"][name] = env_hash(env_id, config, seed, policy)
    return out


def update() -> None:
    old = _expected() if EXPECTED.is_file() else {"scenarios": {}, "envs": {}}
    new = compute_all()
    changed = [f"{kind}/{name}" for kind in new for name in new[kind] if old.get(kind, {}).get(name) != new[kind][name]]
    gone = [f"{kind}/{name}" for kind in old for name in old[kind] if name not in new.get(kind, {})]
    EXPECTED.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
    for name in changed:
        print(f"changed: {name}")
    for name in gone:
        print(f"removed: {name}")
    print(f"{len(changed)} changed, {len(gone)} removed; wrote {EXPECTED.name}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_fingerprints.py --update")
    sys.path.insert(0, str(ROOT))
    update()
