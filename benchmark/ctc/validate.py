"""Validation of CTC sequences and result folders that reports every problem, each naming its file.

Errors make a folder unusable (py-ctcmetrics would reject it or score garbage); warnings describe
what a partial copy lacks (missing frames) so callers can decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.ctc.errors import CTCFormatError
from benchmark.ctc.io import Track, read_tiff
from benchmark.ctc.sequence import CTCSequence, ResultSequence


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def raise_for_errors(problems: Iterable[Problem]) -> None:
    """Raise a one-line CTCFormatError for the first error (with the count of the others)."""
    errs = errors(problems)
    if errs:
        more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
        raise CTCFormatError(errs[0].path, errs[0].message + more)


def _check_lineage(track_file: Path, tracks: Mapping[int, Track]) -> list[Problem]:
    problems = []
    for track in tracks.values():
        if track.parent == 0:
            continue
        mother = tracks.get(track.parent)
        if mother is None:
            problems.append(Problem(track_file, f"track {track.label} names parent {track.parent}, which is not listed"))
        elif mother.end >= track.begin:
            problems.append(Problem(
                track_file,
                f"parent {mother.label} ends at frame {mother.end}, not before its child {track.label} begins at {track.begin}",
            ))
    return problems


def _check_labels_vs_tracks(
    files: Mapping[int, Path], frames: Mapping[int, np.ndarray], track_file: Path, tracks: Mapping[int, Track]
) -> list[Problem]:
    """Each label frame must hold exactly the tracks alive at that time (B <= t <= E)."""
    problems = []
    for t, labels in frames.items():
        present = {int(v) for v in np.unique(labels) if v}
        alive = {tr.label for tr in tracks.values() if tr.begin <= t <= tr.end}
        unlisted = sorted(present - set(tracks))
        outside = sorted((present & set(tracks)) - alive)
        missing = sorted(alive - present)
        if unlisted:
            problems.append(Problem(files[t], f"labels {unlisted[:5]} are not listed in {track_file.name}"))
        if outside:
            problems.append(Problem(
                files[t],
                f"labels {outside[:5]} appear at frame {t}, outside their B..E in {track_file.name} (reused label or wrong B/E)",
            ))
        if missing:
            problems.append(Problem(
                files[t], f"tracks {missing[:5]} are alive at frame {t} per {track_file.name} but absent from the mask"
            ))
    return problems


def _read_all(files: Mapping[int, Path], problems: list[Problem], shape: tuple[int, int] | None,
              integer: bool) -> dict[int, np.ndarray]:
    frames = {}
    for t, path in files.items():
        try:
            array = read_tiff(path)
        except CTCFormatError as exc:
            problems.append(Problem(exc.path, exc.problem))
            continue
        if shape is not None and array.shape != shape:
            problems.append(Problem(path, f"shape {array.shape} differs from the sequence's {shape}"))
            continue
        if integer and not (np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 4):
            problems.append(Problem(path, f"label image has dtype {array.dtype}; expected unsigned integers (uint16)"))
            continue
        if integer and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
            problems.append(Problem(path, "label image has negative labels"))
            continue
        frames[t] = array
    return frames


def validate_sequence(dataset_dir: str | Path, name: str = "01", require_complete: bool = False) -> list[Problem]:
    """Check one dataset sequence; missing frames are warnings unless ``require_complete``."""
    problems: list[Problem] = []
    try:
        seq = CTCSequence(dataset_dir, name)
    except CTCFormatError as exc:
        return [Problem(exc.path, exc.problem)]
    if not seq.image_files:
        return [Problem(seq.image_dir, "no raw frames tTTT.tif")]
    severity = "error" if require_complete else "warning"
    if seq.missing_frames:
        problems.append(Problem(seq.image_dir, f"missing raw frames {_ranges(seq.missing_frames)}", severity))
    images = _read_all(seq.image_files, problems, None, integer=False)
    shapes = {a.shape for a in images.values()}
    dtypes = {a.dtype for a in images.values()}
    if len(shapes) > 1 or len(dtypes) > 1:
        problems.append(Problem(seq.image_dir, f"raw frames disagree in shape/dtype: {sorted(shapes)} {sorted(map(str, dtypes))}"))
    shape = next(iter(shapes)) if len(shapes) == 1 else None
    for files in (seq.seg_files, seq.st_files):
        _read_all(files, problems, shape, integer=True)
    tra = _read_all(seq.tra_files, problems, shape, integer=True)
    if seq.tra_files or seq.has_tracks:
        try:
            tracks = seq.tracks
        except CTCFormatError as exc:
            problems.append(Problem(exc.path, exc.problem))
        else:
            problems += _check_lineage(seq.track_file, tracks)
            problems += _check_labels_vs_tracks(seq.tra_files, tra, seq.track_file, tracks)
            missing_tra = [t for t in range(seq.n_frames) if t not in seq.tra_files]
            if missing_tra:
                problems.append(Problem(seq.gt_dir / "TRA", f"missing TRA frames {_ranges(missing_tra)}", severity))
    return problems


def validate_result(res_dir: str | Path, n_frames: int | None = None) -> list[Problem]:
    """Check a result folder: a mask for every frame from 0, and res_track.txt consistent with them."""
    problems: list[Problem] = []
    try:
        res = ResultSequence(res_dir)
    except CTCFormatError as exc:
        return [Problem(exc.path, exc.problem)]
    expected = n_frames if n_frames is not None else res.n_frames
    missing = [t for t in range(expected) if t not in res.mask_files]
    if not res.mask_files:
        problems.append(Problem(res.res_dir, "no maskTTT.tif files"))
    if missing:
        problems.append(Problem(res.res_dir, f"missing mask frames {_ranges(missing)}"))
    first = next(iter(res.mask_files.values()), None)
    shape = read_tiff(first).shape if first is not None and first.is_file() else None
    masks = _read_all(res.mask_files, problems, shape, integer=True)
    try:
        tracks = res.tracks
    except CTCFormatError as exc:
        problems.append(Problem(exc.path, exc.problem))
        return problems
    problems += _check_lineage(res.track_file, tracks)
    problems += _check_labels_vs_tracks(res.mask_files, masks, res.track_file, tracks)
    return problems


def _ranges(values: list[int]) -> str:
    """Compact '3-5, 9' notation for frame lists."""
    parts, start, prev = [], None, None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = v
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)
