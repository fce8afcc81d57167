__version__ = "0.1.0"

import sys
from importlib.util import find_spec


def _register_gym_ids() -> None:
    from .envs import registration  # noqa: F401  (registers the blis_gym/ ids on import)


class _RegisterAfterGymnasium:            # a meta path finder (importlib.abc would cost 10 ms)
    """Registers the blis_gym/ Gymnasium ids right after gymnasium is first imported: `import
    blis_gym` stays free of gymnasium (the simulator and `blis-gym run` never need it), yet
    `gym.make("blis_gym/Router-v0")` works whichever of the two was imported first."""

    def find_spec(self, name, path=None, target=None):
        if name != "gymnasium":
            return None
        sys.meta_path.remove(self)
        spec = find_spec(name)                  # the real spec, from the other finders
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _register_gym_ids()
            spec.loader.exec_module = exec_then_register
        return spec


if "gymnasium" in sys.modules:
    _register_gym_ids()
elif not any(isinstance(f, _RegisterAfterGymnasium) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterGymnasium())
