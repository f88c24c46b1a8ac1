"""Real cells as the generators consume them: clean signal crops and their exact poses.

Two consumers: BVDM's training textures (``bvdm.data``) and every generator's oracle rendering
(``Generator.render_oracle``), which feeds REAL textures (the real frame cut at the real full masks,
``benchmark.ctc.crops.full_masks``) at the real positions through a generator's own frame path, so
its realism score isolates the frame model (compositing, background, blur, noise, clipping) from the
texture model. Oracle cells are placed unrotated with the crop centre on the pixel grid, so
``compose_frame`` resamples them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import CellCrop, annotated_frames, iter_cell_crops
from generators.imaging import ImagingModel
from generators.masks.video import CellState


def cut(array: np.ndarray, centre: tuple[float, float], size: int, fill: float = 0.0) -> np.ndarray:
    """``size`` x ``size`` window at the rounded ``centre``, as ``benchmark.ctc.crops.iter_cell_crops`` cuts."""
    half = size // 2
    y0, x0 = int(round(centre[0])) - half, int(round(centre[1])) - half
    out = np.full((size, size), fill, dtype=array.dtype)
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(array.shape[0], y0 + size), min(array.shape[1], x0 + size)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def clean_cell_crops(seq: CTCSequence, size: int, frames: list[int], imaging: ImagingModel, denoise: str = "spectral",
                     border_ok: bool = False, progress: bool = False,
                     desc: str = "clean crops") -> Iterator[tuple[int, list[tuple[CellCrop, np.ndarray]]]]:
    """Per frame ``(t, [(CellCrop, clean signal crop)])``: the real cells' masks with their denoised signal
    (ADU above background, ``ImagingModel.denoise``), cut at the same windows as the masks."""
    for t in tqdm(frames, desc=desc, disable=not progress, leave=False):
        clean = imaging.denoise(seq.image(t), denoise)
        yield t, [(c, cut(clean, c.centre, size)) for c in iter_cell_crops(seq, size, [t], border_ok=border_ok)]


def oracle_frames(real: CTCSequence, n_frames: int | None) -> list[int]:
    """The first ``n_frames`` annotated frames (all when None)."""
    frames = annotated_frames(real)
    if not frames:
        raise ValueError(f"{real.image_dir}: no frame has both an image and TRA markers")
    return frames if n_frames is None else frames[: max(1, n_frames)]


def oracle_state(crop: CellCrop, size: int) -> CellState:
    """The pose that puts crop pixel (j, i) back on frame pixel (round(cy) - size//2 + j, ...) exactly."""
    offset = (size - 1) / 2 - size // 2
    return CellState(crop.label, crop.mask, (round(crop.centre[0]) + offset, round(crop.centre[1]) + offset))


def real_parents(real: CTCSequence) -> dict[int, int]:
    return {label: track.parent for label, track in real.tracks.items() if track.parent}
