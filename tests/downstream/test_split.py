"""The one train/validation split (``downstream.split.holdout_split``) that the segmenter and tracker share."""

from __future__ import annotations

import pytest

from downstream.split import holdout_split


def test_whole_sequences_are_held_out_when_there_are_several() -> None:
    groups = [["a1", "a2"], ["b1"], ["c1", "c2", "c3"]]
    assert holdout_split(groups, 0.15) == (["a1", "a2", "b1"], ["c1", "c2", "c3"])  # at least one sequence
    assert holdout_split(groups, 0.9) == (["a1", "a2"], ["b1", "c1", "c2", "c3"])  # at most all but one


def test_one_sequence_gives_up_its_last_items() -> None:
    assert holdout_split([[1, 2, 3, 4, 5]], 0.25) == ([1, 2, 3], [4, 5])  # ceil(1.25) = 2
    assert holdout_split([[1, 2]], 0.9) == ([1], [2])
    with pytest.raises(ValueError, match="at least 2 items"):
        holdout_split([[1]], 0.2)
