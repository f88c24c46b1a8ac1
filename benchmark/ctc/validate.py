"""Validation of CTC sequences and result folders that reports every problem, each naming its file.

Errors make a folder unusable (py-ctcmetrics would reject it or score garbage); warnings describe
what a partial copy lacks (missing frames) so callers can decide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.ctc.errors import CTCFormatError
from benchmark.ctc.io import Track, read_tiff, read_tracks
from benchmark.ctc.sequence import CTCSequence, ResultSequence, indexed_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One problem with one file. ``kind``: "format" when the file cannot be read as CTC at all (missing,
    unreadable, wrong dtype or shape), "consistency" when readable files disagree (labels vs lineage)."""

    path: Path
    message: str
    severity: str = "error"  # "error" | "warning"
    kind: str = "format"  # "format" | "consistency"

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


def parent_cycles(tracks: Mapping[int, Track]) -> list[list[int]]:
    """Every cycle of the parent relation (``[2, 4]`` for 2 -> 4 -> 2, ``[3]`` for a track its own parent)."""
    cycles: list[list[int]] = []
    done: set[int] = set()
    for start in sorted(tracks):
        path: list[int] = []
        position: dict[int, int] = {}
        label = start
        while label in tracks and label not in done and label not in position:
            position[label] = len(path)
            path.append(label)
            label = tracks[label].parent
        if label in position:
            cycles.append(path[position[label]:])
        done.update(path)
    return cycles


def _check_lineage(track_file: Path, tracks: Mapping[int, Track]) -> list[Problem]:
    """Parents must be listed, end before their children begin and never lead back to the child (a cycle
    also breaks the time order, but is named as what it is)."""
    problems = []
    in_cycle: set[int] = set()
    for cycle in parent_cycles(tracks):
        in_cycle.update(cycle)
        chain = " -> ".join(str(label) for label in [*cycle, cycle[0]])
        problems.append(Problem(track_file, f"parent cycle {chain} (a track cannot descend from itself)",
                                kind="consistency"))
    for track in tracks.values():
        if track.parent == 0 or track.label in in_cycle:
            continue
        mother = tracks.get(track.parent)
        if mother is None:
            problems.append(Problem(track_file, f"track {track.label} names parent {track.parent}, which is not listed",
                                    kind="consistency"))
        elif mother.end >= track.begin:
            problems.append(Problem(
                track_file,
                f"parent {mother.label} ends at frame {mother.end}, not before its child {track.label} begins at {track.begin}",
                kind="consistency",
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
            problems.append(Problem(files[t], f"labels {unlisted[:5]} are not listed in {track_file.name}",
                                    kind="consistency"))
        if outside:
            problems.append(Problem(
                files[t],
                f"labels {outside[:5]} appear at frame {t}, outside their B..E in {track_file.name} (reused label or wrong B/E)",
                kind="consistency",
            ))
        if missing:
            problems.append(Problem(
                files[t], f"tracks {missing[:5]} are alive at frame {t} per {track_file.name} but absent from the mask",
                kind="consistency",
            ))
    return problems


def _read_all(files: Mapping[int, Path], problems: list[Problem], shape: tuple[int, int] | None,
              integer: bool, against: str = "the sequence's") -> dict[int, np.ndarray]:
    """Read every frame, appending a problem (naming the file) for each that is unreadable, of another
    ``shape`` than ``against`` or, for label images (``integer``), not of non-negative integers."""
    frames = {}
    for t, path in files.items():
        try:
            array = read_tiff(path)
        except CTCFormatError as exc:
            problems.append(Problem(exc.path, exc.problem))
            continue
        if shape is not None and array.shape != shape:
            problems.append(Problem(path, f"shape {array.shape} differs from {against} {shape}"))
            continue
        if integer and not (np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 4):
            problems.append(Problem(path, f"label image has dtype {array.dtype}; expected unsigned integers (uint16)"))
            continue
        if integer and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
            problems.append(Problem(path, "label image has negative labels"))
            continue
        frames[t] = array
    return frames


def first_shape(files: Mapping[int, Path]) -> tuple[int, int] | None:
    """Shape of the first readable frame: the reference the others are checked against (None if none reads)."""
    for path in files.values():
        try:
            return read_tiff(path).shape  # type: ignore[return-value]
        except CTCFormatError:
            continue
    return None


def _check_annotations(gt_dir: Path, n_frames: int | None, shape: tuple[int, int] | None, severity: str,
                       against: str) -> list[Problem]:
    """The checks of an ``NN_GT`` folder, shared by a dataset sequence and a GT given to the metrics: SEG and
    TRA frames of ``shape`` with non-negative integer labels, ``man_track.txt`` readable with an acyclic,
    time-ordered lineage that matches the TRA labels of every frame, and (``severity``) no TRA frame missing
    in ``0..n_frames-1`` (``n_frames`` None: up to the last frame seen or the last track end)."""
    problems: list[Problem] = []
    seg_files, tra_files = indexed_files(gt_dir / "SEG", "man_seg"), indexed_files(gt_dir / "TRA", "man_track")
    _read_all(seg_files, problems, shape, integer=True, against=against)
    tra = _read_all(tra_files, problems, shape, integer=True, against=against)
    track_file = gt_dir / "TRA" / "man_track.txt"
    if not tra_files and not track_file.is_file():
        return problems
    try:
        tracks = read_tracks(track_file)
    except CTCFormatError as exc:
        return [*problems, Problem(exc.path, exc.problem)]
    problems += _check_lineage(track_file, tracks)
    problems += _check_labels_vs_tracks(tra_files, tra, track_file, tracks)
    if n_frames is None:
        n_frames = max([*tra_files, *(tr.end for tr in tracks.values()), -1]) + 1
    missing_tra = [t for t in range(n_frames) if t not in tra_files]
    if missing_tra:
        problems.append(Problem(gt_dir / "TRA", f"missing TRA frames {frame_ranges(missing_tra)}", severity))
    return problems


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
        problems.append(Problem(seq.image_dir, f"missing raw frames {frame_ranges(seq.missing_frames)}", severity))
    images = _read_all(seq.image_files, problems, None, integer=False)
    shapes = {a.shape for a in images.values()}
    dtypes = {a.dtype for a in images.values()}
    if len(shapes) > 1 or len(dtypes) > 1:
        problems.append(Problem(seq.image_dir, f"raw frames disagree in shape/dtype: {sorted(shapes)} {sorted(map(str, dtypes))}"))
    for t, image in sorted(images.items()):
        if image.dtype.kind in "fc" and not np.isfinite(image).all():  # NaN/inf would poison every percentile
            bad = int(image.size - np.isfinite(image).sum())
            problems.append(Problem(seq.image_files[t], f"{bad} NaN or infinite pixel(s) in a raw frame"))
    shape = next(iter(shapes)) if len(shapes) == 1 else None
    _read_all(seq.st_files, problems, shape, integer=True)
    problems += _check_annotations(seq.gt_dir, seq.n_frames, shape, severity, "the sequence's")
    return problems


def check_input_sequence(dataset_dir: str | Path, name: str) -> list[Problem]:
    """Refuse a real input sequence (training or held-out) with any error, as one CTCFormatError line naming the
    file, before a stage reads it: a float or negative label, a parent cycle or an empty TRA frame would
    otherwise be wrapped to uint16 or silently re-derived by the writers. Missing frames (partial copies such
    as the shared HeLa) are only warnings, logged and returned."""
    problems = validate_sequence(dataset_dir, name, require_complete=False)
    raise_for_errors(problems)
    for problem in problems:
        logger.warning("%s", problem)
    return problems


def validate_gt(gt_dir: str | Path) -> list[Problem]:
    """Check a GT folder ``NN_GT`` given on its own (to the metrics) exactly as a dataset's GT: every TRA
    frame from 0 present (tracking needs all of them), all frames the shape of the first TRA frame."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        return [Problem(gt_dir, "GT folder is missing")]
    tra_files = indexed_files(gt_dir / "TRA", "man_track")
    if not tra_files:
        return [Problem(gt_dir / "TRA", "no man_trackTTT.tif files (GT TRA is needed for every CTC metric)")]
    if not (gt_dir / "TRA" / "man_track.txt").is_file():
        return [Problem(gt_dir / "TRA" / "man_track.txt", "track file is missing (GT TRA is needed for every CTC metric)")]
    return _check_annotations(gt_dir, None, first_shape(tra_files), "error", "the first GT TRA frame's")


def validate_result(res_dir: str | Path, n_frames: int | None = None,
                    shape: tuple[int, int] | None = None) -> list[Problem]:
    """Check a result folder: a mask for every frame from 0 (of ``shape``, default the first mask's), and
    res_track.txt consistent with them."""
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
        problems.append(Problem(res.res_dir, f"missing mask frames {frame_ranges(missing)}"))
    against = "the GT's" if shape is not None else "the first mask's"
    shape = shape if shape is not None else first_shape(res.mask_files)
    masks = _read_all(res.mask_files, problems, shape, integer=True, against=against)
    try:
        tracks = res.tracks
    except CTCFormatError as exc:
        problems.append(Problem(exc.path, exc.problem))
        return problems
    problems += _check_lineage(res.track_file, tracks)
    problems += _check_labels_vs_tracks(res.mask_files, masks, res.track_file, tracks)
    return problems


def frame_ranges(values: Iterable[int]) -> str:
    """Compact '3-5, 9' notation for sorted frame lists (messages and `data info`)."""
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
