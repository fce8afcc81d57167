"""The generalisation split of an environment spec (`split:` in `envs/*.yaml`).

    split:
      train:      {seeds: [0, 999], scenarios: [{name: base}]}
      validation: {seeds: [5000, 5004]}              # model selection (optional `scenarios`)
      eval:
        seeds: [1000, 1019]
        scenarios:
          - {name: base}
          - {name: load-1.25x, overrides: {workload: {rate: 30}}}
          - {name: 6-pods, overrides: {cluster: {instances: 6}}}

A scenario entry is `name` (its label in results), optionally `scenario` (a bundled name or a
YAML file; default: the spec's), `overrides` (scenario fields merged over the spec's
`scenario_overrides`) and `config` (other environment settings, e.g. `horizon_s` or `max_pods`). Seed ranges are inclusive `[first, last]`. Training
draws its episodes' seeds from `train.seeds`, keeps the checkpoint that does best on
`validation.seeds` (on `validation.scenarios`, its own variants of the training families, or
else on every training scenario), and `blis-gym eval` without `--scenario` plays `eval`: seeds and scenarios
that training never saw.
"""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, pydantic_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitScenario(_Strict):
    name: str = Field(min_length=1)
    scenario: Optional[str] = None
    overrides: dict = Field(default_factory=dict)
    config: dict = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _no_scenario(cls, v):
        if "scenario" in v or "scenario_overrides" in v:
            raise ValueError("give the scenario and its overrides as `scenario` and `overrides`, not in config")
        return v

    def env_config(self, base: dict) -> dict:
        """The env config overrides that play this scenario on top of the spec's config `base`."""
        from ..envs.config import merge_data
        cfg: dict = {"scenario_overrides": merge_data(base.get("scenario_overrides") or {}, self.overrides)}
        if self.scenario is not None:
            cfg["scenario"] = self.scenario
        return {**self.config, **cfg}


class SeedRange(_Strict):
    seeds: tuple[int, int]

    @field_validator("seeds")
    @classmethod
    def _ordered(cls, v):
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError("must be [first, last] with 0 <= first <= last")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds[0], self.seeds[1] + 1))


class Part(SeedRange):
    scenarios: list[SplitScenario] = Field(default_factory=lambda: [SplitScenario(name="base")], min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError("scenario names must be unique")
        return self


class Validation(SeedRange):
    # its own variants of the training families (None: every training scenario)
    scenarios: Optional[list[SplitScenario]] = Field(default=None, min_length=1)


class Split(_Strict):
    train: Part
    validation: Validation
    eval: Part

    @model_validator(mode="after")
    def _disjoint(self):
        parts = {"train": self.train.seeds, "validation": self.validation.seeds, "eval": self.eval.seeds}
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (a0, a1), (b0, b1) = parts[a], parts[b]
                if a0 <= b1 and b0 <= a1:
                    raise ValueError(f"the {a} and {b} seeds overlap: held-out seeds must be unseen")
        return self


def parse_split(data, where: str) -> Split:
    """A validated split, or a one-line ConfigError naming the field (`where` prefixes it)."""
    try:
        return Split.model_validate(data)
    except ValidationError as e:
        raise pydantic_error(e, where, root=Split) from None


def spec_split(env_id: str) -> Split:
    """The split of a registered environment id."""
    from ..envs.config import load_spec
    spec = load_spec(spec_name(env_id))
    if "split" not in spec:
        raise ConfigError("env_spec.split", f"{spec['path']} has no split: give --scenario and --seeds")
    return parse_split(spec["split"], f"{spec_name(env_id)}.split")


def spec_name(env_id: str) -> str:
    """The spec file name of a registered environment id, or a ConfigError listing the ids."""
    from ..envs.registration import REGISTERED      # importing it registers the bundled ids
    if env_id not in REGISTERED:
        raise ConfigError("ENV_ID", f"unknown environment {env_id!r}; known: {', '.join(sorted(REGISTERED))}")
    return REGISTERED[env_id]
