"""Agent sessions: per-session turn counts, tool results as the new tokens of each turn, the
scenario's routing comparison, and replay of recorded sessions (Mooncake JSONL)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, with_fields

ROOT = Path(__file__).resolve().parent.parent
AGENTIC = yaml.safe_load((ROOT / "scenarios" / "agentic-sessions.yaml").read_text())
ROUND_ROBIN = yaml.safe_load((ROOT / "scenarios" / "agentic-sessions-round-robin.yaml").read_text())
SAMPLE = ROOT / "scenarios" / "traces" / "agentic-sample.jsonl"


def run(data: dict, check: bool = False):
    sim = Simulation(build(parse_scenario(data), check_invariants=check))
    return sim, sim.run()


def test_session_lengths_vary_within_bounds_and_each_turn_adds_output_and_tool_result():
    data = with_fields(AGENTIC, workload__horizon_s=60, workload__prefix_tokens=0,
                       workload__session__turns={"dist": "uniform", "min": 2, "max": 5},
                       workload__session__new_input={"dist": "constant", "value": 100},
                       workload__session__think_time_s=0.5)
    sim = Simulation(build(parse_scenario(data)))
    chains: dict = {}
    sim.final_hooks.append(lambda r, state, now: chains.setdefault(r.session.id, []).append(r))
    s = sim.run()
    assert_conserved(sim, s)
    complete = [c for c in chains.values() if len(c) == c[0].session.turns]
    lengths = {len(c) for c in complete}
    assert lengths <= {2, 3, 4, 5} and len(lengths) > 1            # drawn per session, within [2, 5]
    for c in complete:
        for prev, nxt in zip(c, c[1:]):
            assert nxt.input_len == prev.input_len + prev.output_len + 100
            assert nxt.arrival == prev.finished + 500_000              # the tool latency after the call


def test_default_profile_keeps_agent_context_cached_and_ttft_low_against_round_robin():
    _, default = run(AGENTIC)
    _, rr = run(ROUND_ROBIN)
    assert default["prefix_cache_hit_rate"] > rr["prefix_cache_hit_rate"] + 0.1
    assert default["ttft_mean_ms"] < rr["ttft_mean_ms"]


def test_recorded_sessions_replay_closed_loop_with_their_delays(tmp_path):
    scenario = {"model": "Qwen/Qwen3-14B", "cluster": {"instances": 2},
                "workload": {"trace": {"path": str(SAMPLE), "format": "mooncake"}}}
    (tmp_path / "replay.yaml").write_text(yaml.safe_dump(scenario))
    res = CliRunner().invoke(main, ["run", str(tmp_path / "replay.yaml"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    calls = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    rows = list(csv.DictReader((tmp_path / "out" / "requests.csv").open()))
    assert len(rows) == len(calls) and all(r["state"] == "completed" for r in rows)
    # every recorded call's context length is replayed as is
    assert sorted(int(r["input_tokens"]) for r in rows) == sorted(c["input_length"] for c in calls)
    # the first calls of the sessions after the first find the shared 4,096-token system prompt
    firsts = {c["input_length"] for c in calls if "timestamp" in c and c["timestamp"] > 0}
    assert {int(r["cached_tokens"]) for r in rows if int(r["input_tokens"]) in firsts} == {4096}
    # agent-b's second call arrives when its first ended + its recorded delay (1,200 ms)
    first_b = next(r for r in rows if int(r["input_tokens"]) == 4896)
    second_b = next(r for r in rows if int(r["input_tokens"]) == 4896 + 250 + 5200)
    end = float(first_b["arrival_s"]) + float(first_b["e2e_ms"]) / 1000
    assert float(second_b["arrival_s"]) == pytest.approx(end + 1.2, abs=2e-6)


@pytest.mark.parametrize("line,message", [
    ('{"session_id": "a", "timestamp": 0, "output_length": 5}', "missing input_length"),
    ('{"session_id": "a", "timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": "x"}',
     "hash_ids must be a list of integers"),
    ('not json', "not a JSON object"),
    ('{"session_id": "a", "input_length": 10, "output_length": 5}', "missing timestamp"),
])
def test_bad_trace_lines_are_one_line_errors_naming_the_line(tmp_path, line, message):
    good = '{"session_id": "z", "timestamp": 0, "input_length": 10, "output_length": 5}'
    (tmp_path / "t.jsonl").write_text(good + "\n" + line + "\n")
    data = {"model": "Qwen/Qwen3-14B", "workload": {"trace": {"path": "t.jsonl", "format": "mooncake"}}}
    with pytest.raises(ConfigError) as e:
        build(parse_scenario(data), base_dir=tmp_path)
    assert e.value.field == "workload.trace" and e.value.message.startswith("t.jsonl:2: ")
    assert message in e.value.message and "\n" not in str(e.value)


def test_a_continued_session_needs_a_delay_not_a_timestamp(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"session_id": "a", "timestamp": 0, "input_length": 10, "output_length": 5}\n'
                                      '{"session_id": "a", "timestamp": 9, "input_length": 30, "output_length": 5}\n')
    data = {"model": "Qwen/Qwen3-14B", "workload": {"trace": {"path": "t.jsonl", "format": "mooncake"}}}
    with pytest.raises(ConfigError, match="give its delay"):
        build(parse_scenario(data), base_dir=tmp_path)


@pytest.mark.parametrize("turns,field", [
    ({"dist": "uniform", "min": 5, "max": 2}, "workload.session.turns"),
    ({"dist": "geometric", "mean": 0.5, "max": 9}, "workload.session.turns.geometric.mean"),
    ({"dist": "poisson", "mean": 3}, "workload.session.turns"),
])
def test_bad_session_turns_are_one_line_errors(turns, field):
    with pytest.raises(ConfigError) as e:
        parse_scenario(with_fields(AGENTIC, workload__session__turns=turns))
    assert e.value.field.startswith(field) and "\n" not in str(e.value)
