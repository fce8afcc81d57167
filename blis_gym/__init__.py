__version__ = "0.1.0"

from . import envs  # noqa: E402,F401  (registers the blis_gym/ Gymnasium ids)
