from pathlib import Path

import yaml


class ConfigError(ValueError):
    """Bad user input: names the field and what is allowed."""
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def read_yaml(path: Path, field: str, *, mapping: bool = False):
    """The YAML document in `path`; a ConfigError naming `field` (and the line) if it does not
    parse, or, with `mapping`, if it is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(field, f"{path} is not valid YAML{where}") from None
    if mapping and not isinstance(data, dict):
        raise ConfigError(field, f"{path} must be a mapping")
    return data
