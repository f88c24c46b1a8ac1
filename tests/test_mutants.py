"""The gate's injected regressions (benchmark.mutants): switched on only by SYNTHVID_MUTANT, a typo refused,
their results keyed apart from unmutated ones; the segmenter's and the tracker's hooks do what they name.
(BVDM's and the realism hooks are exercised in tests/generators/test_bvdm.py and by scripts/gate_mutants.sh;
a mutant run's export is refused in tests/test_gate.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark import mutants
from benchmark.config import stable_hash
from benchmark.stages import Stages
from downstream.segmenter import shift_labels
from downstream.tracker.linking import random_decisions


def test_a_mutant_is_on_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mutants.MUTANT_ENV, raising=False)
    assert mutants.current() is None and not mutants.active("random-links")
    monkeypatch.setenv(mutants.MUTANT_ENV, "random-links")
    assert mutants.current() == "random-links" and mutants.active("random-links")
    assert not mutants.active("shifted-masks")
    monkeypatch.setenv(mutants.MUTANT_ENV, "random-link")
    with pytest.raises(ValueError, match="SYNTHVID_MUTANT='random-link': unknown mutant .*random-links"):
        mutants.current()
    with pytest.raises(KeyError):
        mutants.active("no-such-mutant")
    assert len(mutants.MUTANTS) >= 4


def test_a_mutant_result_never_shares_a_stage_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stages = Stages(tmp_path, "Fluo-N2DH-GOWT1")
    monkeypatch.delenv(mutants.MUTANT_ENV, raising=False)
    plain = stages.folder("train-segmenter", ("gen-abc", {"epochs": 2}))
    assert plain.name == f"train-segmenter-{stable_hash('train-segmenter', ('gen-abc', {'epochs': 2}))}"  # as before
    folders = {plain}
    for name in mutants.MUTANTS:
        monkeypatch.setenv(mutants.MUTANT_ENV, name)
        folders.add(stages.folder("train-segmenter", ("gen-abc", {"epochs": 2})))
    assert len(folders) == 1 + len(mutants.MUTANTS)


def test_shifted_masks_move_every_label(gowt1: Path) -> None:
    from benchmark.ctc import CTCSequence

    seq = CTCSequence(gowt1, "01")
    mask = seq.seg(next(iter(seq.seg_files)))
    moved = shift_labels(mask, mutants.SHIFT_PX)
    assert moved.shape == mask.shape and moved.dtype == mask.dtype
    assert np.array_equal(moved[4:, 4:], mask[:-4, :-4]) and not moved[:4].any() and not moved[:, :4].any()
    labels = set(np.unique(mask)) - {0}
    inside = {v for v in labels if (mask[-4:] != v).all() and (mask[:, -4:] != v).all()}  # none cut at the edge
    for label in inside:
        assert (moved == label).sum() == (mask == label).sum()
        overlap = ((moved == label) & (mask == label)).sum() / (mask == label).sum()
        assert overlap < 1


def test_random_links_are_one_to_one_and_seeded() -> None:
    from types import SimpleNamespace

    fps = [SimpleNamespace(a=list(range(n)), b=list(range(m))) for n, m in ((5, 5), (5, 6), (6, 4), (0, 3))]
    first, again, other = random_decisions(fps, 0), random_decisions(fps, 0), random_decisions(fps, 1)
    assert [d.links for d in first] == [d.links for d in again] != [d.links for d in other]
    for fp, decision in zip(fps, first, strict=True):
        assert len(decision.links) == min(len(fp.a), len(fp.b))
        assert len(set(decision.links.values())) == len(decision.links)  # one to one
        assert set(decision.links) <= set(range(len(fp.a))) and set(decision.links.values()) <= set(range(len(fp.b)))
        assert not decision.divisions
    assert any(i != j for d in first for i, j in d.links.items())  # not the identity
