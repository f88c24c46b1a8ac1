"""Real training material for the texture GAN: normalised, masked, cell-centred crops with pseudo-stages.

Intensities are mapped to [0, 1] by an :class:`IntensityScale` fitted on the real sequence
(``lo`` = background level, ``hi`` = a high percentile of nucleus pixels), so the sigmoid output has
an explicit mapping back to the target's raw range and dtype. CTC has no cell-cycle stage labels;
pseudo-stages come from lineage timing, by the mask model's rule, matching ``CellState.stage``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames, full_masks, iter_cell_crops
from generators.masks.scene import children_of
from generators.masks.synth import MaskVideoConfig, pseudo_stage

#: pseudo-stages as in ``CellState.stage``: 0 interphase, 1 pre-division/mitotic, 2 just after division
N_STAGES = 3


@dataclass(frozen=True)
class IntensityScale:
    """Raw grey value <-> GAN unit: ``unit = (raw - lo) / (hi - lo)``; ``lo`` is the background level."""

    lo: float
    hi: float

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(raw, np.float32) - self.lo) / (self.hi - self.lo), 0.0, 1.0)

    def to_raw(self, unit: np.ndarray) -> np.ndarray:
        return np.asarray(unit, np.float32) * (self.hi - self.lo) + self.lo

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def sample_frames(seq: CTCSequence, max_frames: int | None) -> list[int]:
    """Up to ``max_frames`` annotated frames, evenly spread over the sequence (all when ``None``)."""
    frames = annotated_frames(seq)
    if not frames:
        raise ValueError(f"{seq.image_dir}: no frame has both an image and TRA markers")
    if max_frames is None or max_frames >= len(frames):
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]


def fit_intensity_scale(seq: CTCSequence, frames: list[int], hi_percentile: float = 99.5) -> IntensityScale:
    """Background = median of pixels > 5 px away from any nucleus; ``hi`` = percentile of nucleus pixels."""
    background, foreground = [], []
    for t in frames:
        masks = full_masks(seq, t)
        image = seq.image(t).astype(np.float32)
        far = ~ndimage.binary_dilation(masks > 0, iterations=5)
        background.append(image[far])
        foreground.append(image[masks > 0])
    lo = float(np.median(np.concatenate(background)))
    fg = np.concatenate(foreground)
    if fg.size == 0:
        raise ValueError("no nucleus pixels in the sampled frames")
    hi = float(np.percentile(fg, hi_percentile))
    if hi <= lo:
        raise ValueError(f"nucleus intensities ({hi}) are not above the background ({lo})")
    return IntensityScale(lo, hi)


@dataclass
class TrainingCrops:
    """Stacked training crops: ``images`` (N, S, S) float32 in GAN units, zero outside the mask;
    ``masks`` (N, S, S) bool; ``stages`` (N,) int; ``labels``/``times`` (N,) int (for per-track statistics)."""

    images: np.ndarray
    masks: np.ndarray
    stages: np.ndarray
    labels: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def cell_means(self) -> np.ndarray:
        """Masked mean intensity per crop (GAN units)."""
        area = self.masks.sum(axis=(1, 2)).clip(min=1)
        return (self.images * self.masks).sum(axis=(1, 2)) / area


def collect_crops(
    seq: CTCSequence,
    size: int,
    scale: IntensityScale,
    frames: list[int],
    stage_rule: MaskVideoConfig | None = None,
    min_area: int = 16,
    progress: bool = False,
) -> TrainingCrops:
    """Every non-border cell of ``frames`` as a centred ``size`` crop, normalised and masked.

    Pseudo-stages use the mask model's rule (``generators.masks.synth.pseudo_stage``) so the GAN's
    stage conditioning means what ``CellState.stage`` means.
    """
    stage_config = stage_rule or MaskVideoConfig()
    kids = children_of(seq.tracks) if seq.has_tracks else {}
    images, masks, stages, labels, times = [], [], [], [], []
    for t in tqdm(frames, desc="cell crops", disable=not progress, leave=False):
        for crop in iter_cell_crops(seq, size, [t]):
            if crop.mask.sum() < min_area:
                continue
            images.append(scale.to_unit(crop.image) * crop.mask)
            masks.append(crop.mask)
            stages.append(pseudo_stage(seq, crop.label, t, stage_config, kids))
            labels.append(crop.label)
            times.append(t)
    if not images:
        raise ValueError(f"no usable cell crops of size {size} in frames {frames[:5]}...")
    return TrainingCrops(
        np.stack(images).astype(np.float32),
        np.stack(masks),
        np.asarray(stages, np.int64),
        np.asarray(labels, np.int64),
        np.asarray(times, np.int64),
    )


def condition(masks: np.ndarray, stages: np.ndarray, intensities: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Conditioning ``(N, 3, S, S)`` float32: stage map ``mask*(stage+1)/3``, intensity map ``mask*level``, noise.

    The stage map is nonzero on the whole mask for every stage, so it also carries the shape.
    """
    m = masks.astype(np.float32)
    stage_map = m * ((np.asarray(stages, np.float32) + 1) / N_STAGES)[:, None, None]
    intensity_map = m * np.asarray(intensities, np.float32)[:, None, None]
    return np.stack([stage_map, intensity_map, noise.astype(np.float32)], axis=1)
