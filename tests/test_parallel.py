"""blis_gym.parallel: every job runs once, its result keyed by index, whatever the worker count."""
import pytest

from blis_gym.errors import ConfigError
from blis_gym.parallel import run_jobs


def _square_or_fail(x):
    if x < 0:
        raise RuntimeError(f"job {x} failed")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_every_job_once_by_index(workers):
    jobs = [3, 1, 4, 1, 5, 9, 2, 6]
    out = list(run_jobs(_square_or_fail, jobs, workers=workers, quiet=True))
    assert sorted(i for i, _ in out) == list(range(len(jobs)))
    assert dict(out) == {i: x * x for i, x in enumerate(jobs)}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_propagates(workers):
    with pytest.raises(RuntimeError, match="job -1 failed"):
        list(run_jobs(_square_or_fail, [1, -1, 2], workers=workers, quiet=True))


def test_no_jobs_no_results():
    assert list(run_jobs(_square_or_fail, [], quiet=True)) == []


@pytest.mark.parametrize("kwargs, field", [({"backend": "dask"}, "--backend"), ({"workers": 0}, "--workers")])
def test_bad_options_name_the_option(kwargs, field):
    with pytest.raises(ConfigError) as e:
        list(run_jobs(_square_or_fail, [1], quiet=True, **kwargs))
    assert e.value.field == field
