"""Bad input of every kind gets one line naming the field and exit status 2: never a traceback,
a hang or a silently wrong number. Each case is a reproducer of a defect found by mutating the
bundled scenarios and measurement files; the table names the field the message must mention."""
from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError, read_yaml
from blis_gym.output.finite_json import dumps
from blis_gym.schema.scenario import build, parse_scenario
from helpers import with_fields

ROOT = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((ROOT / "scenarios" / "single-request.yaml").read_text())
INF, NAN = float("inf"), float("nan")


def scenario(**fields) -> dict:
    """The single-request scenario with fields set (`a__b` is the nested field a.b)."""
    return with_fields(BASE, **fields)


def one_line(result) -> str:
    """The single error line of a run that must exit 2."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def autoscaled(**autoscaler) -> list:
    return [{"name": "p", "instances": 1, "max_instances": 3, "autoscaler": autoscaler}]


LOAD = dict(workload__rate=50.0, workload__num_requests=200)
BAD = [
    # durations that round to 0 µs would reschedule at the same instant forever
    ("dispatch tick below 1 µs", scenario(**LOAD, gateway={"flow_control": {"dispatch_tick_ms": 0.0001}}),
     "gateway.flow_control.dispatch_tick_ms"),
    ("autoscaler interval below 1 µs", scenario(**LOAD, pools=autoscaled(interval_s=1e-7)),
     "pools.0.autoscaler.interval_s"),
    ("autoscaler window of 1e6 ticks", scenario(pools=autoscaled(interval_s=0.1, scale_down_stabilization_s=1e5)),
     "pools.0.autoscaler: scale_down_stabilization_s must be at most"),
    ("think time below 1 µs", scenario(workload__session={"turns": 2, "think_time_s": 1e-7}),
     "workload.session.think_time_s"),
    # infinite or huge floats
    ("infinite timeout", scenario(workload__timeout_s=INF), "workload.timeout_s"),
    ("infinite horizon", scenario(workload__horizon_s=INF), "workload.horizon_s"),
    ("huge horizon", scenario(workload__horizon_s=1e300), "workload.horizon_s"),
    ("infinite sample interval", scenario(sample_interval_s=INF), "sample_interval_s"),
    ("infinite scrape interval", scenario(cluster={"scrape_interval_ms": INF}), "cluster.scrape_interval_ms"),
    ("infinite ttl", scenario(gateway={"flow_control": {"ttl_s": INF}}), "gateway.flow_control.ttl_s"),
    ("infinite dispatch tick", scenario(gateway={"flow_control": {"dispatch_tick_ms": INF}}),
     "gateway.flow_control.dispatch_tick_ms"),
    ("infinite staleness", scenario(gateway={"flow_control": {"saturation": {"staleness_ms": INF}}}),
     "gateway.flow_control.saturation.staleness_ms"),
    ("infinite delay", scenario(pools=[{"name": "p", "provisioning_delay_s": INF}]), "pools.0.provisioning_delay_s"),
    ("huge gaussian delay", scenario(pools=[{"name": "p", "load_time_s": {"dist": "gaussian", "mean": 1e300}}]),
     "pools.0.load_time_s.mean"),
    ("infinite autoscaler interval", scenario(pools=autoscaled(interval_s=INF)), "pools.0.autoscaler.interval_s"),
    ("infinite stabilization", scenario(pools=autoscaled(scale_down_stabilization_s=INF)),
     "pools.0.autoscaler.scale_down_stabilization_s"),
    ("infinite base latency", scenario(pd={"transfer": {"base_latency_ms": INF}}), "pd.transfer.base_latency_ms"),
    ("zero bandwidth", scenario(pd={"transfer": {"bandwidth_gb_s": 1e-300}}), "pd.transfer.bandwidth_gb_s"),
    ("huge cv", scenario(workload__arrival={"process": "gamma", "cv": 1e308}), "workload.arrival.cv"),
    ("infinite rate fraction", scenario(workload__clients=[{"name": "a", "rate_fraction": INF}]),
     "workload.clients.0.rate_fraction"),
    ("NaN rate", scenario(workload__rate=NAN), "workload.rate"),
    ("1e20 turns", scenario(workload__session={"turns": 10 ** 20}), "workload.session.turns"),
    ("huge think-time max", scenario(workload__session={"turns": 2, "think_time_s": {"dist": "uniform", "max": 1e20}}),
     "workload.session.think_time_s.max"),
    ("huge think time", scenario(workload__closed_loop={"users": 2, "think_time_s": 1e300}, workload__rate=None),
     "workload.closed_loop.think_time_s"),
    ("huge lognormal think time", scenario(workload__session={"turns": 2, "think_time_s": {
        "dist": "lognormal", "mu": 100, "sigma": 100}}), "workload.session.think_time_s.mu"),
    ("infinite SLO target", scenario(workload__slo_targets={"standard": {"ttft_ms": INF}}),
     "workload.slo_targets.standard.ttft_ms"),
    ("infinite price", scenario(pools=[{"name": "p", "price_per_gpu_hour": INF}]), "pools.0.price_per_gpu_hour"),
    ("huge prompt", scenario(workload__input={"dist": "constant", "value": 10 ** 30}), "workload.input.value"),
    # no upper bound: hangs or exhausts memory
    ("1e20 instances", scenario(cluster={"instances": 10 ** 20}), "cluster.instances"),
    ("1e20 max_instances", scenario(pools=[{"name": "p", "instances": 1, "max_instances": 10 ** 20,
                                            "autoscaler": {}}]), "pools.0.max_instances"),
    ("pools beyond the instance limit", scenario(pools=[{"name": f"p{i}", "instances": 4096} for i in range(2)]),
     "pools"),
    ("a million squared inference-perf users", scenario(workload={"inference_perf": {
        "num_groups": 10 ** 6, "prompts_per_group": 10 ** 6, "system_prompt_len": 10, "question_len": 10,
        "output_len": 10, "stages": [{"rate": 1, "duration_s": 1}]}}), "workload.inference_perf: num_groups x"),
    ("1e20 users", scenario(workload__closed_loop={"users": 10 ** 20}, workload__rate=None),
     "workload.closed_loop.users"),
    ("rate of 1e-6 req/s", scenario(workload__rate=1e-6, workload__num_requests=3), "workload.rate"),
    ("sample interval of 1 µs", scenario(sample_interval_s=1e-6), "sample_interval_s"),
    # other tracebacks
    ("negative seed", scenario(seed=-1), "seed"),
    ("seed beyond 64 bits", scenario(seed=2 ** 64), "seed"),
    ("decider policy a list", scenario(pd={"decider": {"policy": []}}), "pd.decider.policy"),
    ("empty pool name", scenario(pools=[{"name": " "}]), "pools"),
    ("lognormal length mu", scenario(workload__input={"dist": "lognormal", "mu": 1e300, "sigma": 1}),
     "workload.input.mu"),
    # messages that named a pydantic union member instead of the field
    ("unknown field in a pool", scenario(pools=[{"name": "p", "bogus": 1}]),
     "pools.0.bogus: unknown field; allowed: autoscaler, dp, gpus_per_node"),
    ("unknown field in a client", scenario(workload__clients=[{"name": "a", "bogus": 1}]),
     "workload.clients.0.bogus: unknown field; allowed: adapter, adapters, arrival, closed_loop"),
    ("delay with a negative mean", scenario(pools=[{"name": "p", "provisioning_delay_s": {"mean": -1}}]),
     "pools.0.provisioning_delay_s.mean"),
    ("delay of the wrong type", scenario(pools=[{"name": "p", "load_time_s": "slow"}]), "pools.0.load_time_s:"),
    ("uniform think time without max", scenario(workload__session={"turns": 2, "think_time_s": {"dist": "uniform"}}),
     "workload.session.think_time_s.max: required field is missing"),
    ("activity window ending before it starts", scenario(workload__clients=[{"name": "a", "windows": [
        {"start_s": 5, "end_s": 2}]}]), "workload.clients.0.windows.0: end_s (2) must be at least 1 µs after"),
    ("multimodal beside input", scenario(workload__clients=[{
        "name": "a", "input": {"dist": "constant", "value": 5},
        "multimodal": {"text": {"dist": "constant", "value": 5}}}]),
     "workload.clients.0: give input or multimodal"),
    ("multimodal item without a count", scenario(workload__clients=[{"name": "a", "multimodal": {
        "image": {"tokens": {"dist": "constant", "value": 5}}}}]), "workload.clients.0.multimodal.image.count"),
    ("think time with a parameter its distribution ignores", scenario(workload__session={"turns": 2, "think_time_s": {
        "dist": "exponential", "mean": 1, "std": 2}}),
     "workload.session.think_time_s.std: unknown field; allowed: dist, max, mean, min"),
    ("constant think time with a clamp", scenario(workload__closed_loop={"users": 2, "think_time_s": {
        "dist": "constant", "value": 1, "max": 2}}, workload__rate=None),
     "workload.closed_loop.think_time_s.max: unknown field; allowed: dist, value"),
    ("think time with a negative mean", scenario(workload__session={"turns": 2, "think_time_s": {
        "dist": "exponential", "mean": -1}}), "workload.session.think_time_s.mean"),
]


@pytest.mark.parametrize("label, data, field", BAD, ids=[b[0] for b in BAD])
def test_bad_scenario_gets_one_line_naming_the_field(tmp_path, label, data, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    line = one_line(run_cli("run", path, "--out", tmp_path / "out", "--quiet"))
    assert field in line, (field, line)
    assert "constrained-" not in line and "function-" not in line and "Spec" not in line, line
    assert not (tmp_path / "out").exists()


def test_a_pool_name_with_braces_is_just_a_name():
    cfg = build(parse_scenario(scenario(pools=[{"name": "p{x}"}, {"name": "q{}", "instances": 2}])))
    assert [i.name for i in cfg.instances] == ["p{x}-0", "q{}-0", "q{}-1"]


RAW = [
    ("binary file", bytes(range(256)), "not UTF-8 text"),
    ("Latin-1 file", "name: caf\xe9\nmodel: Qwen/Qwen3-14B\n".encode("latin-1"), "not UTF-8 text (byte 9 is 0xe9)"),
    ("duplicate key", "model: a\nseed: 1\nmodel: Qwen/Qwen3-14B\n", "line 3: duplicate key 'model'"),
    ("duplicate nested key", "workload:\n  rate: 1\n  rate: 2\n", "line 3: duplicate key 'rate'"),
    ("20,000 nested [", "a: " + "[" * 20000, "scenario:"),
    ("5,000-digit integer", "seed: " + "9" * 5000 + "\n", "line 1: an integer with too many digits"),
    ("lone surrogate", 'name: "\\ud800"\n', "line 1: a string that is not valid Unicode"),
]


@pytest.mark.parametrize("label, content, needle", RAW, ids=[r[0] for r in RAW])
def test_unreadable_scenario_file_gets_one_line(tmp_path, label, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = one_line(run_cli("run", path, "--out", tmp_path / "out", "--quiet"))
    assert needle in line and "scenario" in line, line


def test_yaml_reader_keeps_merge_keys_and_later_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("base: &b {rate: 1, cv: 2}\nmine:\n  <<: *b\n  rate: 5\n")
    assert read_yaml(path, "x")["mine"] == {"rate": 5, "cv": 2}


@pytest.mark.parametrize("seed", ["-1", str(2 ** 64), "x"])
def test_bad_seed_option_gets_one_line(tmp_path, seed):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    line = one_line(run_cli("run", path, "--seed", seed, "--out", tmp_path / "out", "--quiet"))
    assert "--seed" in line


# ---- traces, BLIS workload specs, model configs ------------------------------------------------
def _trace_run(tmp_path, files: dict, trace: dict):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(workload={"trace": trace})))
    return one_line(run_cli("run", path, "--out", tmp_path / "out", "--quiet"))


BLIS_SPEC = """version: "2"
aggregate_rate: 5
num_requests: 10
clients:
  - id: a
    arrival: {process: poisson}
    input_distribution: {type: pareto_lognormal, params: {alpha: 1.5, xm: 10, mu: 5, sigma: 1, mix_weight: 0.5}}
    output_distribution: {type: constant, params: {value: 10}}
"""

TRACES = [
    ("BLIS-v2 pareto alpha 0", {"w.yaml": BLIS_SPEC.replace("alpha: 1.5", "alpha: 0")}, {"path": "w.yaml", "format": "blis-v2"}, "alpha: must be > 0"),
    ("BLIS-v2 infinite rate", {"w.yaml": BLIS_SPEC.replace("aggregate_rate: 5", "aggregate_rate: .inf")},
     {"path": "w.yaml", "format": "blis-v2"}, "aggregate_rate: must be a finite number"),
    ("BLIS-v2 duplicate key", {"w.yaml": BLIS_SPEC.replace("num_requests: 10", "num_requests: 10\nseed: 1\nseed: 2")},
     {"path": "w.yaml", "format": "blis-v2"}, "duplicate key 'seed'"),
    ("BLIS-v2 inference-perf groups not a number", {"w.yaml": BLIS_SPEC.replace("clients:", """inference_perf:
  stages: [{rate: 1, duration: 5}]
  shared_prefix: {num_unique_system_prompts: many, num_users_per_system_prompt: 2, question_len: 5, output_len: 5}
clients:""")}, {"path": "w.yaml", "format": "blis-v2"}, "num_unique_system_prompts: must be a number"),
    ("trace arrival at 1e20 s", {"t.csv": "arrival_s,input_tokens,output_tokens\n0,10,5\n1e20,10,5\n"},
     {"path": "t.csv"}, "t.csv:3: arrival_s above the limit"),
    ("trace length of 1e308 tokens", {"t.csv": "arrival_s,input_tokens,output_tokens\n0,1e308,5\n"},
     {"path": "t.csv"}, "t.csv:2: input_tokens (1e308) above the limit"),
]


@pytest.mark.parametrize("label, files, trace, needle", TRACES, ids=[t[0] for t in TRACES])
def test_bad_trace_or_spec_gets_one_line(tmp_path, label, files, trace, needle):
    line = _trace_run(tmp_path, files, trace)
    assert needle in line and "workload.trace" in line, line


def test_custom_config_json_field_of_the_wrong_type(tmp_path):
    cfg = json.loads((ROOT / "blis_gym" / "data" / "models" / "llama-3.1-8b-instruct" / "config.json").read_text())
    for field, value in (("num_hidden_layers", "forty"), ("hidden_size", 51.5), ("vocab_size", [1]),
                         ("max_position_embeddings", {"a": 1})):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, field: value}))
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(scenario(model=str(tmp_path / "config.json"))))
        line = one_line(run_cli("run", path, "--out", tmp_path / "out", "--quiet"))
        assert line.startswith("error: model:") and repr(field) in line, line


# ---- outputs: strict JSON -------------------------------------------------------------------
def test_non_finite_numbers_are_written_as_null():
    text = dumps({"a": INF, "b": [NAN, 1.5, -INF], "c": {"d": 2}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5, None], "c": {"d": 2}}


def _strict_json(path: Path):
    def refuse(name):
        raise AssertionError(f"{path.name} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_summary_json_of_a_run_where_nothing_completes_is_strict_json(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(workload__timeout_s=1e-6, workload__num_requests=3)))
    r = run_cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 0, r.output
    s = _strict_json(tmp_path / "out" / "summary.json")
    assert s["completed_requests"] == 0 and s["timed_out_requests"] == 3


# ---- runtime safety: periodic events always move time forward ----------------------------------
def test_zero_periods_built_by_hand_still_end():
    """A SimConfig built without the scenario schema (dispatch tick and autoscaler interval of
    0 µs) still moves time forward instead of rescheduling at the same instant forever."""
    from blis_gym.sim.simulation import Simulation
    sc = parse_scenario(scenario(workload__rate=1000.0, workload__num_requests=5,
                                 workload__input={"dist": "constant", "value": 16},
                                 workload__output={"dist": "constant", "value": 2},
                                 gateway={"flow_control": {"saturation": {"detector": "concurrency",
                                                                          "max_concurrency": 1}}},
                                 pools=[{"name": "p", "instances": 1, "max_instances": 2,
                                         "autoscaler": {"scale_down_stabilization_s": 0}}]))
    cfg = build(sc)
    cfg = dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, dispatch_tick_us=0))
    cfg.pools[0].autoscaler.interval_us = 0

    def hang(*_):
        raise AssertionError("the run did not end")
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)            # a guard against a hang, not a timing assertion
    try:
        s = Simulation(cfg).run()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert s["completed_requests"] == 5


def test_bounds_fit_every_bundled_scenario():
    for p in sorted((ROOT / "scenarios").glob("*.yaml")):
        build(parse_scenario(read_yaml(p, "scenario")), base_dir=p.parent)


def test_a_lone_surrogate_in_a_mapping_built_in_code_names_the_field():
    with pytest.raises(ConfigError) as e:
        parse_scenario(scenario(workload__clients=[{"name": "\ud800"}]))
    assert e.value.field == "workload.clients.0.name" and "Unicode" in e.value.message


def test_config_error_names_the_field():
    with pytest.raises(ConfigError) as e:
        parse_scenario(scenario(cluster={"scrape_interval_ms": 1e-9}))
    assert e.value.field == "cluster.scrape_interval_ms" and "0 or between 0.001 and" in e.value.message


# ---- validate: measured files -------------------------------------------------------------------
TRACE_HEADER = "request_id,input_tokens,output_tokens,queued_s,ttft_ms,e2e_ms"
GOOD_ROWS = [f"r{i},{200 + 10 * i},{20 + i},{i * 0.05:.3f},{30 + i},{300 + 10 * i}" for i in range(4)]
LLAMA = ("--model", "meta-llama/Llama-3.1-8B", "--hardware", "RTX-4090")


def _validate(tmp_path, text: str, *options):
    p = tmp_path / "mine_requests.csv"
    p.write_text(text)
    return run_cli("validate", p, "--out", tmp_path / "out", "--quiet", *LLAMA, *options)


def _with_row(row: str) -> str:
    return "\n".join([TRACE_HEADER, *GOOD_ROWS, row]) + "\n"


BAD_TRACES = [
    ("empty cell", _with_row("r9,200,20,0.5,,300"), (), "ttft_ms: mine_requests.csv:6: empty value"),
    ("missing cell", _with_row("r9,200,20,0.5"), (), "ttft_ms: mine_requests.csv:6: empty value"),
    ("non-numeric cell", _with_row("r9,lots,20,0.5,30,300"), (), "input_tokens: mine_requests.csv:6: not a number"),
    ("infinite latency", _with_row("r9,200,20,0.5,30,inf"), (), "e2e_ms: mine_requests.csv:6: not a finite number"),
    ("NaN latency", _with_row("r9,200,20,0.5,nan,300"), (), "ttft_ms: mine_requests.csv:6: not a finite number"),
    ("zero latency", _with_row("r9,200,20,0.5,0,300"), (), "ttft_ms: mine_requests.csv:6: 0 is outside"),
    ("20-digit integer", _with_row("r9,12345678901234567890,20,0.5,30,300"), (), "input_tokens: mine_requests.csv:6"),
    ("1e308-token length", _with_row("r9,200,1e308,0.5,30,300"), (), "output_tokens: mine_requests.csv:6"),
    ("128 KB field", _with_row("r9,200,20,0.5,30,300," + "x" * (128 * 1024 + 10)), (), "field larger than field limit"),
    ("one KV block", _with_row("r9,200,20,0.5,30,300"), ("--kv-blocks", "1"), "total_kv_blocks: must be an integer"),
    ("non-UTF-8 trace", None, (), "not UTF-8 text"),
]


@pytest.mark.parametrize("label, text, options, needle", BAD_TRACES, ids=[b[0] for b in BAD_TRACES])
def test_bad_measured_trace_gets_one_line(tmp_path, label, text, options, needle):
    if text is None:
        (tmp_path / "mine_requests.csv").write_bytes(_with_row("r9,200,20,0.5,30,300").encode() + b"\xff\xfe\n")
        r = run_cli("validate", tmp_path / "mine_requests.csv", "--out", tmp_path / "out", "--quiet", *LLAMA)
    else:
        r = _validate(tmp_path, text, *options)
    line = one_line(r)
    assert needle in line, line


def test_a_trace_where_nothing_completes_says_why_and_fails(tmp_path):
    # 2 KV blocks hold 16 tokens: no prompt of the trace fits, so nothing completes
    r = _validate(tmp_path, "\n".join([TRACE_HEADER, *GOOD_ROWS]) + "\n", "--kv-blocks", "2")
    line = one_line(r)
    assert "no experiment could be scored" in line and "4 dropped (prompt of 200 tokens >= max_model_len 16)" in line
    s = _strict_json(tmp_path / "out" / "summary.json")
    assert s["completed"] == 0 and "max_model_len 16" in s["skipped"][0]["reason"]


AGG_HEADER = ("exp_id,model,hardware,tp,max_num_batched_tokens,max_num_seqs,total_kv_blocks,stage_index,"
              "stage_rate_rps,stage_duration_s,sp_num_groups,sp_prompts_per_group,sp_system_prompt_len,"
              "sp_question_len,sp_output_len,e2e_mean_ms,ttft_mean_ms")


def _agg(rate="1.0", duration="10", e2e="200", kv="8000") -> str:
    row = f"a1,Qwen/Qwen2.5-7B-Instruct,H100,1,2048,128,{kv},0,{rate},{duration},2,2,20,60,24,{e2e},25"
    return f"{AGG_HEADER}\n{row}\n"


@pytest.mark.parametrize("label, text, needle", [
    ("zero stage duration", _agg(duration="0"), "stage_duration_s: agg.csv:2: 0 is outside"),
    ("negative rate", _agg(rate="-1"), "stage_rate_rps: agg.csv:2: -1 is outside"),
    ("one KV block", _agg(kv="1"), "total_kv_blocks: agg.csv:2: 1 is outside"),
    ("infinite measured latency", _agg(e2e="inf"), "e2e_mean_ms: agg.csv:2: not a finite number"),
    ("zero measured latency", _agg(e2e="0"), "e2e_mean_ms: agg.csv:2: 0 is outside"),
], ids=lambda x: x if isinstance(x, str) and len(x) < 30 else None)
def test_bad_aggregates_get_one_line(tmp_path, label, text, needle):
    p = tmp_path / "agg.csv"
    p.write_text(text)
    line = one_line(run_cli("validate", p, "--out", tmp_path / "out", "--quiet"))
    assert needle in line, line


def test_negative_zero_is_zero():
    """-0.0 passes `>= 0` but numpy refuses it as a scale: it is read as 0."""
    from blis_gym.sim.simulation import Simulation
    sc = parse_scenario(scenario(workload__num_requests=4, workload__session={
        "turns": 2, "think_time_s": {"dist": "exponential", "mean": -0.0}},
        pools=[{"name": "p", "provisioning_delay_s": {"dist": "exponential", "mean": -0.0}}]))
    assert Simulation(build(sc)).run()["completed_requests"] == 4


@pytest.mark.parametrize("content, needle", [
    ("params: {a: 1}\nparams: {a: 2}\n", "duplicate key 'params'"),
    ("params: {api_us: .nan}\n", "calibration.params.api_us: must be a finite number"),
    ("params: {api_us: fast}\n", "calibration.params.api_us: must be a finite number"),
    ("params: [1, 2]\n", "calibration.params: must be a mapping"),
])
def test_bad_calibration_file_gets_one_line(tmp_path, content, needle):
    cal = tmp_path / "cal.yaml"
    cal.write_text(content)
    r = _validate(tmp_path, "\n".join([TRACE_HEADER, *GOOD_ROWS]) + "\n", "--calibration", cal)
    assert needle in one_line(r)


@pytest.mark.parametrize("args", [
    ("sweep", "capacity", "--out", "FILE"), ("sweep", "FOLDER"),
    ("eval", "blis_gym/Router-v0", "--policy", "round-robin", "--out", "FILE"),
    ("train", "--config", "agents/router.yaml", "--out", "FILE"),
    ("run", "default", "--out", "FILE"), ("nosuch-command",), ("--nosuch-option",)])
def test_usage_errors_of_every_command_get_one_line(tmp_path, args):
    # click's own checks (a file where a folder belongs, an unknown command or option) give the
    # one-line error of every other bad input, whichever module defines the command
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "FOLDER").mkdir()
    args = [str(tmp_path / a) if a in ("FILE", "FOLDER") else a for a in args]
    line = one_line(run_cli(*args))
    assert line.startswith("error: ") and "Usage" not in line
