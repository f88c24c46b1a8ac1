"""Measured coverage of the shipped intervals (``benchmark.metrics.intervals``) on simulated track features.

Each simulated dataset: Gaussian features with a power-law spectrum (lambda_k ~ 1/k, like the decaying
spectrum of Inception/I3D features), rows grouped in tracks (Dirichlet(2) track lengths, >= 1 row) whose
rows share a per-track offset carrying ``rho`` of the variance (crops of one cell are correlated).
Cases: "floor" (both sides the real distribution), "generator" (mean shift 0.5 sd and per-dimension
scale exp(0.4 z): FD near the floor's scale) and "far" (shift 1.2 sd, scale exp(0.8 z)).
Target of each interval: the expected statistic at that N and design, estimated for dataset s by the
mean point estimate of the OTHER datasets (independent of s). Coverage = share of datasets whose
interval contains it; its binomial SE is printed next to it.

Usage: nice -n 10 .venv/bin/python scripts/interval_coverage.py [--quick] [--only fid_floor,...] [--sims S]
``--quick`` runs the reduced designs of the default test suite (~1 min); the full table takes ~3 h on
one core (the FID-like designs dominate).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from benchmark.machine import cpu_description
from benchmark.metrics.frechet import Samples
from benchmark.metrics.intervals import Interval, frechet_interval, kernel_interval, paired_difference

log = logging.getLogger("interval_coverage")

#: (mean shift in units of the per-dimension sd, log-sd of the per-dimension scale) of each case.
CASES = {"floor": (0.0, 0.0), "generator": (0.5, 0.4), "far": (1.2, 0.8)}


@dataclass(frozen=True)
class Design:
    """One simulated set-up: rows and tracks per side, dimension, intra-track correlation, statistic."""

    name: str
    n: int
    d: int
    tracks: int
    statistic: str  # "frechet", "kernel", "paired_frechet", "paired_kernel"
    cases: tuple[str, ...]  # the distribution of each non-real side ("real" side is always "floor")
    rho: float = 0.5
    n_boot: int = 200
    sims: int = 200


def distribution(case: str, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, per-dimension sd) of a case; the parameters are fixed per (case, d) by a seed of their own."""
    sd = 1.0 / np.sqrt(np.arange(1, d + 1))
    shift, log_scale = CASES[case]
    rng = np.random.default_rng(1000 + d)
    return shift * sd * rng.normal(size=d), sd * np.exp(log_scale * rng.normal(size=d))


def simulate(case: str, n: int, d: int, tracks: int, rho: float, rng: np.random.Generator) -> Samples:
    """``n`` rows in ``tracks`` tracks of random length; rows of a track share an offset (correlation rho)."""
    lengths = rng.multinomial(n - tracks, rng.dirichlet(np.full(tracks, 2.0))) + 1
    groups = np.repeat(np.arange(tracks), lengths)
    z = np.sqrt(rho) * rng.normal(size=(tracks, d))[groups] + np.sqrt(1 - rho) * rng.normal(size=(n, d))
    mean, sd = distribution(case, d)
    return Samples(mean + z * sd, groups)


def one_interval(design: Design, rng: np.random.Generator, seed: int) -> Interval:
    real = simulate("floor", design.n, design.d, design.tracks, design.rho, rng)
    fakes = [simulate(c, design.n, design.d, design.tracks, design.rho, rng) for c in design.cases]
    if design.statistic == "frechet":
        return frechet_interval(real, fakes[0], n_boot=design.n_boot, seed=seed)
    if design.statistic == "kernel":
        return kernel_interval(real, fakes[0], n_boot=design.n_boot, seed=seed)
    kind = design.statistic.removeprefix("paired_")
    return paired_difference(real, fakes[0], fakes[1], kind=kind, n_boot=design.n_boot, seed=seed)


def coverage(design: Design, sims: int, seed: int = 0) -> dict[str, float]:
    """Coverage of the 95 % interval for the leave-one-out Monte Carlo mean of the point estimates."""
    rng = np.random.default_rng(seed)
    intervals = [one_interval(design, rng, seed + s) for s in range(sims)]
    points = np.array([i.point for i in intervals])
    half = np.array([i.high - i.point for i in intervals])
    target = (points.sum() - points) / (sims - 1)
    covered = np.abs(points - target) <= half
    share = float(covered.mean())
    return {"coverage": share, "binomial_se": float(np.sqrt(share * (1 - share) / sims)), "sims": sims,
            "mean_point": float(points.mean()), "sd_point": float(points.std(ddof=1)),
            "mean_se": float(np.mean([i.se for i in intervals])),
            "excludes_zero": float(np.mean([i.excludes_zero for i in intervals])),
            "contains_point": float(np.mean([i.low <= i.point <= i.high for i in intervals]))}


#: Realistic designs. FID-like: N = 1024 crops from 32 tracks a side, d = 2048 (n_boot 60 and 120 datasets
#: to fit ~2 h on 2 cores; the default n_boot = 200 only averages more partitions). KID at N = 1000 so that
#: the point is the full-set statistic (above kernel_distance's subset size it averages 100 subsets, which
#: costs ~1 TFLOP per dataset). FVD-like: N = 120 clips from 30 tracks, d = 400.
FULL = (
    Design("fvd_floor", 120, 400, 30, "frechet", ("floor",)),
    Design("fvd_generator", 120, 400, 30, "frechet", ("generator",)),
    Design("fvd_far", 120, 400, 30, "frechet", ("far",)),
    Design("kvd_floor", 120, 400, 30, "kernel", ("floor",)),
    Design("kvd_generator", 120, 400, 30, "kernel", ("generator",)),
    Design("paired_fvd_generator_vs_far", 120, 400, 30, "paired_frechet", ("generator", "far")),
    Design("paired_fvd_equal", 120, 400, 30, "paired_frechet", ("generator", "generator")),
    Design("paired_fvd_generator_vs_floor", 120, 400, 30, "paired_frechet", ("generator", "floor")),
    Design("kid_floor", 1000, 2048, 32, "kernel", ("floor",)),
    Design("kid_generator", 1000, 2048, 32, "kernel", ("generator",)),
    Design("paired_kid_generator_vs_far", 1000, 2048, 32, "paired_kernel", ("generator", "far")),
    Design("paired_kid_equal", 1000, 2048, 32, "paired_kernel", ("generator", "generator")),
    Design("fid_floor", 1024, 2048, 32, "frechet", ("floor",), n_boot=60, sims=120),
    Design("fid_generator", 1024, 2048, 32, "frechet", ("generator",), n_boot=60, sims=120),
    Design("fid_far", 1024, 2048, 32, "frechet", ("far",), n_boot=60, sims=120),
)
#: Reduced designs of the default test suite (tests/metrics/test_intervals.py), same seeds.
QUICK = (
    Design("fd_floor", 128, 256, 16, "frechet", ("floor",), n_boot=20),
    Design("fd_generator", 128, 256, 16, "frechet", ("generator",), n_boot=20),
    Design("kid_floor", 128, 256, 16, "kernel", ("floor",), sims=300),
    Design("kid_generator", 128, 256, 16, "kernel", ("generator",), sims=300),
    Design("paired_fd_generator_vs_far", 96, 256, 16, "paired_frechet", ("generator", "far"), n_boot=20, sims=150),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reduced designs of the default test suite")
    parser.add_argument("--only", default="", help="comma-separated design names")
    parser.add_argument("--sims", type=int, default=0, help="override each design's number of datasets")
    parser.add_argument("--n-boot", type=int, default=0, help="override each design's n_boot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    designs = QUICK if args.quick else FULL
    if args.only:
        designs = tuple(d for d in designs if d.name in args.only.split(","))
    if args.n_boot:
        designs = tuple(replace(d, n_boot=args.n_boot) for d in designs)
    if args.sims:
        designs = tuple(replace(d, sims=args.sims) for d in designs)
    log.info("CPU: %s, numpy %s; BLAS limited to 1 thread", cpu_description(), np.__version__)
    with threadpool_limits(1):  # many small eigenproblems: one thread each is fastest on a shared machine
        for design in designs:
            start = time.perf_counter()
            out = coverage(design, design.sims, args.seed)
            log.info("%-30s N=%d d=%d tracks=%d/side n_boot=%d sims=%d: coverage %.3f ± %.3f | point %.4g ± %.3g, "
                     "mean SE %.3g | excludes 0: %.2f | contains point: %.2f | %.0f s", design.name, design.n,
                     design.d, design.tracks, design.n_boot, out["sims"], out["coverage"], out["binomial_se"],
                     out["mean_point"], out["sd_point"], out["mean_se"], out["excludes_zero"],
                     out["contains_point"], time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
