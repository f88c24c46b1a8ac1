"""Paired realism comparisons for Table 1: generator vs generator and generator vs the real-vs-real floor.

Separate intervals do not rank generators: two overlapping intervals can still hide a clear difference,
and two disjoint ones can come from different real subsamples. Every comparison here is a PAIRED
difference ``D(real, A) - D(real, B)`` at equal N, with the SAME real reference resample in each
bootstrap replicate (``benchmark.metrics.frechet.paired_difference``), for FID, KID, FVD and KVD.

The feature sets come from the store: each realism stage logs the equal-N feature sets it scored
(``features.npz``: ``reference_<kind>``, ``synthetic_<kind>``), and the floor stage logs the held-out
reference and the real TRAINING sequence's features. "vs floor" therefore compares a generator with
the real training video, scored exactly like it, against the same reference. Results are cached on
disk by the artifact URIs and settings, since the bootstrap of a 2048-d Fréchet distance takes seconds
per replicate on a small CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from itertools import combinations
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from benchmark.io import atomic_write_text
from benchmark.metrics.frechet import Samples
from benchmark.metrics.intervals import paired_difference
from benchmark.metrics.realism import load_feature_sets
from benchmark.paths import cache_dir
from reports.document import TableDoc, render_markdown

logger = logging.getLogger(__name__)

#: (metric shown, unit kind in features.npz, statistic of paired_difference)
FAMILIES = (("FID", "crops", "frechet"), ("KID", "crops", "kernel"), ("FVD", "clips", "frechet"),
            ("KVD", "clips", "kernel"))
FLOOR_SIDE = "real training sequence (floor)"


def _download(artifact_uri: str) -> dict[str, Samples]:
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri}/features.npz", dst_path=tmp)
        return load_feature_sets(Path(local))


def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "comparisons" / f"paired-{digest}.json"


def paired_comparisons(floor_uri: str, generators: dict[str, str], n_boot: int = 200, seed: int = 0,
                       level: float = 0.95) -> pd.DataFrame:
    """One row per (comparison, metric): difference, interval, SE, N, and whether the interval excludes 0.

    ``floor_uri``: artifact URI of the floor stage run (its ``reference_*`` sets are the common reference);
    ``generators``: generator name -> artifact URI of its realism stage run. Comparisons: every pair of
    generators (in the given order) and every generator vs the floor's training side.
    """
    key = {"floor": floor_uri, "generators": generators, "n_boot": n_boot, "seed": seed, "level": level, "v": 1}
    cached = _cache_path(key)
    if cached.is_file():
        return pd.DataFrame(json.loads(cached.read_text()))
    floor = _download(floor_uri)
    sets = {name: _download(uri) for name, uri in generators.items()}
    pairs = [(a, b) for a, b in combinations(generators, 2)] + [(name, FLOOR_SIDE) for name in generators]
    rows = []
    for metric_name, kind, statistic in FAMILIES:
        reference = floor.get(f"reference_{kind}")
        if reference is None:
            continue
        side = {name: s.get(f"synthetic_{kind}") for name, s in sets.items()}
        side[FLOOR_SIDE] = floor.get(f"synthetic_{kind}")
        for a, b in pairs:
            if side.get(a) is None or side.get(b) is None:
                continue
            n = min(len(reference.features), len(side[a].features), len(side[b].features))
            logger.info("paired %s: %s vs %s (N=%d, B=%d)", metric_name, a, b, n, n_boot)
            interval = paired_difference(reference, side[a], side[b], kind=statistic, n_boot=n_boot, seed=seed,
                                         level=level)
            rows.append({"comparison": f"{a} − {b}", "a": a, "b": b, "metric": metric_name, "n": n,
                         "difference": interval.point, "ci_low": interval.low, "ci_high": interval.high,
                         "se": interval.se, "excludes_zero": bool(interval.excludes_zero),
                         "better": (a if interval.point < 0 else b) if interval.excludes_zero else "neither"})
    atomic_write_text(cached, json.dumps(rows))
    return pd.DataFrame(rows)


def comparisons_display(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """One row per comparison, one column per metric: ``Δ [low, high]`` with a mark when 0 is excluded."""
    if table.empty:
        return table
    out: dict[str, dict[str, str]] = {}
    for _, row in table.iterrows():
        cell = f"{row['difference']:.{digits}g} [{row['ci_low']:.{digits}g}, {row['ci_high']:.{digits}g}]"
        cell += " *" if row["excludes_zero"] else ""
        out.setdefault(row["comparison"], {"comparison": row["comparison"]})[row["metric"]] = cell
        out[row["comparison"]][f"N {row['metric']}"] = str(int(row["n"]))
    frame = pd.DataFrame(list(out.values()))
    ordered = ["comparison"] + [c for m, _, _ in FAMILIES for c in (m, f"N {m}") if c in frame.columns]
    return frame[ordered].fillna("–")


READING_GUIDE = ("Paired differences D(reference, A) − D(reference, B) at equal N on the same reference rows; 95 % "
                 "interval = difference ± q·SE, SE from deleting tracks of the reference and of both generators in "
                 "the same statistic (the shared reference cancels). `*`: the interval excludes 0 (negative: A is "
                 f"closer to the real held-out video). \"{FLOOR_SIDE}\" is the real training video scored like a "
                 "generator.")


def comparisons_doc(table: pd.DataFrame, title: str) -> TableDoc:
    """Table 1b as a ``TableDoc``: the reading guide and ``comparisons_display``."""
    return TableDoc(title, comparisons_display(table), [READING_GUIDE], left=("comparison",),
                    empty="no paired comparisons: the floor or the generators' realism stages logged no features")


def comparisons_markdown(table: pd.DataFrame, title: str) -> str:
    """Table 1b in Markdown (``comparisons_doc`` rendered)."""
    return render_markdown(comparisons_doc(table, title))
