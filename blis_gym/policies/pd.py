"""P/D deciders: after the decode pod is chosen, should this request's prefill run on a prefill
pod (and its KV move), or locally on the decode pod?

llm-d's `disagg-profile-handler` runs the decode profile first, then asks its decider with the
chosen decode pod; `prefix-based-pd-decider` disaggregates when the tokens the decode pod does
not have cached reach `nonCachedTokens` (the sample config sets 16; its default 0 means off).
`edpp` (blis_gym.policies.edpp, registered on import below) also weighs both pools' backlogs
and the SLO feedback.
"""
from __future__ import annotations

from blis_gym.errors import ConfigError
from blis_gym.policies.params import policy_spec
from blis_gym.policies.registry import create, register
from blis_gym.sim.slots import PDDecider


class Never:
    name = "never"

    def disaggregate(self, req, cached_tokens: int) -> bool:
        return False


class Always:
    name = "always"

    def disaggregate(self, req, cached_tokens: int) -> bool:
        return True


class PrefixThreshold:
    """Disaggregate iff prompt >= N and prompt - cached >= N (llm-d prefix-based-pd-decider)."""

    def __init__(self, threshold: int = 16):
        self.n = threshold

    def disaggregate(self, req, cached_tokens: int) -> bool:
        prompt = req.input_len
        return self.n > 0 and prompt >= self.n and prompt - cached_tokens >= self.n


def _no_params(cls: type):
    def build(params: dict, field: str):
        extra = [k for k in params if k != "policy"]
        if extra:
            raise ConfigError(f"{field}.{extra[0]}", f"unknown parameter; {cls.name!r} takes none")
        return cls()
    build.__doc__ = cls.__doc__
    return build


@register("pd", "prefix-threshold")
def _prefix_threshold(params: dict, field: str) -> PrefixThreshold:
    n = params.get("threshold", 16)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{field}.threshold", f"must be an integer >= 0 (tokens), got {n!r}")
    extra = [k for k in params if k not in ("policy", "threshold")]
    if extra:
        raise ConfigError(f"{field}.{extra[0]}", "unknown parameter; allowed: threshold")
    return PrefixThreshold(n)


register("pd", "never")(_no_params(Never))
register("pd", "always")(_no_params(Always))

from blis_gym.policies import edpp  # noqa: E402,F401  (registers "edpp")


def make_decider(spec: dict | str | None, field: str = "pd.decider") -> PDDecider:
    spec = policy_spec(spec, field)
    return create("pd", spec.get("policy", "never"), spec, field)
