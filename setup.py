"""Packaging detail that pyproject.toml cannot express: the repository's top-level `scenarios/`
and `envs/` folders ship inside the wheel as `blis_gym/data/scenarios/` and
`blis_gym/data/envs/` (one copy in git; `blis_gym.resources` finds them either way). All
other metadata is in pyproject.toml."""
from setuptools import find_packages, setup

BUNDLED = {"blis_gym.data.scenarios": "scenarios", "blis_gym.data.envs": "envs"}

setup(
    packages=find_packages(include=["blis_gym", "blis_gym.*"]) + list(BUNDLED),
    package_dir=BUNDLED,
    package_data={
        "blis_gym.data": ["*.json", "*.yaml", "*.md", "BLIS-LICENSE", "models/*/config.json", "models/*.yaml",
                          "measurements/*"],
        **{name: ["*.yaml"] for name in BUNDLED},
        "blis_gym.data.scenarios": ["*.yaml", "studies/*.yaml",      # studies: sweep files
                                    "traces/*.jsonl"],                # traces the scenarios replay
    },
)
