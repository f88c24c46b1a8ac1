"""Per-frame detections, candidate pairs t -> t+1 and the features the link/division classifiers see.

Everything is scale-free so a model trained on synthetic videos transfers to a real one: distances
are divided by the frame's median nucleus diameter, intensities come from the downstream's one per-frame
percentile normalisation (``downstream.normalize``, csbdeep's (1, 99.8)) of the raw image, areas enter as log ratios or in diameter units.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree
from skimage.measure import regionprops_table

from downstream.normalize import normalize_image

PAIR_FEATURES = (
    "distance", "iou", "overlap_of_i", "overlap_of_j", "log_area_ratio", "mean_intensity_delta",
    "max_intensity_delta", "eccentricity_delta", "rank_j_for_i", "rank_i_for_j",
    "n_candidates_i", "n_candidates_j", "excess_over_nearest_i", "excess_over_nearest_j",
    "mean_intensity_i", "size_i",
)
DIVISION_FEATURES = (
    "daughter_area_sum_ratio", "daughter_distance", "mother_to_midpoint", "daughter_area_asymmetry",
    "mother_mean_intensity", "daughter_intensity_delta", "mother_eccentricity",
    "mother_size", "near_daughter_distance", "far_daughter_distance", "max_daughter_iou",
)


@dataclass
class Detections:
    """Objects of one label frame; row k describes mask label ``labels[k]``."""

    labels: np.ndarray  # (n,) int64 mask labels
    centroid: np.ndarray  # (n, 2) float (y, x) pixels
    area: np.ndarray  # (n,) pixels
    mean_intensity: np.ndarray
    max_intensity: np.ndarray
    eccentricity: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def diameter(self) -> float:
        """Median equivalent-circle diameter (px); the length unit of all distance features."""
        return float(np.median(2.0 * np.sqrt(self.area / np.pi))) if len(self) else 0.0


def detect(labels: np.ndarray, image: np.ndarray) -> Detections:
    """Region properties of every object in a label frame, intensities from the normalised image."""
    labels = np.asarray(labels)
    if labels.shape != image.shape:
        raise ValueError(f"mask shape {labels.shape} != image shape {image.shape}")
    props = regionprops_table(
        labels.astype(np.int32), intensity_image=normalize_image(image),
        properties=("label", "centroid", "area", "intensity_mean", "intensity_max", "eccentricity"),
    )
    return Detections(
        labels=props["label"].astype(np.int64),
        centroid=np.stack([props["centroid-0"], props["centroid-1"]], axis=1).reshape(-1, 2),
        area=props["area"].astype(np.float64),
        mean_intensity=props["intensity_mean"].astype(np.float64),
        max_intensity=props["intensity_max"].astype(np.float64),
        eccentricity=props["eccentricity"].astype(np.float64),
    )


def overlaps(a: np.ndarray, b: np.ndarray) -> dict[tuple[int, int], int]:
    """Pixel counts of every (label in a, label in b) pair that overlaps."""
    both = (a > 0) & (b > 0)
    codes = a[both].astype(np.int64) * 65_536 + b[both].astype(np.int64)
    values, counts = np.unique(codes, return_counts=True)
    return {(int(v // 65_536), int(v % 65_536)): int(c) for v, c in zip(values, counts, strict=True)}


@dataclass
class FramePair:
    """Candidates between frame t (index i into ``a``) and t+1 (index j into ``b``) with their features."""

    a: Detections
    b: Detections
    pairs: np.ndarray  # (m, 2) int: (i, j)
    features: np.ndarray  # (m, len(PAIR_FEATURES)) float
    distance: np.ndarray  # (m,) in diameters
    iou: np.ndarray  # (m,)
    diameter: float

    @cached_property
    def iou_of(self) -> dict[tuple[int, int], float]:
        return {(int(p), int(q)): float(v) for (p, q), v in zip(self.pairs, self.iou, strict=True)}


def frame_pair(a: Detections, b: Detections, mask_a: np.ndarray, mask_b: np.ndarray, k: int,
               radius: float) -> FramePair:
    """k nearest neighbours within ``radius`` diameters (plus all overlapping pairs) and their features."""
    diameter = a.diameter or b.diameter or 1.0
    empty = FramePair(a, b, np.zeros((0, 2), int), np.zeros((0, len(PAIR_FEATURES))), np.zeros(0), np.zeros(0),
                      diameter)
    if not len(a) or not len(b):
        return empty
    index_a = {int(lab): i for i, lab in enumerate(a.labels)}
    index_b = {int(lab): j for j, lab in enumerate(b.labels)}
    shared = {(index_a[la], index_b[lb]): n for (la, lb), n in overlaps(mask_a, mask_b).items()}
    dist, nn = cKDTree(b.centroid).query(a.centroid, k=min(k, len(b)), distance_upper_bound=radius * diameter)
    dist, nn = dist.reshape(len(a), -1), nn.reshape(len(a), -1)
    chosen = {(i, int(j)) for i in range(len(a)) for j, d in zip(nn[i], dist[i], strict=True) if np.isfinite(d)}
    chosen |= set(shared)
    if not chosen:
        return empty
    pairs = np.array(sorted(chosen), dtype=int)
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(a.centroid[i] - b.centroid[j], axis=1) / diameter
    inter = np.array([shared.get((int(p), int(q)), 0) for p, q in pairs], dtype=np.float64)
    iou = inter / (a.area[i] + b.area[j] - inter)
    rank_i, count_i, nearest_i = _ranks(i, d)
    rank_j, count_j, nearest_j = _ranks(j, d)
    features = np.stack([
        d, iou, inter / a.area[i], inter / b.area[j], np.log(b.area[j] / a.area[i]),
        b.mean_intensity[j] - a.mean_intensity[i], b.max_intensity[j] - a.max_intensity[i],
        b.eccentricity[j] - a.eccentricity[i],
        rank_i, rank_j, count_i, count_j, d - nearest_i, d - nearest_j,
        a.mean_intensity[i], np.sqrt(a.area[i]) / diameter,
    ], axis=1)
    return FramePair(a, b, pairs, features, d, iou, diameter)


def _ranks(owner: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate: rank by distance among the owner's candidates, owner's count, owner's nearest distance."""
    rank = np.zeros(len(owner))
    count = np.zeros(len(owner))
    nearest = np.zeros(len(owner))
    for o in np.unique(owner):
        idx = np.flatnonzero(owner == o)
        order = idx[np.argsort(distance[idx], kind="stable")]
        rank[order] = np.arange(len(order))
        count[idx] = len(idx)
        nearest[idx] = distance[idx].min()
    return rank, count, nearest


def division_features(fp: FramePair, mother: int, d1: int, d2: int) -> np.ndarray:
    """Features of the hypothesis "detection ``mother`` at t divides into ``d1`` and ``d2`` at t+1"."""
    a, b, diam = fp.a, fp.b, fp.diameter
    pos = b.centroid[[d1, d2]]
    mid = pos.mean(axis=0)
    dist = np.linalg.norm(pos - a.centroid[mother], axis=1) / diam
    ious = [fp.iou_of.get((mother, d1), 0.0), fp.iou_of.get((mother, d2), 0.0)]
    return np.array([
        (b.area[d1] + b.area[d2]) / a.area[mother],
        np.linalg.norm(pos[0] - pos[1]) / diam,
        np.linalg.norm(mid - a.centroid[mother]) / diam,
        abs(np.log(b.area[d1] / b.area[d2])),
        a.mean_intensity[mother],
        0.5 * (b.mean_intensity[d1] + b.mean_intensity[d2]) - a.mean_intensity[mother],
        a.eccentricity[mother],
        np.sqrt(a.area[mother]) / diam,
        dist.min(),
        dist.max(),
        max(ious),
    ])


def candidates_of(fp: FramePair, i: int, limit: int) -> list[int]:
    """The ``limit`` nearest candidate detections at t+1 of detection i at t."""
    rows = np.flatnonzero(fp.pairs[:, 0] == i)
    rows = rows[np.argsort(fp.distance[rows], kind="stable")][:limit]
    return [int(j) for j in fp.pairs[rows, 1]]
