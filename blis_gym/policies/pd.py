"""P/D deciders: after the decode pod is chosen, should this request's prefill run on a prefill
pod (and its KV move), or locally on the decode pod?

llm-d's `disagg-profile-handler` runs the decode profile first, then asks its decider with the
chosen decode pod; `prefix-based-pd-decider` disaggregates when the tokens the decode pod does
not have cached reach `nonCachedTokens` (the sample config sets 16; its default 0 means off).
"""
from __future__ import annotations

from blis_gym.errors import ConfigError
from blis_gym.sim.slots import PDDecider


class Never:
    def disaggregate(self, req, cached_tokens: int) -> bool:
        return False


class Always:
    def disaggregate(self, req, cached_tokens: int) -> bool:
        return True


class PrefixThreshold:
    """Disaggregate iff prompt >= N and prompt - cached >= N (llm-d prefix-based-pd-decider)."""

    def __init__(self, threshold: int = 16):
        self.n = threshold

    def disaggregate(self, req, cached_tokens: int) -> bool:
        prompt = req.input_len
        return self.n > 0 and prompt >= self.n and prompt - cached_tokens >= self.n


PD_DECIDERS = {"never": Never, "always": Always, "prefix-threshold": PrefixThreshold}


def make_decider(spec: dict | str | None, field: str = "pd.decider") -> PDDecider:
    if spec is None:
        return Never()
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict):
        raise ConfigError(field, "must be a decider name or a mapping with 'policy'")
    spec = dict(spec)
    name = spec.pop("policy", "never")
    if name not in PD_DECIDERS:
        raise ConfigError(f"{field}.policy", f"unknown P/D decider {name!r}; allowed: {', '.join(PD_DECIDERS)}")
    if name == "prefix-threshold":
        n = spec.pop("threshold", 16)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{field}.threshold", f"must be an integer >= 0 (tokens), got {n!r}")
        if spec:
            raise ConfigError(f"{field}.{next(iter(spec))}", "unknown parameter; allowed: threshold")
        return PrefixThreshold(n)
    if spec:
        raise ConfigError(f"{field}.{next(iter(spec))}", f"unknown parameter; {name!r} takes none")
    return PD_DECIDERS[name]()
