"""SEG / DET / TRA (+ LNK and the AOGM error breakdown) through py-ctcmetrics, and our own SEG for partial GT.

py-ctcmetrics traps handled here (downstream.md 3): ``threads`` is always explicit (its default 0
spawns one process per CPU); SEG runs in its own call (an invalid track file turns every metric of a
call into None); its stdout chatter is silenced; numpy scalars become floats; an invalid result is
reported as invalid with the reasons from ``benchmark.ctc.validate_result``.

``score_segmentation_frames`` implements the CTC SEG rule on any subset of frames (R matched by the S
with |R n S| > 0.5 |R|, Jaccard, 0 if unmatched, mean over all reference objects), pairing frames by
their time index, so partial GT (the shared HeLa copy) can be scored; it agrees with py-ctcmetrics on
GOWT1 (tested).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from benchmark.ctc import (
    CTCFormatError,
    CTCSequence,
    ResultSequence,
    lineage_from_labels,
    read_tiff,
    read_tracks,
    validate_gt,
    validate_result,
    write_result,
    write_tiff,
    write_tracks,
)
from benchmark.ctc.io import format_tracks
from benchmark.ctc.sequence import indexed_files
from benchmark.ctc.validate import Problem, errors, first_shape, raise_for_errors

TRACKING_METRICS = ("DET", "TRA", "LNK")
AOGM_KEYS = ("AOGM", "AOGM_0", "AOGM_NS", "AOGM_FN", "AOGM_FP", "AOGM_ED", "AOGM_EA", "AOGM_EC")


def _as_float(value) -> float | None:
    if value is None:
        return None
    return float(value)


def _evaluate(res_dir: Path, gt_dir: Path, metrics: list[str], threads: int) -> dict:
    from ctc_metrics import evaluate_sequence

    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate_sequence(str(res_dir), str(gt_dir), metrics=list(metrics), threads=threads)


def _scorable_result(res_dir: Path, gt_dir: Path) -> tuple[ResultSequence, list[Problem]]:
    """The result, after checking GT and result as strictly as each other: any GT problem, or a result file that
    cannot be read as CTC (missing, unreadable, float, negative, another shape than the GT, masks and GT frames
    in different numbers) raises a one-line CTCFormatError naming the file; py-ctcmetrics would crash on them
    or, worse, score a broken GT. A readable result whose labels and lineage disagree stays scorable as invalid:
    those problems are returned."""
    raise_for_errors(validate_gt(gt_dir))
    tra_files = indexed_files(gt_dir / "TRA", "man_track")
    res = ResultSequence(res_dir)
    if len(tra_files) != len(res.mask_files):
        raise CTCFormatError(res_dir, f"{len(res.mask_files)} result masks but {len(tra_files)} GT TRA frames in "
                                      f"{gt_dir / 'TRA'} (py-ctcmetrics needs equal counts)")
    problems = validate_result(res_dir, n_frames=len(tra_files), shape=first_shape(tra_files))
    raise_for_errors([p for p in problems if p.kind == "format"])
    return res, errors(problems)


def _mirror(source: Path, target: Path, track_file: Path, table: str) -> None:
    """Symlink every entry of ``source`` under ``target``, except ``track_file``, written as ``table``."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry == track_file:
            (target / entry.name).write_text(table)
        elif entry in track_file.parents:
            _mirror(entry, target / entry.name, track_file, table)
        else:
            (target / entry.name).symlink_to(entry.resolve())


@contextlib.contextmanager
def _canonical_tracks(folder: Path, track_file: Path) -> Iterator[Path]:
    """``folder`` itself when its track table is written ``L B E P`` with single spaces, one line a track;
    otherwise a symlinked mirror with that table rewritten so. Our reader accepts tabs, blank lines and mixed
    separators; py-ctcmetrics' does not (``invalid literal for int()``), and the numbers mean the same."""
    table = format_tracks(read_tracks(track_file))
    if track_file.read_text() == table:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="synthvid-tracks-") as tmp:
        mirror = Path(tmp) / folder.name
        _mirror(folder, mirror, track_file, table)
        yield mirror


def score_tracking(res_dir: str | Path, gt_dir: str | Path, threads: int = 1,
                   seg: bool = True) -> dict[str, float | str | None]:
    """SEG, DET, TRA, LNK and the AOGM breakdown of ``res_dir`` (``NN_RES``) against ``gt_dir`` (``NN_GT``).

    Returns floats (None where a metric could not be computed), ``valid`` (1.0/0.0) and, for an
    invalid result, ``invalid_reason`` (first problems found by our validator). GT must be complete:
    as many TRA frames as result masks (py-ctcmetrics' rule). A broken GT or an unreadable result
    raises CTCFormatError naming the file.
    """
    res_dir, gt_dir = Path(res_dir), Path(gt_dir)
    res, problems = _scorable_result(res_dir, gt_dir)
    if _detects_nothing(res):
        return _nothing_detected(res_dir, gt_dir, seg)
    with (_canonical_tracks(res_dir, res.track_file) as res_copy,
          _canonical_tracks(gt_dir, gt_dir / "TRA" / "man_track.txt") as gt_copy):
        return _score_checked(res_copy, gt_copy, problems, threads, seg)


def _score_checked(res_dir: Path, gt_dir: Path, problems: list[Problem], threads: int,
                   seg: bool) -> dict[str, float | str | None]:
    """py-ctcmetrics on a checked, canonical result and GT; ``problems`` (labels vs lineage) make it invalid."""
    out: dict[str, float | str | None] = {}
    if seg:
        has_seg = bool(indexed_files(gt_dir / "SEG", "man_seg"))
        out["SEG"] = _as_float(_evaluate(res_dir, gt_dir, ["SEG"], threads).get("SEG")) if has_seg else None
    raw = _evaluate(res_dir, gt_dir, ["Valid", *TRACKING_METRICS], threads)
    valid = bool(raw.get("Valid")) and not problems
    out["valid"] = 1.0 if valid else 0.0
    for key in (*TRACKING_METRICS, *AOGM_KEYS):
        out[key] = _as_float(raw.get(key)) if valid else None
    if not valid:
        reasons = [str(p) for p in problems[:3]] or ["py-ctcmetrics reported Valid=0"]
        out["invalid_reason"] = "; ".join(reasons)
    return out


def ctc_scores(res_dir: str | Path, gt_dir: str | Path, metrics: Sequence[str] = ("DET", "TRA"),
               threads: int = 1) -> dict[str, float]:
    """py-ctcmetrics' own numbers for ``metrics`` of ``res_dir`` against ``gt_dir``, without our checks.

    For side-by-side comparisons of result folders (downstream experiments, tests) where ``score_tracking``'s
    validation and AOGM breakdown are not wanted: keys py-ctcmetrics returns as None (an invalid result) are
    dropped rather than reported. SEG, when asked for with other metrics, runs in its own call.
    """
    wanted = list(metrics)
    calls = [["SEG"]] if "SEG" in wanted else []
    rest = [m for m in wanted if m != "SEG"]
    if rest:
        calls.append(rest)
    out: dict[str, float] = {}
    for call in calls:
        for key, value in _evaluate(Path(res_dir), Path(gt_dir), call, threads).items():
            if value is not None and np.isscalar(value) and not isinstance(value, str):
                out[key] = float(value)
    return out


NOTHING_DETECTED = "no object in any result frame: every GT object is a false negative"


def _detects_nothing(res: ResultSequence) -> bool:
    """A valid result without a single object (a segmenter that found nothing), which py-ctcmetrics cannot
    score (it reduces over the empty track table)."""
    return not res.tracks and all(not res.mask(t).any() for t in res.mask_files)


def _nothing_detected(res_dir: Path, gt_dir: Path, seg: bool) -> dict[str, float | str | None]:
    """Scores of an empty result by the metrics' definitions: SEG, DET, TRA and LNK are 0 (AOGM = AOGM_0 for
    DET and TRA, no link found); the AOGM breakdown is left out rather than re-implemented."""
    has_seg = seg and bool(indexed_files(gt_dir / "SEG", "man_seg"))
    out: dict[str, float | str | None] = {"SEG": 0.0 if has_seg else None} if seg else {}
    out.update({"valid": 1.0, **dict.fromkeys(TRACKING_METRICS, 0.0), **dict.fromkeys(AOGM_KEYS),
                "note": NOTHING_DETECTED})
    return out


def _seg_frame(reference: np.ndarray, computed: np.ndarray) -> tuple[float, int]:
    """(sum of Jaccard over reference objects, number of reference objects) for one frame."""
    if reference.shape != computed.shape:
        raise ValueError(f"GT shape {reference.shape} differs from result shape {computed.shape}")
    ref = reference.astype(np.int64).ravel()
    comp = computed.astype(np.int64).ravel()
    ref_ids, ref_inv = np.unique(ref, return_inverse=True)
    comp_ids, comp_inv = np.unique(comp, return_inverse=True)
    pairs = ref_inv * len(comp_ids) + comp_inv
    counts = np.bincount(pairs, minlength=len(ref_ids) * len(comp_ids)).reshape(len(ref_ids), len(comp_ids))
    ref_area = counts.sum(axis=1)
    comp_area = counts.sum(axis=0)
    total, n_objects = 0.0, 0
    for i, r in enumerate(ref_ids):
        if r == 0:
            continue
        n_objects += 1
        row = counts[i].copy()
        row[comp_ids == 0] = 0
        j = int(np.argmax(row))
        if row[j] * 2 > ref_area[i]:  # more than half of R covered by one S: the unique match
            total += row[j] / (ref_area[i] + comp_area[j] - row[j])
    return total, n_objects


def score_segmentation_frames(res_dir: str | Path, seg_gt_dir: str | Path,
                              frames: Iterable[int] | None = None) -> dict[str, float | int]:
    """CTC SEG of ``maskTTT.tif`` in ``res_dir`` against ``man_segTTT.tif`` in ``seg_gt_dir`` (``NN_GT/SEG``
    or ``NN_ST/SEG``), on the GT frames present (or ``frames``); frames are paired by index t.

    A GT frame without a result mask counts its objects as unmatched (J = 0). Returns SEG, the number
    of reference objects and of frames used.
    """
    seg_files = indexed_files(Path(seg_gt_dir), "man_seg")
    if not seg_files:
        raise CTCFormatError(Path(seg_gt_dir), "no man_segTTT.tif files")
    res = ResultSequence(res_dir)
    wanted = sorted(seg_files) if frames is None else sorted(frames)
    total, n_objects, used = 0.0, 0, 0
    for t in wanted:
        if t not in seg_files:
            raise CTCFormatError(Path(seg_gt_dir), f"no man_seg frame for t={t}")
        reference = read_tiff(seg_files[t])
        computed = res.mask(t) if t in res.mask_files else np.zeros_like(reference)
        s, n = _seg_frame(reference, computed)
        total += s
        n_objects += n
        used += 1
    return {"SEG": total / max(n_objects, 1), "n_objects": n_objects, "n_frames": used}


def tracking_unavailable(seq: CTCSequence) -> str | None:
    """Why TRA cannot be scored on ``seq`` (a copy with raw frames or GT TRA frames missing), or None."""
    missing_raw = seq.missing_frames
    missing_tra = [t for t in range(seq.n_frames) if t not in seq.tra_files]
    if not missing_raw and not missing_tra:
        return None
    present = seq.n_frames - len(missing_raw)
    return (f"{seq.dataset_dir.name}/{seq.name} holds {present}/{seq.n_frames} raw frames and "
            f"{seq.n_frames - len(missing_tra)}/{seq.n_frames} GT TRA frames: TRA needs every frame of the "
            "sequence (links join consecutive frames), so it is not computed on this partial copy")


def write_tra_subset(seq: CTCSequence, frames: list[int], gt_dir: Path) -> Path:
    """GT TRA of ``seq`` restricted to ``frames``, re-indexed 0..k-1 with lineage re-derived for the subset
    (tracks split at dropped frames), under ``gt_dir/TRA``: what py-ctcmetrics can score a temporal subset on."""
    gt_frames = [seq.tra(t) for t in frames]
    lineage = lineage_from_labels(gt_frames, {tr.label: tr.parent for tr in seq.tracks.values()})
    for i, frame in enumerate(gt_frames):
        write_tiff(gt_dir / "TRA" / f"man_track{i:03d}.tif", lineage.apply(i, frame))
    write_tracks(gt_dir / "TRA" / "man_track.txt", lineage.tracks)
    return gt_dir


def score_partial(masks: dict[int, np.ndarray], seq: CTCSequence, work_dir: str | Path,
                  threads: int = 1) -> dict[str, float | int | None]:
    """What a partial copy (frames missing) still supports, for per-frame instance masks ``{t: labels}``.

    - ``SEG``: the CTC SEG rule on the frames with a raw image and a GT SEG mask (``n_SEG_frames``,
      ``n_SEG_objects``); ``SEG_ST`` the same against the silver truth (``NN_ST/SEG``) where present;
    - ``DET``: py-ctcmetrics on the frames with a raw image and GT TRA markers, re-indexed 0..k-1 in GT
      and result alike (detection is per frame, so a temporal subset is scored exactly);
    - TRA is not computed (see ``tracking_unavailable``).
    """
    work_dir = Path(work_dir)
    res_dir = work_dir / "frames_RES"
    for t, labels in masks.items():
        write_tiff(res_dir / f"mask{t:03d}.tif", labels.astype(np.uint16))
    out: dict[str, float | int | None] = {"SEG": None, "SEG_ST": None, "DET": None}
    for key, folder in (("SEG", seq.gt_dir / "SEG"), ("SEG_ST", seq.dataset_dir / f"{seq.name}_ST" / "SEG")):
        frames = sorted(set(indexed_files(folder, "man_seg")) & set(masks))
        if frames:
            scores = score_segmentation_frames(res_dir, folder, frames)
            out.update({key: float(scores["SEG"]), f"n_{key}_frames": len(frames),
                        f"n_{key}_objects": int(scores["n_objects"])})
    kept = sorted(set(seq.tra_files) & set(masks))
    if kept:
        gt_dir = write_tra_subset(seq, kept, work_dir / "subset_GT")
        subset_res = work_dir / "subset_RES"
        write_result(subset_res, [masks[t] for t in kept])
        nothing = not any(masks[t].any() for t in kept)
        det = 0.0 if nothing else _as_float(_evaluate(subset_res, gt_dir, ["DET"], threads).get("DET"))
        out.update({"DET": det, "n_DET_frames": len(kept)})
    return out
