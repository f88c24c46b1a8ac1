"""Result bundles: one folder per finished run that holds everything the report needs and nothing it can
recompute cheaply, so that reference rows travel with the code (``results/``) and no MLflow store must be shared.

A bundle lives at ``<root>/<dataset>/<profile>/<generator>/<seed>[/<tracker>][/<grid point>]/`` and holds:

- ``run.json``: the run record (``BUNDLE_FORMAT``): the resolved config, seed, dataset, data digests of the
  training and reference sequences, the parent run's and every stage run's tags, params and metrics (each
  metric with its ``_ci_low/_ci_high`` and N, SEG/DET/TRA with the AOGM parts, ``time_<stage>_s``), the
  machine class and CPU, the commit, the realism protocol version and the code version of every stage;
- ``features/<stage>.json``: the equal-N Inception (crops) and I3D (clips) feature sets the realism and floor
  stages scored (``FEATURE_STAGES``), with their track ids (``<set>_groups``): enough for a paired difference
  with any later row without the synthetic video. The manifest names each array by the sha256 of its content; the arrays
  (``FEATURE_DTYPE``) live once in the results root's feature store, ``_features/<sha256>.npz``, shared by every
  bundle that scored them: the reference side is the same in every bundle of a dataset and profile, the floor's
  real side too, and a generator's synthetic side is the same for every downstream variant of one video
  (format 1 kept ``features/<stage>.npz`` inside each bundle, 8 MB a stage; the one committed format-1 bundle,
  the cpu Table 1 real row, was rewritten as format 2 with the same arrays);
- ``sample.png``: one sample frame of the synthetic video with its mask outlines;
- ``SHA256SUMS``: ``<sha256>  <file>`` for every other file. ``read_bundle`` refuses a bundle whose files do
  not match it (one line naming the file), and its own digest identifies the bundle in the store.

This module only reads and writes bundle folders; finding them is ``benchmark.shipped.entries("bundle")`` (the
one registry of shipped artefacts), moving runs between the MLflow store and bundles is ``benchmark.bundle_cli``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.checksums import SUMS, sign_folder, signed_subfolders, verify_folder
from benchmark.config import DEFAULT_TRACKER
from benchmark.io import atomic_directory, atomic_write_bytes

#: the version of the bundle layout and of ``run.json``'s fields (2: features in the shared store)
BUNDLE_FORMAT = 2
RECORD, SAMPLE, FEATURES = "run.json", "sample.png", "features"
#: the feature store: a folder of the results root (``_``: not a bundle, skipped by bundle discovery)
FEATURE_STORE = "_features"
#: the stages whose equal-N feature sets a bundle keeps: those a paired difference reads (``reports.comparisons``:
#: generator vs generator, generator vs the floor). Not the oracle's: no table compares with them, its scores stay in
#: ``run.json``, and they would double a generator's first bundle (3.8 MB per side at the cpu profile's N, which
#: with the realism side and the sample frame is over the 8 MB budget)
FEATURE_STAGES = ("realism", "floor")
#: how features are stored: float16 keeps FID/FVD within 0.05 % of float64 (tests/test_bundles.py checks it on
#: real features) at a quarter of the size
FEATURE_DTYPE = "float16"
#: the most one bundle may add to the repository (its own files and the feature arrays new to the store; the
#: issue's budget); an export over it is refused
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

    def feature_stages(self) -> list[str]:
        """The stages whose feature sets the bundle holds."""
        return sorted(p.stem for p in (self.folder / FEATURES).glob("*.json"))

    def feature_arrays(self, stage: str) -> dict[str, Any] | None:
        """``stage``'s feature arrays as stored (``FEATURE_DTYPE``), each checked against its digest; None when the
        bundle holds none for it."""
        manifest = self.folder / FEATURES / f"{stage}.json"
        if not manifest.is_file():
            return None
        store = feature_store_of(self.folder)
        return {name: load_array(store, digest) for name, digest in read_manifest(manifest).items()}

    def verify_features(self) -> None:
        """Load every feature array the bundle names, so that a changed one is refused (one line naming the file)
        before anything is done with the bundle."""
        for stage in self.feature_stages():
            self.feature_arrays(stage)

    def write_features(self, stage: str, target: Path) -> Path | None:
        """``stage``'s features as the float64 ``features.npz`` a stage run logs (what the report's paired
        comparisons read); None when the bundle holds none for it."""
        import numpy as np

        arrays = self.feature_arrays(stage)
        if arrays is None:
            return None
        with open(target, "wb") as fh:
            np.savez(fh, **{k: v.astype(np.float64) if k.endswith("_features") else v for k, v in arrays.items()})
        return Path(target)

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


# ------------------------------------------------------------------------------------------- the feature store
def array_digest(array: Any) -> str:
    """sha256 of an array's dtype, shape and bytes (C order): its name in the feature store. Of the content, not of
    the ``.npz`` file, whose zip entries carry the time they were written."""
    import numpy as np

    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def store_array(store: Path, array: Any) -> tuple[str, Path | None]:
    """Put ``array`` into the feature store (atomically, ``benchmark.io.atomic_write_bytes``; once: an array
    already there is not rewritten); returns its digest and the file it added (None when it was there)."""
    import numpy as np

    digest = array_digest(array)
    path = Path(store) / f"{digest}.npz"
    if path.is_file():
        return digest, None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, a=array)
    return digest, atomic_write_bytes(path, buffer.getvalue())


def load_array(store: Path, digest: str) -> Any:
    """The array named ``digest``, refused (one line naming the file) when it is missing or its content is not
    what its name says."""
    import numpy as np

    path = Path(store) / f"{digest}.npz"
    if not path.is_file():
        raise ValueError(f"{path}: missing from the feature store (commit results/{FEATURE_STORE}/ with the bundles)")
    with np.load(path, allow_pickle=False) as data:
        array = data["a"]
    if array_digest(array) != digest:
        raise ValueError(f"{path}: its content does not match its name (a changed or corrupted feature array)")
    return array


def feature_store_of(folder: Path) -> Path:
    """The feature store of the bundle at ``folder``: ``_features/`` in the nearest folder above it that has one."""
    for parent in Path(folder).resolve().parents:
        if (parent / FEATURE_STORE).is_dir():
            return parent / FEATURE_STORE
    raise ValueError(f"{folder}: no {FEATURE_STORE}/ folder above this bundle; its feature arrays cannot be found")


def read_manifest(path: Path) -> dict[str, str]:
    """A ``features/<stage>.json``: array name -> digest, refused with one line when malformed."""
    try:
        manifest = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    arrays = manifest.get("arrays") if isinstance(manifest, dict) else None
    if not isinstance(arrays, dict) or not all(isinstance(v, str) and len(v) == 64 for v in arrays.values()):
        raise ValueError(f"{path}: not a feature manifest (want {{\"arrays\": {{name: sha256}}}})")
    return arrays


def store_features(source: Path, store: Path, added: list[Path]) -> dict[str, str]:
    """A stage's ``features.npz`` (``benchmark.metrics.realism.save_feature_sets``) into the store, the features
    cast to ``FEATURE_DTYPE`` and the track ids kept: its manifest; the files new to the store go to ``added``."""
    import numpy as np

    manifest = {}
    with np.load(source, allow_pickle=False) as data:
        for key in data.files:
            array = data[key].astype(FEATURE_DTYPE) if key.endswith("_features") else data[key]
            manifest[key], new = store_array(store, array)
            added += [new] if new is not None else []
    return manifest


# ------------------------------------------------------------------------------------------- bundles
def write_bundle(target: Path, record: Mapping[str, Any], features: Mapping[str, Path],
                 sample: bytes | None = None, overwrite: bool = False, store: Path | None = None) -> Bundle:
    """Write a bundle folder at ``target`` atomically (a failure leaves nothing; an existing bundle is only
    replaced with ``overwrite``): ``run.json``, the feature manifests (their arrays into ``store``, the
    ``_features/`` folder of the results root), the sample PNG, ``SHA256SUMS``. The arrays an export added to the
    store are removed again when it fails (over budget, or any error), so no unnamed array is left to commit."""
    target = Path(target)
    if features and store is None:
        raise ValueError(f"{target}: a bundle with feature sets needs the feature store (the results root's "
                         f"{FEATURE_STORE}/)")
    added: list[Path] = []
    try:
        with atomic_directory(target, overwrite=overwrite) as tmp:
            (tmp / RECORD).write_text(json.dumps(dict(record), indent=1, sort_keys=True, default=str) + "\n")
            for stage, source in sorted(features.items()):
                (tmp / FEATURES).mkdir(exist_ok=True)
                manifest = store_features(Path(source), Path(store), added)
                (tmp / FEATURES / f"{stage}.json").write_text(json.dumps({"arrays": manifest}, indent=1, sort_keys=True)
                                                              + "\n")
            if sample is not None:
                (tmp / SAMPLE).write_bytes(sample)
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            size = sum(p.stat().st_size for p in [*files, *added])
            if size > MAX_BUNDLE_BYTES:
                raise ValueError(f"{target}: the bundle would add {size / 2**20:.1f} MiB (its files and its new feature "
                                 f"arrays), over the {MAX_BUNDLE_BYTES / 2**20:.0f} MiB budget of one bundle")
            sign_folder(tmp)
            _keep_nested_bundles(target, tmp)
    except BaseException:
        for path in added:
            path.unlink(missing_ok=True)
        raise
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
    manifests = sorted((folder / FEATURES).glob("*.json"))
    if manifests:  # every array it names is in the store (their content is checked when they are loaded)
        store = feature_store_of(folder)
        for manifest in manifests:
            for array in read_manifest(manifest).values():
                if not (store / f"{array}.npz").is_file():
                    raise ValueError(f"{store / f'{array}.npz'}: missing from the feature store, named by {manifest}")
    return Bundle(folder, record, digest)


def folder_bytes(root: Path) -> int:
    """The bytes of every file under ``root`` (the ``results/`` budget)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
