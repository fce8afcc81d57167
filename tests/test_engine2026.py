"""The 2026 engine settings: speculative decoding, DP + expert parallelism, multi-node TP,
hybrid-attention and fp8 KV, vLLM's admission reserve (docs/scenarios.md#the-2026-engine)."""
import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, load_scenario, parse_scenario
from blis_gym.sim.engine import Instance
from blis_gym.sim.engine.speculative import SpecConfig, acceptance_profile
from blis_gym.sim.latency import kv_blocks_per_instance, load_model, make_step_model
from blis_gym.sim.latency.deployment import Deployment
from blis_gym.sim.simulation import Simulation

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
KINDS = ("trained-physics", "calibrated", "roofline")


def _run(name: str, tmp_path) -> dict:
    out = tmp_path / name
    r = CliRunner().invoke(main, ["run", str(SCENARIOS / f"{name}.yaml"), "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads((out / "summary.json").read_text())


def _scenario(name: str, **changes) -> dict:
    d = load_scenario(SCENARIOS / f"{name}.yaml").model_dump(exclude_unset=True)
    for k, v in changes.items():
        *path, last = k.split("__")
        node = d
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return d


# ---- speculative decoding ---------------------------------------------------------------------
def test_acceptance_profile_from_a_rate_has_its_mean_and_a_list_must_not_increase():
    prof = acceptance_profile(0.7, 3)
    assert sum(prof) == pytest.approx(2.1, abs=1e-9)                     # mean accepted = alpha K
    assert all(a >= b for a, b in zip(prof, prof[1:]))
    cfg = SpecConfig("eagle", 3, prof)
    pmf = cfg.advance_pmf()
    assert sum(pmf) == pytest.approx(1.0) and min(pmf) >= 0
    assert sum((1 + a) * p for a, p in enumerate(pmf)) == pytest.approx(cfg.mean_advance) == pytest.approx(3.1)
    with pytest.raises(ValueError, match="must not increase"):
        acceptance_profile([0.5, 0.8], 2)
    with pytest.raises(ValueError, match="2 values"):
        acceptance_profile([0.5], 2)


def test_speculation_lowers_mean_itl_by_the_acceptance_profile(tmp_path):
    """spec-decode.yaml vs spec-decode-off.yaml: same model, load and seed. Each decode step
    emits 1 + accepted tokens per sequence (3.1 on average at 70% of K = 3); the step costs a
    little more (4 verified tokens per sequence), and requests finish sooner so batches are
    smaller: mean ITL falls by about the mean advance."""
    on, off = _run("spec-decode", tmp_path), _run("spec-decode-off", tmp_path)
    assert on["completed_requests"] == off["completed_requests"] == 600
    assert on["ttft_mean_ms"] == pytest.approx(off["ttft_mean_ms"], rel=0.1)       # prefill unchanged
    ratio = off["itl_mean_ms"] / on["itl_mean_ms"]
    assert 2.5 < ratio < 3.6, ratio


def _spec_sim(**changes):
    return Simulation(build(parse_scenario(_scenario("spec-decode", **changes)), check_invariants=True))


def test_a_sequence_advances_one_plus_the_accepted_drafts_per_step():
    """Tokens emitted per decoding sequence-step match the profile's mean advance (1 + 2.1)."""
    sim = _spec_sim(workload__num_requests=120)
    sim.run()
    inst = sim.instances[0]
    alpha = inst.alpha_out
    gaps = sum(n for k, n in inst.itl_hist.items() if k != alpha)        # one per sequence-step
    tokens = sum(inst.itl_hist.values())
    assert tokens == inst.decode_tokens
    assert tokens / gaps == pytest.approx(3.1, rel=0.05)


def test_speculation_keeps_kv_accounting_under_preemption():
    """Lookahead slots, top-ups and preemptions with a KV cache too small for the load: the
    invariants (KV blocks = what every request holds) are checked after every event."""
    sim = _spec_sim(workload__num_requests=150, workload__rate=20, vllm__total_kv_blocks=600)
    s = sim.run()
    assert s["completed_requests"] == 150
    assert sim.instances[0].preemptions > 0
    assert sim.instances[0].kv.used == 0


def test_planned_speculative_runs_are_identical_to_stepping_one_by_one(monkeypatch):
    """Runs of decode steps are laid out at once with their draws; a cut run gives its draws
    back, so every output equals stepping one boundary at a time."""
    d = _scenario("spec-decode", workload__num_requests=200)
    out = []
    for multi in (False, True):
        monkeypatch.setattr(Instance, "MULTI_STEP", multi)
        sim = Simulation(build(parse_scenario(d)))
        s = sim.run()
        out.append((json.dumps(s, sort_keys=True), sim.metrics.arrays()["e2e"].tobytes(), sim.loop.events))
    assert out[0][:2] == out[1][:2]
    assert out[1][2] < out[0][2]


@pytest.mark.parametrize("kind", KINDS)
def test_verified_tokens_grow_the_decode_terms_and_leave_prefill_alone(kind):
    base = make_step_model(kind, "meta-llama/Llama-3.1-8B-Instruct", "H100", 1)
    spec = make_step_model(kind, "meta-llama/Llama-3.1-8B-Instruct", "H100", 1,
                           deployment=Deployment(verify_tokens=4))
    assert spec.decode_step_us(256, 256 * 2000) > base.decode_step_us(256, 256 * 2000)
    assert spec.step_time_us([(2048, 0, 2048)]) == base.step_time_us([(2048, 0, 2048)])


# ---- expert and data parallelism ------------------------------------------------------------------
def test_moe_dp_ep_runs_as_one_lockstep_engine_with_expert_sharded_memory(tmp_path):
    s = _run("moe-dp-ep", tmp_path)
    assert s["completed_requests"] == 1500
    cfg = build(load_scenario(SCENARIOS / "moe-dp-ep.yaml"))
    (inst,) = cfg.instances
    dep = inst.step_model.deployment
    assert dep.dp == 2 and dep.expert_parallel
    # each rank holds half the experts: more than twice the KV of one rank holding them all
    one = kv_blocks_per_instance("Qwen/Qwen3-30B-A3B", "H100", 1)
    assert inst.total_kv_blocks > 2 * one
    assert inst.engine.max_num_seqs == 2 * 1024                   # every rank's batch


@pytest.mark.parametrize("kind", ("trained-physics", "calibrated"))
def test_expert_all_to_all_costs_more_across_nodes(kind):
    within = make_step_model(kind, "Qwen/Qwen3-30B-A3B", "H100", 1,
                             deployment=Deployment(dp=2, expert_parallel=True))
    across = make_step_model(kind, "Qwen/Qwen3-30B-A3B", "H100", 1,
                             deployment=Deployment(dp=2, expert_parallel=True, gpus_per_node=1))
    assert across.decode_step_us(128, 128 * 1000) > within.decode_step_us(128, 128 * 1000)
    assert within._disp_tok if kind == "trained-physics" else within._a2a_tok     # the term is there


def test_dp_and_expert_parallelism_need_a_moe_model():
    for change, field in (({"dp": 2}, "dp"), ({"vllm__enable_expert_parallel": True}, "vllm.enable_expert_parallel")):
        with pytest.raises(ConfigError) as e:
            build(parse_scenario(_scenario("spec-decode-off", **change)))
        assert e.value.field == field and ("MoE" in e.value.message or "experts" in e.value.message)


def test_a_dp2_ep_trace_validates_instead_of_being_skipped(tmp_path):
    """A synthetic DP2 + EP per-request trace (tests/data; no real one was available)."""
    trace = ROOT / "tests" / "data" / "synthetic_h100_qwen3-30b-a3b_dp2ep_requests.csv"
    out = tmp_path / "val"
    r = CliRunner().invoke(main, ["validate", str(trace), "--out", str(out), "--quiet", "--latency-model", "all"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["skipped"] == [] and s["settings"]["dp"] == 2 and s["settings"]["expert_parallel"]
    assert all(v["completed"] == 48 for v in s["by_latency_model"].values())


# ---- multi-node tensor parallelism ------------------------------------------------------------------
def test_multinode_tp_runs_a_tp_group_larger_than_a_node(tmp_path):
    s = _run("multinode-tp", tmp_path)
    assert s["completed_requests"] == 400
    (pool,) = build(load_scenario(SCENARIOS / "multinode-tp.yaml")).pools
    assert pool.tp == 16 and pool.gpus_per_node == 16                 # billed as its two nodes


@pytest.mark.parametrize("kind", ("trained-physics", "calibrated"))
def test_all_reduce_over_the_inter_node_link_is_slower_than_nvlink(kind):
    nvl = make_step_model(kind, "meta-llama/Llama-3.1-70B-Instruct", "H100", 16,
                          deployment=Deployment(gpus_per_node=16))
    ib = make_step_model(kind, "meta-llama/Llama-3.1-70B-Instruct", "H100", 16)
    assert ib.step_time_us([(4096, 0, 4096)]) > nvl.step_time_us([(4096, 0, 4096)])
    assert ib.decode_step_us(64, 64 * 1000) > nvl.decode_step_us(64, 64 * 1000)


# ---- hybrid attention and fp8 KV ---------------------------------------------------------------------
def test_hybrid_attention_holds_more_tokens_than_the_same_model_all_full_attention():
    """Qwen3-Next-80B-A3B keeps KV in 12 of its 48 layers: on 4 x H100 it holds 2,340,240 tokens,
    4.0x the 585,056 of the same model counted as 48 full-attention layers."""
    m = load_model("Qwen/Qwen3-Next-80B-A3B-Instruct")
    assert (m.num_layers, m.kv_layers, m.linear_layers) == (48, 12, 36)
    full = dataclasses.replace(m, linear_layers=0)
    hybrid_tokens = kv_blocks_per_instance(m, "H100", 4) * 16
    full_tokens = kv_blocks_per_instance(full, "H100", 4) * 16
    assert (hybrid_tokens, full_tokens) == (2_340_240, 585_056)


def test_fp8_kv_doubles_capacity_and_cheapens_kv_reads():
    m = "meta-llama/Llama-3.1-8B-Instruct"
    auto, fp8 = kv_blocks_per_instance(m, "H100", 1), kv_blocks_per_instance(m, "H100", 1, kv_cache_bytes=1)
    assert fp8 == pytest.approx(2 * auto, abs=2)
    for kind in KINDS:
        a = make_step_model(kind, m, "H100", 1)
        b = make_step_model(kind, m, "H100", 1, deployment=Deployment(kv_cache_bytes=1))
        assert b.decode_step_us(256, 256 * 4000) < a.decode_step_us(256, 256 * 4000), kind


def test_layer_types_must_cover_every_layer():
    from blis_gym.sim.latency import model_from_dict
    cfg = json.loads((ROOT / "blis_gym/data/models/qwen3-8b/config.json").read_text())
    cfg["layer_types"] = ["full_attention", "sliding_attention"]
    with pytest.raises(ConfigError, match="layer_types has 2 entries"):
        model_from_dict(cfg, "x")


# ---- vLLM's admission reserve ------------------------------------------------------------------------
def _reserve_sim(**vllm):
    d = _scenario("spec-decode-off", workload__num_requests=80, workload__rate=40, vllm__total_kv_blocks=1200,
                  vllm__max_num_batched_tokens=512, **{f"vllm__{k}": v for k, v in vllm.items()})
    return Simulation(build(parse_scenario(d), check_invariants=True))


def test_full_prompt_reservation_and_watermark_admit_later_and_preempt_less():
    plain, reserve, mark = _reserve_sim(), _reserve_sim(reserve_full_prompt=True), _reserve_sim(kv_watermark=0.2)
    sp, sr, sm = plain.run(), reserve.run(), mark.run()
    assert sp["completed_requests"] == sr["completed_requests"] == sm["completed_requests"] == 80
    assert reserve.instances[0].preemptions < plain.instances[0].preemptions
    assert sr["scheduling_delay_mean_ms"] > sp["scheduling_delay_mean_ms"]
    assert sm["scheduling_delay_mean_ms"] > sp["scheduling_delay_mean_ms"]


def test_bad_2026_settings_get_one_line_naming_the_field():
    with pytest.raises(ConfigError) as e:
        parse_scenario(_scenario("spec-decode", vllm__speculative={"method": "eagle", "num_tokens": 2,
                                                                   "acceptance": [0.4, 0.9]}))
    assert e.value.field.startswith("vllm.speculative") and "must not increase" in e.value.message
    with pytest.raises(ConfigError) as e:
        parse_scenario(_scenario("spec-decode", vllm__kv_cache_dtype="fp4"))
    assert e.value.field == "vllm.kv_cache_dtype"


@pytest.mark.parametrize("kind", ("trained-physics", "calibrated"))
def test_expert_parallelism_inside_one_tp_group_is_priced(kind):
    """dp 1, tp 4, --enable-expert-parallel: the MoE layers dispatch to the experts' GPUs."""
    tp_only = make_step_model(kind, "Qwen/Qwen3-30B-A3B", "H100", 4)
    ep = make_step_model(kind, "Qwen/Qwen3-30B-A3B", "H100", 4, deployment=Deployment(expert_parallel=True))
    assert ep.step_time_us([(4096, 0, 4096)]) != tp_only.step_time_us([(4096, 0, 4096)])


def test_lookahead_top_up_counts_the_blocks_each_decoder_crosses():
    """The aggregate top-up (decoders counted by base mod 16) equals the per-decoder count."""
    import random

    from blis_gym.sim.engine.speculative import lookahead_blocks
    rng = random.Random(3)
    for _ in range(2000):
        bases = [rng.randrange(0, 5000) for _ in range(rng.randrange(1, 40))]
        tick, s, k = rng.randrange(0, 10_000), rng.randrange(1, 20), rng.randrange(0, 17)
        phase = [0] * 16
        for b in bases:
            phase[b % 16] += 1
        each = sum(-(-(b + tick + k + s) // 16) - (-(-(b + tick + k) // 16)) for b in bases)
        assert lookahead_blocks(phase, tick, s, k) == each
