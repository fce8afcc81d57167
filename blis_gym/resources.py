"""The bundled scenarios and environment specs, and how a scenario name becomes a file.

In a source checkout they are the repository's top-level `scenarios/` and `envs/` folders. A
built wheel carries the same files as package data (`blis_gym/data/scenarios/`,
`blis_gym/data/envs/`; `setup.py` maps the folders there), read with `importlib.resources`, so
an installed blis-gym finds them from any directory. This module is the one place that knows
where they are: the CLI, the environments and the tests all ask it.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError


def _bundled_dir(kind: str) -> Path:
    packaged = resources.files("blis_gym.data") / kind      # an installed wheel
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / kind    # a source checkout


def scenario_dir() -> Path:
    return _bundled_dir("scenarios")


def env_spec_dir() -> Path:
    return _bundled_dir("envs")


def bundled_scenarios() -> dict[str, Path]:
    """Every bundled scenario, name -> file, sorted by name."""
    return {p.stem: p for p in sorted(scenario_dir().glob("*.yaml"), key=lambda p: p.stem)}


def bundled_studies() -> dict[str, Path]:
    """Every bundled study (a sweep file in scenarios/studies/), name -> file."""
    return {p.stem: p for p in sorted((scenario_dir() / "studies").glob("*.yaml"), key=lambda p: p.stem)}


def env_spec_paths() -> list[Path]:
    """Every bundled environment spec file (one Gymnasium id each), sorted by name."""
    return sorted(env_spec_dir().glob("*.yaml"))


def scenario_path(name_or_path: str | Path, field: str = "scenario") -> Path:
    """A scenario file: an existing file path (relative to the current folder or absolute) as
    given, else a bundled scenario's name (`default`, `autoscale-bursty`, ...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = bundled_scenarios()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    if p.exists():
        raise ConfigError(field, f"{p} is not a file")
    raise ConfigError(field, f"no such file or bundled scenario: {name_or_path} "
                             f"({suggest(str(name_or_path), bundled)})")


def suggest(name: str, bundled) -> str:
    """"did you mean X?" for a misspelt bundled name, else the list of bundled names."""
    import difflib
    close = difflib.get_close_matches(name, list(bundled), n=3, cutoff=0.6)
    if close:
        options = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        return f"did you mean {options}? `blis-gym scenarios` lists them all"
    return f"bundled: {', '.join(bundled)}; `blis-gym scenarios` describes them"
