"""Named CTC training datasets: official URLs, fetch into the cache, or point at a local copy."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import tomllib
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmark.ctc import CTCFormatError, CTCSequence, list_sequences, validate_sequence
from benchmark.paths import cache_dir

DATA_ROOT_ENV = "SYNTHVID_DATA_ROOT"
#: the offline route: a ``shared/assets/ctc`` folder beside the checkout (this project's machines and CI)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "assets" / "ctc"
CTC_URL = "https://data.celltrackingchallenge.net/training-datasets/{name}.zip"


@dataclass(frozen=True)
class DatasetInfo:
    """A named CTC dataset.

    ``intensity_map``: the realism protocol's ONE frozen 8-bit map ``(lo, hi)`` for this dataset: the
    global P0.5 / P99.9 of all raw frames of both training-set sequences, pooled, computed once and
    written here so that every generator, the real-vs-real floor and every later run are scored under
    the same constants (realism-metrics.md 1.1). ``None``: derived the same way at run time (logged).
    ``intensity_dtype``: the dtype of the frames the map was derived from; the map holds for data in that
    dtype's units only (``benchmark.metrics.realism.check_intensity_units``).
    """

    name: str
    description: str
    train_sequence: str = "01"
    test_sequence: str = "02"
    intensity_map: tuple[float, float] | None = None
    intensity_dtype: str | None = None

    @property
    def url(self) -> str:
        return CTC_URL.format(name=self.name)


#: the frozen intensity maps (``python -m benchmark data intensity-map NAME --write`` writes them)
INTENSITY_MAPS = Path(__file__).with_name("intensity_maps.toml")


def frozen_intensity_maps(path: Path = INTENSITY_MAPS) -> dict[str, dict[str, object]]:
    """``intensity_maps.toml``: dataset -> {lo, hi, dtype, source}; a malformed entry is one line naming it."""
    with open(path, "rb") as fh:
        maps = tomllib.load(fh)
    for name, entry in maps.items():
        lo, hi = entry.get("lo"), entry.get("hi")
        if not (isinstance(lo, float) and isinstance(hi, float) and lo < hi and isinstance(entry.get("dtype"), str)):
            raise ValueError(f"{path}: [\"{name}\"] needs float lo < hi and a dtype string, got {entry}")
    return maps


def _with_map(info: DatasetInfo, maps: dict[str, dict[str, object]]) -> DatasetInfo:
    entry = maps.get(info.name)
    if entry is None:
        return info
    return DatasetInfo(info.name, info.description, info.train_sequence, info.test_sequence,
                       (float(entry["lo"]), float(entry["hi"])), str(entry["dtype"]))


_MAPS = frozen_intensity_maps()
DATASETS: dict[str, DatasetInfo] = {
    d.name: _with_map(d, _MAPS)
    for d in (
        DatasetInfo("Fluo-N2DL-HeLa", "HeLa cells stably expressing H2b-GFP, 700x1100 uint16, 92 frames"),
        DatasetInfo("Fluo-N2DH-GOWT1", "GFP-GOWT1 mouse stem cells, 1024x1024 uint8, 92 frames"),
        DatasetInfo("Fluo-N2DH-SIM+", "simulated HL60 nuclei (MitoGen output), 2 sequences of 65 and 150 frames"),
        DatasetInfo("Fluo-C2DL-MSC", "rat mesenchymal stem cells, 832x992 / 782x1200 uint16"),
        DatasetInfo("Fluo-C2DL-Huh7", "human hepatocarcinoma-derived Huh7 cells, whole-cell fluorescence"),
    )
}
#: The CTC's 2D fluorescence training sets (celltrackingchallenge.net/datasets): all five are registered.
#: The rest of its 2D list is brightfield, DIC or phase contrast (BF-C2DL-HSC, BF-C2DL-MuSC, DIC-C2DH-HeLa,
#: PhC-C2DH-U373, PhC-C2DL-PSC), which the generators here do not model; its C. elegans set is 3D only
#: (Fluo-N3DH-CE). ``tests/test_paper_cuts.py`` checks every entry's 2D name pattern and URL form.

#: the whole protocol (SEG, DET, TRA, FID, FVD) runs on it; the shared HeLa copy lacks half its frames
DEFAULT_DATASET = "Fluo-N2DH-GOWT1"


logger = logging.getLogger(__name__)


class DatasetNotFound(FileNotFoundError):
    pass


class DatasetLayoutError(DatasetNotFound):
    """The dataset's folder is there but not in CTC's layout: downloading another copy would not help."""


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def resolve_dataset(name: str, data_root: str | Path | None = None, fetch: bool = False) -> Path:
    """Folder of dataset ``name``: ``data_root/name`` when given (only there), else ``$SYNTHVID_DATA_ROOT/name``,
    else the cache, else ``../shared/assets/ctc/name`` beside the checkout.

    With ``fetch`` and no ``data_root`` given, a dataset found nowhere is downloaded into the cache first
    (``fetch_dataset``: progress bar, archive sha256 recorded and re-checked): the README's main command
    then works on a fresh machine with internet. An explicit ``data_root`` is never replaced by a download.
    Raises DatasetNotFound with one message that says how to provide the data.
    """
    info = dataset_info(name)
    if fetch and data_root is None:
        try:
            return resolve_dataset(name, None, fetch=False)
        except DatasetLayoutError:
            raise
        except DatasetNotFound:
            logger.info("%s is not on this machine: fetching it from %s", name, info.url)
            return fetch_dataset(name)
    if data_root is not None:  # the user said where the data is: no other copy stands in for it
        roots = [Path(data_root)]
    else:
        roots = [Path(os.environ[DATA_ROOT_ENV])] if os.environ.get(DATA_ROOT_ENV) else []
        roots += [cache_dir() / "datasets", *([SHARED_DATA] if SHARED_DATA.is_dir() else [])]
    for root in roots:
        folder = root.expanduser() / info.name
        if (folder / info.train_sequence).is_dir():
            return folder
    for root in roots:  # a folder that is there but not in CTC's layout: say what it holds, not "fetch it"
        folder = root.expanduser() / info.name
        if folder.is_dir():
            raise DatasetLayoutError(not_ctc_layout(folder, info))
    tried = ", ".join(str(r / info.name) for r in roots)
    raise DatasetNotFound(
        f"dataset {name} not found (looked in {tried}); run `python -m benchmark data fetch {name}` "
        f"(downloads {info.url}) or pass --data-root / set {DATA_ROOT_ENV} to a folder holding {name}/"
    )


def not_ctc_layout(folder: Path, info: DatasetInfo, shown: int = 8) -> str:
    """The line for a dataset folder without the training sequence: what it holds and what CTC expects (two-digit
    sequence folders with their ``_GT`` annotations), so ``1/`` and ``1_GT/`` are recognised as a naming slip."""
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as exc:
        return f"{folder}: cannot list the dataset folder ({exc.strerror or exc})"
    found = ", ".join(entries[:shown]) + (f", ... ({len(entries)} entries)" if len(entries) > shown else "")
    expected = f"{info.train_sequence}/, {info.train_sequence}_GT/, {info.test_sequence}/, {info.test_sequence}_GT/"
    return (f"{folder}: holds no CTC sequence folder {info.train_sequence}/ (found: {found or 'nothing'}); "
            f"CTC expects two-digit sequence folders with their annotations: {expected}")


def _download(url: str, dest: Path, progress: bool = True) -> str:
    """Download to ``dest`` with a progress bar; returns the sha256."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as fh:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def fetch_dataset(name: str, progress: bool = True) -> Path:
    """Download and unpack ``name`` into the cache (atomic); the archive's sha256 is recorded and re-checked."""
    info = dataset_info(name)
    root = cache_dir() / "datasets"
    target = root / info.name
    if (target / info.train_sequence).is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    record = root / "sha256.json"
    known = json.loads(record.read_text()) if record.is_file() else {}
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        archive = Path(tmp) / f"{info.name}.zip"
        try:
            sha = _download(info.url, archive, progress)
        except OSError as exc:
            raise DatasetNotFound(
                f"cannot download {info.url} ({exc}); without network, place a copy of {name}/ in a folder "
                f"and pass --data-root FOLDER or set {DATA_ROOT_ENV}"
            ) from None
        if name in known and known[name] != sha:
            raise ValueError(f"{archive.name}: sha256 {sha} differs from the recorded {known[name]}")
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "unpacked")
        except zipfile.BadZipFile:
            raise ValueError(f"{info.url}: downloaded file is not a zip archive") from None
        unpacked = next((p for p in (Path(tmp) / "unpacked").rglob(info.train_sequence) if p.is_dir()), None)
        if unpacked is None:
            raise ValueError(f"{info.url}: archive holds no sequence folder {info.train_sequence}/")
        shutil.move(str(unpacked.parent), target)
    known[name] = sha
    record.write_text(json.dumps(known, indent=2))
    return target


def _frame_facts(seq: CTCSequence) -> tuple[Counter, Counter, tuple[int, int] | None]:
    """Shapes and dtypes of EVERY readable raw frame (with counts) and the intensity range over them all;
    unreadable frames are left to the validator's report."""
    shapes: Counter = Counter()
    dtypes: Counter = Counter()
    lo, hi = None, None
    for t in seq.frames:
        try:
            image = seq.image(t)
        except CTCFormatError:
            continue
        shapes[image.shape] += 1
        dtypes[str(image.dtype)] += 1
        lo = image.min() if lo is None else min(lo, image.min())
        hi = image.max() if hi is None else max(hi, image.max())
    return shapes, dtypes, (int(lo), int(hi)) if lo is not None else None


def _cells_per_frame(seq: CTCSequence) -> list[int]:
    """Number of labelled cells (non-zero labels) in each readable GT TRA frame; an empty frame counts 0."""
    cells = []
    for t in seq.tra_files:
        try:
            cells.append(int(np.count_nonzero(np.unique(seq.tra(t)))))
        except CTCFormatError:
            continue
    return cells


def describe_sequence(seq: CTCSequence) -> dict:
    """Facts `data info` prints, each true of every frame: frames present/missing, shapes and dtypes (all of
    them when they differ), annotations, lineage counts (None without a readable man_track.txt), cells per
    TRA frame, intensities; ``problems`` lists what the validator finds wrong (missing frames aside)."""
    problems = [str(p) for p in validate_sequence(seq.dataset_dir, seq.name) if p.severity == "error"]
    try:
        tracks = seq.tracks if seq.has_tracks else None
    except CTCFormatError:
        tracks = None
    if tracks is None and seq.tra_files and not seq.has_tracks:
        problems.append(f"warning: {seq.track_file}: missing, so the lineage of the {len(seq.tra_files)} "
                        "TRA frames is unknown")
    shapes, dtypes, intensity = _frame_facts(seq)  # frames that differ are among the validator's problems
    cells = _cells_per_frame(seq)
    return {
        "sequence": seq.name,
        "frames": seq.n_frames,
        "frames_present": len(seq.frames),
        "missing_frames": seq.missing_frames,
        "shape": next(iter(shapes)) if len(shapes) == 1 else None,
        "dtype": next(iter(dtypes)) if len(dtypes) == 1 else None,
        "shapes": {"x".join(map(str, k)): n for k, n in shapes.items()},
        "dtypes": dict(dtypes),
        "gt_seg_frames": len(seq.seg_files),
        "gt_tra_frames": len(seq.tra_files),
        "st_seg_frames": len(seq.st_files),
        "tracks": len(tracks) if tracks is not None else None,
        "tracks_with_parent": sum(1 for t in tracks.values() if t.parent) if tracks is not None else None,
        "divisions": len({t.parent for t in tracks.values() if t.parent}) if tracks is not None else None,
        "cells_per_frame": (min(cells), float(np.mean(cells)), max(cells)) if cells else None,
        "intensity_range": intensity,
        "problems": problems,
    }


def describe_dataset(folder: Path) -> list[dict]:
    return [describe_sequence(CTCSequence(folder, name)) for name in list_sequences(folder)]
