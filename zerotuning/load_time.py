"""``attn_implementation="zerotuning"`` at load time, right after ``import zerotuning``.

transformers accepts an attention implementation by name only once it is registered with its
``AttentionInterface`` (and, for masks, ``AttentionMaskInterface``). Importing transformers'
modelling code costs seconds, which ``import zerotuning`` does not want to spend for users who
never load a model. So registration waits for transformers: if ``transformers.modeling_utils``
is already imported it happens at once, otherwise a one-shot import hook runs it right after
that module has executed (before any ``from_pretrained`` can ask for the name).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_WATCHED = "transformers.modeling_utils"


def register_at_transformers_import() -> None:
    """Register the ``"zerotuning"`` backend now if transformers' models are loaded, else when they are."""
    if _WATCHED in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


def _register() -> None:
    # Importing the backend module registers it. When that module is what is importing transformers
    # (``from zerotuning import apply`` before transformers), it is half-initialised here and
    # registers itself once it finishes: importing it again now would be a circular import.
    if "zerotuning.hf.backend" not in sys.modules:
        importlib.import_module("zerotuning.hf.backend")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``transformers.modeling_utils`` it wraps the real loader so that
    registration follows the module's execution, then takes itself off ``sys.meta_path``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _WATCHED:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            _register()
        except Exception as error:  # never break `import transformers`; say why the name is missing
            warnings.warn(
                f"zerotuning: could not register the 'zerotuning' attention implementation with transformers "
                f"({type(error).__name__}: {error}); attn_implementation='zerotuning' will be refused",
                RuntimeWarning,
                stacklevel=2,
            )

    def __getattr__(self, name):  # get_source, get_filename, is_package, ...: the real loader's
        return getattr(self._loader, name)
