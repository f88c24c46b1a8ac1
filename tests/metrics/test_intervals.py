"""Intervals over cell tracks: exact sub-dataset statistics, measured coverage of E[statistic] at this N, FD_inf.

Coverage tests simulate clustered Gaussian track features (``scripts/interval_coverage.py``, loaded here so
that the default suite and the script measure the same thing) and count how often the 95 % interval
contains the expected statistic at that N and design (Monte Carlo mean of the other datasets' points).
The default suite runs reduced designs; the realistic N = 1024, d = 2048 ones are ``slow``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from benchmark.metrics import intervals
from benchmark.metrics.frechet import Samples, frechet_distance, mmd2_unbiased
from benchmark.metrics.intervals import (
    Interval,
    frechet_infinity,
    frechet_interval,
    kernel_interval,
    paired_difference,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "interval_coverage.py"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    """``scripts/interval_coverage.py`` as a module (its simulator and coverage counter)."""
    spec = importlib.util.spec_from_file_location("interval_coverage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """Thousands of small eigenproblems: one BLAS thread each is fastest, and far faster on a busy machine."""
    with threadpool_limits(1):
        yield


def _clustered(seed: int, n: int, d: int, tracks: int, shift: float = 0.0) -> Samples:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, tracks, n)
    offsets = rng.normal(size=(tracks, d))[groups]
    return Samples(offsets + rng.normal(size=(n, d)) + shift, groups)


def _bootstrap_rows(samples: Samples, rng: np.random.Generator) -> np.ndarray:
    """Rows of a cluster-bootstrap replicate (whole tracks drawn with replacement): the former method."""
    tracks = np.unique(samples.groups)
    return np.concatenate([np.flatnonzero(samples.groups == t) for t in rng.choice(tracks, len(tracks))])


# ------------------------------------------------------------------------------ exact sub-statistics
@pytest.mark.parametrize("n,d,grams", [(300, 100, True), (80, 100, True), (80, 100, False)])
def test_subset_fd_equals_frechet_distance_of_the_subset(n, d, grams, monkeypatch):
    """Covariance route (subset N >= d), Gram route from stored Grams, and without stored Grams."""
    if not grams:
        monkeypatch.setattr(intervals, "GRAM_ROW_LIMIT", 0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n + 7, d)) * 1.3 + 0.2
    engine = intervals._FrechetEngine(a, b)
    rows_a, rows_b = np.sort(rng.permutation(n)[: n // 2]), np.sort(rng.permutation(n + 7)[: n // 3])
    for ra, rb in ((np.arange(n), np.arange(n + 7)), (rows_a, rows_b)):
        assert engine.value(ra, rb) == pytest.approx(frechet_distance(a[ra], b[rb]), rel=1e-7, abs=1e-7)


def test_kernel_block_sums_give_mmd2_unbiased_with_tracks_deleted():
    real, fake = _clustered(2, 150, 20, 9), _clustered(3, 170, 20, 12, shift=0.2)
    (side_r, side_f), _, feats = intervals._kernel_sides([real, fake])
    cross = intervals._cross(feats, [side_r, side_f], [intervals._track_ids(s.groups)[0] for s in (real, fake)], 0, 1)
    keep_r, keep_f = np.ones(len(side_r.sizes)), np.ones(len(side_f.sizes))
    assert intervals._mmd_value(side_r, side_f, cross, keep_r, keep_f) == pytest.approx(
        mmd2_unbiased(real.features, fake.features), rel=1e-10)
    keep_r[[1, 4]], keep_f[0] = 0, 0
    ids_r, ids_f = np.unique(real.groups)[[1, 4]], np.unique(fake.groups)[0]
    expected = mmd2_unbiased(real.features[~np.isin(real.groups, ids_r)], fake.features[fake.groups != ids_f])
    assert intervals._mmd_value(side_r, side_f, cross, keep_r, keep_f) == pytest.approx(expected, rel=1e-10)


def test_partition_keeps_whole_tracks_and_balances_rows():
    sizes = np.random.default_rng(4).integers(5, 60, 32)
    fold = intervals._partition(sizes, 4, np.random.default_rng(5))
    assert np.bincount(fold).tolist() == [8, 8, 8, 8]
    rows = np.bincount(fold, sizes)
    assert np.abs(rows - sizes.sum() / 4).max() <= 0.05 * sizes.sum() / 4


def test_excludes_zero():
    assert Interval(1.0, 0.2, 1.8, 0.4, 0.95, 10, "").excludes_zero
    assert Interval(-1.0, -1.8, -0.2, 0.4, 0.95, 10, "").excludes_zero
    assert not Interval(0.5, -0.3, 1.3, 0.4, 0.95, 10, "").excludes_zero


# --------------------------------------------------------------------------------- what is covered
@pytest.mark.parametrize("name", ["fd_floor", "fd_generator", "kid_floor", "kid_generator",
                                  "paired_fd_generator_vs_far"])
def test_coverage_of_expected_statistic_reduced_design(sim, name):
    """95 % intervals contain E[statistic at this N and design] in 90-99 % of simulated datasets.

    128 rows (96 for the paired case) from 16 tracks a side, d = 256, intra-track correlation 0.5; the
    binomial SE of each coverage is ~0.01-0.02.
    """
    design = next(d for d in sim.QUICK if d.name == name)
    out = sim.coverage(design, design.sims)
    assert 0.90 <= out["coverage"] <= 0.99, out
    assert out["contains_point"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fid_floor", "fid_generator", "fid_far", "kid_floor", "kid_generator"])
def test_coverage_at_the_protocol_size(sim, name):
    """The acceptance design: N = 1024 (KID 1000) rows, d = 2048, 32 tracks a side, as the cpu profile scores
    Inception features; 120 (KID 200) simulated datasets. ~20-40 min for the three FID designs on one core;
    ``scripts/interval_coverage.py --only NAME`` prints the same figures."""
    design = next(d for d in sim.FULL if d.name == name)
    out = sim.coverage(design, design.sims)
    assert 0.90 <= out["coverage"] <= 0.99, out
    assert out["contains_point"] == 1.0


def test_floor_interval_contains_its_point_unlike_the_bootstrap_percentiles(sim):
    """FVD-like floor (120 clips, 30 tracks, d = 400): the bootstrap replicates lie above the point
    (duplicated rows lower N); the shipped interval is centred on it and stays above 0."""
    rng = np.random.default_rng(7)
    real, fake = (sim.simulate("floor", 120, 400, 30, 0.5, rng) for _ in range(2))
    interval = frechet_interval(real, fake, seed=1)
    assert interval.low < interval.point < interval.high
    assert interval.low > 0
    boot = [frechet_distance(real.features[_bootstrap_rows(real, rng)], fake.features[_bootstrap_rows(fake, rng)])
            for _ in range(50)]
    assert np.percentile(boot, 2.5) > interval.point


def test_paired_difference_detects_a_worse_generator_not_an_equal_one(sim):
    rng = np.random.default_rng(8)
    real, good, same, bad = (sim.simulate(case, 120, 400, 30, 0.5, rng)
                             for case in ("floor", "generator", "generator", "far"))
    worse = paired_difference(real, good, bad, n_boot=40, seed=2)
    assert worse.excludes_zero and worse.high < 0
    equal = paired_difference(real, good, same, n_boot=40, seed=2)
    assert not equal.excludes_zero
    kernel = paired_difference(real, good, bad, kind="kernel")
    assert kernel.excludes_zero and kernel.high < 0
    assert not paired_difference(real, good, same, kind="kernel").excludes_zero


def test_paired_difference_shares_the_real_side_and_cuts_to_common_n(sim):
    """The real side's variation enters both terms and cancels: the paired SE is below the unpaired one."""
    rng = np.random.default_rng(9)
    real, fake_a, fake_b = (sim.simulate(case, 120, 400, 30, 0.5, rng) for case in ("floor", "generator", "generator"))
    paired = paired_difference(real, fake_a, fake_b, n_boot=40, seed=3)
    unpaired = np.hypot(frechet_interval(real, fake_a, n_boot=40, seed=3).se,
                        frechet_interval(real, fake_b, n_boot=40, seed=3).se)
    assert paired.se < 0.8 * unpaired
    same = paired_difference(real, fake_a, fake_a, n_boot=20)
    assert same.point == 0.0 and not same.excludes_zero
    small = Samples(real.features[:90], real.groups[:90])
    assert "N=90" in paired_difference(small, fake_a, fake_b, n_boot=20).method
    expected = frechet_distance(small.features, fake_a.features[:90]) - frechet_distance(small.features,
                                                                                         fake_b.features[:90])
    cut = paired_difference(small, Samples(fake_a.features[:90], fake_a.groups[:90]),
                            Samples(fake_b.features[:90], fake_b.groups[:90]), n_boot=20)
    assert cut.point == pytest.approx(expected, rel=1e-12)


def test_kernel_interval_point_is_kernel_distance_and_subsets_widen_it():
    from benchmark.metrics.frechet import kernel_distance

    real, fake = _clustered(14, 300, 16, 20), _clustered(15, 300, 16, 20, shift=0.3)
    full = kernel_interval(real, fake, subset_size=1000)
    assert full.point == pytest.approx(mmd2_unbiased(real.features, fake.features), rel=1e-12)
    sub = kernel_interval(real, fake, subset_size=100, n_subsets=10, seed=3)
    assert sub.point == kernel_distance(real.features, fake.features, 100, 10, 3)[0]
    assert sub.se > full.se


def test_too_few_tracks_give_an_undefined_interval():
    real, fake = _clustered(16, 40, 8, 1), _clustered(17, 40, 8, 5)
    for interval in (frechet_interval(real, fake, n_boot=10), kernel_interval(real, fake)):
        assert np.isnan(interval.se) and "undefined" in interval.method
    few = frechet_interval(_clustered(18, 40, 8, 3), fake, n_boot=10)
    assert np.isfinite(few.se) and "jackknife only" in few.method


# ----------------------------------------------------------------------------------------- FD_inf
def test_frechet_infinity_recovers_the_population_distance():
    """Gaussians with a known FD (diagonal covariances), N up to 2000 > d = 48: FD_N overshoots by k/N,
    the 1/N extrapolation removes most of it."""
    d = 48
    sd1 = 1 / np.sqrt(np.arange(1, d + 1))
    rng = np.random.default_rng(19)
    sd2, mu2 = sd1 * np.exp(0.3 * rng.normal(size=d)), 0.3 * sd1 * rng.normal(size=d)
    truth = float((mu2**2).sum() + ((sd1 - sd2) ** 2).sum())
    errors_inf, errors_n = [], []
    for seed in range(3):
        data = np.random.default_rng(seed)
        a, b = data.normal(size=(2000, d)) * sd1, data.normal(size=(2000, d)) * sd2 + mu2
        out = frechet_infinity(a, b, seed=seed)
        assert out["sizes"] == sorted(out["sizes"]) and len(out["values"]) == len(out["sizes"]) == 5
        assert out["slope"] > 0 and out["values"][0] > out["values"][-1]
        errors_inf.append(out["fd_inf"] - truth)
        errors_n.append(frechet_distance(a, b) - truth)
    assert abs(np.mean(errors_inf)) < 0.05 * truth
    assert abs(np.mean(errors_inf)) < 0.5 * np.mean(errors_n)


def test_frechet_infinity_rejects_bad_sizes():
    a = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError):
        frechet_infinity(a, a, sizes=[10, 60])
    with pytest.raises(ValueError):
        frechet_infinity(a, a, sizes=[10])


# ------------------------------------------------------------------------------ realistic, slow
@pytest.mark.slow
@pytest.mark.parametrize("name", ["fid_floor", "fid_generator", "kid_floor", "fvd_floor", "fvd_generator",
                                  "paired_fvd_generator_vs_floor"])
def test_coverage_realistic_design(sim, name):
    """N = 1024 crops (KID: 1000) from 32 tracks a side at d = 2048, or 120 clips from 30 tracks at d = 400.

    The FID-like designs take ~45 min each on one core; ``scripts/interval_coverage.py`` prints all.
    """
    design = next(d for d in sim.FULL if d.name == name)
    out = sim.coverage(design, design.sims, seed=1)
    assert 0.90 <= out["coverage"] <= 0.99, out
