"""Training data for BVDM from one real sequence: cell-centred texture crops, TRA-linked mask pairs,
and the intensity statistics that map raw grey values to the DDPM's space and back.

Normalisation: ``x = 2 (I - low) / (high - low) - 1`` with ``low`` the real background median and
``high`` the 99.8th percentile of nucleus pixels, so background sits at -1 and bright chromatin near
+1 (robust percentiles rather than the original's min/max of 20 crops).

Background: **flattened**. Pixels outside the cell's own mask are set to ``low`` (-1) as in the
original extraction: the composer pastes textures only inside each cell's mask and takes the
background from the real data, so the DDPM's capacity goes to nuclei, not to neighbours that would
otherwise bleed into crops of crowded cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames, full_masks, iter_cell_crops

BACKGROUND = -1.0  # normalised value of the flat background (and of "zero" outside a mask)


@dataclass
class IntensityStats:
    """Raw <-> normalised mapping, saved beside the DDPM (``stats.json``).

    ``fill``: mean normalised nucleus intensity, the constant a bare mask is filled with before
    SDEdit noising (the original used 150/255 on its [0, 1] scale). ``background_quantiles``:
    101 quantiles of real background pixels, for drawing a background with the real distribution.
    """

    low: float
    high: float
    fill: float
    background_quantiles: list[float]
    dtype: str
    max_value: float

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        x = 2.0 * (np.asarray(raw, np.float32) - self.low) / (self.high - self.low) - 1.0
        return np.clip(x, -1.0, 1.5).astype(np.float32)

    def denormalise(self, x: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """Normalised texture -> raw grey values; ``gain`` scales the part above background."""
        return (self.low + gain * (np.asarray(x, np.float32) + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)

    def sample_background(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """White background with the real pixel distribution (inverse CDF of the stored quantiles)."""
        q = np.asarray(self.background_quantiles, np.float32)
        return np.interp(rng.random(shape), np.linspace(0, 1, len(q)), q).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IntensityStats:
        return cls(**d)


@dataclass
class TrainingData:
    """``crops``: (N, S, S) float32 normalised textures, background flattened; ``masks``: (N, S, S) bool;
    ``pairs``: (P, 2, S, S) bool masks of the same TRA track at t and t+1 (moving, fixed)."""

    crops: np.ndarray
    masks: np.ndarray
    pairs: np.ndarray
    stats: IntensityStats


def pick_frames(seq: CTCSequence, max_frames: int | None) -> list[int]:
    """Annotated frames to use: all, or ``max_frames`` of them as evenly spaced consecutive pairs
    (so mask pairs exist whatever the subsample)."""
    frames = annotated_frames(seq)
    if max_frames is None or max_frames >= len(frames):
        return frames
    n_pairs = max(1, max_frames // 2)
    starts = np.linspace(0, len(frames) - 2, n_pairs).astype(int)
    picked = set()
    for i in starts:
        picked.update((frames[i], frames[i + 1]))
    return sorted(picked)


def _background_stats(seq: CTCSequence, frames: list[int]) -> tuple[float, list[float]]:
    """Median and 101 quantiles of pixels at least 5 px away from every nucleus, over a few frames."""
    values = []
    for t in frames[:: max(1, len(frames) // 3)][:3]:
        masks = full_masks(seq, t)
        far = ~ndimage.binary_dilation(masks > 0, iterations=5)
        values.append(seq.image(t)[far].astype(np.float32))
    pixels = np.concatenate(values)
    return float(np.median(pixels)), np.quantile(pixels, np.linspace(0, 1, 101)).tolist()


def collect_training_data(seq: CTCSequence, size: int, max_frames: int | None = None,
                          progress: bool = False) -> TrainingData:
    """One pass over the annotated frames: texture crops and TRA-linked consecutive mask pairs.

    Pairs follow ``benchmark.ctc.crops.consecutive_mask_pairs`` (same track label in frames t and
    t+1, each crop centred on its own centroid) but reuse the crops, so full masks are computed once.
    """
    frames = pick_frames(seq, max_frames)
    if not frames:
        raise ValueError(f"{seq.image_dir}: no frames with both an image and TRA markers")
    crops, masks, pairs = [], [], []
    previous: dict[int, np.ndarray] = {}
    last_t = None
    for t in tqdm(frames, desc="BVDM crops", disable=not progress, leave=False):
        current = {}
        for crop in iter_cell_crops(seq, size, [t]):
            crops.append(crop.image)
            masks.append(crop.mask)
            current[crop.label] = crop.mask
        if last_t is not None and t == last_t + 1:
            pairs.extend(np.stack([previous[k], m]) for k, m in current.items() if k in previous)
        previous, last_t = current, t
    if not crops:
        raise ValueError(f"{seq.image_dir}: no cell crops of size {size} (all cells touch the border?)")
    raw = np.stack(crops)
    mask = np.stack(masks)
    low, quantiles = _background_stats(seq, frames)
    high = float(np.percentile(raw[mask], 99.8))
    if high <= low:
        raise ValueError(f"{seq.image_dir}: nuclei are not brighter than the background ({high} <= {low})")
    info = np.iinfo(seq.dtype) if np.issubdtype(seq.dtype, np.integer) else None
    stats = IntensityStats(low, high, 0.0, quantiles, np.dtype(seq.dtype).name,
                           float(info.max) if info else float(raw.max()))
    norm = stats.normalise(raw)
    norm[~mask] = BACKGROUND
    stats.fill = float(norm[mask].mean())
    pair_array = np.stack(pairs) if pairs else np.zeros((0, 2, size, size), bool)
    return TrainingData(norm, mask, pair_array, stats)
