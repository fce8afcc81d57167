"""Property-based tests (hypothesis): generated scenarios and random action sequences; sweep
files, eval's arguments and the answers of a misbehaving OpenAI-compatible server.

Whatever the input, a run ends with no traceback (it runs, or it is refused with one
ConfigError: the CLI's exit status 2), every injected request is in exactly one state,
latencies are finite and non-negative with TTFT <= E2E, observations lie inside their spaces,
and one seed gives one result. A sweep expands within its bounds or is refused; eval's seed
ranges and user functions are bounded, played or refused; observe records every request it
sent, `ok` only for whole answers with sane token counts.

The full run (`pytest -m slow -k property`) draws about 1,800 examples; CI runs a sample with
HYPOTHESIS_PROFILE=ci (about 5% of them, derandomised, so it is reproducible).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.engine import State
from blis_gym.sim.simulation import Simulation

from helpers import assert_conserved

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
COMMON = dict(deadline=None, database=None, derandomize=CI,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
if CI:      # report a failing example at once: shrinking slow examples can take minutes
    COMMON["phases"] = [Phase.explicit, Phase.generate]


def examples(n: int) -> int:
    return max(2, n // 20) if CI else n


pytestmark = pytest.mark.slow

# ---- scenarios ---------------------------------------------------------------------------------
SCORERS = ["queue", "kv-cache-utilization", "prefix-cache", "load-aware", "active-request", "running-requests",
           "token-load", "no-hit-lru", "session-affinity", "load-balance"]
FILTERS = st.lists(st.sampled_from(["available", "prefix-cache-affinity", "utilization-detector"]),
                   max_size=2, unique=True)
ADMISSION = ["always-admit", "token-bucket", "gaie-legacy", "probabilistic", "probabilistic-queue-guard", "tier-shed",
             "reject-all"]
CLASSES = ["critical", "standard", "sheddable", "batch"]


def lengths(lo: int, hi: int):
    return st.one_of(
        st.builds(lambda v: {"dist": "constant", "value": v}, st.integers(lo, hi)),
        st.builds(lambda m, s: {"dist": "gaussian", "mean": m, "std": s, "min": lo, "max": hi},
                  st.integers(lo, hi), st.integers(0, hi)),
        st.builds(lambda m: {"dist": "exponential", "mean": m, "min": lo, "max": hi}, st.integers(lo, hi)))


def routers():
    weighted = st.fixed_dictionaries(
        {"policy": st.just("weighted"),
         "scorers": st.lists(st.builds(lambda n, w: {"name": n, "weight": w}, st.sampled_from(SCORERS),
                                       st.sampled_from([0, 0.5, 1, 2, 3])), min_size=1, max_size=4,
                             unique_by=lambda s: s["name"])},
        optional={"picker": st.sampled_from(["max-score", "random", "weighted-random"]),
                  "filters": FILTERS})
    simple = st.fixed_dictionaries(
        {"policy": st.sampled_from(["round-robin", "random", "least-loaded", "default"])},
        optional={"filters": FILTERS})
    return st.one_of(simple, weighted)


def clients():
    return st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c", "d"]), "rate_fraction": st.sampled_from([0.5, 1, 2])},
        optional={"slo_class": st.sampled_from(CLASSES), "tenant": st.sampled_from(["", "default", "t1"]),
                  "prefix_group": st.sampled_from(["g1", "g2"]), "prefix_tokens": st.integers(0, 600),
                  "timeout_s": st.sampled_from([0.005, 0.05, 0.5, 5.0]),
                  "input": lengths(1, 400), "output": lengths(1, 200),
                  "session": st.fixed_dictionaries({"turns": st.integers(1, 3),
                                                    "think_time_s": st.sampled_from([0, 0.1, 1.0]),
                                                    "accumulate": st.booleans()})}),
        min_size=1, max_size=3, unique_by=lambda c: c["name"])


def workloads():
    return st.fixed_dictionaries(
        {"rate": st.sampled_from([0.5, 2, 10, 50, 200]),
         "input": lengths(1, 1500), "output": lengths(1, 300)},
        optional={"num_requests": st.integers(1, 30),
                  "horizon_s": st.sampled_from([0.01, 0.1, 0.5, 1.01, 3.0]),
                  "timeout_s": st.sampled_from([0.001, 0.005, 0.05, 0.3, 2.0]),
                  "arrival": st.builds(lambda p: {"process": p}, st.sampled_from(["poisson", "constant"])),
                  "prefix_tokens": st.integers(0, 300),
                  "slo_class": st.sampled_from(CLASSES),
                  "clients": clients()},
    ).map(lambda w: w if "num_requests" in w or "horizon_s" in w else {**w, "num_requests": 10})


def pools():
    autoscaler = st.fixed_dictionaries({"policy": st.sampled_from(["hpa", "wva"]),
                                        "interval_s": st.sampled_from([0.05, 0.2, 1.0]),
                                        "scale_down_stabilization_s": st.sampled_from([0, 0.5, 5])})
    plain = st.builds(lambda n: [{"name": "a", "instances": n}], st.integers(1, 3))
    scaled = st.builds(lambda n, hi, a, d: [{"name": "a", "instances": n, "min_instances": 0 if n == 0 else 1,
                                             "max_instances": hi, "autoscaler": a, "provisioning_delay_s": d,
                                             "load_time_s": d}],
                       st.integers(0, 2), st.integers(2, 3), autoscaler, st.sampled_from([0, 0.05, 0.5]))
    pd = st.builds(lambda p, d, sd: [{"name": "prefill", "role": "prefill", "instances": p},
                                     {"name": "decode", "role": "decode", "instances": d, **sd}],
                   st.integers(1, 2), st.integers(1, 2),
                   st.one_of(st.just({}), st.builds(lambda a: {"min_instances": 1, "max_instances": 3, "autoscaler": a},
                                                    autoscaler)))
    return st.one_of(plain, scaled, pd)


def scenarios():
    flow_control = st.fixed_dictionaries(
        {}, optional={"per_band_capacity": st.integers(0, 8), "max_queue": st.integers(0, 8),
                      "ttl_s": st.sampled_from([0.01, 0.5, 60]), "fairness": st.sampled_from(["global-strict", "round-robin"]),
                      "dispatch_tick_ms": st.sampled_from([0.5, 1, 5]),
                      "saturation": st.fixed_dictionaries({"detector": st.sampled_from(["utilization", "concurrency"]),
                                                           "max_concurrency": st.integers(1, 8)})})
    pd = st.fixed_dictionaries(
        {"decider": st.one_of(st.sampled_from(["always", "never"]),
                              st.builds(lambda t: {"policy": "prefix-threshold", "threshold": t}, st.integers(0, 64))),
         "transfer": st.fixed_dictionaries({"bandwidth_gb_s": st.sampled_from([0.001, 0.1, 25]),
                                            "base_latency_ms": st.sampled_from([0, 0.05, 2]),
                                            "contention": st.booleans()})})
    vllm = st.fixed_dictionaries({}, optional={
        "max_num_seqs": st.integers(1, 64), "max_num_batched_tokens": st.sampled_from([16, 256, 2048]),
        "total_kv_blocks": st.sampled_from([40, 200, 2000]), "scheduling_policy": st.sampled_from(["fcfs", "priority", "sjf"]),
        "long_prefill_token_threshold": st.sampled_from([0, 64])})
    return st.fixed_dictionaries(
        {"name": st.just("prop"), "model": st.just("Qwen/Qwen3-14B"), "hardware": st.just("H100"),
         "seed": st.integers(0, 2**31 - 1), "workload": workloads(), "router": routers()},
        optional={"pools": pools(), "pd": pd, "vllm": vllm,
                  "cluster": st.fixed_dictionaries({}, optional={"scrape_interval_ms": st.sampled_from([0, 10, 50])}),
                  "gateway": st.fixed_dictionaries({"admission": st.sampled_from(ADMISSION)},
                                                   optional={"flow_control": flow_control}),
                  "sample_interval_s": st.sampled_from([0, 0.1, 1.0])})


def _run(data: dict):
    """The summary of a scenario, or None if it is refused with a ConfigError."""
    try:
        sim = Simulation(build(parse_scenario(data), check_invariants=True))
    except ConfigError as e:
        event(f"refused: {e.field}")
        return None, None
    chunks = []

    def guard(done, total):
        chunks.append(done)
        assert len(chunks) < 200, "runaway: more than 10M events"
    return sim, sim.run(progress=guard)


def assert_sane_latencies(sim) -> None:
    a = sim.metrics.arrays()
    done = a["state"] == State.COMPLETED
    ttft, e2e = a["ttft"][done], a["e2e"][done]
    assert (ttft >= 0).all() and (e2e >= 0).all()
    assert (ttft <= e2e).all()
    assert (a["decode"][done] >= 0).all()
    started = a["ttft"] >= 0
    assert (a["ttft"][started] >= 0).all()


def assert_finite(summary) -> None:
    """No NaN or infinity anywhere in the summary (it must be valid JSON)."""
    json.dumps(summary, allow_nan=False)


@settings(max_examples=examples(700), **COMMON)
@given(scenarios())
def test_property_scenarios_run_or_are_refused_and_conserve_requests(data):
    sim, s = _run(data)
    if sim is None:
        return
    event("ran")
    assert_conserved(sim, s)
    assert_sane_latencies(sim)
    assert_finite(s)
    for block in (*s["per_class"].values(), *s["per_tenant"].values()):
        assert block["completed_requests"] <= block["injected_requests"]
    for inst in s["per_instance"].values():
        assert 0 <= inst["busy_fraction"] <= 1
    _, again = _run(data)
    assert json.dumps(again, sort_keys=True) == json.dumps(s, sort_keys=True)


# ---- environments ------------------------------------------------------------------------------
ENV_IDS = ("blis_gym/Router-v0", "blis_gym/Admission-v0", "blis_gym/PDDecider-v0", "blis_gym/Autoscaler-v0")
MAX_STEPS = 400


def env_configs():
    return st.fixed_dictionaries(
        {"horizon_s": st.sampled_from([1.0, 5.0, 20.0, 60.0])},
        optional={"max_requests": st.integers(0, 80), "max_backlog": st.integers(0, 200),
                  "max_pods": st.sampled_from([None, 4, 16])})


def _choose(mask, n: int, u: float, invalid: bool):
    """An action: with `invalid`, one outside the mask or range; else a valid one chosen by u."""
    valid = np.flatnonzero(mask) if mask is not None else np.arange(n)
    if invalid:
        bad = [a for a in range(n + 1) if mask is None or a >= len(mask) or not mask[a]]
        return bad[int(u * len(bad))] if bad else None
    return int(valid[int(u * len(valid))]) if len(valid) else None


def _play_env(env_id: str, config: dict, seed: int, draws: list[tuple[float, bool]]):
    import gymnasium as gym

    import blis_gym.envs  # noqa: F401
    try:
        env = gym.make(env_id, config=config)
        obs, info = env.reset(seed=seed)
    except ConfigError:
        return "refused"
    u = env.unwrapped
    trace = [obs.tobytes()]
    assert env.observation_space.contains(obs)
    done = False
    for step in range(MAX_STEPS):
        x, invalid = draws[step % len(draws)]
        mask = u.action_masks() if hasattr(u, "action_masks") else None
        n = env.action_space.n
        a = _choose(mask, n, x, invalid)
        if invalid and a is not None:
            with pytest.raises(ValueError):
                env.step(a)
            continue
        if a is None:
            a = _choose(mask, n, x, False)
        obs, reward, term, trunc, info = env.step(a)
        assert env.observation_space.contains(obs), (obs, env.observation_space)
        assert math.isfinite(reward)
        trace.append((obs.tobytes(), reward))
        if term or trunc:
            done = True
            break
    if not done:                        # cut it here, as max_requests would
        u.episode._stop("max_requests")
        info = {"summary": u.episode.summary()}
    assert_conserved(u.episode.sim, info["summary"])
    assert_finite(info["summary"])
    assert_sane_latencies(u.episode.sim)
    env.close()
    return trace


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_property_env_action_sequences(env_id):
    @settings(max_examples=examples(80), **COMMON)
    @given(env_configs(), st.integers(0, 2**31 - 1),
           st.lists(st.tuples(st.floats(0, 0.999), st.sampled_from([False, False, False, True])),
                    min_size=1, max_size=50))
    def check(config, seed, draws):
        first = _play_env(env_id, config, seed, draws)
        assert _play_env(env_id, config, seed, draws) == first        # one seed, one episode

    check()


@settings(max_examples=examples(80), **COMMON)
@given(st.fixed_dictionaries({"horizon_s": st.sampled_from([5.0, 20.0, 60.0])},
                             optional={"max_requests": st.integers(0, 60), "max_backlog": st.integers(0, 100)}),
       st.integers(0, 2**31 - 1), st.lists(st.floats(0, 0.999), min_size=1, max_size=50))
def test_property_multi_agent_action_sequences(config, seed, draws):
    from blis_gym.envs import multi_agent_env

    def play():
        try:
            env = multi_agent_env(config=config)
            env.reset(seed=seed)
        except ConfigError:
            return "refused"
        trace, summary, steps = [], None, 0
        for agent in env.agent_iter():
            obs, reward, term, trunc, info = env.last()
            assert env.observation_space(agent).contains(obs)
            assert math.isfinite(reward)
            trace.append((agent, obs.tobytes(), reward))
            if term or trunc:
                summary = info["summary"]
                env.step(None)
                continue
            valid = np.flatnonzero(info["action_mask"])
            env.step(int(valid[int(draws[steps % len(draws)] * len(valid))]))
            steps += 1
            if steps >= MAX_STEPS:          # cut it here, as max_requests would
                env.episode._stop("max_requests")
                summary = env.episode.summary()
                break
        assert_conserved(env.episode.sim, summary)
        assert_finite(summary)
        return trace

    assert play() == play()


# ---- the newer commands' inputs (issue 30): sweep files, eval arguments, a misbehaving server -------
# Whatever the input, the command either accepts it within its documented bounds or refuses it
# with one ConfigError (the CLI's one line and exit status 2); nothing else escapes.
ENDS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**80, 2**80),
                 st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, -2**63, 1e308, -1e308]))
SWEEP_BASE = {"model": "Qwen/Qwen3-14B", "hardware": "H100", "sample_interval_s": 0,
              "workload": {"rate": 5, "num_requests": 5, "input": {"dist": "constant", "value": 16},
                           "output": {"dist": "constant", "value": 4}}}


def random_axes():
    pair = st.tuples(ENDS, ENDS).map(list)
    axis = st.one_of(st.builds(lambda p: {"uniform": p}, pair), st.builds(lambda p: {"loguniform": p}, pair),
                     st.builds(lambda p: {"randint": p}, pair),
                     st.builds(lambda v: {"choice": v}, st.lists(st.integers(1, 4), max_size=3)))
    return st.dictionaries(st.sampled_from(["cluster.instances", "workload.rate", "vllm.max_num_seqs", "seed"]),
                           axis, min_size=1, max_size=2)


def sweep_files():
    small_or_huge = st.one_of(st.integers(-2, 4), st.integers(10**5 - 1, 10**12))
    seeds = st.one_of(st.none(), small_or_huge, st.lists(st.integers(-2**70, 2**70), min_size=0, max_size=3))
    grid = st.dictionaries(st.sampled_from(["cluster.instances", "vllm.max_num_seqs", "tp"]),
                           st.one_of(st.lists(st.integers(-1, 5), max_size=3), st.just(list(range(400)))),
                           max_size=3)
    return st.fixed_dictionaries(
        {"scenario": st.just(SWEEP_BASE), "grid": grid, "pareto": st.none()},
        optional={"seeds": seeds,
                  "random": st.fixed_dictionaries({"samples": small_or_huge, "axes": random_axes()},
                                                  optional={"seed": st.integers(-2**65, 2**65)})})


@settings(max_examples=examples(300), **COMMON)
@given(sweep_files())
def test_property_sweep_files_expand_within_bounds_or_are_refused(raw):
    from pathlib import Path

    from blis_gym.sweep import parse_sweep
    from blis_gym.sweep.spec import MAX_POINTS
    try:
        sw = parse_sweep(raw, Path("."))
    except ConfigError as e:
        event(f"refused: {e.field.split('.')[0]}")
        assert "\n" not in str(e)
        return
    event("expanded")
    assert 1 <= len(sw.points) <= MAX_POINTS
    for p in sw.points:
        assert 0 <= p.data["seed"] < 2**63
        for v in p.params.values():
            assert not isinstance(v, float) or math.isfinite(v)


SEED_TEXT = st.one_of(st.text(alphabet="0123456789-+ .ex_", max_size=30),
                      st.builds(lambda a, b: f"{a}-{b}", st.integers(-5, 2**70), st.integers(-5, 2**70)),
                      st.builds(lambda a, n: f"{a}-{a + n}", st.integers(0, 2**64), st.integers(-2, 20_000)))
USER_FUNCTIONS = ["math:sqrt", "builtins:print", "builtins:max", "json:dumps", "os:getcwd", "operator:add",
                  "tests.test_harness:least_waiting", "tests.test_harness:two_arguments",
                  "tests.test_harness:not_an_action", "tests.test_harness:raises", "no.such.module:f", "math:pi",
                  ":", "math:", "builtins:int", "builtins:len"]


@settings(max_examples=examples(300), **COMMON)
@given(SEED_TEXT)
def test_property_eval_seed_ranges_are_bounded_or_refused(text):
    from blis_gym.harness.evaluate import MAX_EVAL_SEEDS, parse_seeds
    try:
        seeds = parse_seeds(text)
    except ConfigError as e:
        assert e.field == "--seeds"
        return
    assert 1 <= len(seeds) <= MAX_EVAL_SEEDS and 0 <= seeds[0] <= seeds[-1] < 2**63


@settings(max_examples=examples(40), **COMMON)
@given(st.sampled_from(USER_FUNCTIONS))
def test_property_eval_user_functions_play_or_are_one_line(text):
    from blis_gym.harness.evaluate import Job, play
    from blis_gym.harness.policies import parse_policy
    try:
        parse_policy(text, "router")
        row = play(Job("blis_gym/Router-v0", "router", text, "short", {"horizon_s": 1}, 1000))["row"]
    except ConfigError as e:
        event(f"refused: {text}")
        assert e.field == "--policy" and "\n" not in e.message
        return
    event(f"played: {text}")
    assert row["steps"] > 0


USAGE_VALUES = st.one_of(st.sampled_from(['"3"', "[3]", "-1", "NaN", "Infinity", "-Infinity", "1e400", "2.5", "null",
                                          "true", "{}", "3", "0", "1073741824", "1073741825", "1" + "0" * 400]),
                         st.integers(-10, 2**40).map(str), st.floats(allow_nan=False).map(repr))
FRAMES = st.sampled_from([
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\nConnection: close\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"data\": [",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n-5\r\n",
    b"garbage\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
    b"HTTP/1.1 200 OK\r\nContent-Length: 33\r\nConnection: close\r\n\r\nvllm:x{a=\"1\"} nan\nvllm:y 1e999\n{}"])


@settings(max_examples=examples(60), **COMMON)
@given(st.dictionaries(st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens"]), USAGE_VALUES,
                       max_size=2),
       st.one_of(st.none(), st.integers(0, 3)), st.sampled_from(["clean", "abrupt"]),
       st.one_of(st.none(), FRAMES), st.one_of(st.none(), FRAMES))
def test_property_observe_records_every_request_sent_whatever_the_server_answers(usage, cut_after, cut, models,
                                                                                  metrics):
    import csv
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    from blis_gym.observe import ObserveConfig, observe
    from blis_gym.sim.limits import MAX_TOKENS
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai import FakeOpenAI

    with tempfile.TemporaryDirectory() as d, \
            FakeOpenAI(first_token_s=0.0, token_s=0.0, usage=usage, cut_after=cut_after, cut=cut,
                       models_raw=models, metrics_raw=metrics) as srv:
        sc = Path(d) / "s.yaml"
        sc.write_text(yaml.safe_dump({"name": "s", "seed": 1, "model": "Qwen/Qwen3-14B", "hardware": "H100",
                                      "workload": {"rate": 100, "num_requests": 3,
                                                   "input": {"dist": "constant", "value": 8},
                                                   "output": {"dist": "constant", "value": 3}}}))
        try:
            meta = observe(ObserveConfig(url=srv.url, workload=str(sc), out_dir=Path(d) / "rec",
                                         model="m" if models is not None and cut_after == 0 else None,
                                         metrics_interval_s=0.1))
        except ConfigError as e:
            assert e.field in ("--url", "--model") and "\n" not in e.message
            event("refused")
            return
        with open(Path(d) / "rec" / "observed_requests.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    assert len(rows) == meta["requests_sent"] == 3
    for r in rows:
        event(r["status"])
        if r["status"] == "ok":
            assert 0 <= int(r["input_tokens"]) <= MAX_TOKENS and 0 <= int(r["output_tokens"]) <= MAX_TOKENS
            assert float(r["e2e_ms"]) >= float(r["ttft_ms"]) >= 0
        else:
            assert r["status"] == "error" and r["error"] and r["e2e_ms"] == ""
