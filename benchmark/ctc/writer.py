"""Writers that derive the lineage from the labels actually written.

A track's B/E are the first/last frames where its label is present; a label that disappears and
comes back is split into a new track whose parent is the pre-gap track (the CTC gap encoding).
Everything written therefore passes py-ctcmetrics' validation by construction, and is re-checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmark.ctc.errors import CTCFormatError
from benchmark.ctc.io import Track, frame_name, write_tiff, write_tracks
from benchmark.ctc.validate import validate_result, validate_sequence
from benchmark.io import atomic_directory, replace_directory, staging_directory

MAX_LABEL = 65_000  # py-ctcmetrics offsets labels internally; stay well below the uint16 limit


@dataclass(frozen=True)
class Lineage:
    """Tracks derived from label frames plus, per frame, the relabelling of post-gap segments."""

    tracks: dict[int, Track]
    relabel: dict[int, dict[int, int]]  # t -> {old label: new label}; only frames that need it

    def apply(self, t: int, labels: np.ndarray) -> np.ndarray:
        mapping = self.relabel.get(t)
        out = labels.astype(np.uint16, copy=True)
        if mapping:
            for old, new in mapping.items():
                out[labels == old] = new
        return out


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for t in frames:
        if runs and t == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def lineage_from_labels(
    label_frames: Sequence[np.ndarray], parents: Mapping[int, int] | None = None, progress: bool = False
) -> Lineage:
    """Derive CTC tracks from ``(H, W)`` label frames (index = time) and a label -> parent map.

    A parent that is never present, or does not end before its child begins, is dropped (P = 0):
    the lineage always follows the labels.
    """
    parents = dict(parents or {})
    presence: dict[int, list[int]] = {}
    for t in tqdm(range(len(label_frames)), desc="lineage", disable=not progress, leave=False):
        for label in np.unique(label_frames[t]):
            if label:
                presence.setdefault(int(label), []).append(t)
    next_label = max(presence, default=0) + 1
    segments: dict[int, list[Track]] = {}
    relabel: dict[int, dict[int, int]] = {}
    for label in sorted(presence):
        runs = _runs(presence[label])
        segs = [Track(label, runs[0][0], runs[0][1], 0)]
        for begin, end in runs[1:]:
            new = next_label
            next_label += 1
            segs.append(Track(new, begin, end, segs[-1].label))
            for t in range(begin, end + 1):
                relabel.setdefault(t, {})[label] = new
        segments[label] = segs
    if next_label - 1 > MAX_LABEL:
        raise ValueError(f"{next_label - 1} track labels exceed the CTC-safe maximum {MAX_LABEL}")
    tracks: dict[int, Track] = {}
    for label, segs in segments.items():
        first = segs[0]
        parent = parents.get(label, 0)
        mother = None
        for seg in segments.get(parent, []):
            if seg.end < first.begin:
                mother = seg.label  # the mother's last segment that ends before the child begins
        segs[0] = Track(first.label, first.begin, first.end, mother or 0)
        for seg in segs:
            tracks[seg.label] = seg
    return Lineage(tracks, relabel)


def _write_label_frames(folder: Path, prefix: str, frames: Sequence[np.ndarray], lineage: Lineage,
                        desc: str, progress: bool) -> None:
    for t in tqdm(range(len(frames)), desc=desc, disable=not progress, leave=False):
        write_tiff(folder / frame_name(prefix, t), lineage.apply(t, np.asarray(frames[t])))


def write_result(
    res_dir: str | Path,
    label_frames: Sequence[np.ndarray],
    parents: Mapping[int, int] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[int, Track]:
    """Write a CTC result folder (``maskTTT.tif`` for every frame + ``res_track.txt``) atomically."""
    res_dir = Path(res_dir)
    if res_dir.exists() and not overwrite:
        raise FileExistsError(f"{res_dir}: already exists (pass overwrite=True to replace it)")
    lineage = lineage_from_labels(label_frames, parents, progress)
    with atomic_directory(res_dir, overwrite=overwrite) as tmp:
        _write_label_frames(tmp, "mask", label_frames, lineage, "write RES", progress)
        write_tracks(tmp / "res_track.txt", lineage.tracks)
        problems = validate_result(tmp)
        if problems:
            raise CTCFormatError(res_dir, f"writer self-check failed: {problems[0].message}")
    return lineage.tracks


def write_sequence(
    dataset_dir: str | Path,
    name: str,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    parents: Mapping[int, int] | None = None,
    seg: Mapping[int, np.ndarray] | Sequence[np.ndarray] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[int, Track]:
    """Write one annotated CTC sequence: ``NN/tTTT.tif``, ``NN_GT/TRA`` (+ ``man_track.txt``), ``NN_GT/SEG``.

    ``labels`` are track-labelled instance masks for every frame; they are written as TRA and, unless
    ``seg`` gives other masks (a sequence for every frame or a {t: mask} subset), as SEG of every frame.
    The two folders appear only when complete.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label frames")
    dataset_dir = Path(dataset_dir)
    targets = [dataset_dir / name, dataset_dir / f"{name}_GT"]
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    lineage = lineage_from_labels(labels, parents, progress)
    with staging_directory(dataset_dir / name) as tmp:
        for t in tqdm(range(len(images)), desc=f"write {name}", disable=not progress, leave=False):
            write_tiff(tmp / name / frame_name("t", t), np.asarray(images[t]))
        _write_label_frames(tmp / f"{name}_GT" / "TRA", "man_track", labels, lineage, "write TRA", False)
        write_tracks(tmp / f"{name}_GT" / "TRA" / "man_track.txt", lineage.tracks)
        seg_items = seg.items() if isinstance(seg, Mapping) else enumerate(seg if seg is not None else labels)
        for t, mask in seg_items:
            mask = np.asarray(mask)
            write_tiff(tmp / f"{name}_GT" / "SEG" / frame_name("man_seg", t),
                       lineage.apply(t, mask) if seg is None else mask.astype(np.uint16))

        problems = validate_sequence(tmp, name)
        if problems:
            raise CTCFormatError(dataset_dir / name, f"writer self-check failed: {problems[0].message}")
        for target in targets:
            replace_directory(tmp / target.name, target)
    return lineage.tracks
