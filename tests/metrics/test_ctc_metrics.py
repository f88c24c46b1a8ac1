"""SEG/DET/TRA through py-ctcmetrics and our partial-GT SEG, on real GOWT1 and HeLa data."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.ctc import CTCSequence, read_tiff, write_result, write_tiff
from benchmark.ctc.crops import full_masks
from benchmark.metrics.ctc import ctc_scores, score_segmentation_frames, score_tracking


@pytest.fixture(scope="module")
def gt_as_result(gowt1_window, tmp_path_factory):
    """The real GOWT1 window's TRA markers written as a tracking result, and the window sequence."""
    seq = CTCSequence(gowt1_window, "01")
    res = tmp_path_factory.mktemp("res") / "01_RES"
    write_result(res, [seq.tra(t) for t in range(seq.n_frames)], {tr.label: tr.parent for tr in seq.tracks.values()})
    return res, seq


def test_gt_to_res_round_trip_is_perfect(gt_as_result):
    res, seq = gt_as_result
    scores = score_tracking(res, seq.gt_dir)
    assert scores["valid"] == 1.0
    assert scores["DET"] == 1.0 and scores["TRA"] == 1.0 and scores["AOGM"] == 0.0
    assert isinstance(scores["SEG"], float) and 0.0 < scores["SEG"] < 1.0  # markers are smaller than nuclei


def test_plain_ctc_scores_are_score_trackings_numbers(gt_as_result, tmp_path):
    """The unchecked wrapper (downstream comparisons) and score_tracking run py-ctcmetrics the same way."""
    res, seq = gt_as_result
    full = score_tracking(res, seq.gt_dir)
    plain = ctc_scores(res, seq.gt_dir, ("SEG", "DET", "TRA"))
    assert {k: plain[k] for k in ("SEG", "DET", "TRA")} == {k: full[k] for k in ("SEG", "DET", "TRA")}
    assert plain["AOGM"] == full["AOGM"]  # py-ctcmetrics' by-products come along, as floats
    assert set(ctc_scores(res, seq.gt_dir)) >= {"DET", "TRA"} and "SEG" not in ctc_scores(res, seq.gt_dir)


def test_invalid_result_keeps_seg_and_gives_a_reason(gt_as_result, tmp_path):
    res, seq = gt_as_result
    broken = tmp_path / "01_RES"
    broken.mkdir()
    for path in res.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    frame = read_tiff(broken / "mask005.tif")
    label = int(np.unique(frame)[-1])
    frame[frame == label] = 0  # a listed track vanishes from one frame
    write_tiff(broken / "mask005.tif", frame)
    scores = score_tracking(broken, seq.gt_dir)
    assert scores["valid"] == 0.0 and scores["TRA"] is None
    assert str(label) in scores["invalid_reason"]
    assert scores["SEG"] is not None


def test_own_seg_agrees_with_py_ctcmetrics(gowt1_window, tmp_path):
    seq = CTCSequence(gowt1_window, "01")
    res = tmp_path / "01_RES"
    write_result(res, [full_masks(seq, t) for t in range(seq.n_frames)],
                 {tr.label: tr.parent for tr in seq.tracks.values()})
    ours = score_segmentation_frames(res, seq.gt_dir / "SEG")
    reference = score_tracking(res, seq.gt_dir)["SEG"]
    assert ours["n_objects"] > 0
    assert ours["SEG"] == pytest.approx(reference, abs=1e-9)
    assert 0.0 < ours["SEG"] < 1.0  # window borders cut cells, so no tighter bound


def test_seg_on_partial_hela_gt(hela):
    scores = score_segmentation_frames(hela / "01_RES", hela / "01_GT" / "SEG")
    assert scores["n_frames"] == 12 and scores["n_objects"] > 100
    assert 0.5 < scores["SEG"] < 1.0


@pytest.mark.slow
def test_hela_tracker_result_agrees_with_traccuracy(hela, tmp_path):
    """01_RES vs GT on the re-indexed GT-TRA frame subset: DET equal, TRA within 1e-3 (see _hela_subset)."""
    traccuracy = pytest.importorskip("traccuracy")
    from _hela_subset import write_hela_subset
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher
    from traccuracy.metrics import CTCMetrics

    res, gt = write_hela_subset(hela, tmp_path)
    ours = score_tracking(res, gt, seg=False)
    results = traccuracy.run_metrics(
        gt_data=load_ctc_data(str(gt / "TRA"), str(gt / "TRA" / "man_track.txt")),
        pred_data=load_ctc_data(str(res), str(res / "res_track.txt")),
        matcher=CTCMatcher(), metrics=[CTCMetrics()])
    theirs = results[0][0]["results"] if isinstance(results, tuple) else results[0]["results"]
    assert ours["DET"] == pytest.approx(theirs["DET"], abs=1e-9)
    assert ours["TRA"] == pytest.approx(theirs["TRA"], abs=1e-3)


def test_partial_hela_copy_scores_seg_and_det_on_the_frames_that_exist(hela, tmp_path):
    """HeLa 02 (shared copy: 45/92 raw frames): TRA is refused with the reason; SEG and DET come from the
    frames that have a raw image AND the annotation. The GT's own full masks score near-perfect DET; dropping
    every second cell halves what they detect."""
    from benchmark.metrics.ctc import score_partial, tracking_unavailable

    seq = CTCSequence(hela, "02")
    reason = tracking_unavailable(seq)
    assert reason is not None and "45/92 raw frames" in reason and "TRA" in reason
    frames = sorted(set(seq.image_files) & set(seq.tra_files))
    good = {t: full_masks(seq, t) for t in frames}
    scores = score_partial(good, seq, tmp_path / "good")
    assert scores["n_DET_frames"] == len(frames) == 13 and scores["DET"] > 0.95
    assert scores["n_SEG_frames"] == 1 and scores["n_SEG_objects"] > 20 and scores["SEG"] > 0.6
    halved = {t: np.where(np.isin(m, np.unique(m)[1::2]), m, 0).astype(np.uint16) for t, m in good.items()}
    worse = score_partial(halved, seq, tmp_path / "halved")
    assert worse["DET"] < scores["DET"] - 0.3 and worse["SEG"] < scores["SEG"] - 0.2


def test_complete_gowt1_tracks_are_available(gowt1):
    from benchmark.metrics.ctc import tracking_unavailable

    assert tracking_unavailable(CTCSequence(gowt1, "02")) is None


def test_a_result_without_objects_scores_zero_instead_of_crashing(gt_as_result, hela, tmp_path):
    """A segmenter that found nothing (seen on HeLa after a short training) is a valid, worst-possible result:
    py-ctcmetrics cannot reduce over its empty track table, so the scores come from the definitions."""
    from benchmark.metrics.ctc import NOTHING_DETECTED, score_partial

    res, seq = gt_as_result
    empty = tmp_path / "01_RES"
    write_result(empty, [np.zeros_like(seq.tra(t)) for t in range(seq.n_frames)], {})
    scores = score_tracking(empty, seq.gt_dir)
    assert scores["valid"] == 1.0 and (scores["SEG"], scores["DET"], scores["TRA"], scores["LNK"]) == (0, 0, 0, 0)
    assert scores["note"] == NOTHING_DETECTED
    one = tmp_path / "one_RES"  # a single real object is already better than nothing
    keep = int(np.unique(seq.tra(0))[1])
    write_result(one, [np.where(seq.tra(t) == keep, keep, 0).astype(np.uint16) for t in range(seq.n_frames)],
                 {keep: seq.tracks[keep].parent})
    assert score_tracking(one, seq.gt_dir)["DET"] > 0

    hela_seq = CTCSequence(hela, "02")
    frames = sorted(set(hela_seq.image_files) & set(hela_seq.tra_files))
    partial = score_partial({t: np.zeros(hela_seq.frame_shape, np.uint16) for t in frames}, hela_seq, tmp_path / "h")
    assert partial["DET"] == 0.0 and partial["SEG"] == 0.0 and partial["n_DET_frames"] == len(frames)
