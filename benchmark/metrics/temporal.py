"""Texture carry-over: how much of a cell's texture survives from one frame to the next.

What it is for. FVD sees temporal realism only through 16-frame clips of an I3D network, and at the ``ci``
budget (14 clips) its seed spread is 12 % of its value: a BVDM whose flow no longer carries textures from frame
to frame (the gate's ``bvdm-no-flow`` mutant) moves FVD by about 3 seed SDs, which bounds from 3 seeds cannot
tell from a new seed. This statistic measures that one property directly: for every cell present in two
consecutive frames (same track id), the Pearson correlation between its interior pixels in the later frame and
the pixels of the earlier frame at the same place relative to the cell's centroid. A texture carried by a flow
correlates; a texture drawn afresh each frame does not.

Measured on 2026-12-06 (ci profile, the 24-frame GOWT1 window, sequences 01 / 02):
real 0.176 / 0.120; BVDM seeds 0, 1, 2: 0.194 / 0.223, 0.206 / 0.238, 0.197 / 0.202 (per-video means 0.208,
0.222, 0.200: SD 0.011); BVDM without flow (the mutant, seed 0): -0.0001 / 0.0004, about 18 seed SDs lower.

A metric of one CTC folder's sequence (images and TRA masks), like every metric here; integer centroid shifts,
no interpolation, so it is exact and cheap (a few seconds for a ci video). Every run logs it as ``TC`` (the
``texture-carry`` stage, ``video_texture_carry``), and the CI gate bounds it from below (``benchmark.gate``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from benchmark.ctc import CTCSequence

logger = logging.getLogger(__name__)

#: interior only: a cell's rim correlates through the mask's own edge, not through its texture
EROSION_PX = 2
#: fewer overlapping interior pixels than this give a correlation that is mostly noise
MIN_PIXELS = 30


@dataclass(frozen=True)
class TextureCarry:
    """The mean over cell-frame pairs of the interior correlation, its SD, and the number of pairs."""

    mean: float
    sd: float
    n_pairs: int


def texture_carry(seq: CTCSequence, frames: range | None = None) -> TextureCarry:
    """Texture carry-over of ``seq`` over consecutive pairs of ``frames`` (default: all of its frames).

    A pair counts when both frames exist with TRA markers, the cell (TRA id) is in both, and at least
    ``MIN_PIXELS`` interior pixels of the later frame land inside the earlier mask after the centroid shift.
    Raises ValueError (one line naming the sequence) when no pair qualifies: a video without cells that persist
    has no carry-over to measure."""
    tracked = set(seq.frames) & set(seq.tra_files)  # a frame without TRA markers has no cell ids to pair
    wanted = sorted(tracked if frames is None else set(frames) & tracked)
    values: list[float] = []
    for before, after in zip(wanted, wanted[1:], strict=False):
        if after != before + 1:
            continue
        values += _pair_correlations(seq.image(before), seq.tra(before), seq.image(after), seq.tra(after))
    if not values:
        raise ValueError(f"{seq.image_dir}: no cell persists over two consecutive frames with >= {MIN_PIXELS} "
                         "interior pixels; texture carry-over is undefined")
    return TextureCarry(float(np.mean(values)), float(np.std(values)), len(values))


def video_texture_carry(sequences: Sequence[CTCSequence]) -> dict[str, float]:
    """A video's (all of its sequences') carry-over as run metrics: ``TC``, the mean of the per-sequence means
    (each sequence weighs the same, as a clip does in FVD), and ``TC_pairs``, the cell-frame pairs behind it.
    A sequence without a persisting cell is left out with a warning; with none left the dict is empty (a run
    without ``TC``, which the gate reports as a missing value where it bounds ``TC``)."""
    means, pairs = [], 0
    for seq in sequences:
        try:
            carry = texture_carry(seq)
        except ValueError as exc:
            logger.warning("texture carry-over: %s", exc)
            continue
        means.append(carry.mean)
        pairs += carry.n_pairs
    return {"TC": float(np.mean(means)), "TC_pairs": float(pairs)} if means else {}


def _pair_correlations(image_a: np.ndarray, labels_a: np.ndarray, image_b: np.ndarray,
                       labels_b: np.ndarray) -> list[float]:
    """One correlation per cell in both frames: its eroded interior in frame b against frame a at the same
    place relative to the cell's centroid (rounded to whole pixels)."""
    out = []
    ids = np.intersect1d(np.unique(labels_a[labels_a > 0]), np.unique(labels_b[labels_b > 0]))
    for cell in ids:
        in_a, in_b = labels_a == cell, labels_b == cell
        dr, dc = np.rint(np.array(ndimage.center_of_mass(in_b)) - np.array(ndimage.center_of_mass(in_a))).astype(int)
        rows, cols = np.nonzero(ndimage.binary_erosion(in_b, iterations=EROSION_PX))
        src_r, src_c = rows - dr, cols - dc
        inside = (src_r >= 0) & (src_r < in_a.shape[0]) & (src_c >= 0) & (src_c < in_a.shape[1])
        rows, cols, src_r, src_c = rows[inside], cols[inside], src_r[inside], src_c[inside]
        keep = in_a[src_r, src_c]
        if keep.sum() < MIN_PIXELS:
            continue
        later = image_b[rows[keep], cols[keep]].astype(np.float64)
        earlier = image_a[src_r[keep], src_c[keep]].astype(np.float64)
        if later.std() > 0 and earlier.std() > 0:
            out.append(float(np.corrcoef(earlier, later)[0, 1]))
    return out
