"""Full instance masks for every annotated frame, and cell-centred crops from them.

CTC GT is sparse in different ways: GOWT1's SEG covers a few cells of 30 frames while its TRA
markers cover every cell of every frame but are smaller than the nuclei; HeLa has ST on half the
frames. ``full_masks`` gives track-labelled, full-size nucleus masks wherever TRA markers exist, by
growing each marker over the pixels brighter than halfway between background and its own brightness
with a marker-seeded watershed. How far a marker may grow is the larger of half the marker diameter
and what the sequence's own reference segmentations (GT SEG, else ST SEG; any frame) say a nucleus
measures: HeLa 02's markers have a median radius of 3.8 px for nuclei of 13.2 px, so a marker-based
reach alone left its masks at a quarter of the nucleus (Jaccard 0.28 vs GT SEG). Every crop-based
consumer (shape model, DDPM/GAN training, FID crops) uses this.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from benchmark.ctc.io import read_tiff
from benchmark.ctc.sequence import CTCSequence, indexed_files


def full_masks(seq: CTCSequence, t: int) -> np.ndarray:
    """Track-labelled full nucleus masks ``(H, W) uint16`` for a frame with an image and TRA markers."""
    markers = seq.tra(t).astype(np.int32)
    image = ndimage.gaussian_filter(seq.image(t).astype(np.float32), 2.0)
    labels = [v for v in np.unique(markers) if v]
    if not labels:
        return np.zeros(markers.shape, np.uint16)
    areas = ndimage.sum_labels(np.ones_like(markers), markers, labels)
    marker_radius = math.sqrt(float(np.median(areas)) / math.pi)
    reach = max(3, int(marker_radius))  # half the marker diameter
    nucleus = reference_nucleus_radius(seq.dataset_dir, seq.name)
    if nucleus is not None:  # a reference says nuclei are larger than the markers suggest: let them grow
        reach = max(reach, int(math.ceil(1.5 * nucleus - marker_radius)))
    distance, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    near = distance <= reach
    background = float(np.median(image[~near])) if (~near).any() else float(image.min())
    # per-cell threshold halfway between background and the cell's own marker brightness
    means = ndimage.mean(image, markers, labels)
    level = np.zeros(int(markers.max()) + 1, np.float32)
    level[labels] = background + 0.5 * (np.asarray(means) - background)
    foreground = image > level[markers[iy, ix]]
    grown = watershed(-image, markers, mask=(foreground & near) | (markers > 0))
    return grown.astype(np.uint16)


@functools.lru_cache(maxsize=16)
def reference_nucleus_radius(dataset_dir: Path, name: str, max_files: int = 5) -> float | None:
    """Median equivalent radius (px) of the objects of a sequence's GT SEG (else ST SEG) masks, or None."""
    for folder in (Path(dataset_dir) / f"{name}_GT" / "SEG", Path(dataset_dir) / f"{name}_ST" / "SEG"):
        files = indexed_files(folder, "man_seg")
        if not files:
            continue
        picks = [files[t] for t in sorted(files)[:: max(1, len(files) // max_files)][:max_files]]
        areas = np.concatenate([np.bincount(read_tiff(p).ravel())[1:] for p in picks])
        areas = areas[areas > 0]
        if len(areas):
            return float(np.sqrt(np.median(areas) / math.pi))
    return None


def annotated_frames(seq: CTCSequence) -> list[int]:
    """Frames with both a raw image and TRA markers (what crops and full masks can use)."""
    return [t for t in seq.frames if t in seq.tra_files]


def crop_size_for(seq: CTCSequence, n_frames: int = 5, minimum: int = 96, multiple: int = 32) -> int:
    """Crop side (a multiple of 32, at least 96) that holds 1.25x the 99th-percentile nucleus extent (longest bbox side).

    96 for HeLa (nuclei ~20-30 px) as in the paper; GOWT1 (nuclei ~60-90 px) gets a larger crop
    rather than a rescale, so textures keep their real scale.
    """
    frames = annotated_frames(seq)
    picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).astype(int)]
    extents = []
    for t in picks:
        masks = full_masks(seq, t)
        for sl in ndimage.find_objects(masks):
            if sl is not None:
                h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
                extents.append(max(h, w))
    need = 1.25 * float(np.percentile(extents, 99)) if extents else minimum
    return max(minimum, int(math.ceil(need / multiple) * multiple))


@dataclass
class CellCrop:
    """One real cell in one frame, centred in an ``(S, S)`` crop.

    ``image``: raw intensities (float32, neighbourhood included); ``mask``: this cell's pixels;
    ``centre``: ``(y, x)`` of the mask's centroid in the frame; ``label``: its TRA track label.
    """

    label: int
    t: int
    image: np.ndarray
    mask: np.ndarray
    centre: tuple[float, float]


def _cut(array: np.ndarray, cy: int, cx: int, size: int, fill: float) -> np.ndarray:
    half = size // 2
    out = np.full((size, size), fill, dtype=array.dtype)
    y0, x0 = cy - half, cx - half
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(array.shape[0], y0 + size), min(array.shape[1], x0 + size)
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def iter_cell_crops(seq: CTCSequence, size: int, frames: list[int] | None = None,
                    border_ok: bool = False) -> Iterator[CellCrop]:
    """Yield a crop per cell and annotated frame, centred on the mask centroid.

    Cells whose mask touches the frame border are skipped unless ``border_ok`` (their shape is cut).
    """
    for t in frames if frames is not None else annotated_frames(seq):
        masks = full_masks(seq, t)
        image = seq.image(t).astype(np.float32)
        height, width = masks.shape
        for index, sl in enumerate(ndimage.find_objects(masks), start=1):
            if sl is None:
                continue
            touches = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == height or sl[1].stop == width
            if touches and not border_ok:
                continue
            cy, cx = ndimage.center_of_mass(masks[sl] == index)
            cy, cx = cy + sl[0].start, cx + sl[1].start
            iy, ix = int(round(cy)), int(round(cx))
            mask = _cut(masks, iy, ix, size, 0) == index
            yield CellCrop(index, t, _cut(image, iy, ix, size, float(np.median(image))), mask, (cy, cx))
