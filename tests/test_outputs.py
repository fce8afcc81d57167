"""A run's output folder: written atomically (a run killed at any moment leaves no summary.json
or a complete, consistent set), replacing an earlier run's folder wholly, and a bad `--out`
reported before simulating."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from blis_gym import cli as cli_module
from blis_gym.errors import ConfigError
from blis_gym.output.files import RUN_FILES, check_out_dir, write_run
from blis_gym.schema.scenario import build, load_scenario
from blis_gym.sim.simulation import Simulation

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def _sim(name: str = "single-request", **changes):
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    if changes:
        sc = sc.model_copy(update=changes)
    sim = Simulation(build(sc, base_dir=SCENARIOS))
    return sim, sim.run()


def assert_complete_or_absent(out: Path) -> bool:
    """`out` has no summary.json, or a complete set agreeing with it. True if complete."""
    if not (out / "summary.json").exists():
        return False
    s = json.loads((out / "summary.json").read_text())
    names = {p.name for p in out.iterdir()}
    assert names <= set(RUN_FILES) and {"requests.csv", "timeseries.csv"} <= names, names
    with open(out / "requests.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "request_id" and len(rows) - 1 == s["injected_requests"]
    assert s["completed_requests"] == sum(r[5] == "completed" for r in rows[1:])
    return True


def test_a_new_run_replaces_the_earlier_folder_wholly(tmp_path):
    traced = load_scenario(SCENARIOS / "cluster-4xh100-default.yaml")
    traced = traced.model_copy(update={"cluster": traced.cluster.model_copy(update={"trace_decisions": True}),
                                       "workload": traced.workload.model_copy(update={"num_requests": 20})})
    sim = Simulation(build(traced, base_dir=SCENARIOS))
    out = tmp_path / "out"
    assert "decisions.csv" in write_run(sim, sim.run(), out)
    assert (out / "decisions.csv").exists()
    sim, summary = _sim()
    written = write_run(sim, summary, out)
    assert "decisions.csv" not in written
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]       # no temporary folder left
    assert_complete_or_absent(out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask                 # as mkdir would make it


def test_a_write_failing_midway_leaves_the_earlier_run_untouched(tmp_path, monkeypatch):
    sim, summary = _sim()
    out = tmp_path / "out"
    write_run(sim, summary, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(self, path):
        Path(path).write_text("time_s,inst")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(type(sim.metrics), "write_timeseries_csv", broken)
    with pytest.raises(OSError):
        write_run(sim, summary, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_derived_files_are_drawn_in_the_temporary_folder_before_the_rename(tmp_path):
    # run --plot: the PNGs join the same atomic folder, and a folder with them can be replaced
    sim, summary = _sim()
    out = tmp_path / "out"

    def extra(folder):
        assert (folder / "summary.json").is_file() and not out.exists()
        png = folder / "latency_cdf.png"
        png.write_bytes(b"png")
        return [png]
    assert write_run(sim, summary, out, extra=extra)[-1] == "latency_cdf.png"
    assert (out / "latency_cdf.png").read_bytes() == b"png"
    check_out_dir(out)


def test_check_out_dir_refuses_a_file_and_a_folder_with_other_files(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out: .*file exists and is not a folder"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"^--out: .*cannot write"):
        check_out_dir(tmp_path / "file" / "sub")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"notes\.txt.*replaced wholly"):
        check_out_dir(tmp_path / "mine")
    check_out_dir(tmp_path / "new" / "deeper")          # creatable: fine
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")
    check_out_dir(tmp_path / "old")                      # an earlier run's folder: fine


def test_bad_out_fails_with_one_line_before_simulating(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")

    def never(*a, **k):
        raise AssertionError("simulated although --out is bad")
    monkeypatch.setattr(Simulation, "run", never)
    res = CliRunner().invoke(cli_module.main, ["run", str(SCENARIOS / "single-request.yaml"),
                                               "--out", str(tmp_path / "file" / "out"), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "--out" in res.output and "Traceback" not in res.output


CHILD = """
import sys
from pathlib import Path
from blis_gym.output.files import write_run
from blis_gym.schema.scenario import build, load_scenario
from blis_gym.sim.simulation import Simulation

sc = load_scenario(sys.argv[1])
runs = []
for n in (400, 700):        # two runs whose files differ in length
    sim = Simulation(build(sc.model_copy(update={"workload": sc.workload.model_copy(update={"num_requests": n})})))
    runs.append((sim, sim.run()))
print("ready", flush=True)
i = 0
while True:
    write_run(*runs[i % 2], Path(sys.argv[2]))
    i += 1
"""


def test_run_killed_at_any_moment_leaves_no_summary_or_a_complete_set(tmp_path):
    # A process that writes run folders back to back into one --out (two runs of different
    # sizes, alternately) is SIGKILLed at a random moment of its writing, again and again: the
    # folder always holds no summary.json or a complete set agreeing with it.
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(11)
    complete = 0
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(SCENARIOS / "default.yaml"), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        p.stdout.close()
        p.stderr.close()
        complete += assert_complete_or_absent(out)
    assert complete                     # (the folder is absent only inside a rename's instant)
