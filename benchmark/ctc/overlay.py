"""Frames with their mask outlines drawn in, as RGB arrays: the one overlay drawer.

The report's sample figure and animated preview and the generate stage's logged sample PNGs all show
a CTC frame with the outlines of its label mask; drawing them here (base layer) keeps them one look,
and lets reports (base only) and the pipeline (orchestration) share it. Outlines are the labels'
inner boundary pixels painted over an 8-bit grey rendering, so the result is a plain image array any
writer (Pillow, matplotlib ``imshow``, ``mlflow.log_image``) takes as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.segmentation import find_boundaries
from skimage.transform import resize

from benchmark.ctc.sequence import CTCSequence

#: outline colour (a warm yellow that stays visible on both dark background and bright nuclei)
OUTLINE_RGB = (255, 220, 0)
#: percentiles of the intensity window: ignore a few hot pixels, keep the dim background readable
WINDOW_PERCENTILES = (0.5, 99.9)


def intensity_window(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(lo, hi)`` grey levels mapped to black and white, shared by ``images`` so frames stay comparable."""
    lo, hi = np.percentile(np.stack([np.asarray(i, np.float32) for i in images]), WINDOW_PERCENTILES)
    return lo, hi  # float32 scalars, kept as they are: the window arithmetic stays in float32


def scaled_shape(shape: tuple[int, ...], max_side: int | None) -> tuple[int, ...]:
    """``shape`` shrunk (never enlarged) so that its longest side is at most ``max_side`` (None: unchanged)."""
    scale = 1.0 if max_side is None else min(1.0, max_side / max(shape))
    return tuple(max(1, round(s * scale)) for s in shape)


def outlined_frame(image: np.ndarray, labels: np.ndarray | None, window: tuple[float, float],
                   shape: tuple[int, ...] | None = None) -> np.ndarray:
    """RGB uint8 ``shape + (3,)`` of one frame in grey with the inner boundary pixels of ``labels`` in
    ``OUTLINE_RGB``. Labels are resized nearest-neighbour (no new label values at the edges); the image
    is anti-aliased only when shrunk. ``labels`` None: the grey frame alone."""
    shape = tuple(image.shape) if shape is None else shape
    lo, hi = window
    grey = np.clip((np.asarray(image, np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1)
    shrunk = any(s < i for s, i in zip(shape, image.shape, strict=True))
    grey = resize(grey, shape, anti_aliasing=shrunk, preserve_range=True)
    rgb = np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    if labels is not None:
        small = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
        rgb[find_boundaries(small, mode="inner")] = OUTLINE_RGB
    return rgb


def overlay_frames(seq: CTCSequence, times: Sequence[int], max_side: int | None = None,
                   prefer: tuple[str, ...] = ("SEG", "TRA")) -> list[np.ndarray]:
    """``outlined_frame`` of each frame ``t`` in ``times`` (longest side <= ``max_side``), one intensity
    window for all of them; masks from the first of ``prefer`` that the frame has."""
    images = [seq.image(t).astype(np.float32) for t in times]
    window = intensity_window(images)
    shape = scaled_shape(images[0].shape, max_side)
    return [outlined_frame(image, seq.masks(t, prefer), window, shape) for t, image in zip(times, images, strict=True)]
