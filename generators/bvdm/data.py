"""Training data for BVDM from one real sequence: clean, relative cell textures, TRA-linked mask pairs,
and the texture normalisation that maps them to the DDPM's space and back.

Textures are **clean and relative**:

- *clean*: each real frame is denoised with the fitted imaging model (``ImagingModel.denoise``: in the
  variance-stabilised domain of the fitted Poisson-Gaussian noise, a spectral filter that keeps the
  real nuclei's signal power spectrum) before cutting, so the DDPM learns the nucleus signal and not
  the camera noise; ``ImagingModel.render`` adds fresh noise to every synthetic frame instead (noise
  baked into a texture would be smoothed by resampling and frozen by the warps);
- *relative*: a crop's signal is divided by its own in-mask mean (``r``, mean 1 per cell), so the
  DDPM learns texture and the mask model's log-normal gain alone sets brightness (no double spread).

Normalisation: ``x = scale * r - 1``; background (r = 0) sits at -1 and ``scale = 2 / P99.8(r)`` puts
bright chromatin near +1. Pixels outside the cell's own mask are flattened to -1 as in the original
extraction; the frame model paints the blurred rim outside the mask (``ImagingModel.add_rim``).
``fill`` (the flat SDEdit start) is the mean over cells of the in-mask mean, i.e. cell-weighted.
``start_spectrum``: radial amplitude spectrum of the crops' interior texture, for the textured
SDEdit start (``sampler.start_field``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames
from generators.imaging import ImagingModel
from generators.real_cells import clean_cell_crops

logger = logging.getLogger(__name__)

BACKGROUND = -1.0  # normalised value of the flat background (and of "zero" outside a mask)
FORMAT = 2  # stats.json layout: 2 = clean relative textures (format 1 held raw grey-value textures)


@dataclass
class IntensityStats:
    """Relative texture <-> normalised mapping, saved beside the DDPM (``stats.json``)."""

    scale: float
    fill: float
    start_spectrum: list[float] = field(default_factory=list)
    format: int = FORMAT

    def normalise(self, signal: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Clean signal crop (ADU above background) -> normalised relative texture, -1 outside ``mask``."""
        signal = np.maximum(np.asarray(signal, np.float32), 0.0)
        mean = float(signal[mask].mean()) if mask.any() else 0.0
        r = signal / mean if mean > 0 else np.ones_like(signal)
        x = np.where(mask, self.scale * r - 1.0, BACKGROUND)
        return np.clip(x, -1.0, 1.5).astype(np.float32)

    def relative(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Normalised texture -> relative texture ``r`` with in-mask mean 1 (0 outside ``mask``).

        Renormalising to mean 1 makes brightness exactly the gain's, whatever the sample's own level.
        """
        r = np.where(mask, np.maximum(np.asarray(x, np.float32) + 1.0, 0.0) / self.scale, 0.0)
        mean = float(r[mask].mean()) if mask.any() else 0.0
        return (r / mean if mean > 0 else np.where(mask, 1.0, 0.0)).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IntensityStats:
        if d.get("format") != FORMAT:
            raise ValueError("BVDM stats.json of an older format (raw grey-value textures): this fitted model "
                             "predates the clean-texture frame model; fit it again")
        return cls(float(d["scale"]), float(d["fill"]), [float(v) for v in d.get("start_spectrum", [])])


@dataclass
class TrainingData:
    """``crops``: (N, S, S) float32 normalised textures, background flattened; ``masks``: (N, S, S) bool;
    ``pairs``: (P, 2, S, S) bool masks of the same TRA track at t and t+``pair_gap`` (moving, fixed)."""

    crops: np.ndarray
    masks: np.ndarray
    pairs: np.ndarray
    stats: IntensityStats
    pair_gap: int = 1


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


def start_spectrum(crops: np.ndarray, masks: np.ndarray, edge: int = 3) -> list[float]:
    """Radial amplitude spectrum (per integer frequency bin of an S-point FFT) of the crops' interior
    texture: what ``sampler.start_field`` draws for a textured SDEdit start.

    The interior (the mask eroded by ``edge`` px, away from the dark border the DDPM draws itself) minus
    its own mean, zero elsewhere; power is rescaled by the interior's share of the crop, so a stationary
    field drawn with it has the real interior variance everywhere. Amplitudes are per unit white noise:
    ``ifft2(A * fft2(white))`` has this spectrum. Where the SDEdit noise is weak (coarse scales) the start
    keeps its structure, where it is strong the DDPM replaces it, so no cut-off is needed.
    """
    size = crops.shape[-1]
    interior = ndimage.binary_erosion(masks, structure=np.ones((1, 3, 3), bool), iterations=edge)
    counts = interior.sum(axis=(1, 2))
    use = counts >= 16
    if not use.any():
        return []
    means = np.where(use, (crops * interior).sum(axis=(1, 2)) / np.maximum(counts, 1), 0.0)
    deviation = np.where(interior[use], crops[use] - means[use, None, None], 0.0)
    power = np.mean(np.abs(np.fft.fft2(deviation)) ** 2, axis=0) / (size * size)
    power /= float(interior[use].mean())
    freq = np.fft.fftfreq(size) * size
    bins = np.rint(np.hypot(freq[:, None], freq[None, :])).astype(int)
    radial = np.bincount(bins.ravel(), power.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    radial[0] = 0.0  # no offset: the start's level is the fill
    return np.sqrt(radial).tolist()


def collect_training_data(seq: CTCSequence, size: int, imaging: ImagingModel, max_frames: int | None = None,
                          denoise: str = "spectral", progress: bool = False) -> TrainingData:
    """One pass over the annotated frames: clean relative texture crops and TRA-linked consecutive mask pairs.

    Pairs are the same track label in frames t and t+1, each crop centred on its own centroid (as the
    texture crops are); they reuse the texture crops, so full masks are computed once.
    A partial copy without two consecutive annotated frames (the shared HeLa 01: frames 2, 9, 11, ...)
    pairs frames at the smallest gap it has instead, with a warning: the flow then learns the motion of
    that many frames, which overstates per-frame motion, but no pair at all would leave no flow model.
    """
    frames = pick_frames(seq, max_frames)
    if not frames:
        raise ValueError(f"{seq.image_dir}: no frames with both an image and TRA markers")
    gap = int(np.diff(frames).min()) if len(frames) > 1 else 1
    if gap > 1:
        logger.warning("%s: no two consecutive annotated frames; flow pairs are %d frames apart", seq.image_dir, gap)
    signals, masks, pairs = [], [], []
    previous: dict[int, np.ndarray] = {}
    last_t = None
    for t, cells in clean_cell_crops(seq, size, frames, imaging, denoise, progress=progress, desc="BVDM crops"):
        current = {}
        for crop, signal in cells:
            if crop.mask.sum() < 4 or float(signal[crop.mask].mean()) <= 0:
                continue
            signals.append(signal)
            masks.append(crop.mask)
            current[crop.label] = crop.mask
        if last_t is not None and t == last_t + gap:
            pairs.extend(np.stack([previous[k], m]) for k, m in current.items() if k in previous)
        previous, last_t = current, t
    if not signals:
        raise ValueError(f"{seq.image_dir}: no cell crops of size {size} (all cells touch the border?)")
    mask = np.stack(masks)
    relative = np.stack([s / float(s[m].mean()) for s, m in zip(signals, masks, strict=True)])
    top = float(np.percentile(relative[mask], 99.8))
    if not math.isfinite(top) or top <= 0:
        raise ValueError(f"{seq.image_dir}: nuclei are not brighter than the background")
    stats = IntensityStats(2.0 / top, 0.0)
    norm = np.stack([stats.normalise(s, m) for s, m in zip(signals, masks, strict=True)])
    stats.fill = float(np.mean([x[m].mean() for x, m in zip(norm, mask, strict=True)]))
    stats.start_spectrum = start_spectrum(norm, mask)
    pair_array = np.stack(pairs) if pairs else np.zeros((0, 2, size, size), bool)
    return TrainingData(norm, mask, pair_array, stats, gap)
