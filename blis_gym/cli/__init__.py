"""The command line, one module per family of commands:

- `run.py`: `blis-gym run SCENARIO`, `scenarios`, `plot RUN_DIR`, `compare RUN_A RUN_B ...`;
- `sweep.py`: `blis-gym sweep SWEEP.yaml`;
- `train_eval.py`: `blis-gym train` and `blis-gym eval`;
- `fidelity.py`: `blis-gym validate`, `calibrate`, `fetch-data`;
- `observe.py`: `blis-gym observe --url URL --workload SCENARIO --out DIR`;
- `common.py`: the one-line `error:` and exit status 2 that every command gives for bad input.

Only click and rich load here: each command imports what it runs when it runs, so `blis-gym
--help` stays fast.
"""
from __future__ import annotations

import click

from .common import OneLineErrors
from .fidelity import calibrate, fetch_data, validate
from .observe import observe
from .run import compare, plot, run, scenarios
from .sweep import sweep
from .train_eval import eval_command, train_command


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blis-gym")
def main() -> None:
    """blis-gym: simulate llm-d serving clusters, fast and deterministically."""


for command in (run, scenarios, plot, compare, validate, calibrate, fetch_data, observe, sweep, eval_command,
                train_command):
    main.add_command(command)
