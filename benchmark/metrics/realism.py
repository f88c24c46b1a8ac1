"""The realism protocol (realism-metrics.md section 1): FID/KID on cell crops, FVD/KVD on cell clips.

- Intensity: one frozen map ``v -> clip((v-lo)/(hi-lo), 0, 1) -> round(255 v) -> uint8`` with ``lo, hi``
  = global (P0.5, P99.9) of the REAL training frames; the same constants for generated data.
- Crops: 96 x 96 around every annotated cell's full-mask centroid (``full_masks``), reflect-padded,
  neighbours kept, for every dataset (GOWT1's larger nuclei are cut too; a fixed size keeps FID
  comparable across datasets).
- Clips: 16-frame windows at stride 8 where the cell is present in all 16 frames; a fixed 96 x 96 box
  centred on the mean centroid over the window (so migration stays visible); frames squash-resized to
  224 for I3D; features = 400-d time-averaged logits. ``clip_mode='track'`` cuts windows inside one
  track, so no clip spans a mitosis; ``'lineage'`` cuts them along lineage paths that follow a mother
  into ONE of her daughters (picked by a seeded draw per mother), so clips can show a division.
- One reference for every generator: the real HELD-OUT sequence (the one the downstream models are
  tested on) under ONE frozen intensity map per dataset (``benchmark.datasets.DatasetInfo
  .intensity_map``); the real-vs-real floor is the training sequence against that same reference.
- Same N both sides (seeded shuffle of the larger side). Intervals (``benchmark.metrics.intervals``):
  point +- q SE for the expected distance AT THIS N and track design, SE from track jackknives and
  split halves (no resampling with replacement, so no duplicated rows). FID with N < 2048 and FVD with
  N < 400 are flagged rank-deficient; FD_inf (``frechet_infinity``) extrapolates the Fréchet
  distance to N -> infinity from subsamples.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from benchmark import mutants
from benchmark.assets import ResolvedWeight, resolve
from benchmark.ctc import CTCSequence, Track
from benchmark.ctc.crops import annotated_frames, full_masks
from benchmark.ctc.digest import file_digests, sequence_digest
from benchmark.datasets import DATASETS
from benchmark.io import atomic_write
from benchmark.metrics.frechet import MIN_FID_N, MIN_FVD_N, Samples, frechet_distance, kernel_distance
from benchmark.metrics.intervals import (
    INTERVAL_TAG,
    Interval,
    frechet_infinity,
    frechet_interval,
    kernel_interval,
)
from benchmark.paths import cache_dir as default_cache_dir

logger = logging.getLogger(__name__)
PROTOCOL_VERSION = "2"
CLIP_MODES = ("track", "lineage")


@dataclass
class RealismConfig:
    """Protocol constants. ``intensity_range=None`` derives (lo, hi) from the real sequence passed in."""

    crop_size: int = 96
    clip_length: int = 16
    clip_stride: int = 8
    clip_box: int = 96
    clip_mode: str = "track"  # "track": windows inside one track; "lineage": mother -> one daughter
    i3d_size: int = 224
    percentiles: tuple[float, float] = (0.5, 99.9)
    intensity_range: tuple[float, float] | None = None
    max_crops: int | None = None  # cap per sequence, drawn by seeded shuffle before feature extraction
    max_clips: int | None = None  # None = all (the protocol); caps are for tests and quick looks
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    n_bootstrap: int = 200
    ci_level: float = 0.95
    seed: int = 0
    fid: bool = True
    fvd: bool = True
    min_fvd_n: int = MIN_FVD_N
    min_fid_n: int = MIN_FID_N
    fd_infinity: bool = True  # FD_inf: Fréchet distances of subsamples extrapolated in 1/N
    fd_infinity_draws: int = 3
    batch_size_crops: int = 50
    batch_size_clips: int = 4
    progress: bool = True

    def __post_init__(self) -> None:
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"realism.clip_mode must be one of {', '.join(CLIP_MODES)}, got {self.clip_mode!r}")
        for name in ("crop_size", "clip_length", "clip_stride", "clip_box", "i3d_size", "kid_subset_size",
                     "kid_subsets", "batch_size_crops", "batch_size_clips", "fd_infinity_draws"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"realism.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_bootstrap < 0:
            raise ValueError(f"realism.n_bootstrap must be >= 0, got {self.n_bootstrap!r}")
        if not 0.5 <= self.ci_level < 1:
            raise ValueError(f"realism.ci_level must be in [0.5, 1), got {self.ci_level!r}")
        for name in ("max_crops", "max_clips"):
            value = getattr(self, name)
            if value is not None and int(value) < 2:
                raise ValueError(f"realism.{name} must be >= 2 (or absent), got {value!r}")
        if not (self.fid or self.fvd):
            raise ValueError("realism: both fid and fvd are off, nothing to score")
        if self.intensity_range is not None:
            lo, hi = (float(v) for v in self.intensity_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):  # lo == hi divides by zero
                raise ValueError(f"realism.intensity_range must be finite with lo < hi, got ({lo:g}, {hi:g})")

    def protocol_key(self) -> dict:
        """Fields that change features (part of the feature-cache key)."""
        return {"crop_size": self.crop_size, "clip_length": self.clip_length, "clip_stride": self.clip_stride,
                "clip_box": self.clip_box, "i3d_size": self.i3d_size, "clip_mode": self.clip_mode,
                "version": PROTOCOL_VERSION}


# ------------------------------------------------------------------------------------------- intensity
def intensity_range(sequences: list[CTCSequence], percentiles: tuple[float, float] = (0.5, 99.9)) -> tuple[float, float]:
    """Global (lo, hi) percentiles over all raw frames of ``sequences``, pooled (exact, via histograms for ints)."""
    hist: np.ndarray | None = None
    floats: list[np.ndarray] = []
    for seq in sequences:
        for t in seq.frames:
            image = seq.image(t)
            if np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize <= 2 and image.min() >= 0:
                counts = np.bincount(image.ravel(), minlength=65536 if image.dtype.itemsize == 2 else 256)
                hist = counts if hist is None else _add_padded(hist, counts)
            else:
                floats.append(image.ravel().astype(np.float64))
    if floats:
        values = np.concatenate(floats + ([np.repeat(np.arange(len(hist)), hist)] if hist is not None else []))
        lo, hi = np.percentile(values, percentiles)
        return float(lo), float(hi)
    if hist is None:
        raise ValueError("no raw frames to derive the intensity range from")
    cdf = np.cumsum(hist) / hist.sum()
    lo, hi = (float(np.searchsorted(cdf, p / 100.0)) for p in percentiles)
    if hi <= lo:
        raise ValueError(f"degenerate intensity range ({lo}, {hi}) from {sequences}")
    return lo, hi


def reference_intensity_map(dataset: str, sequences: list[CTCSequence],
                            percentiles: tuple[float, float] = (0.5, 99.9)) -> tuple[tuple[float, float], str]:
    """The dataset's ONE intensity map and where it came from: the registry's frozen constants, or (for a
    dataset without them) the pooled percentiles of ``sequences`` (the real training and held-out ones)."""
    info = DATASETS.get(dataset)
    if info is not None and info.intensity_map is not None:
        return tuple(info.intensity_map), f"frozen for {dataset} (benchmark.datasets)"
    names = "+".join(s.name for s in sequences)
    return intensity_range(sequences, percentiles), f"pooled P{percentiles[0]}/P{percentiles[1]} of {names}"


#: a sequence in another dtype than the map's data whose brightest pixels (P99.9) land below this fraction of
#: the map's span is not in that data's units (a copy normalised to 0..1, or divided down): refused
MIN_MAPPED_SPAN = 0.05


def map_dtype(real: CTCSequence, intensity_map: tuple[float, float]) -> tuple[np.dtype, str]:
    """The dtype whose units ``intensity_map`` is in, and what says so: the registry's ``intensity_dtype``
    when the map is the dataset's frozen one (the real folder is named after a registered dataset), else the
    dtype of the real reference's frames (a map derived from them, or one given with ``--intensity``)."""
    info = DATASETS.get(real.dataset_dir.name)
    if (info is not None and info.intensity_dtype and info.intensity_map is not None
            and tuple(map(float, info.intensity_map)) == tuple(map(float, intensity_map))):
        return np.dtype(info.intensity_dtype), f"frozen for {info.name}"
    return _frame_dtypes(real)[0][1], f"derived from {real.image_dir}"


def _frame_dtypes(seq: CTCSequence) -> list[tuple[int, np.dtype]]:
    """``(t, dtype)`` of every raw frame, from the TIFF headers (no pixel is decoded)."""
    import tifffile

    out = []
    for t, path in seq.image_files.items():
        try:
            with tifffile.TiffFile(path) as tif:
                out.append((t, np.dtype(tif.pages[0].dtype)))
        except Exception:  # noqa: BLE001 - tifffile raises many types: read_tiff names the file and the problem
            out.append((t, seq.image(t).dtype))
    if not out:
        raise ValueError(f"{seq.image_dir}: no raw frames")
    return out


def check_intensity_units(seq: CTCSequence, intensity_map: tuple[float, float], dtype: np.dtype,
                          source: str) -> None:
    """Refuse a sequence that ``intensity_map`` would map to nonsense, before any feature is computed.

    The map (lo, hi) holds for frames in the units of the data it was derived from, of ``dtype`` (GOWT1:
    uint8, ``0..123``). Frames of that dtype are taken as they are (a dim or saturated generator output is
    a real, bad score). Frames of ANOTHER dtype are a conversion, which may have changed the units: they are
    refused in one line naming the sequence, its dtype and value range when their values leave the range
    of ``dtype`` (a uint16 copy x256 of uint8 data) or when their brightest pixels (P99.9) map below
    ``MIN_MAPPED_SPAN`` of the map (a float copy normalised to 0..1). Nothing is rescaled silently: a
    conversion in the same units (uint16, int32 or float32 holding the uint8 values) scores as the original.
    """
    lo, hi = (float(v) for v in intensity_map)
    foreign = {t: d for t, d in _frame_dtypes(seq) if d != dtype}
    if not foreign:
        return
    low, high, top = math.inf, -math.inf, -math.inf
    for t in foreign:
        image = seq.image(t)
        low, high = min(low, float(image.min())), max(high, float(image.max()))
        top = max(top, float(np.percentile(image, 99.9)))
    kinds = "/".join(sorted({str(d) for d in foreign.values()}))
    what = (f"{seq.image_dir}: frames are {kinds} with values {low:g}..{high:g}, but the intensity "
            f"map {lo:g}..{hi:g} ({source}) is for {dtype} data")
    fix = "convert the frames to that data's units (or give metrics realism --intensity LO HI)"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if low < info.min or high > info.max:
            raise ValueError(f"{what}, whose values lie in {info.min}..{info.max}: {fix}")
    if hi > lo and (top - lo) / (hi - lo) < MIN_MAPPED_SPAN:
        level = max(0, round(255 * (top - lo) / (hi - lo)))
        raise ValueError(f"{what}: their P99.9 {top:g} maps to grey level {level} of 255, so they are not in "
                         f"that data's units; {fix}")


def shared_inputs(real: CTCSequence, synthetic: list[CTCSequence]) -> str | None:
    """One line saying which synthetic sequence holds the real reference's data, or None. The same data on
    both sides gives FID 0 with an interval that excludes 0, and shared frames pull every score towards 0,
    which reads as a perfect generator. Compared by content (``sequence_digest``, then each raw frame's
    sha256), so a copy under another path or name is caught too."""
    real_digest = sequence_digest(real)
    real_frames = dict(zip(file_digests(real.image_files.values()), real.image_files.values(), strict=True))
    for seq in synthetic:
        if sequence_digest(seq) == real_digest:
            return (f"{seq.image_dir}: the same data as the real reference {real.image_dir} (sequence digest "
                    f"{real_digest[:12]}); a sequence scored against itself says nothing of realism")
        files = list(seq.image_files.values())
        shared = [(p, real_frames[d]) for p, d in zip(files, file_digests(files), strict=True) if d in real_frames]
        if shared:
            return (f"{seq.image_dir}: {len(shared)} of {len(files)} raw frames are identical to frames of the real "
                    f"reference {real.image_dir} (e.g. {shared[0][0].name} = {shared[0][1].name}); shared frames "
                    "pull every score towards 0")
    return None


def protocol_tags(dataset: str, reference: str, intensity_map: tuple[float, float], clip_mode: str,
                  intensity_source: str = "") -> dict[str, str]:
    """Tags that define which numbers are comparable: rows of one table must agree on all of them."""
    tags = {"realism_reference": f"{dataset}/{reference}",
            "realism_intensity_map": f"{intensity_map[0]:g}..{intensity_map[1]:g}",
            "realism_clip_mode": clip_mode,
            "realism_interval": INTERVAL_TAG}
    if intensity_source:
        tags["realism_intensity_source"] = intensity_source
    return tags


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(len(a), len(b))
    return np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b)))


def to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Frozen intensity map to 8 bit (no per-image normalisation)."""
    scaled = np.clip((image.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------------- units
@dataclass
class Units:
    """Crops ``(N, S, S)`` and clips ``(M, T, S, S)`` (uint8) of one sequence with their track ids and rows."""

    crops: np.ndarray
    crop_groups: np.ndarray
    crop_rows: np.ndarray  # (N, 2): label, t
    clips: np.ndarray
    clip_groups: np.ndarray
    clip_rows: np.ndarray  # (M, 2): label, t0


def _cut(padded: np.ndarray, cy: float, cx: float, size: int, pad: int) -> np.ndarray:
    y0 = int(round(cy)) - size // 2 + pad
    x0 = int(round(cx)) - size // 2 + pad
    return padded[y0 : y0 + size, x0 : x0 + size]


def extract_units(seq: CTCSequence, lo: float, hi: float, config: RealismConfig, crops: bool = True,
                  clips: bool = True) -> Units:
    """Cut the protocol's crops and clips from one annotated sequence (raw frames + TRA markers)."""
    frames = annotated_frames(seq)
    pad = max(config.crop_size, config.clip_box)
    centres: dict[int, dict[int, tuple[float, float]]] = {}
    padded: dict[int, np.ndarray] = {}
    crop_list, crop_rows = [], []
    for t in tqdm(frames, desc=f"cells {seq.dataset_dir.name}/{seq.name}", disable=not config.progress, leave=False):
        masks = full_masks(seq, t)
        labels = [int(v) for v in np.unique(masks) if v]
        if not labels:
            centres[t] = {}
            continue
        points = ndimage.center_of_mass(np.ones(masks.shape, bool), masks, labels)
        centres[t] = dict(zip(labels, points, strict=True))
        padded[t] = np.pad(to_uint8(seq.image(t), lo, hi), pad, mode="reflect")
        if crops:
            for label, (cy, cx) in centres[t].items():
                crop_list.append(_cut(padded[t], cy, cx, config.crop_size, pad))
                crop_rows.append((label, t))
    clip_list, clip_rows = [], []
    if clips and seq.has_tracks:
        length = config.clip_length
        for group, path in clip_paths(seq.tracks, config.clip_mode, config.seed):
            begin, end = min(path), max(path)
            for t0 in range(begin, end - length + 2, config.clip_stride):
                window = range(t0, t0 + length)
                if not all(t in path and path[t] in centres.get(t, {}) for t in window):
                    continue
                cy = float(np.mean([centres[t][path[t]][0] for t in window]))
                cx = float(np.mean([centres[t][path[t]][1] for t in window]))
                clip_list.append(np.stack([_cut(padded[t], cy, cx, config.clip_box, pad) for t in window]))
                clip_rows.append((group, t0))
    size, box = config.crop_size, config.clip_box
    crop_rows_a = np.array(crop_rows, np.int64).reshape(-1, 2)
    clip_rows_a = np.array(clip_rows, np.int64).reshape(-1, 2)
    return Units(
        crops=np.stack(crop_list) if crop_list else np.zeros((0, size, size), np.uint8),
        crop_groups=crop_rows_a[:, 0], crop_rows=crop_rows_a,
        clips=np.stack(clip_list) if clip_list else np.zeros((0, config.clip_length, box, box), np.uint8),
        clip_groups=clip_rows_a[:, 0], clip_rows=clip_rows_a,
    )


def clip_paths(tracks: dict[int, Track], mode: str, seed: int = 0) -> list[tuple[int, dict[int, int]]]:
    """Label paths that clips are cut along: ``[(group id, {t: label}), ...]``.

    ``'track'``: one path per track (a clip never spans a mitosis). ``'lineage'``: a path starts at every
    track that does not continue its mother's path and follows, at each division, ONE daughter chosen by
    a draw seeded by (seed, mother label); the other daughters start paths of their own. Every track
    lies on exactly one path, so no frame of a cell is cut twice; the group id (the cluster of the
    bootstrap) is the path's first label.
    """
    if mode == "track":
        return [(label, {t: label for t in range(tr.begin, tr.end + 1)}) for label, tr in sorted(tracks.items())]
    if mode != "lineage":
        raise ValueError(f"clip mode must be one of {', '.join(CLIP_MODES)}, got {mode!r}")
    children: dict[int, list[int]] = {}
    for label, track in sorted(tracks.items()):
        if track.parent in tracks:
            children.setdefault(track.parent, []).append(label)
    continues = set()
    for mother, kids in children.items():
        pick = np.random.default_rng([seed, mother]).integers(len(kids))
        continues.add(sorted(kids)[int(pick)])
    paths = []
    for label in sorted(tracks):
        if label in continues:
            continue
        path: dict[int, int] = {}
        current: int | None = label
        while current is not None:
            track = tracks[current]
            path.update({t: current for t in range(track.begin, track.end + 1)})
            current = next((k for k in children.get(current, []) if k in continues), None)
        paths.append((label, path))
    return paths


@functools.lru_cache(maxsize=2)
def _units_both(dataset_dir: Path, name: str, lo: float, hi: float, config_json: str) -> Units:
    """Crops and clips of a sequence in one pass over its frames (full masks are the costly part)."""
    fields = json.loads(config_json)
    fields["percentiles"] = tuple(fields["percentiles"])
    fields["intensity_range"] = tuple(fields["intensity_range"]) if fields["intensity_range"] else None
    return extract_units(CTCSequence(dataset_dir, name), lo, hi, RealismConfig(**fields))


# ------------------------------------------------------------------------------------------- features + cache
@dataclass
class FeatureSet:
    features: np.ndarray  # (N, d) float64
    groups: np.ndarray  # track id per row, prefixed per sequence so ids never collide
    rows: list[tuple[str, int, int]]  # (sequence, label, t or t0)


class Extractors:
    """Lazily built FID/FVD networks with their weight records (built once per process)."""

    def __init__(self, fid_weight: ResolvedWeight | None = None, fvd_weight: ResolvedWeight | None = None) -> None:
        self._fid_weight, self._fvd_weight = fid_weight, fvd_weight
        self._fid = self._fvd = None

    @property
    def fid_weight(self) -> ResolvedWeight:
        self._fid_weight = self._fid_weight or resolve("fid-inception")
        return self._fid_weight

    @property
    def fvd_weight(self) -> ResolvedWeight:
        self._fvd_weight = self._fvd_weight or resolve("i3d-kinetics-400")
        return self._fvd_weight

    def fid_model(self):
        if self._fid is None:
            from benchmark.metrics.inception import fid_inception_v3

            self._fid, _ = fid_inception_v3(self.fid_weight)
        return self._fid

    def fvd_model(self):
        if self._fvd is None:
            from benchmark.metrics.i3d import i3d_kinetics400

            self._fvd, _ = i3d_kinetics400(self.fvd_weight)
        return self._fvd

    def crop_features(self, crops: np.ndarray, batch_size: int, progress: bool) -> np.ndarray:
        from benchmark.metrics.inception import inception_features

        return _batched(lambda x: inception_features(self.fid_model(), x, batch_size), crops, 10 * batch_size,
                        "FID features", progress)

    def clip_features(self, clips: np.ndarray, batch_size: int, progress: bool) -> np.ndarray:
        from benchmark.metrics.i3d import i3d_features

        return _batched(lambda x: i3d_features(self.fvd_model(), x, batch_size), clips, batch_size,
                        "FVD features", progress)


def _batched(fn, data: np.ndarray, chunk: int, desc: str, progress: bool) -> np.ndarray:
    parts = [fn(data[i : i + chunk]) for i in tqdm(range(0, len(data), chunk), desc=desc,
                                                    disable=not progress, leave=False)]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _inputs_fingerprint(seq: CTCSequence) -> list:
    """Names and content hashes of the files the features are computed from (raw frames, GT TRA, tracks)."""
    files = list(seq.image_files.values()) + list(seq.tra_files.values())
    if seq.has_tracks:
        files.append(seq.track_file)
    return [[p.relative_to(seq.dataset_dir).as_posix(), sha] for p, sha in zip(files, file_digests(files), strict=True)]


def sequence_features(seq: CTCSequence, kind: str, lo: float, hi: float, config: RealismConfig,
                      extractors: Extractors, cache_dir: Path | None) -> FeatureSet:
    """Features of one sequence's crops (``kind='crops'``) or clips (``'clips'``), cached as npz.

    The cache key hashes the input files (names and contents), the weight sha256, the intensity
    constants and the protocol fields, so real features are computed once.
    """
    weight = extractors.fid_weight if kind == "crops" else extractors.fvd_weight
    cap = config.max_crops if kind == "crops" else config.max_clips
    key_data = {"kind": kind, "inputs": _inputs_fingerprint(seq), "weight": weight.sha256,
                "intensity": [lo, hi], "protocol": config.protocol_key(), "torch": torch.__version__,
                "cap": cap, "seed": config.seed if cap is not None else None}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "features" / f"{kind}-{key}.npz" if cache_dir is not None else None
    tag = f"{seq.dataset_dir.name}/{seq.name}"
    if path is not None and path.is_file():
        with np.load(path) as data:
            rows = [(tag, int(a), int(b)) for a, b in data["rows"]]
            return FeatureSet(data["features"], np.array([f"{tag}:{g}" for g in data["rows"][:, 0]]), rows)
    units = _units_both(seq.dataset_dir, seq.name, lo, hi, json.dumps(dataclasses.asdict(config), default=str))
    if cap is not None:  # seeded subsample BEFORE the expensive network (same rows every run)
        units = _cap_units(units, kind, cap, np.random.default_rng(config.seed))
    if kind == "crops":
        rows_a = units.crop_rows
        feats = (extractors.crop_features(units.crops, config.batch_size_crops, config.progress)
                 if len(units.crops) else np.zeros((0, 2048)))
    else:
        rows_a = units.clip_rows
        feats = (extractors.clip_features(units.clips, config.batch_size_clips, config.progress)
                 if len(units.clips) else np.zeros((0, 400)))
    if path is not None:
        _save_npz(path, features=feats, rows=rows_a)
    return FeatureSet(feats, np.array([f"{tag}:{g}" for g in rows_a[:, 0]]),
                      [(tag, int(a), int(b)) for a, b in rows_a])


def _cap_units(units: Units, kind: str, cap: int, rng: np.random.Generator) -> Units:
    n = len(units.crops) if kind == "crops" else len(units.clips)
    if n <= cap:
        return units
    pick = np.sort(rng.permutation(n)[:cap])
    if kind == "crops":
        return dataclasses.replace(units, crops=units.crops[pick], crop_groups=units.crop_groups[pick],
                                   crop_rows=units.crop_rows[pick])
    return dataclasses.replace(units, clips=units.clips[pick], clip_groups=units.clip_groups[pick],
                               clip_rows=units.clip_rows[pick])


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically; through an open file, so that numpy appends no ``.npz`` to the name."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def _concat(sets: list[FeatureSet]) -> FeatureSet:
    sets = [s for s in sets if len(s.features)]
    if not sets:
        return FeatureSet(np.zeros((0, 1)), np.array([], dtype=str), [])
    return FeatureSet(np.concatenate([s.features for s in sets]), np.concatenate([s.groups for s in sets]),
                      [r for s in sets for r in s.rows])


# ------------------------------------------------------------------------------------------- scores
FAMILIES = (  # (config flag, unit kind, Fréchet name, kernel name, config field of the rank minimum, weight)
    ("fid", "crops", "fid", "kid", "min_fid_n", "fid_weight"),
    ("fvd", "clips", "fvd", "kvd", "min_fvd_n", "fvd_weight"),
)


def _subsample(fs: FeatureSet, n: int, rng: np.random.Generator) -> Samples:
    pick = np.sort(rng.permutation(len(fs.features))[:n])
    return Samples(fs.features[pick], fs.groups[pick])


def _interval_fields(prefix: str, interval: Interval | None, why: str = "") -> dict[str, float | str | None]:
    """``<prefix>_ci_low/_ci_high/_se`` and ``<prefix>_ci_reason``: why there is no interval (empty when there
    is one), so that no printer shows a bare NaN; ``why`` is the reason when ``interval`` is None."""
    if interval is None:
        return {f"{prefix}_ci_low": None, f"{prefix}_ci_high": None, f"{prefix}_se": None, f"{prefix}_ci_reason": why}
    return {f"{prefix}_ci_low": interval.low, f"{prefix}_ci_high": interval.high, f"{prefix}_se": interval.se,
            f"{prefix}_ci_reason": interval.reason}


def equal_n_samples(real: FeatureSet, fake: FeatureSet, seed: int) -> tuple[Samples, Samples]:
    """Both sides at the same N (the smaller one), by a seeded draw: what every score is computed on."""
    n = min(len(real.features), len(fake.features))
    rng = np.random.default_rng(seed)
    return _subsample(real, n, rng), _subsample(fake, n, rng)


def score_pair(real: FeatureSet, fake: FeatureSet, name: str, kernel_name: str, min_n: int,
               config: RealismConfig) -> dict[str, float | int | bool | str | None]:
    """Fréchet distance, unbiased kernel distance, their intervals and FD_inf of one feature family at equal N."""
    n = min(len(real.features), len(fake.features))
    out: dict[str, float | int | bool | str | None] = {
        f"n_{name}": n, f"n_{name}_real_total": len(real.features), f"n_{name}_synthetic_total": len(fake.features),
        f"{name}_rank_deficient": bool(n < min_n),
    }
    if n < 2:
        out.update({name: None, kernel_name: None, f"{kernel_name}_std": None, f"{name}_inf": None})
        why = f"n/a (N = {n} per side: no score, so no interval)"
        out.update(_interval_fields(name, None, why))
        out.update(_interval_fields(kernel_name, None, why))
        return out
    a, b = equal_n_samples(real, fake, config.seed)

    out[name] = frechet_distance(a.features, b.features)
    out[kernel_name], out[f"{kernel_name}_std"] = kernel_distance(
        a.features, b.features, config.kid_subset_size, config.kid_subsets, config.seed)
    if config.n_bootstrap:
        fd = frechet_interval(a, b, config.n_bootstrap, config.seed + 1, config.ci_level)
        kd = kernel_interval(a, b, config.n_bootstrap, config.seed + 1, config.ci_level,
                             config.kid_subset_size, config.kid_subsets)
        out.update(_interval_fields(name, fd))
        out.update(_interval_fields(kernel_name, kd))
    else:
        out.update({f"{m}_ci_reason": "n/a (n_bootstrap = 0: no interval asked)" for m in (name, kernel_name)})
    out[f"{name}_inf"] = (frechet_infinity(a.features, b.features, draws=config.fd_infinity_draws,
                                           seed=config.seed)["fd_inf"]
                          if config.fd_infinity and n >= 8 else None)
    return out


def _family_features(sequences: list[CTCSequence], kind: str, lo: float, hi: float, config: RealismConfig,
                     extractors: Extractors, cache_dir: Path) -> FeatureSet:
    return _concat([sequence_features(s, kind, lo, hi, config, extractors, cache_dir) for s in sequences])


def save_feature_sets(path: Path, sets: dict[str, Samples]) -> Path:
    """``features.npz``: ``<name>_features`` (float64) and ``<name>_groups`` per set (the report's paired
    comparisons read these back from the store), written atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, fs in sets.items():
        arrays[f"{name}_features"] = np.asarray(fs.features, np.float64)
        arrays[f"{name}_groups"] = np.asarray(fs.groups, dtype=str)
    _save_npz(Path(path), **arrays)
    return Path(path)


def load_feature_sets(path: Path) -> dict[str, Samples]:
    """Inverse of ``save_feature_sets``: ``{name: Samples}``."""
    with np.load(path) as data:
        names = sorted({k.rsplit("_", 1)[0] for k in data.files})
        return {n: Samples(data[f"{n}_features"], data[f"{n}_groups"]) for n in names}


def realism_scores(real: CTCSequence, synthetic: list[CTCSequence], config: RealismConfig | None = None,
                   cache_dir: str | Path | None = None, extractors: Extractors | None = None,
                   features_out: str | Path | None = None, on_shared_inputs: str = "refuse") -> dict:
    """FID/KID on crops and FVD/KVD on clips of ``synthetic`` against the reference ``real``, at equal N.

    A synthetic sequence holding the reference's data (``shared_inputs``) is refused with a ``ValueError``;
    ``on_shared_inputs="flag"`` scores it anyway, with a warning and ``result["shared_inputs"]`` saying so
    (a test that wants a "perfect generator" row). Frames whose units do not fit the intensity map are
    always refused (``check_intensity_units``).

    ``real`` is the reference: the benchmark passes the real HELD-OUT sequence and the dataset's frozen
    intensity map in ``config.intensity_range`` (``None`` derives it from ``real`` alone, for ad-hoc use).
    Returns a flat dict (MLflow-ready): fid, fid_ci_low/high/se, fid_inf, kid, kid_std, kid_ci_low/high,
    fvd, ..., n_fid / n_fvd (N per side), *_rank_deficient flags, intensity_lo/hi, clip_mode and the
    weights' detector, route and sha256. ``features_out``: also write the equal-N feature sets the scores
    were computed on (``reference_<kind>`` / ``synthetic_<kind>``), for paired comparisons.
    """
    config = config or RealismConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    extractors = extractors or Extractors()
    lo, hi = config.intensity_range or intensity_range([real], config.percentiles)
    if on_shared_inputs not in ("refuse", "flag"):
        raise ValueError(f"on_shared_inputs must be 'refuse' or 'flag', got {on_shared_inputs!r}")
    overlap = shared_inputs(real, synthetic)
    if overlap is not None and on_shared_inputs != "flag":
        raise ValueError(overlap)
    dtype, source = map_dtype(real, (lo, hi))
    for seq in [real, *synthetic]:
        check_intensity_units(seq, (lo, hi), dtype, source)
    result: dict = {"intensity_lo": lo, "intensity_hi": hi, "crop_size": config.crop_size,
                    "clip_length": config.clip_length, "clip_mode": config.clip_mode,
                    "n_bootstrap": config.n_bootstrap, "ci_level": config.ci_level,
                    "torch_version": torch.__version__, "real": f"{real.dataset_dir}/{real.name}",
                    "synthetic": ";".join(f"{s.dataset_dir}/{s.name}" for s in synthetic)}
    if overlap is not None:  # on_shared_inputs="flag": scored, and the result says why it means little
        logger.warning("realism: %s", overlap)
        result["shared_inputs"] = overlap
    saved: dict[str, Samples] = {}
    for flag, kind, name, kernel, min_field, weight_attr in FAMILIES:
        if not getattr(config, flag):
            continue
        real_fs = _family_features([real], kind, lo, hi, config, extractors, cache_dir)
        # the gate's injected regression (benchmark.mutants) hands the synthetic side the map's ends swapped
        fake_map = (hi, lo) if mutants.active("swapped-intensity-map") else (lo, hi)
        fake_fs = _family_features(synthetic, kind, *fake_map, config, extractors, cache_dir)
        result.update(score_pair(real_fs, fake_fs, name, kernel, getattr(config, min_field), config))
        weight: ResolvedWeight = getattr(extractors, weight_attr)
        result.update({f"{name}_detector": weight.detector, f"{name}_weight_sha256": weight.sha256,
                       f"{name}_weight_route": weight.route})
        if min(len(real_fs.features), len(fake_fs.features)) >= 2:
            saved[f"reference_{kind}"], saved[f"synthetic_{kind}"] = equal_n_samples(real_fs, fake_fs, config.seed)
    if features_out is not None:
        save_feature_sets(Path(features_out), saved)
    return result


def real_floor(train: CTCSequence, reference: CTCSequence, config: RealismConfig, cache_dir: str | Path | None = None,
               features_out: str | Path | None = None) -> dict:
    """Real-vs-real floor: the real TRAINING sequence scored exactly as a generator, against the same reference.

    ``config.intensity_range`` must hold the dataset's frozen map, the same one every generator of the
    table is scored under (otherwise the floor and the rows would use different intensity maps).
    """
    if config.intensity_range is None:
        raise ValueError("real_floor needs the dataset's frozen intensity map in config.intensity_range")
    return realism_scores(reference, [train], config, cache_dir, features_out=features_out)
