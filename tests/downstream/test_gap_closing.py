"""Gap closing (``downstream.tracker.gaps``) on real GOWT1 ground truth: a nucleus the segmenter missed in one
or more frames splits its GT track in two, as a frame-to-frame linker leaves it; gap closing must join the two
halves under one label, fill the missed frames close to the real nucleus, write a valid CTC result and raise
TRA, and must never join a mother, a pair farther apart than its limit, or anything in the unbroken GT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.ctc import CTCSequence, validate_result, write_result
from benchmark.ctc.crops import full_masks
from benchmark.metrics.ctc import ctc_scores
from downstream.tracker import tracker_config
from downstream.tracker.gaps import close_gaps, track_ends

GAP_AT = 10  # the middle of the 20-frame window


def _parents(seq: CTCSequence) -> dict[int, int]:
    return {label: track.parent for label, track in seq.tracks.items() if track.parent}


def _steady_track(seq: CTCSequence, frames: list[np.ndarray], first: int, last: int) -> int:
    """The largest GT track present from ``first`` to ``last`` that neither divides nor was born by division."""
    parents = _parents(seq)
    mothers = set(parents.values())
    present = set.intersection(*(set(np.unique(frames[t])) - {0} for t in range(first, last + 1)))
    steady = [int(k) for k in present if k not in mothers and k not in parents]
    return max(steady, key=lambda k: int((frames[first] == k).sum()))


def _break(frames: list[np.ndarray], parents: dict[int, int], label: int, missed: range) -> tuple[list[np.ndarray], dict[int, int], int]:
    """What a frame-to-frame linker makes of ``label`` missed in ``missed``: the track ends before the gap and a
    new one, with no parent, starts after it (its daughters, if any, follow the new one)."""
    out = [f.copy() for f in frames]
    born = int(max(f.max() for f in frames)) + 1
    for t in missed:
        out[t][out[t] == label] = 0
    for t in range(missed.stop, len(out)):
        out[t][out[t] == label] = born
    new_parents = {child: (born if mother == label else mother) for child, mother in parents.items()}
    return out, new_parents, born


def _tra(frames: list[np.ndarray], parents: dict[int, int], seq: CTCSequence, out: Path) -> float:
    res = out / f"{seq.name}_RES"
    write_result(res, frames, parents)
    assert validate_result(res, seq.n_frames) == []
    return ctc_scores(res, seq.gt_dir, ("TRA",))["TRA"]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def gt_02(test_02) -> tuple[CTCSequence, list[np.ndarray], dict[int, int]]:
    seq, masks = test_02
    return seq, masks, _parents(seq)


def test_a_missed_detection_is_bridged_filled_and_raises_tra(gt_02, tmp_path: Path) -> None:
    seq, masks, parents = gt_02
    label = _steady_track(seq, masks, GAP_AT - 1, GAP_AT + 1)
    broken, broken_parents, _ = _break(masks, parents, label, range(GAP_AT, GAP_AT + 1))

    joined, joined_parents, closed = close_gaps(broken, broken_parents)

    assert closed == 1
    assert joined_parents == parents
    for t, (frame, truth) in enumerate(zip(joined, masks, strict=True)):
        if t != GAP_AT:
            assert np.array_equal(frame, truth), f"frame {t} changed"
    assert _iou(joined[GAP_AT] == label, masks[GAP_AT] == label) > 0.7  # the fill lies on the real nucleus
    assert set(np.unique(joined[GAP_AT])) == set(np.unique(masks[GAP_AT]))
    left_open = _tra(*close_gaps(broken, broken_parents, max_frames=0)[:2], seq, tmp_path / "open")
    bridged = _tra(joined, joined_parents, seq, tmp_path / "closed")
    assert bridged > left_open, (bridged, left_open)


def test_a_gap_longer_than_max_frames_stays_open(gt_02) -> None:
    seq, masks, parents = gt_02
    label = _steady_track(seq, masks, GAP_AT - 1, GAP_AT + 3)
    broken, broken_parents, born = _break(masks, parents, label, range(GAP_AT, GAP_AT + 3))
    assert close_gaps(broken, broken_parents, max_frames=2)[2] == 0
    joined, _, closed = close_gaps(broken, broken_parents, max_frames=3)
    assert closed == 1
    assert not any((f == born).any() for f in joined)
    assert all((joined[t] == label).any() for t in range(GAP_AT - 1, GAP_AT + 4))


def test_a_pair_farther_than_the_limit_is_never_joined(gt_02) -> None:
    seq, masks, parents = gt_02
    label = _steady_track(seq, masks, GAP_AT - 1, GAP_AT + 1)
    broken, broken_parents, born = _break(masks, parents, label, range(GAP_AT, GAP_AT + 1))
    ends = track_ends(broken)
    jump = float(np.linalg.norm(ends.start_centroid[born] - ends.end_centroid[label])) / ends.median_diameter
    assert jump > 0
    assert close_gaps(broken, broken_parents, max_diameters=0.9 * jump)[2] == 0
    assert close_gaps(broken, broken_parents, max_diameters=1.1 * jump)[2] == 1


def test_the_unbroken_ground_truth_is_left_as_it_is(gt_02) -> None:
    """Tracks that really end (a nucleus leaving the field) and really start are never joined to each other."""
    seq, masks, parents = gt_02
    for diameters in (1.0, 3.0):
        frames, new_parents, closed = close_gaps(masks, parents, max_frames=2, max_diameters=diameters)
        assert closed == 0
        assert new_parents == parents
        assert all(np.array_equal(a, b) for a, b in zip(frames, masks, strict=True))


def test_a_mother_is_never_joined_to_a_track_born_after_it(gowt1: Path) -> None:
    """A daughter the linker lost at birth (no parent link, first frame missed) stays apart from its mother:
    a mother's track ends at the division by definition."""
    seq = CTCSequence(gowt1, "02")
    parents = _parents(seq)
    mother = next(m for m in sorted(set(parents.values()))
                  if sum(p == m for p in parents.values()) == 2 and seq.tracks[m].end + 1 < seq.n_frames - 3)
    daughter = min(c for c, m in parents.items() if m == mother)
    end = seq.tracks[mother].end
    window = list(range(end - 2, end + 4))
    masks = [full_masks(seq, t) for t in window]
    local_parents = {c: m for c, m in parents.items() if m == mother}
    at_birth = window.index(seq.tracks[daughter].begin)
    masks[at_birth][masks[at_birth] == daughter] = 0
    lost = {c: m for c, m in local_parents.items() if c != daughter}

    frames, new_parents, closed = close_gaps(masks, lost, max_frames=2, max_diameters=3.0)

    assert closed == 0
    assert new_parents == lost
    assert all(np.array_equal(a, b) for a, b in zip(frames, masks, strict=True))


def test_bad_gap_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="close_gaps: gap_frames = -1 .* must be >= 0"):
        close_gaps([np.zeros((4, 4), np.uint16)] * 3, {}, max_frames=-1)
    for section in ({"gap_frames": -1}, {"method": "trackastra", "trackastra": {"gap_diameters": -0.5}}):
        with pytest.raises(ValueError, match="must be >= 0") as error:
            tracker_config(section, 0)
        assert "\n" not in str(error.value)
