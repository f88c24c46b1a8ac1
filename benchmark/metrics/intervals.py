"""Confidence intervals for Fréchet and kernel distances over cell tracks, and FD_inf.

Every interval is ``point ± q·SE`` and covers the EXPECTED value of the statistic at this N and this
track design (same rows and number of tracks per side): E[FD_N], not FD_inf. A Fréchet distance is
biased up by ~k/N, so "the FD at this N" is what an interval can honestly cover; ``frechet_infinity``
extrapolates to N -> infinity.

Why not the cluster bootstrap (the previous method): drawing tracks with replacement duplicates rows,
which lowers the effective N and moves every Fréchet replicate up (the percentile interval of the GOWT1
floor, [41.3, 72.1], lay wholly above its point, 39.5), and duplicated rows enter the off-diagonal sums
of the unbiased MMD. Its spread is no better: near equal distributions the FD is a degenerate
(second-order) statistic, and resampling variances count the second-order part at least twice. On
simulated track features (``scripts/interval_coverage.py``) the bootstrap SE was 2.1x the true SD at
the floor (N = 256, d = 512, 16 tracks a side; 95 % intervals covered 100 %), and the plain
delete-a-track jackknife variance 2.9x the true variance at N = 1024, d = 2048, 32 tracks a side.

Shipped, chosen by coverage measured with that script (numbers in each function's docstring):

- Fréchet distances (and paired FD differences): SE^2 = geometric mean of two variance estimates with
  opposite failure modes, with a t quantile:
  * a delete-a-track jackknife (tracks pooled into at most ``JACKKNIFE_UNITS`` random groups per side)
    whose deletion values are first regressed on the deleted group's row count (1, m, m^2): deleting
    rows shifts the FD's k/N bias by an amount that depends only on m, an artefact, not sampling noise
    (40 % of the plain jackknife variance at that floor). Stable, right when the first-order part
    dominates (generators far from real), 1.7x too large at the floor (second-order part counted twice);
  * a split estimate: random partitions of each side's tracks into 2 halves (4 quarters), balanced in
    rows, give independent datasets of the same design at N/2 (N/4); the spread of the statistic across
    them is unbiased for Var at N/2 (N/4), with no duplicated row. ``Var_m = a/m + b/m^2`` (a, b >= 0)
    through both gives ``Var_N = (6 V_half - V_quarter)/8`` within ``[V_half/4, V_half/2]``. Less
    biased at the floor (1.5x) but noisy (few independent folds), so alone it under-covers;
  * quantile of Student's t with df = (sum of the jackknife terms)^2 / (sum of their squares), the
    effective number of independent terms: low when a few tracks dominate the variance.
- Kernel distances KID/KVD (and paired differences): the unbiased MMD^2 is a U-statistic whose
  expectation does not depend on N; the delete-a-track jackknife of the full-set statistic, computed
  from per-track kernel block sums (no duplicated rows by construction), with a normal quantile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from benchmark.metrics.frechet import Samples, frechet_distance, kernel_distance

logger = logging.getLogger(__name__)

#: Most rows per side pair whose Gram matrices are kept in memory ((n1 + n2)^2 float64: 288 MB at 6000).
GRAM_ROW_LIMIT = 6000
#: Row chunk of the kernel block sums (bounds memory to chunk x N floats).
KERNEL_CHUNK = 2048
#: Most jackknife units per side for Fréchet distances (more tracks are pooled into random groups).
JACKKNIFE_UNITS = 40
#: Fewest units per side for the row-count regression of the jackknife values (3 coefficients).
MIN_UNITS_ADJUSTED = 6


@dataclass(frozen=True)
class Interval:
    """``point ± q·se`` at ``level``; ``method`` says what it covers and how ``se`` was estimated.

    ``n_boot``: statistic re-evaluations behind ``se`` (jackknife deletions + track partitions).
    ``reason``: why there is no interval (``low``/``high`` NaN), e.g. ``n/a (1 track on a side: ...)``;
    empty when there is one. Printers show it instead of a bare ``[nan, nan]``.
    """

    point: float
    low: float
    high: float
    se: float
    level: float
    n_boot: int
    method: str
    reason: str = ""

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def no_interval_reason(n_tracks: Sequence[int]) -> str:
    """Why an interval cannot be computed from ``n_tracks`` tracks per side: its SE resamples whole tracks."""
    fewest = min(n_tracks)
    return (f"n/a ({fewest} track{'' if fewest == 1 else 's'} on a side: the interval is undefined, its SE "
            "resamples whole tracks and needs >= 2 a side)")


def _interval(point: float, variance: float, level: float, n_boot: int, method: str,
              df: float | None = None, reason: str = "") -> Interval:
    """``point ± q·sqrt(variance)``; q from the normal, or from Student's t when ``df`` is given. A variance
    that is not a finite non-negative number gives a NaN interval with ``reason`` (never a bare NaN)."""
    se = float(np.sqrt(variance)) if np.isfinite(variance) and variance >= 0 else float("nan")
    if not np.isfinite(se):
        reason = reason or f"n/a (the SE is undefined: variance {variance!r})"
    tail = 0.5 + level / 2
    quantile = float(norm.ppf(tail) if df is None else student_t.ppf(tail, max(df, 1.0)))
    return Interval(float(point), float(point - quantile * se), float(point + quantile * se), se, level,
                    int(n_boot), method, "" if np.isfinite(se) else reason)


# ------------------------------------------------------------------------------------------- tracks
def _track_ids(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row -> track index 0..G-1, and the rows per track."""
    _, ids = np.unique(np.asarray(groups), return_inverse=True)
    ids = ids.ravel()
    return ids, np.bincount(ids)


def _units(groups: np.ndarray, most: int, rng: np.random.Generator) -> np.ndarray:
    """Row -> jackknife unit: its track, or a random group of whole tracks when there are more than ``most``."""
    ids, sizes = _track_ids(groups)
    if len(sizes) <= most:
        return ids
    return rng.permutation(np.arange(len(sizes)) % most)[ids]


def _partition(sizes: np.ndarray, k: int, rng: np.random.Generator, attempts: int = 64) -> np.ndarray:
    """Fold 0..k-1 of each track: random, equal track counts, redrawn until the folds' rows are within 5 %.

    A random split keeps the folds' track-length mix random, as in a new dataset of the design; the
    balance keeps each fold at N/k rows, since the FD's k/N bias would add the folds' N spread to the
    measured variance. After ``attempts`` draws the most balanced one is kept.
    """
    base = np.arange(len(sizes)) % k
    target = sizes.sum() / k
    best, best_gap = base, np.inf
    for _ in range(attempts):
        fold = rng.permutation(base)
        gap = float(np.abs(np.bincount(fold, sizes, minlength=k) - target).max() / target)
        if gap < best_gap:
            best, best_gap = fold, gap
        if gap <= 0.05:
            break
    return best


def _subsample(samples: Samples, n: int, rng: np.random.Generator) -> Samples:
    """``n`` rows without replacement (all when ``n`` >= N), in their original order."""
    if n >= len(samples.features):
        return samples
    pick = np.sort(rng.permutation(len(samples.features))[:n])
    return Samples(np.asarray(samples.features)[pick], np.asarray(samples.groups)[pick])


# ------------------------------------------------------------------------------ Fréchet on row subsets
def _nuclear_norm(m: np.ndarray) -> float:
    """Sum of singular values via the smaller Gram (``eigvalsh`` is 5-10x faster than an SVD here)."""
    g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(g), 0, None)).sum())


class _FrechetEngine:
    """Fréchet distance of row subsets of two fixed feature sets, without re-reading the features.

    Rows are centred on the first set's mean (the distance is translation invariant; it keeps the Gram
    entries small). A subset with fewer rows than dimensions uses the nuclear-norm form of
    ``frechet_distance`` on the subset's centred cross-products, indexed from precomputed Grams:
    ``(x_i - m1).(y_j - m2) = K12_ij - x_i.m2 - m1.y_j + m1.m2``; otherwise the covariances, whose
    ``tr sqrt(S1 S2)`` is taken through a Cholesky factor of S1.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        centre = a.mean(0)
        self.x, self.y = a - centre, b - centre
        self.dim = a.shape[1]
        self._grams: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _gram_blocks(self, rx: np.ndarray, ry: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X X^T, Y Y^T, X Y^T) of the subset: indexed from the full Grams, computed once when they fit."""
        if self._grams is None and len(self.x) + len(self.y) <= GRAM_ROW_LIMIT:
            self._grams = (self.x @ self.x.T, self.y @ self.y.T, self.x @ self.y.T)
        if self._grams is not None:
            kxx, kyy, kxy = self._grams
            return kxx[np.ix_(rx, rx)], kyy[np.ix_(ry, ry)], kxy[np.ix_(rx, ry)]
        x, y = self.x[rx], self.y[ry]
        return x @ x.T, y @ y.T, x @ y.T

    def value(self, rows_x: np.ndarray, rows_y: np.ndarray) -> float:
        """FD between the rows ``rows_x`` (indices) of the first set and ``rows_y`` of the second."""
        n1, n2 = len(rows_x), len(rows_y)
        if n1 < 2 or n2 < 2:
            raise ValueError(f"need >= 2 rows per side, got {n1} and {n2}")
        if min(n1, n2) < self.dim:
            return self._from_cross_products(rows_x, rows_y)
        return self._from_covariances(rows_x, rows_y)

    def _from_cross_products(self, rx: np.ndarray, ry: np.ndarray) -> float:
        n1, n2 = len(rx), len(ry)
        kxx, kyy, kxy = self._gram_blocks(rx, ry)
        x_m1, y_m2 = kxx.mean(1), kyy.mean(1)  # x_i.m1, y_j.m2
        x_m2, y_m1 = kxy.mean(1), kxy.mean(0)  # x_i.m2, y_j.m1
        m11, m22, m12 = x_m1.mean(), y_m2.mean(), x_m2.mean()
        trace1 = (np.trace(kxx) - n1 * m11) / (n1 - 1)
        trace2 = (np.trace(kyy) - n2 * m22) / (n2 - 1)
        cross = kxy - x_m2[:, None] - y_m1[None, :] + m12
        root = _nuclear_norm(cross) / np.sqrt((n1 - 1) * (n2 - 1))
        return float(m11 + m22 - 2 * m12 + trace1 + trace2 - 2 * root)

    def _from_covariances(self, rx: np.ndarray, ry: np.ndarray) -> float:
        x, y = self.x[rx], self.y[ry]
        mu1, mu2 = x.mean(0), y.mean(0)
        s1 = np.cov(x, rowvar=False)
        s2 = np.cov(y, rowvar=False)
        try:
            chol = np.linalg.cholesky(s1)
            m = chol.T @ s2 @ chol  # same eigenvalues as S1 S2, symmetric
        except np.linalg.LinAlgError:  # singular S1 (duplicate rows): the eigen route, as frechet_distance
            w, v = np.linalg.eigh(s1)
            half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
            m = half @ s2 @ half
        eig = np.linalg.eigvalsh((m + m.T) / 2)
        root = float(np.sqrt(np.clip(eig, 0, None)).sum())
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root)


#: Statistic of a sub-dataset: one array of row indices per side.
SubsetStatistic = Callable[[list[np.ndarray]], float]


def _jackknife_terms(values: np.ndarray, sizes: np.ndarray, adjust: bool) -> np.ndarray:
    """Per-unit terms of the delete-a-unit jackknife variance of one side, summing to (G-1)/G sum (v - mean)^2.

    With ``adjust`` the deletion values are residuals of a least-squares fit on (1, m, m^2) of the
    deleted unit's row count m, rescaled by (G-1)/(G-3) for the two extra coefficients.
    """
    count = len(values)
    if adjust and count >= MIN_UNITS_ADJUSTED:
        design = np.column_stack([np.ones(count), sizes, sizes.astype(np.float64) ** 2])
        residual = values - design @ np.linalg.lstsq(design, values, rcond=None)[0]
        return (count - 1) / count * (count - 1) / (count - design.shape[1]) * residual**2
    return (count - 1) / count * (values - values.mean()) ** 2


def _jackknife(statistic: SubsetStatistic, units: list[np.ndarray], adjust: bool) -> tuple[float, float, int]:
    """Delete-a-unit jackknife over every side: (variance, effective df, deletions).

    ``units[s]`` maps side s's rows to units 0..G-1; deleting a unit drops its rows from that side only
    (a shared side, like the real set of a paired difference, leaves every term at once). The effective
    df (sum t)^2 / sum t^2 of the per-unit terms t counts how many of them carry the variance.
    """
    terms = []
    rows = [np.arange(len(u)) for u in units]
    for side, unit in enumerate(units):
        sizes = np.bincount(unit)
        values = []
        for g in range(len(sizes)):
            subset = list(rows)
            subset[side] = np.flatnonzero(unit != g)
            values.append(statistic(subset))
        terms.append(_jackknife_terms(np.asarray(values), sizes, adjust))
    flat = np.concatenate(terms)
    total = float(flat.sum())
    df = total**2 / float((flat**2).sum()) if total > 0 else float("inf")
    return total, df, len(flat)


def _fold_variance(statistic: SubsetStatistic, sides: list[np.ndarray], k: int, n_partitions: int,
                   rng: np.random.Generator) -> float:
    """Mean over random track partitions of the variance of ``statistic`` across the k disjoint folds."""
    tracks = [_track_ids(groups) for groups in sides]
    variances = []
    for _ in range(n_partitions):
        folds = [_partition(sizes, k, rng)[ids] for ids, sizes in tracks]
        values = [statistic([np.flatnonzero(f == j) for f in folds]) for j in range(k)]
        variances.append(np.var(values, ddof=1))
    return float(np.mean(variances))


def _split_variance(statistic: SubsetStatistic, sides: list[np.ndarray], n_partitions: int,
                    rng: np.random.Generator) -> tuple[float, int]:
    """Var at full N from disjoint halves and quarters of the tracks: (variance, partitions used).

    NaN with fewer than 4 tracks on a side; ``V_half/2`` (the all-linear bound) with fewer than 8.
    """
    n_tracks = min(len(np.unique(groups)) for groups in sides)
    if n_tracks < 4:
        return float("nan"), 0
    v_half = _fold_variance(statistic, sides, 2, n_partitions, rng)
    if n_tracks < 8:
        return v_half / 2, n_partitions
    v_quarter = _fold_variance(statistic, sides, 4, n_partitions, rng)
    return float(np.clip((6 * v_half - v_quarter) / 8, v_half / 4, v_half / 2)), 2 * n_partitions


def _frechet_se(statistic: SubsetStatistic, sides: list[np.ndarray], n_boot: int,
                rng: np.random.Generator) -> tuple[float, float, int, str]:
    """(variance, df, re-evaluations, note) of a Fréchet statistic: see the module docstring."""
    counts = [len(np.unique(groups)) for groups in sides]
    if min(counts) < 2:
        return float("nan"), float("nan"), 0, no_interval_reason(counts)
    units = [_units(groups, JACKKNIFE_UNITS, rng) for groups in sides]
    v_jack, df, deletions = _jackknife(statistic, units, adjust=True)
    v_split, partitions = _split_variance(statistic, sides, max(n_boot // 2, 2), rng)
    logger.debug("Fréchet SE: jackknife var %.4g (df %.1f, %d units), split var %.4g", v_jack, df, deletions, v_split)
    if not np.isfinite(v_split):
        return v_jack, df, deletions, "jackknife only (< 4 tracks on a side): conservative"
    return float(np.sqrt(v_jack * v_split)), df, deletions + partitions, ""


def _method(base: str, note: str) -> str:
    return f"{base} ({note})" if note else base


#: One sentence for reports and CLIs: what every interval covers and how its SE is estimated.
INTERVAL_SUMMARY = ("95 % interval = point ± q·SE; it covers the expected distance at this N and track design, "
                    "not the N → ∞ limit. Fréchet distances: SE² = geometric mean of a delete-a-track jackknife "
                    "(row-count adjusted) and a split-halves variance, t quantile; KID/KVD: delete-a-track "
                    "jackknife of the unbiased MMD², no duplicated rows. Coverage measured by simulation "
                    "(scripts/interval_coverage.py)")
#: Short form for the ``realism_interval`` protocol tag (rows of one table must agree on it).
INTERVAL_TAG = "E[D] at this N: track jackknife x split halves (v2)"

FRECHET_METHOD = ("E[FD] at this N and track design; SE² = geometric mean of track-jackknife and split-halves "
                  "variances, t quantile")
KERNEL_METHOD = "E[MMD²u] at this N and track design; delete-a-track jackknife SE, normal quantile"


def frechet_interval(real: Samples, fake: Samples, n_boot: int = 200, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """Interval for E[FD] at this N and track design; point = ``frechet_distance`` on the full sets.

    ``n_boot``: track partitions for the split estimate (half into halves, half into quarters); the
    jackknife adds one evaluation per unit (<= ``JACKKNIFE_UNITS`` per side). Cost at N = 1024,
    d = 2048, 32 tracks a side: ~100 + 3 n_boot small eigenproblems, ~30 s on one core.
    Measured 95 % coverage: see ``scripts/interval_coverage.py`` and the module docstring.
    Does NOT cover FD_inf (``frechet_infinity``).
    """
    engine = _FrechetEngine(real.features, fake.features)
    point = frechet_distance(real.features, fake.features)
    variance, df, used, note = _frechet_se(lambda rows: engine.value(rows[0], rows[1]),
                                           [real.groups, fake.groups], n_boot, np.random.default_rng(seed))
    return _interval(point, variance, level, used, _method(FRECHET_METHOD, note), df, reason=note)


# --------------------------------------------------------------------------------- kernel distances
def _poly_block_sums(x: np.ndarray, ux: np.ndarray, kx: int, y: np.ndarray, uy: np.ndarray, ky: int) -> np.ndarray:
    """``B[g, h]`` = sum of k(x_i, y_j) over rows i of track g and j of track h (KID kernel), chunked."""
    onehot_y = np.zeros((len(y), ky))
    onehot_y[np.arange(len(y)), uy] = 1.0
    out = np.zeros((kx, ky))
    for start in range(0, len(x), KERNEL_CHUNK):
        block = (x[start:start + KERNEL_CHUNK] @ y.T / x.shape[1] + 1.0) ** 3
        np.add.at(out, ux[start:start + KERNEL_CHUNK], block @ onehot_y)
    return out


@dataclass(frozen=True)
class _KernelSide:
    """Per-track kernel sums of one feature set: within-set blocks, diagonal sums, rows per track."""

    blocks: np.ndarray
    diagonal: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, groups: np.ndarray) -> tuple[_KernelSide, np.ndarray]:
        ids, sizes = _track_ids(groups)
        diag = (np.einsum("ij,ij->i", x, x) / x.shape[1] + 1.0) ** 3
        return cls(_poly_block_sums(x, ids, len(sizes), x, ids, len(sizes)), np.bincount(ids, diag),
                   sizes.astype(np.float64)), ids

    def within(self, keep: np.ndarray) -> float:
        """Mean of k(x_i, x_j), i != j, over the rows of the kept tracks (0/1 weights per track)."""
        n = keep @ self.sizes
        return float((keep @ self.blocks @ keep - keep @ self.diagonal) / (n * n - n))


def _mmd_value(sx: _KernelSide, sy: _KernelSide, cross: np.ndarray, keep_x: np.ndarray,
               keep_y: np.ndarray) -> float:
    """Unbiased MMD^2 (``mmd2_unbiased``) of the kept tracks, from block sums."""
    xy = keep_x @ cross @ keep_y / ((keep_x @ sx.sizes) * (keep_y @ sy.sizes))
    return sx.within(keep_x) + sy.within(keep_y) - 2 * xy


def _kernel_jackknife(statistic: Callable[[list[np.ndarray]], float], n_tracks: list[int]) -> float:
    """Delete-a-track jackknife variance of a statistic of per-track 0/1 weights (one vector per side)."""
    variance = 0.0
    for side, count in enumerate(n_tracks):
        values = []
        for g in range(count):
            keep = [np.ones(c) for c in n_tracks]
            keep[side][g] = 0.0
            values.append(statistic(keep))
        variance += float(_jackknife_terms(np.asarray(values), np.ones(count), adjust=False).sum())
    return variance


def _kernel_sides(sets: list[Samples]) -> tuple[list[_KernelSide], list[np.ndarray], list[np.ndarray]]:
    feats = [np.asarray(s.features, np.float64) for s in sets]
    built = [_KernelSide.of(f, s.groups) for f, s in zip(feats, sets, strict=True)]
    return [b[0] for b in built], [b[1] for b in built], feats


def _cross(feats: list[np.ndarray], sides: list[_KernelSide], ids: list[np.ndarray], i: int, j: int) -> np.ndarray:
    return _poly_block_sums(feats[i], ids[i], len(sides[i].sizes), feats[j], ids[j], len(sides[j].sizes))


def kernel_interval(real: Samples, fake: Samples, n_boot: int = 200, seed: int = 0, level: float = 0.95,
                    subset_size: int = 1000, n_subsets: int = 100) -> Interval:
    """Interval for E[KID/KVD] at this N and track design; point = ``kernel_distance(...)[0]``.

    SE^2 = delete-a-track jackknife variance of the full-set unbiased MMD^2 (whose expectation the
    subset-averaged point shares) + the subsets' Monte Carlo variance ``std^2 / n_subsets`` (0 when the
    point used all rows). ``n_boot`` is unused (each track is deleted once); kept for a uniform signature.
    Cost: the kernel block sums, O(N^2 d), then O(G^3) for G tracks.
    """
    del n_boot
    point, spread = kernel_distance(real.features, fake.features, subset_size, n_subsets, seed)
    sides, ids, feats = _kernel_sides([real, fake])
    counts = [len(s.sizes) for s in sides]
    if min(counts) < 2:
        reason = no_interval_reason(counts)
        return _interval(point, float("nan"), level, 0, f"{KERNEL_METHOD} ({reason})", reason=reason)
    cross = _cross(feats, sides, ids, 0, 1)
    variance = _kernel_jackknife(lambda keep: _mmd_value(sides[0], sides[1], cross, keep[0], keep[1]), counts)
    return _interval(point, variance + spread**2 / n_subsets, level, sum(counts), KERNEL_METHOD)


# ---------------------------------------------------------------------------------- paired differences
def paired_difference(real: Samples, fake_a: Samples, fake_b: Samples, kind: str = "frechet",
                      n_boot: int = 200, seed: int = 0, level: float = 0.95) -> Interval:
    """Interval for E[D(real, A) - D(real, B)] at a common N, the SAME real rows and tracks in both terms.

    The larger sets are first cut to the smallest N by a seeded draw without replacement. ``kind``:
    "frechet" (SE as ``frechet_interval``, over the tracks of real, A and B; a real track or fold enters
    or leaves both terms at once) or "kernel" (the full-set unbiased MMD^2, which is ``kernel_distance``
    when N <= its subset size; delete-a-track jackknife SE, a real track leaving both terms).
    ``excludes_zero``: A and B are distinguishable at this N; a negative point means A is closer to
    ``real``. For the floor comparison, B is the real training sequence and ``real`` the held-out one.
    """
    if kind not in ("frechet", "kernel"):
        raise ValueError(f"kind must be 'frechet' or 'kernel', got {kind!r}")
    n = min(len(real.features), len(fake_a.features), len(fake_b.features))
    rng = np.random.default_rng(seed)
    real, fake_a, fake_b = (_subsample(s, n, rng) for s in (real, fake_a, fake_b))
    if kind == "frechet":
        ea, eb = _FrechetEngine(real.features, fake_a.features), _FrechetEngine(real.features, fake_b.features)
        point = frechet_distance(real.features, fake_a.features) - frechet_distance(real.features, fake_b.features)
        variance, df, used, note = _frechet_se(lambda rows: ea.value(rows[0], rows[1]) - eb.value(rows[0], rows[2]),
                                               [real.groups, fake_a.groups, fake_b.groups], n_boot, rng)
        what = f"E[FD(real,A) - FD(real,B)] at N={n}; paired, SE as frechet_interval"
        return _interval(point, variance, level, used, _method(what, note), df, reason=note)
    sides, ids, feats = _kernel_sides([real, fake_a, fake_b])
    counts = [len(s.sizes) for s in sides]
    cross_a, cross_b = _cross(feats, sides, ids, 0, 1), _cross(feats, sides, ids, 0, 2)

    def difference(keep: list[np.ndarray]) -> float:
        return (_mmd_value(sides[0], sides[1], cross_a, keep[0], keep[1])
                - _mmd_value(sides[0], sides[2], cross_b, keep[0], keep[2]))

    point = difference([np.ones(c) for c in counts])
    what = f"E[MMD²u(real,A) - MMD²u(real,B)] at N={n}; paired delete-a-track jackknife SE, normal quantile"
    if min(counts) < 2:
        reason = no_interval_reason(counts)
        return _interval(point, float("nan"), level, 0, f"{what} ({reason})", reason=reason)
    return _interval(point, _kernel_jackknife(difference, counts), level, sum(counts), what)


# ----------------------------------------------------------------------------------------- FD_inf
def default_sizes(n_max: int) -> list[int]:
    """Five subsample sizes from N/4 to N, evenly spaced in 1/N (the fit's abscissa)."""
    inverse = np.linspace(1.0 / n_max, 4.0 / n_max, 5)
    return sorted({max(int(round(1.0 / v)), 2) for v in inverse})


def frechet_infinity(real: np.ndarray, fake: np.ndarray, sizes: Sequence[int] | None = None, draws: int = 3,
                     seed: int = 0) -> dict:
    """FD_inf (Chong & Forsyth, CVPR 2020): least-squares line of FD_N against 1/N, read at 1/N = 0.

    E[FD_N] ~ FD_inf + k/N. Each size N draws ``draws`` seeded subsets without replacement of N rows from
    EACH side (equal N); the line is fitted to all draws. Returns ``fd_inf`` (intercept), ``slope`` (k),
    ``sizes`` and ``values`` (mean FD per size). The 1/N law is asymptotic (N well above d): on Gaussians
    with d = 48 and N <= 2000 it removes most of the k/N bias (tested), but with rank-deficient
    covariances the curve bends: on the simulated FID-like design of ``scripts/interval_coverage.py``
    ("generator", d = 2048, N <= 1024) it gave 8.1 against a population FD of 3.8 (FD_1024 = 8.5).
    Below N ~ d read it as a trend, not as FD_inf. Default sizes: ``default_sizes``.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    n_max = min(len(real), len(fake))
    sizes = sorted({int(s) for s in (sizes if sizes is not None else default_sizes(n_max))})
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > n_max:
        raise ValueError(f"need >= 2 distinct sizes within [2, {n_max}], got {sizes}")
    engine = _FrechetEngine(real, fake)
    rng = np.random.default_rng(seed)
    xs, ys, means = [], [], []
    for size in sizes:
        values = [engine.value(np.sort(rng.permutation(len(real))[:size]), np.sort(rng.permutation(len(fake))[:size]))
                  for _ in range(draws)]
        xs += [1.0 / size] * draws
        ys += values
        means.append(float(np.mean(values)))
    slope, intercept = np.polyfit(xs, ys, 1)
    return {"fd_inf": float(intercept), "slope": float(slope), "sizes": sizes, "values": means}
