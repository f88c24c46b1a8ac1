"""Fréchet distance and unbiased KID/KVD over cell-track features (float64).

The Fréchet distance is pytorch-fid's formula ``|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))`` with
``np.cov`` (N-1) covariances. Its ``tr sqrtm(S1 S2)`` is computed exactly without ``scipy.linalg.sqrtm``:
with centred features X1, X2, the non-zero eigenvalues of S1 S2 are the squared singular values of
``X1 X2^T / sqrt((n1-1)(n2-1))``, so the trace is that matrix's nuclear norm (used when N < d, the FID
case), or, when N >= d, the sum of sqrt-eigenvalues of the symmetric ``S1^1/2 S2 S1^1/2``. This agrees
with pytorch-fid's ``calculate_frechet_distance`` (tested) and is 20-50x faster on 2 cores, which makes
interval estimates affordable; it is also stable for the rank-deficient covariances of small N.
Intervals and FD_inf: ``benchmark.metrics.intervals``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_FID_N", "MIN_FVD_N", "Samples", "feature_stats", "frechet_distance", "frechet_distance_pytorch_fid",
           "kernel_distance", "mmd2_unbiased"]

# Fewest samples per side for a full-rank covariance of the protocol's features: Inception pool3 is
# 2048-d (FID), I3D logits are 400-d (FVD). Below them a Fréchet distance is rank-deficient.
MIN_FID_N = 2048
MIN_FVD_N = 400


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as pytorch-fid computes them (``np.cov``, N-1), float64."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _trace_sqrt_product(x1c: np.ndarray, x2c: np.ndarray) -> float:
    n1, n2 = len(x1c), len(x2c)
    scale = np.sqrt((n1 - 1) * (n2 - 1))
    if min(n1, n2) < x1c.shape[1]:
        return float(np.linalg.svd(x1c @ x2c.T, compute_uv=False).sum() / scale)
    s1 = x1c.T @ x1c / (n1 - 1)
    s2 = x2c.T @ x2c / (n2 - 1)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ s2 @ root
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two feature sets ``(n1, d)`` and ``(n2, d)`` (n >= 2)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need >= 2 samples of equal dimension per side, got {a.shape} and {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    a_c, b_c = a - mu1, b - mu2
    trace1 = float((a_c**2).sum() / (len(a) - 1))
    trace2 = float((b_c**2).sum() / (len(b) - 1))
    return float(((mu1 - mu2) ** 2).sum() + trace1 + trace2 - 2 * _trace_sqrt_product(a_c, b_c))


def frechet_distance_pytorch_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The same distance through pytorch-fid's ``calculate_frechet_distance`` (scipy sqrtm; slow at 2048-d)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel k(x, y) = (x.y/d + 1)^3 (Bińkowski et al. 2018)."""
    m, n = len(a), len(b)
    kxx, kyy, kxy = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_distance(a: np.ndarray, b: np.ndarray, subset_size: int = 1000, n_subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID / KVD: mean and std of unbiased MMD^2 over random subsets (all samples if fewer than ``subset_size``)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"need >= 2 samples per side for KID, got {len(a)} and {len(b)}")
    if size == len(a) == len(b):
        return mmd2_unbiased(a, b), 0.0
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(n_subsets)]
    return float(np.mean(values)), float(np.std(values))


@dataclass(frozen=True)
class Samples:
    """Features ``(N, d)`` with the cell track each row comes from (the resampling unit of the intervals)."""

    features: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        if len(self.features) != len(self.groups):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.groups)} group ids")
