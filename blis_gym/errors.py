import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """Bad user input: names the field and what is allowed."""
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):
        # picklable with both fields: an error raised in a worker process (blis_gym.parallel)
        # reaches the parent as itself, and the CLI prints its one line
        return type(self), (self.field, self.message)



def require_extra(extra: str, field: str, what: str, *modules: str) -> None:
    """A one-line ConfigError naming the extra to install if any of `modules` is missing (the
    optional dependencies of `what`: the `rl` extra's torch and SB3, `rllib`'s Ray RLlib)."""
    import importlib.util
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):          # a parent package missing, or a broken one
            found = False
        if not found:
            raise ConfigError(field, f"{what} needs the {extra} extra ({name} is not installed): "
                                     f"pip install 'blis-gym[{extra}]'")

class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses what would otherwise be silently wrong or end in a traceback:
    duplicate keys (the last would win), integers too long to convert, lone surrogates."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, "an integer with too many digits",
                                                    node.start_mark) from None

    def construct_yaml_str(self, node):
        value = super().construct_yaml_str(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise yaml.constructor.ConstructorError(None, None, "a string that is not valid Unicode",
                                                    node.start_mark) from None
        return value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)


def read_yaml(path: Path, field: str, *, mapping: bool = False):
    """The YAML document in `path`; a ConfigError naming `field` (and the line) if it is not UTF-8
    text, does not parse, repeats a key, or, with `mapping`, is not a mapping."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(field, f"{path} is not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    except OSError as e:
        raise ConfigError(field, f"cannot read {path}: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None)
        what = f": {problem}" if isinstance(e, yaml.constructor.ConstructorError) and problem else ""
        raise ConfigError(field, f"{path} is not valid YAML{where}{what}") from None
    except RecursionError:
        raise ConfigError(field, f"{path} is nested too deeply") from None
    if mapping and not isinstance(data, dict):
        raise ConfigError(field, f"{path} must be a mapping")
    return data


# ---- pydantic validation errors as one line ---------------------------------------------------
# pydantic's error locations include the union member tried ('constrained-float', 'DelaySpec',
# 'function-after[check(), float]', a discriminator value): not field names a user wrote.
_TAGS = {"constant", "gaussian", "exponential", "lognormal", "empirical", "uniform", "int", "float", "str", "bool",
         "dict", "list", "none"}
_TAG_PREFIXES = ("function-", "constrained-", "lax-", "json-", "nullable[", "list[", "dict[", "union[", "tagged-union[")


def _is_tag(part) -> bool:
    """Whether a location part names a union member (a model class, a pydantic schema) rather than a field."""
    return isinstance(part, str) and (part in _TAGS or part.startswith(_TAG_PREFIXES)
                                      or (part[:1].isupper() and part.isidentifier()))


def _models_in(annotation) -> list:
    """The pydantic models an annotation holds (through Optional, Union, list, dict, Annotated)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _holds_dict(annotation) -> bool:
    return typing.get_origin(annotation) is dict or any(_holds_dict(a) for a in typing.get_args(annotation))


def _tags_of(model) -> set:
    """The values of a model's single-value Literal fields: what a discriminated union picks it by."""
    out = set()
    for f in model.model_fields.values():
        args = typing.get_args(f.annotation)
        if typing.get_origin(f.annotation) is typing.Literal and len(args) == 1:
            out.add(args[0])
    return out


def allowed_fields(root, loc: tuple) -> list[str]:
    """The field names allowed beside loc[-1], walking from the model `root` along a pydantic
    error location; of a union of models, the one its discriminator tag in the location names
    (none when the way stays ambiguous)."""
    model, key_next, members = root, False, None
    for part in loc[:-1]:
        if isinstance(part, int) or key_next:       # a list index or a dict key
            key_next = False
            continue
        if _is_tag(part):
            chosen = [m for m in members or [] if part in _tags_of(m)]
            if len(chosen) == 1:
                model, members = chosen[0], None
            continue
        if members is not None:
            return []
        field = model.model_fields.get(part)
        models = _models_in(field.annotation) if field is not None else []
        if not models:
            return []
        key_next = _holds_dict(field.annotation)
        if len(models) == 1:
            model = models[0]
        else:
            members = models
    return [] if members is not None else sorted(model.model_fields)


def pydantic_error(e, prefix: str = "", root=None, whole: str = "input") -> ConfigError:
    """One ConfigError for a pydantic ValidationError: of the errors, the one whose (human) field
    path is longest, i.e. the union member the input was meant for (`{mean: -1}` for a delay is
    a DelaySpec with a bad mean, not a bad float). With the `root` model, an unknown field's
    message lists the allowed ones; an error about the input as a whole names `whole`."""
    def rank(err):
        # deeper first; at equal depth a bad value before "not this union member's type"
        depth = sum(not _is_tag(p) for p in err["loc"])
        return depth, not err["type"].endswith(("_type", "_parsing"))
    err = max(e.errors(), key=rank)              # the first of the best
    loc = tuple(p for p in err["loc"] if not _is_tag(p))
    path = ".".join(str(p) for p in loc)
    field = ".".join(x for x in (prefix, path) if x) or whole
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = allowed_fields(root, err["loc"]) if root is not None else []
        msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif err["type"] == "missing":
        msg = "required field is missing"
    else:
        msg = msg[:1].lower() + msg[1:]
        if isinstance(got, (int, float, str)) and not isinstance(got, bool) and "got" not in msg:
            shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
            msg = f"{msg} (got {shown})"
    return ConfigError(field, msg)
