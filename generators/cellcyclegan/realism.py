"""A fixed, cheap texture feature set and a Frechet distance on it, for masked cell crops.

A cheap check that training moves the raw GAN crops towards the real ones (a unit test and
``training_report``), complementary to the benchmark's Inception FID, which is dominated by
pixel-scale noise on raw crops and is therefore scored on generated frames instead.
Features are z-scored with the *reference* (real) set's statistics, then compared with the
Frechet distance of pytorch-fid (same formula as FID, different features).
"""

from __future__ import annotations

import numpy as np
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy import ndimage

FEATURE_NAMES = (
    "mean", "std", "p10", "p50", "p90", "rim_minus_core",
    "grad_mean", "dog1_std", "dog2_std", "dog4_std", "residual_std",
)


def crop_features(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``(N, 11)`` features of ``(N, S, S)`` crops inside their ``(N, S, S)`` bool masks.

    Intensity distribution (mean, std, 10/50/90th percentile), rim-vs-core contrast, mean gradient
    magnitude, band-pass (difference-of-Gaussians at 1, 2, 4 px) energies and the pixel-noise level:
    they cover brightness, radial profile, texture scale and noise.
    """
    rows = []
    for image, mask in zip(np.asarray(images, np.float32), np.asarray(masks, bool), strict=True):
        if mask.sum() < 9:
            raise ValueError("crop_features: a mask has fewer than 9 pixels")
        core = ndimage.binary_erosion(mask, iterations=3)
        rim = mask & ~core
        core = core if core.any() else mask
        v = image[mask]
        grad = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
        inner = ndimage.binary_erosion(mask, iterations=2)
        inner = inner if inner.any() else mask
        dogs = [float(np.std((ndimage.gaussian_filter(image, s) - ndimage.gaussian_filter(image, 2 * s))[inner]))
                for s in (1.0, 2.0, 4.0)]
        residual = image - ndimage.uniform_filter(image, 3)
        rows.append([v.mean(), v.std(), *np.percentile(v, [10, 50, 90]), image[rim].mean() - image[core].mean(),
                     grad[inner].mean(), *dogs, residual[inner].std()])
    return np.asarray(rows, np.float64)


def feature_frechet_distance(reference: np.ndarray, other: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets, z-scored by the reference."""
    mu, sd = reference.mean(0), reference.std(0) + 1e-8
    a, b = (reference - mu) / sd, (other - mu) / sd
    return float(calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))
