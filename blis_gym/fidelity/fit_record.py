"""What a step-time model's coefficients were fitted on, and so the `split` of a validation row:
`train` (an experiment of the file the coefficients were fitted on, used by the fit), `holdout`
(of that file, kept out of the fit), `unseen` (any other experiment, any other file, or a model
with nothing fitted), `trace` (a per-request trace the fit did not use)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import yaml

from blis_gym.errors import ConfigError

__all__ = ["FitRecord", "fit_record", "split_of"]


class FitRecord(NamedTuple):
    data: frozenset          # file names the fit read
    trained_on: frozenset    # exp_ids it fitted
    holdout: frozenset       # exp_ids of those files it kept out


NOTHING = FitRecord(frozenset(), frozenset(), frozenset())


def _record(fit) -> FitRecord:
    if not isinstance(fit, dict):
        return NOTHING
    data = fit.get("data") or []
    names = [x.strip() for x in data.split(",")] if isinstance(data, str) else [str(x) for x in data]
    return FitRecord(frozenset(n for n in names if n), frozenset(str(x) for x in fit.get("trained_on") or []),
                     frozenset(str(x) for x in fit.get("holdout") or []))


@lru_cache(maxsize=1)
def _trained_physics() -> FitRecord:
    text = resources.files("blis_gym").joinpath("data", "coefficients.yaml").read_text(encoding="utf-8")
    return _record(yaml.safe_load(text)["trained_physics"].get("fit"))


def fit_record(kind: str, calibration=None) -> FitRecord:
    """The fit behind step-time model `kind` (`calibration`: the calibrated coefficients file
    in use, None for the bundled one)."""
    if kind == "trained-physics":
        return _trained_physics()
    if kind == "hybrid":
        from ..sim.latency.hybrid import fit_info
        return _record(fit_info())
    if kind == "calibrated":
        from ..sim.latency.calibrated import _load_yaml
        try:
            return _record(_load_yaml(None if calibration is None else str(calibration)).get("fit"))
        except ConfigError:
            return NOTHING
    return NOTHING


def split_of(record: FitRecord, file_name: str, exp_id: str, trace: bool = False) -> str:
    """The label of an experiment's rows: what the fit did with it."""
    if file_name in record.data:
        if exp_id in record.trained_on:
            return "train"
        if exp_id in record.holdout:
            return "holdout"
    return "trace" if trace else "unseen"
