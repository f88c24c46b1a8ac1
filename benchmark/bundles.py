"""Result bundles: one folder per finished run that holds everything the report needs and nothing it can
recompute cheaply, so that reference rows travel with the code (``results/``) and no MLflow store must be shared.

A bundle lives at ``<root>/<dataset>/<profile>/<generator>/<seed>[/<tracker>][/<grid point>]/`` and holds:

- ``run.json``: the run record (``BUNDLE_FORMAT``): the resolved config, seed, dataset, data digests of the
  training and reference sequences, the parent run's and every stage run's tags, params and metrics (each
  metric with its ``_ci_low/_ci_high`` and N, SEG/DET/TRA with the AOGM parts, ``time_<stage>_s``), the
  machine class and CPU, the commit, the realism protocol version and the code version of every stage;
- ``features/<stage>.npz``: the equal-N Inception (crops) and I3D (clips) feature sets the realism, floor and
  oracle stages scored, with their track ids (``<set>_groups``), stored as ``FEATURE_DTYPE``: enough for a
  paired difference with any later row without the synthetic video;
- ``sample.png``: one sample frame of the synthetic video with its mask outlines;
- ``SHA256SUMS``: ``<sha256>  <file>`` for every other file. ``read_bundle`` refuses a bundle whose files do
  not match it (one line naming the file), and its own digest identifies the bundle in the store.

This module only reads and writes bundle folders; finding them is ``benchmark.shipped.entries("bundle")`` (the
one registry of shipped artefacts), moving runs between the MLflow store and bundles is ``benchmark.bundle_cli``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.checksums import SUMS, sign_folder, signed_subfolders, verify_folder
from benchmark.config import DEFAULT_TRACKER
from benchmark.io import atomic_directory

#: the version of the bundle layout and of ``run.json``'s fields
BUNDLE_FORMAT = 1
RECORD, SAMPLE, FEATURES = "run.json", "sample.png", "features"
#: the stages whose equal-N feature sets a bundle keeps
FEATURE_STAGES = ("realism", "floor", "oracle")
#: how features are stored: float16 keeps FID/FVD within 0.05 % of float64 (tests/test_bundles.py checks it on
#: real features) at a quarter of the size
FEATURE_DTYPE = "float16"
#: the most one bundle may hold (the issue's budget); an export over it is refused
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
#: what ``results/`` may hold once every headline table is in (``export`` warns past it)
MAX_RESULTS_BYTES = 150 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, its record and the sha256 of its ``SHA256SUMS`` (its identity)."""

    folder: Path
    record: dict[str, Any]
    digest: str

    def features(self, stage: str) -> Path | None:
        path = self.folder / FEATURES / f"{stage}.npz"
        return path if path.is_file() else None

    @property
    def sample(self) -> Path | None:
        path = self.folder / SAMPLE
        return path if path.is_file() else None


def path_part(value: Any) -> str:
    """A folder name for a coordinate of the bundle path (a grid point's ``key=value,...``, a generator)."""
    text = _SAFE.sub("_", str(value)).strip("._")
    if not text:
        raise ValueError(f"{value!r}: not usable as a folder name of a result bundle")
    return text


def bundle_path(dataset: str, profile: str, generator: str, seed: Any, tracker: str | None = None,
                grid_point: str | None = None, condition: str | None = None) -> Path:
    """``<dataset>/<profile>/<generator>/<seed>[/<tracker>][/<condition>][/<grid point>]``, relative to the
    results root; the default tracker (``learned``) and the default training condition (``synthetic``, the
    generator's video alone) add no level, so the main rows sit one level up."""
    parts = [dataset, profile, generator, str(seed)]
    if tracker and tracker != DEFAULT_TRACKER:
        parts.append(tracker)
    if condition and condition != "synthetic":
        parts.append(condition)
    if grid_point:
        parts.append(grid_point)
    return Path(*(path_part(p) for p in parts))


def compact_features(source: Path, target: Path) -> Path:
    """A ``features.npz`` (``benchmark.metrics.realism.save_feature_sets``) with the features cast to
    ``FEATURE_DTYPE``; the track ids are kept as they are."""
    import numpy as np  # here, not at module load: the CLI's parser imports this module

    with np.load(source) as data:
        arrays = {k: data[k].astype(FEATURE_DTYPE) if k.endswith("_features") else data[k] for k in data.files}
    with open(target, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return target


def expand_features(source: Path, target: Path) -> Path:
    """Inverse of ``compact_features``: the features back as float64, the format the report's paired
    comparisons read from a stage run's ``features.npz``."""
    import numpy as np

    with np.load(source) as data:
        arrays = {k: data[k].astype(np.float64) if k.endswith("_features") else data[k] for k in data.files}
    with open(target, "wb") as fh:
        np.savez(fh, **arrays)
    return target


def write_bundle(target: Path, record: Mapping[str, Any], features: Mapping[str, Path],
                 sample: bytes | None = None, overwrite: bool = False) -> Bundle:
    """Write a bundle folder at ``target`` atomically (a failure leaves nothing; an existing bundle is only
    replaced with ``overwrite``): ``run.json``, the compacted feature files, the sample PNG, ``SHA256SUMS``."""
    target = Path(target)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        (tmp / RECORD).write_text(json.dumps(dict(record), indent=1, sort_keys=True, default=str) + "\n")
        for stage, source in sorted(features.items()):
            (tmp / FEATURES).mkdir(exist_ok=True)
            compact_features(Path(source), tmp / FEATURES / f"{stage}.npz")
        if sample is not None:
            (tmp / SAMPLE).write_bytes(sample)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        if size > MAX_BUNDLE_BYTES:
            raise ValueError(f"{target}: the bundle would hold {size / 2**20:.1f} MiB, over the "
                             f"{MAX_BUNDLE_BYTES / 2**20:.0f} MiB budget of one bundle")
        sign_folder(tmp)
        _keep_nested_bundles(target, tmp)
    return read_bundle(target)


def _keep_nested_bundles(target: Path, staged: Path) -> None:
    """Copy the bundles nested in an existing ``target`` (other trackers, grid points of this seed) into the
    staged replacement: re-exporting a seed's bundle must not delete theirs."""
    if not target.is_dir():
        return
    nested = signed_subfolders(target)
    for folder in nested:
        if any(folder.is_relative_to(other) and folder != other for other in nested):
            continue  # copied with the bundle it is nested in
        relative = folder.relative_to(target)
        if not (staged / relative).exists():
            shutil.copytree(folder, staged / relative)


def verify_bundle(folder: Path) -> str:
    """Check every file against ``SHA256SUMS`` (``benchmark.checksums.verify_folder``: none missing, changed
    or unlisted) and that the record is there; returns the digest of ``SHA256SUMS``. A mismatch is refused
    with one line naming the file. A deliberately edited bundle is re-signed with ``sign_folder``."""
    folder = Path(folder)
    sums = folder / SUMS
    if not sums.is_file():
        raise ValueError(f"{sums}: missing; not a result bundle (or an unfinished one)")
    digest = verify_folder(folder)
    if not (folder / RECORD).is_file():
        raise ValueError(f"{folder / RECORD}: missing; not a result bundle")
    return digest


def read_bundle(folder: Path) -> Bundle:
    """A verified bundle (``verify_bundle``) with its record parsed and its format checked."""
    folder = Path(folder)
    digest = verify_bundle(folder)
    path = folder / RECORD
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("bundle_format") != BUNDLE_FORMAT:
        got = record.get("bundle_format") if isinstance(record, dict) else None
        raise ValueError(f"{path}: bundle format {got!r}, this code reads format {BUNDLE_FORMAT}")
    return Bundle(folder, record, digest)


def folder_bytes(root: Path) -> int:
    """The bytes of every file under ``root`` (the ``results/`` budget)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
