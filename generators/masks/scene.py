"""Scene statistics fitted on real CTC tracking annotations: density, entries, motion, rotation, cycle.

Everything here is per frame and in pixels of the training sequence. Motion is a persistent random
walk (AR(1) velocity, the discrete Ornstein-Uhlenbeck process): ``v_t = phi v_{t-1} + sigma_innov eps``
with ``phi`` the lag-1 correlation of successive real displacements and the stationary per-axis
step std ``sigma_step``. Partial sequences (HeLa) only use pairs of TRA frames that are present.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from benchmark.ctc import CTCSequence, Track


@dataclass
class SceneParams:
    """Fitted scene statistics (JSON-able floats)."""

    density: float  # cells per px^2 at the first frame
    entry_rate: float  # new root tracks per frame per px of frame perimeter (cells entering the field)
    sigma_step: float  # stationary per-axis std of the frame-to-frame displacement (px)
    persistence: float  # lag-1 correlation of successive displacement vectors
    sigma_rotation: float  # std of the per-frame change of orientation (rad)
    cycle_log_mean: float  # log of the cell-cycle length (frames), birth to last frame before division
    cycle_log_std: float
    divide_fraction: float  # fraction of cells that divide at the end of their cycle (others never do)
    daughter_separation: float  # mean distance between sister centroids at birth (px)
    daughter_separation_std: float
    n_complete_cycles: int = 0
    n_divisions: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SceneParams:
        return cls(**d)

    @property
    def cycle_mean(self) -> float:
        return math.exp(self.cycle_log_mean + 0.5 * self.cycle_log_std**2)


def tra_centroids(seq: CTCSequence) -> dict[int, dict[int, tuple[float, float]]]:
    """t -> {label: (y, x)} centroid of every TRA marker in every TRA frame present."""
    out: dict[int, dict[int, tuple[float, float]]] = {}
    for t in seq.tra_files:
        markers = seq.tra(t)
        labels = [int(v) for v in np.unique(markers) if v]
        centres = ndimage.center_of_mass(np.ones_like(markers), markers, labels) if labels else []
        out[t] = {label: (float(c[0]), float(c[1])) for label, c in zip(labels, centres, strict=True)}
    return out


def children_of(tracks: dict[int, Track]) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for track in tracks.values():
        if track.parent:
            kids.setdefault(track.parent, []).append(track.label)
    return kids


def _wrap_axis(delta: np.ndarray) -> np.ndarray:
    """Orientation differences of an axis (period pi) into [-pi/2, pi/2)."""
    return (delta + math.pi / 2) % math.pi - math.pi / 2


# one pass over the lineage gathering every statistic of the scene model (births, divisions, motion, turning,
# crowding); its parts share the per-track loop and the fitted numbers are pinned by the shipped fits
def fit_scene(seq: CTCSequence, centroids: dict[int, dict[int, tuple[float, float]]],  # noqa: C901, PLR0912, PLR0915
              angles: dict[int, dict[int, float]]) -> SceneParams:
    """Fit scene statistics from the lineage, TRA centroids and per-frame major-axis angles (t -> label -> rad)."""
    tracks = seq.tracks
    height, width = seq.frame_shape
    kids = children_of(tracks)
    dividing = {label for label, k in kids.items() if len(k) >= 2}

    alive0 = sum(1 for tr in tracks.values() if tr.begin <= 0 <= tr.end)
    density = alive0 / float(height * width)
    roots_later = sum(1 for tr in tracks.values() if tr.parent == 0 and tr.begin > 0)
    n_frames = max(seq.n_frames, 2)
    entry_rate = roots_later / float((n_frames - 1) * 2 * (height + width))

    # motion: displacements between consecutive TRA frames, persistence from consecutive pairs
    steps: dict[tuple[int, int], np.ndarray] = {}
    for t, cells in centroids.items():
        following = centroids.get(t + 1)
        if not following:
            continue
        for label, (y, x) in cells.items():
            if label in following:
                y1, x1 = following[label]
                steps[(label, t)] = np.array([y1 - y, x1 - x])
    if steps:
        d = np.stack(list(steps.values()))
        # per-axis sigma of a 2D Gaussian with the same median step length (median |d| = 1.1774 sigma):
        # robust to tracking jumps and to the heavy tail of real steps
        magnitude = np.hypot(*(d - np.median(d, axis=0)).T)
        sigma_step = max(float(np.median(magnitude)) / math.sqrt(2 * math.log(2)), 0.1)
    else:
        sigma_step = 1.0
    pairs = [(steps[k], steps[(k[0], k[1] + 1)]) for k in steps if (k[0], k[1] + 1) in steps]
    if len(pairs) >= 10:
        a = np.stack([p[0] for p in pairs])
        b = np.stack([p[1] for p in pairs])
        a, b = a - a.mean(0), b - b.mean(0)
        persistence = float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))
    else:
        persistence = 0.0
    persistence = float(np.clip(persistence, 0.0, 0.95))

    # rotation drift: orientation changes of the same track over 1-2 frames, per sqrt(frame)
    rot = []
    for t, cells in angles.items():
        for lag in (1, 2):
            later = angles.get(t + lag)
            if not later:
                continue
            for label, a0 in cells.items():
                if label in later:
                    rot.append(_wrap_axis(np.array(later[label] - a0)) / math.sqrt(lag))
    if rot:
        r = np.asarray(rot, float)
        sigma_rotation = float(np.clip(1.4826 * np.median(np.abs(r)), 0.005, 0.3))
    else:
        sigma_rotation = math.radians(1.0)

    # cell cycle: tracks born by division that divide again; else a rate-based estimate
    complete = [tr.end - tr.begin + 1 for label, tr in tracks.items() if tr.parent and label in dividing]
    cell_frames = sum(tr.end - tr.begin + 1 for tr in tracks.values())
    n_div = len(dividing)
    if len(complete) >= 3:
        logs = np.log(np.asarray(complete, float))
        cycle_log_mean, cycle_log_std = float(logs.mean()), float(max(logs.std(ddof=1), 0.05))
    else:
        # too few complete cycles (GOWT1): a per-cell division rate gives the mean cycle length
        rate = n_div / max(cell_frames, 1)
        mean = 1.0 / rate if rate > 0 else 10.0 * n_frames
        cycle_log_std = 0.17
        cycle_log_mean = float(math.log(mean) - 0.5 * cycle_log_std**2)
    # cells that never divide: tracks that reach the last frame without dividing although they lived
    # longer than 90% of the complete cycles (cells that stop early left the field: simulated as exits)
    if complete:
        long_enough = float(np.percentile(complete, 90))
        idle = sum(1 for label, tr in tracks.items() if label not in dividing and tr.end >= seq.n_frames - 1
                   and tr.end - tr.begin + 1 >= long_enough)
        divide_fraction = float(np.clip(n_div / max(n_div + idle, 1), 0.05, 1.0))
    else:
        divide_fraction = 1.0

    # daughter placement: sister distance in the first frame where both are annotated
    seps = []
    for k in kids.values():
        if len(k) < 2:
            continue
        a, b = tracks[k[0]], tracks[k[1]]
        for t in range(max(a.begin, b.begin), min(a.end, b.end) + 1):
            cells = centroids.get(t)
            if cells and a.label in cells and b.label in cells:
                if t - max(a.begin, b.begin) <= 1:
                    seps.append(math.dist(cells[a.label], cells[b.label]))
                break
    sep_mean = float(np.mean(seps)) if seps else float("nan")
    sep_std = float(np.std(seps)) if len(seps) > 1 else 0.0
    return SceneParams(density, entry_rate, sigma_step, persistence, sigma_rotation, cycle_log_mean,
                       cycle_log_std, divide_fraction, sep_mean, sep_std, len(complete), n_div)
