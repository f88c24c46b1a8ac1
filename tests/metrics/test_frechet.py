"""Fréchet distance and KID: the maths on Gaussian features with known relations, checked against pytorch-fid.

Intervals are tested in test_intervals.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics.frechet import frechet_distance, frechet_distance_pytorch_fid, kernel_distance


def _features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    mixing = np.random.default_rng(123).normal(size=(d, d)) / np.sqrt(d)  # one distribution per d
    return np.random.default_rng(seed).normal(size=(n, d)) @ mixing + shift


@pytest.mark.parametrize("n,d", [(50, 2048), (600, 400)])
def test_fd_of_a_set_with_itself_is_zero(n, d):
    x = _features(0, n, d)
    assert abs(frechet_distance(x, x)) < 1e-6


def test_fd_matches_pytorch_fid_full_and_rank_deficient():
    for n in (500, 300):  # N > d (eigen path) and N < d (nuclear-norm path)
        a, b = _features(1, n, 400), _features(2, n, 400, shift=0.05)
        ours, reference = frechet_distance(a, b), frechet_distance_pytorch_fid(a, b)
        assert ours == pytest.approx(reference, rel=1e-5)


def test_kid_is_unbiased_near_zero_for_same_distribution():
    same = kernel_distance(_features(3, 400, 64), _features(4, 400, 64), subset_size=200, n_subsets=20)[0]
    shifted = kernel_distance(_features(3, 400, 64), _features(4, 400, 64, shift=0.5), subset_size=200,
                              n_subsets=20)[0]
    assert abs(same) < 0.05 * shifted
