"""Contour point-distribution model of nuclei: 60 rays from the centroid, major axis aligned, PCA.

A nucleus is described in its *canonical* frame (crop coordinates ``(u, v)`` = (row, col) offsets from
the centroid, major axis along ``u``) by its radius along 60 fixed ray angles ``alpha_k = -pi + 2 pi k/60``
(``alpha = atan2(v, u)``). Correspondence is by angle only and size stays in the model, as in
CellCycleGAN's ``GenerateShapeModels.m``; radii rather than (row, col) points keep every sample a valid
star-shaped polygon. The pose convention matches ``generators.masks.compose``: a canonical offset
``(u, v)`` lands at frame offset ``(dy, dx) = (cos a * u + sin a * v, -sin a * u + cos a * v)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

N_RAYS = 60
RAY_ANGLES = -math.pi + 2 * math.pi * np.arange(N_RAYS) / N_RAYS


def major_axis_angle(mask: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Pose angle (radians, compose convention) that maps the canonical major axis onto the mask's, and the centroid."""
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    dy, dx = ys - cy, xs - cx
    cov = np.cov(np.stack([dy, dx])) if len(ys) > 1 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    my, mx = evecs[:, int(np.argmax(evals))]
    # canonical (1, 0) -> frame (cos a, -sin a) must equal the major-axis direction (my, mx)
    return math.atan2(-mx, my), (cy, cx)


def to_frame(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Canonical offsets -> frame offsets."""
    c, s = math.cos(angle), math.sin(angle)
    return c * u + s * v, -s * u + c * v


def mask_radii(mask: np.ndarray, angle: float, centre: tuple[float, float], step: float = 0.25) -> np.ndarray:
    """Radii ``(60,)`` in px of a binary frame mask along the canonical rays (the outermost inside point).

    Rays are sampled with bilinear interpolation every ``step`` px; the contour sits where the mask
    crosses 0.5, so a 1-pixel nucleus has radius ~0.5.
    """
    extent = float(np.hypot(*mask.shape)) if mask.size else 1.0
    ys, xs = np.nonzero(mask)
    reach = float(np.hypot(ys - centre[0], xs - centre[1]).max()) + 2.0 if len(ys) else 2.0
    r = np.arange(0.0, min(reach, extent), step)
    u = np.cos(RAY_ANGLES)[:, None] * r[None, :]
    v = np.sin(RAY_ANGLES)[:, None] * r[None, :]
    dy, dx = to_frame(u, v, angle)
    values = ndimage.map_coordinates(mask.astype(np.float32), [dy + centre[0], dx + centre[1]], order=1, cval=0.0)
    inside = values >= 0.5
    # outermost inside sample per ray (max extent handles small concavities), +half a step
    last = np.where(inside.any(axis=1), inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    return np.maximum(r[last] + step / 2, 0.5)


@lru_cache(maxsize=8)
def _polar_grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per crop pixel: distance to the centre, the two neighbouring ray indices and the blend weight."""
    c = (size - 1) / 2
    u, v = np.mgrid[0:size, 0:size].astype(np.float64) - c
    position = (np.arctan2(v, u) - RAY_ANGLES[0]) / (RAY_ANGLES[1] - RAY_ANGLES[0])
    k0 = np.floor(position).astype(np.intp) % N_RAYS
    return np.hypot(u, v), k0, (k0 + 1) % N_RAYS, position - np.floor(position)


def rasterize(radii: np.ndarray, size: int) -> np.ndarray:
    """Canonical ``(S, S)`` bool crop of the contour (pixel centres within the angle-interpolated radius).

    Radii are capped so the shape fits the crop; the centre pixel is always inside.
    """
    limit = (size - 1) / 2 - 1
    radii = np.clip(np.asarray(radii, np.float64), 0.75, limit)
    rho, k0, k1, w = _polar_grid(size)
    mask = rho <= (1 - w) * radii[k0] + w * radii[k1]
    c = (size - 1) / 2
    mask[int(math.floor(c)) : int(math.ceil(c)) + 1, int(math.floor(c)) : int(math.ceil(c)) + 1] = True
    return mask


def radius_at(radii: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Periodic linear interpolation of the contour radius at canonical angles ``alpha``."""
    return np.interp(np.mod(alpha + math.pi, 2 * math.pi), np.mod(RAY_ANGLES + math.pi, 2 * math.pi), radii,
                     period=2 * math.pi)


@dataclass
class ContourPDM:
    """PCA of 60-ray radius vectors: ``radii = mean + sum_j b_j sqrt(lambda_j) v_j``, ``b ~ N(0, 1)``.

    ``modes`` ``(K, 60)`` are unit eigenvectors, ``sigmas`` ``(K,)`` their standard deviations.
    """

    mean: np.ndarray
    modes: np.ndarray
    sigmas: np.ndarray
    n_samples: int

    @classmethod
    def fit(cls, radii: np.ndarray, variance_kept: float = 0.995) -> ContourPDM:
        """Fit on ``(N, 60)`` radii; keeps the leading modes that explain ``variance_kept`` of the variance."""
        radii = np.asarray(radii, np.float64)
        if radii.ndim != 2 or radii.shape[1] != N_RAYS or len(radii) < 2:
            raise ValueError(f"shape model needs at least 2 contours of {N_RAYS} radii, got {radii.shape}")
        mean = radii.mean(axis=0)
        cov = np.cov(radii, rowvar=False)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
        total = evals.sum()
        k = int(np.searchsorted(np.cumsum(evals) / total, variance_kept) + 1) if total > 0 else 1
        k = min(k, len(radii) - 1, N_RAYS)
        return cls(mean, evecs[:, :k].T.copy(), np.sqrt(evals[:k]), len(radii))

    @property
    def n_modes(self) -> int:
        return len(self.sigmas)

    def coefficients(self, radii: np.ndarray) -> np.ndarray:
        """Standardised coefficients ``b`` of ``(..., 60)`` radii."""
        return ((np.asarray(radii) - self.mean) @ self.modes.T) / np.maximum(self.sigmas, 1e-9)

    def radii(self, b: np.ndarray) -> np.ndarray:
        """Radii ``(..., 60)`` from standardised coefficients ``(..., K)`` (clipped to at least 0.75 px)."""
        return np.maximum(self.mean + (np.asarray(b) * self.sigmas) @ self.modes, 0.75)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "modes": self.modes.tolist(), "sigmas": self.sigmas.tolist(),
                "n_samples": self.n_samples}

    @classmethod
    def from_dict(cls, d: dict) -> ContourPDM:
        return cls(np.asarray(d["mean"], float), np.asarray(d["modes"], float).reshape(-1, N_RAYS),
                   np.asarray(d["sigmas"], float), int(d["n_samples"]))


def area_of(radii: np.ndarray) -> float:
    """Polygon area (px^2) of a 60-ray contour."""
    return float(0.5 * np.sum(radii * np.roll(radii, -1)) * math.sin(2 * math.pi / N_RAYS))
