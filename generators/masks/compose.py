"""Place canonical cell crops (masks and optional textures) into full frames at their poses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from generators.masks.video import CellState


def _frame_window(cell: CellState, size: int, shape: tuple[int, int]) -> tuple[slice, slice, np.ndarray] | None:
    """Frame slices covering the rotated crop and, for each covered pixel, its crop coordinates."""
    half = math.ceil(size / math.sqrt(2)) + 1
    cy, cx = cell.centre
    y0, y1 = max(0, math.floor(cy) - half), min(shape[0], math.floor(cy) + half + 1)
    x0, x1 = max(0, math.floor(cx) - half), min(shape[1], math.floor(cx) + half + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    cos, sin = math.cos(cell.angle), math.sin(cell.angle)
    c = (size - 1) / 2
    # inverse rotation: frame offset -> canonical crop coordinates
    cyy = cos * dy - sin * dx + c
    cxx = sin * dy + cos * dx + c
    return slice(y0, y1), slice(x0, x1), np.stack([cyy, cxx])


def compose_frame(
    cells: Sequence[CellState],
    shape: tuple[int, int],
    textures: Sequence[np.ndarray] | None = None,
    background: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame: ``(image float32 (H, W), labels uint16 (H, W))``.

    Labels use depth order (later cells are drawn on top); textures (``(S, S)`` float, one per cell,
    bilinear) combine by pixel-wise max over ``background``. Without textures the image is the union
    mask as 0/1.
    """
    labels = np.zeros(shape, np.uint16)
    image = np.full(shape, background, np.float32)
    for i, cell in enumerate(cells):
        size = cell.crop.shape[0]
        window = _frame_window(cell, size, shape)
        if window is None:
            continue
        ys, xs, coords = window
        mask = ndimage.map_coordinates(cell.crop.astype(np.float32), coords, order=0, mode="constant", cval=0) > 0.5
        if not mask.any():
            continue
        region = labels[ys, xs]
        region[mask] = cell.label
        if textures is not None:
            tex = ndimage.map_coordinates(np.asarray(textures[i], np.float32), coords, order=1, mode="nearest")
            view = image[ys, xs]
            view[mask] = np.maximum(view[mask], tex[mask])
        else:
            image[ys, xs][mask] = 1.0
    return image, labels


def extend_beyond_mask(texture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Crop texture with every outside pixel set to its nearest inside pixel's value.

    ``compose_frame`` resamples textures bilinearly; at a rotated mask's border that would mix the
    outside (zero) into the edge pixels and darken them a second time on top of the real edge fall-off
    a learned texture already has. Only inside pixels are kept by the composite, so this changes nothing else.
    """
    if not mask.any() or mask.all():
        return np.asarray(texture, np.float32)
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return np.asarray(texture, np.float32)[iy, ix]
