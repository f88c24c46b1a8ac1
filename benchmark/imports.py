"""The import rule of this project, and the one list of libraries too heavy to import for nothing.

Rule: import at module level, so a module's dependencies are in one place, names keep their types and a missing
package fails at import, not mid-run. A function-level import is kept for one of two reasons only:

- **heavy**: the target is one of ``HEAVY_LIBRARIES`` (seconds to import, and not needed by every command), or a
  project module whose module-level imports reach one (``downstream.segmenter`` pulls TensorFlow);
- **help path**: the importing module is imported by ``python -m benchmark --help`` (the CLI registers every
  subcommand's parser) and the target is not, so ``--help`` keeps its import set (``tests/test_cli_startup.py``).

Third-party libraries outside the list (numpy, tqdm, safetensors, tifffile, ...) may stay lazy where they only
serve one rarely used path; the rule is enforced for project modules by ``tests/test_layers.py``, which also
sees every import, lazy or not, when it looks for cycles.
"""

from __future__ import annotations

#: import roots (or dotted prefixes) that cost seconds or pull an accelerator runtime; never imported for --help
HEAVY_LIBRARIES: tuple[str, ...] = (
    "mlflow", "torch", "torchvision", "tensorflow", "keras", "stardist", "diffusers", "voxelmorph", "pandas",
    "scipy.stats", "ray", "trackastra", "matplotlib", "sklearn", "skimage", "jax", "flax",
)


def is_heavy(module: str) -> bool:
    """Whether importing ``module`` (a dotted name) imports one of ``HEAVY_LIBRARIES``."""
    return any(module == name or module.startswith(f"{name}.") for name in HEAVY_LIBRARIES)
