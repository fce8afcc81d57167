"""blis-gym as an installed package: bundled scenarios and env specs found by name from any
folder, `blis-gym scenarios`, gym ids registered without `import blis_gym` importing gymnasium,
and (slow) a built wheel installed into a fresh venv outside the checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError
from blis_gym.resources import bundled_scenarios, env_spec_paths, scenario_path

ROOT = Path(__file__).resolve().parent.parent


def test_bundled_scenarios_are_every_file_of_scenarios():
    assert list(bundled_scenarios()) == sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert [p.name for p in env_spec_paths()] == sorted(p.name for p in (ROOT / "envs").glob("*.yaml"))


def test_scenario_path_prefers_a_file_then_a_bundled_name(tmp_path, monkeypatch):
    assert scenario_path("default") == bundled_scenarios()["default"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("model: qwen3-14b\n")
    assert scenario_path("mine.yaml") == Path("mine.yaml")          # users' relative paths still work
    (tmp_path / "default").write_text("model: qwen3-14b\n")
    assert scenario_path("default") == Path("default")              # an existing file wins over a name
    with pytest.raises(ConfigError, match="no such file or bundled scenario: nonesuch") as e:
        scenario_path("nonesuch")
    assert e.value.field == "scenario" and "autoscale-bursty" in str(e.value)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="not a file"):
        scenario_path("folder", "config.scenario")


def test_scenarios_command_lists_each_bundled_scenario_on_one_line():
    r = CliRunner().invoke(main, ["scenarios"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert [ln.split()[0] for ln in lines] == list(bundled_scenarios())
    for line, path in zip(lines, bundled_scenarios().values()):
        description = yaml.safe_load(path.read_text())["description"]
        assert line.endswith(description) and len(line) <= 80


def test_run_by_name_from_another_folder(tmp_path):
    p = subprocess.run([sys.executable, "-m", "blis_gym.cli", "run", "single-request", "--quiet", "--out", "o"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "summary.json").is_file()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_import_and_cli_run_do_not_import_gymnasium():
    p = _python("import sys, blis_gym, blis_gym.cli, blis_gym.schema.scenario, blis_gym.sim.simulation;"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'blis_gym.envs')))")
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


@pytest.mark.parametrize("imports", ["import blis_gym, gymnasium as gym", "import gymnasium as gym, blis_gym",
                                     "import blis_gym.envs, gymnasium as gym"])
def test_gym_ids_registered_whichever_is_imported_first(imports):
    p = _python(f"{imports}; print(sorted(k for k in gym.registry if k.startswith('blis_gym/')));"
                "gym.make('blis_gym/Router-v0').reset(seed=0)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(["blis_gym/Admission-v0", "blis_gym/Autoscaler-v0", "blis_gym/PDDecider-v0",
                                    "blis_gym/Router-v0"])


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout():
    """The CI job (.ci/wheel-check): a wheel built from the checkout, installed without extras into
    a fresh venv, runs the default scenario, lists the scenarios and makes every env."""
    p = subprocess.run(["bash", str(ROOT / ".ci" / "wheel-check")], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "wheel ok: 4 environments" in p.stdout
