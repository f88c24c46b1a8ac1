"""The one intensity normalisation of the downstream models: csbdeep's per-frame percentile normalisation.

The segmenter (StarDist's own recipe) and the tracker's intensity features see a frame the same way, so a
generator's brightness errors reach both models identically.
"""

from __future__ import annotations

import numpy as np

#: low and high percentiles mapped to 0 and 1 (StarDist's examples)
PERCENTILES = (1.0, 99.8)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Per-frame percentile normalisation (1, 99.8) to float32, by ``csbdeep.utils.normalize``."""
    from csbdeep.utils import normalize

    return normalize(image.astype(np.float32), *PERCENTILES, axis=None).astype(np.float32)
