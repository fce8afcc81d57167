"""`blis-gym observe` against a small OpenAI-compatible server started on 127.0.0.1: the requests
sent are the ones `run` simulates for the seed, the recorded latencies respect the server's
controlled delays, shared prefixes are shared textually, the recording round-trips through
`validate`, Ctrl-C keeps a valid file, and bad input gets one line and exit status 2."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from blis_gym.observe import ObserveConfig, observe
from blis_gym.observe.prompts import segment_text
from blis_gym.observe.record import parse_prometheus

from fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
FIRST_S, TOKEN_S = 0.05, 0.01


def scenario(tmp_path: Path, **workload) -> Path:
    w = {"rate": 50, "arrival": {"process": "poisson"}, "num_requests": 12, "prefix_group": "sys",
         "prefix_tokens": 32, "input": {"dist": "gaussian", "mean": 20, "std": 8, "min": 2, "max": 60},
         "output": {"dist": "gaussian", "mean": 5, "std": 2, "min": 2, "max": 9}, **workload}
    w = {k: v for k, v in w.items() if v is not None}                 # None: leave the field out
    p = tmp_path / "observe-test.yaml"
    p.write_text(yaml.safe_dump({"name": "observe-test", "seed": 7, "model": "Qwen/Qwen3-14B", "hardware": "H100",
                                 "workload": w}))
    return p


def rows(out: Path) -> list[dict]:
    with open(out / "observed_requests.csv", newline="") as f:
        return list(csv.DictReader(f))


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "blis_gym.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, **kw)


def cli_in_process(*args) -> tuple[int, str]:
    """(exit status, stderr) of the command line run in this process (faster than a subprocess)."""
    from click.testing import CliRunner

    from blis_gym.cli import main
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stderr


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(first_token_s=FIRST_S, token_s=TOKEN_S) as srv:
        yield srv


def test_sends_the_simulated_requests_and_records_their_latencies(tmp_path, server):
    from blis_gym.schema.scenario import build, load_scenario
    from blis_gym.sim.engine import State
    from blis_gym.sim.simulation import Simulation

    sc = scenario(tmp_path)
    out = tmp_path / "rec"
    n0 = len(server.bodies)
    meta = observe(ObserveConfig(url=server.url, workload=str(sc), out_dir=out))
    assert meta["requests_sent"] == 12 and meta["requests_by_status"] == {"ok": 12}
    assert meta["model"] == "test-model" and meta["stopped"] == "the workload ended"
    got = sorted(rows(out), key=lambda r: int(r["request_id"]))
    assert len(got) == 12 and len(server.bodies) - n0 == 12
    # the same requests `blis-gym run` simulates for this seed: arrival times and lengths
    sim = Simulation(build(load_scenario(sc)))
    sim.run()
    a = sim.metrics.arrays()
    order = np.argsort(a["id"])
    assert all(a["state"][order] == int(State.COMPLETED))
    assert [int(r["request_id"]) for r in got] == a["id"][order].tolist()
    assert [float(r["intended_arrival_s"]) for r in got] == pytest.approx((a["arrival"][order] / 1e6).tolist(),
                                                                         abs=1e-6)
    # the server counts a prompt's words: the synthetic text has exactly the simulated length
    assert [int(r["input_tokens"]) for r in got] == a["inp"][order].tolist()
    assert [int(r["output_tokens"]) for r in got] == a["out"][order].tolist()
    assert all(r["input_tokens"] == r["intended_input_tokens"] for r in got)
    itl = {j["request_id"]: j["itl_ms"] for j in map(json.loads, (out / "observed_itl.jsonl").read_text().splitlines())}
    for r in got:
        ttft, e2e, n = float(r["ttft_ms"]), float(r["e2e_ms"]), int(r["output_tokens"])
        gaps = itl[int(r["request_id"])]
        assert len(gaps) == n - 1
        assert ttft >= FIRST_S * 1e3                    # the server waits that long before the first token
        # the last token cannot come before the server's delays have passed
        assert ttft + sum(gaps) >= (FIRST_S + (n - 1) * TOKEN_S) * 1e3 - 1e-6
        assert e2e >= ttft + sum(gaps) - 1e-6
        assert float(r["arrival_s"]) >= float(r["intended_arrival_s"])
        assert r["status"] == "ok" and r["http_status"] == "200"


def test_shared_prefixes_and_session_turns_are_shared_textually(tmp_path, server):
    sc = scenario(tmp_path, num_requests=8, rate=40, arrival={"process": "constant"},
                  input={"dist": "constant", "value": 12}, output={"dist": "constant", "value": 4},
                  session={"turns": 2, "think_time_s": 0.01, "accumulate": True})
    n0 = len(server.bodies)
    meta = observe(ObserveConfig(url=server.url, workload=str(sc), out_dir=tmp_path / "rec", api="chat",
                                 model="served"))
    assert meta["requests_by_status"] == {"ok": 8}
    bodies = server.bodies[n0:]
    prompts = [b["messages"][0]["content"].split() for b in bodies]
    assert {b["model"] for b in bodies} == {"served"} and all(b["stream"] for b in bodies)
    assert all(b["ignore_eos"] and b["min_tokens"] == b["max_tokens"] == 4 for b in bodies)
    assert len({tuple(p[:32]) for p in prompts}) == 1             # one group prefix, the same text
    firsts = [p for p in prompts if len(p) == 44]
    assert len({tuple(p[32:]) for p in firsts}) == len(firsts)    # each question its own
    # a second turn repeats its first turn and the text the server generated for it, then asks more
    seconds = [p for p in prompts if len(p) == 44 + 4 + 12]
    assert seconds and all(any(s[:44] == f for f in firsts) and s[44:48] == ["w0", "w1", "w2", "w3"]
                           for s in seconds)
    got = rows(tmp_path / "rec")
    assert {r["turn"] for r in got} == {"0", "1"} and all(r["status"] == "ok" for r in got)


def test_closed_loop_users_and_the_concurrency_bound(tmp_path):
    # two closed-loop users: each sends its next request after its previous one completes
    with FakeOpenAI(first_token_s=0.01, token_s=0.002) as srv:
        sc = scenario(tmp_path, num_requests=8, rate=None, arrival=None, prefix_group=None, prefix_tokens=None,
                      closed_loop={"users": 2, "think_time_s": 0.01})
        meta = observe(ObserveConfig(url=srv.url, workload=str(sc), out_dir=tmp_path / "closed"))
        assert meta["requests_by_status"] == {"ok": 8} and srv.peak <= 2
    # open-loop arrivals far faster than the server: --max-concurrency holds them back
    with FakeOpenAI(first_token_s=0.05, token_s=0.01) as srv:
        meta = observe(ObserveConfig(url=srv.url, workload=str(scenario(tmp_path, rate=1000)),
                                     out_dir=tmp_path / "bounded", max_concurrency=2))
        assert meta["requests_by_status"] == {"ok": 12} and srv.peak <= 2
    got = rows(tmp_path / "bounded")
    late = [float(r["arrival_s"]) - float(r["intended_arrival_s"]) for r in got]
    assert max(late) >= 0.05        # the later ones waited at least one request's first-token delay


def test_observe_then_validate_round_trips(tmp_path, server):
    sc = scenario(tmp_path)
    out = tmp_path / "rec"
    p = cli("observe", "--url", server.url + "/v1", "--workload", sc, "--out", out, "--hardware", "H100",
            "--model", "Qwen/Qwen3-14B", "--max-requests", "6", "--quiet")
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "observed_meta.json").read_text())
    assert meta["requests_sent"] == 6 and meta["stopped"] == "--max-requests 6 sent" and meta["clock"] == "client"
    assert len(rows(out)) == 6
    # Prometheus samples scraped while it ran (histogram buckets left out)
    metrics = (out / "metrics.csv").read_text()
    assert "vllm:num_requests_running" in metrics and "_bucket" not in metrics
    v = cli("validate", out / "observed_requests.csv", "--out", tmp_path / "val", "--quiet")
    assert v.returncode == 0, v.stderr
    s = json.loads((tmp_path / "val" / "summary.json").read_text())
    assert s["requests"] == 6 and s["completed"] == 6 and s["settings"]["hardware"] == "H100"
    assert s["settings"]["clock"] == "client" and s["median_ape"]["e2e_mean"] is not None


def test_validate_replays_only_the_requests_that_succeeded(tmp_path, server):
    sc = scenario(tmp_path)
    out = tmp_path / "rec"
    observe(ObserveConfig(url=server.url, workload=str(sc), out_dir=out, max_requests=4,
                          engine={"hardware": "H100"}, model="Qwen/Qwen3-14B"))
    with open(out / "observed_requests.csv", "a", newline="") as f:     # a failed request: no latencies
        f.write("99,default,standard,,,0,0.5,0.5,20,0,20,5,,,,http_503,503,overloaded\n")
    from blis_gym.fidelity.validate import validate_file
    s = validate_file(out / "observed_requests.csv", tmp_path / "val", plot=False)
    assert s["requests"] == 4 and s["completed"] == 4


def test_duration_and_a_server_without_vllm_extras_or_metrics(tmp_path):
    logs = []
    with FakeOpenAI(first_token_s=0.0, token_s=0.0, refuse_extra=True, metrics=False) as srv:
        meta = observe(ObserveConfig(url=srv.url, workload=str(scenario(tmp_path, num_requests=400, rate=20)),
                                     out_dir=tmp_path / "rec", duration_s=0.5, metrics_interval_s=0.1), logs.append)
        bodies = srv.bodies
    assert meta["stopped"] == "--duration 0.5 s reached" and 0 < meta["requests_sent"] < 400
    # the server refused ignore_eos: asked again without it, and from then on never sent
    assert meta["ignore_eos"] is False and meta["requests_by_status"] == {"ok": meta["requests_sent"]}
    assert "ignore_eos" not in bodies[-1]
    assert any(m.startswith("warning: cannot scrape") for m in logs)
    assert not (tmp_path / "rec" / "metrics.csv").exists()
    assert all(float(r["intended_arrival_s"]) <= 0.5 for r in rows(tmp_path / "rec"))


def test_ctrl_c_keeps_a_valid_recording(tmp_path):
    with FakeOpenAI(first_token_s=0.05, token_s=0.05) as srv:
        sc = scenario(tmp_path, num_requests=400, rate=20, output={"dist": "constant", "value": 20})
        out = tmp_path / "rec"
        proc = subprocess.Popen([sys.executable, "-m", "blis_gym.cli", "observe", "--url", srv.url, "--workload",
                                 str(sc), "--out", str(out), "--hardware", "H100", "--model", "Qwen/Qwen3-14B",
                                 "--drain-timeout", "0.2", "--quiet"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not (out / "observed_requests.csv").exists()
                                                   or len(rows(out)) < 3):
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    meta = json.loads((out / "observed_meta.json").read_text())
    assert meta["interrupted"] and meta["finished_at"] and meta["requests_sent"] < 400
    got = rows(out)
    assert len(got) == meta["requests_sent"]                 # the ones in flight are recorded too
    assert {r["status"] for r in got} <= {"ok", "cancelled"}
    v = cli("validate", out / "observed_requests.csv", "--out", tmp_path / "val", "--quiet")
    assert v.returncode == 0, v.stderr
    s = json.loads((tmp_path / "val" / "summary.json").read_text())
    assert s["requests"] == sum(r["status"] == "ok" for r in got)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, field", [
    (["--url", "ftp://example.com"], "--url"),
    (["--url", "localhost:8000"], "--url"),
    (["--workload", "no-such-scenario"], "--workload"),
    (["--url", "http://127.0.0.1:{closed}"], "--url: cannot reach"),
    (["--max-concurrency", "-1"], "--max-concurrency"),
    (["--duration", "0"], "--duration"),
    (["--api", "grpc"], "--api"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, server, args, field):
    base = {"--url": server.url, "--workload": "default", "--out": str(tmp_path / "rec")}
    args = [a.format(closed=_closed_port()) for a in args]
    opts = {**base, **dict(zip(args[::2], args[1::2]))}
    code, err = cli_in_process("observe", *[x for kv in opts.items() for x in kv])
    assert code == 2, err
    assert "Traceback" not in err and field in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "rec" / "observed_requests.csv").exists()


def test_out_folder_with_other_files_is_refused(tmp_path, server):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = cli_in_process("observe", "--url", server.url, "--workload", scenario(tmp_path), "--out", tmp_path)
    assert code == 2 and "--out" in err and (tmp_path / "notes.txt").exists()


def test_synthetic_text_is_deterministic_and_one_word_per_token():
    a = segment_text(7, -2, 50)
    assert a == segment_text(7, -2, 50) and len(a.split()) == 50
    assert a != segment_text(8, -2, 50) and a != segment_text(7, 5, 50)
    assert segment_text(7, 5, 0) == ""


def test_prometheus_text_is_parsed_without_buckets():
    text = ('# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="m"} 3\n'
            'vllm:kv_cache_usage_perc{model_name="m",engine="0"} 0.25 1700000000\n'
            'vllm:ttft_seconds_bucket{le="0.1"} 4\nprocess_cpu_seconds_total 12.5\nbad line here\n')
    assert parse_prometheus(text) == [("vllm:num_requests_waiting", 'model_name="m"', 3.0),
                                      ("vllm:kv_cache_usage_perc", 'model_name="m",engine="0"', 0.25),
                                      ("process_cpu_seconds_total", "", 12.5)]


def test_help_does_not_import_the_observer():
    code = "import sys; from blis_gym.cli import main; print('blis_gym.observe.runner' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.strip() == "False", p.stderr


# ---- a server that answers badly (issue 30): every request sent gets its row -----------------------
BAD_MODELS = {
    "chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\nConnection: close\r\n\r\n{}",
    "cut short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"data\": [",
}


@pytest.mark.parametrize("label", list(BAD_MODELS))
def test_a_malformed_models_answer_is_one_line(tmp_path, label):
    with FakeOpenAI(models_raw=BAD_MODELS[label]) as srv:
        code, err = cli_in_process("observe", "--url", srv.url, "--workload", scenario(tmp_path), "--out",
                                   tmp_path / "rec")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--url: " in err and "gave a malformed HTTP answer" in err and "Traceback" not in err


@pytest.mark.parametrize("usage, reason", [
    ({"completion_tokens": '"3"'}, "usage.completion_tokens is '3', not a token count"),
    ({"completion_tokens": "[3]"}, "usage.completion_tokens is [3], not a token count"),
    ({"completion_tokens": "-1"}, "usage.completion_tokens is -1"),
    ({"prompt_tokens": "NaN"}, "usage.prompt_tokens is nan"),
    ({"prompt_tokens": "Infinity"}, "usage.prompt_tokens is inf"),
    ({"completion_tokens": "1e400"}, "usage.completion_tokens is inf"),
    ({"completion_tokens": "1" + "0" * 400}, "usage.completion_tokens is 1000000000000000000000000000000000000..."),
    ({"completion_tokens": "2.5"}, "usage.completion_tokens is 2.5"),
])
def test_bad_usage_values_are_recorded_as_errors_with_the_reason(tmp_path, usage, reason):
    with FakeOpenAI(first_token_s=0.0, token_s=0.0, usage=usage) as srv:
        meta = observe(ObserveConfig(url=srv.url, workload=str(scenario(tmp_path, num_requests=4)),
                                     out_dir=tmp_path / "rec"))
    got = rows(tmp_path / "rec")
    assert meta["requests_sent"] == 4 and len(got) == 4 and meta["requests_by_status"] == {"error": 4}
    assert all(r["status"] == "error" and r["error"].startswith(reason) for r in got), got[0]["error"]


@pytest.mark.parametrize("cut, reason", [("clean", "the stream ended before [DONE], after 1 tokens"),
                                         ("abrupt", "ProtocolError: the connection closed in the middle of a chunk")])
def test_a_stream_cut_before_done_is_an_error_not_ok(tmp_path, cut, reason):
    with FakeOpenAI(first_token_s=0.0, token_s=0.0, cut_after=1, cut=cut) as srv:
        meta = observe(ObserveConfig(url=srv.url, workload=str(scenario(tmp_path, num_requests=4)),
                                     out_dir=tmp_path / "rec"))
    got = rows(tmp_path / "rec")
    assert meta["requests_sent"] == len(got) == 4
    assert all(r["status"] == "error" and r["error"] == reason and r["e2e_ms"] == "" for r in got), got


def test_a_malformed_metrics_body_warns_once_and_the_requests_are_recorded(tmp_path):
    logs = []
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nxyz\r\nvllm:x 1\r\n0\r\n\r\n"
    with FakeOpenAI(first_token_s=0.0, token_s=0.0, metrics_raw=bad) as srv:
        meta = observe(ObserveConfig(url=srv.url, workload=str(scenario(tmp_path, num_requests=4)),
                                     out_dir=tmp_path / "rec", metrics_interval_s=0.1), logs.append)
    assert meta["requests_by_status"] == {"ok": 4}
    warnings = [m for m in logs if m.startswith("warning: cannot scrape")]
    assert len(warnings) == 1 and "bad chunk size b'xyz'" in warnings[0]
