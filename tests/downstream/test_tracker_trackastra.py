"""trackastra trained from scratch on real GOWT1: a tiny transformer trained on sequence 01 of a real
256 x 256 x 20-frame window (GT lineage, full masks grown from TRA markers), linking GT-derived full masks of
the held-out sequence 02, scored by py-ctcmetrics against 02_GT; plus the profile's choice of tracker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import build_run_config
from benchmark.ctc import ResultSequence, validate_result, write_result
from benchmark.metrics.ctc import ctc_scores
from benchmark.pipeline import check_run_config
from downstream.tracker import (
    TRACKERS,
    TrackastraConfig,
    TrackerConfig,
    track_with_trackastra,
    tracker_config,
    tracker_stage_key,
    train_trackastra,
)

#: seconds on 2 shared cores: 160 steps of a ~28 k-parameter model
TINY = dict(detections="full", d_model=32, num_encoder_layers=1, num_decoder_layers=1, epochs=4,
            steps_per_epoch=40, warmup_steps=5)


@pytest.fixture(scope="module")
def model(train_01: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_trackastra(train_01, TrackastraConfig(**TINY), tmp_path_factory.mktemp("m") / "trackastra",
                            progress=False)


def _unlinked(masks: list[np.ndarray], res_dir: Path) -> Path:
    """The trivial tracker: every detection its own one-frame track (what an untrained model's links give)."""
    frames, offset = [], 0
    for m in masks:
        labels = np.unique(m)[1:]
        lut = np.zeros(int(m.max()) + 1, np.uint32)
        lut[labels] = offset + 1 + np.arange(len(labels))
        offset += len(labels)
        frames.append(lut[m])
    write_result(res_dir, frames, {})
    return res_dir


def test_trained_from_scratch_beats_unlinked_on_held_out_real_sequence(model: Path, test_02, tmp_path: Path) -> None:
    seq, masks = test_02
    res = track_with_trackastra(model, seq, masks, tmp_path / "trackastra" / "02_RES")
    assert validate_result(res, seq.n_frames) == []
    scores = ctc_scores(res, seq.gt_dir, ("TRA", "DET"))
    trivial = ctc_scores(_unlinked(masks, tmp_path / "unlinked" / "02_RES"), seq.gt_dir, ("TRA",))
    assert scores["DET"] > 0.95  # GT-derived masks: every detection is kept, linked or not
    assert scores["TRA"] >= trivial["TRA"] + 0.05, (scores, trivial)  # ~0.88 unlinked; ~0.97 after training
    summary = json.loads((model / "trackastra.json").read_text())
    assert summary["pretrained"] is False and summary["n_parameters"] > 0
    assert summary["history"]["train_loss"][-1] < summary["history"]["train_loss"][0]


def test_same_seed_same_result(train_01: Path, model: Path, test_02, tmp_path: Path) -> None:
    seq, masks = test_02
    again = train_trackastra(train_01, TrackastraConfig(**TINY), tmp_path / "again", progress=False)
    assert (model / "model.pt").read_bytes() == (again / "model.pt").read_bytes()
    first = track_with_trackastra(model, seq, masks, tmp_path / "a" / "02_RES")
    second = track_with_trackastra(again, seq, masks, tmp_path / "b" / "02_RES")
    assert (first / "res_track.txt").read_bytes() == (second / "res_track.txt").read_bytes()
    for t in range(seq.n_frames):
        assert np.array_equal(ResultSequence(first).mask(t), ResultSequence(second).mask(t))


def test_empty_and_sparse_frames_stay_valid(model: Path, test_02, tmp_path: Path) -> None:
    """Segmenters miss cells and whole frames; unlinked detections must stay in the result (DET). Three empty
    frames in a row are past the default gap closing (2 frames): those detections stay lost, the one nucleus
    missed in frame 7 is filled."""
    seq, masks = test_02
    damaged = [m.copy() for m in masks]
    for t in (3, 4, 5):
        damaged[t][:] = 0
    damaged[7][damaged[7] == np.unique(damaged[7])[-1]] = 0
    res = track_with_trackastra(model, seq, damaged, tmp_path / "02_RES")
    assert validate_result(res, seq.n_frames) == []
    assert 0.8 < ctc_scores(res, seq.gt_dir, ("DET",))["DET"] < 1.0
    assert len(np.unique(ResultSequence(res).mask(7))) == len(np.unique(masks[7]))


def test_wrong_mask_count_is_rejected(model: Path, test_02, tmp_path: Path) -> None:
    seq, masks = test_02
    with pytest.raises(ValueError, match="mask frames for a sequence of"):
        track_with_trackastra(model, seq, masks[:-1], tmp_path / "02_RES")


# ------------------------------------------------------------------------------------------- the profile's choice
def test_default_is_the_learned_tracker_keyed_by_its_flat_section_and_model_format() -> None:
    method, config = tracker_config({"max_iter": 50}, seed=3)
    assert method is TRACKERS["learned"] and config == TrackerConfig(max_iter=50, seed=3)
    # the learned tracker's cache key is the flat section as written, whatever else [tracker] holds, plus the
    # saved model's format (2: skops, no pickle), so a stage saved as tracker.joblib is not reused
    section = {"max_iter": 50, "method": "learned", "trackastra": {"epochs": 2}}
    assert tracker_stage_key(section, 0) == {"max_iter": 50, "model_format": 2}


def test_trackastra_is_chosen_with_its_nested_table() -> None:
    method, config = tracker_config({"method": "trackastra", "trackastra": {"epochs": 2, "window": 3}}, seed=7)
    assert method is TRACKERS["trackastra"] and config == TrackastraConfig(epochs=2, window=3, seed=7)
    assert tracker_stage_key({"method": "trackastra"}, 0)["method"] == "trackastra"


@pytest.mark.parametrize(("section", "message"), [
    ({"method": "trackstra"}, r"^tracker: unknown method 'trackstra'; known: learned, trackastra$"),
    ({"method": "trackastra", "trackastra": {"widow": 4}}, r"^tracker\.trackastra: unknown parameters \['widow'\]"),
    ({"method": "trackastra", "trackastra": {"linking": "ilp"}}, r"^tracker\.trackastra: linking = 'ilp'"),
    ({"trackastra": {"epochs": "many"}}, r"^tracker\.trackastra: parameter 'epochs'"),  # checked when not chosen
    ({"method": "trackastra", "max_iterr": 5}, r"^tracker: unknown parameters \['max_iterr'\]"),
])
def test_bad_tracker_section_is_one_line(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        tracker_config(section, seed=0)
    assert "\n" not in str(info.value)


def test_profile_choosing_trackastra_is_checked_before_any_stage(tmp_path: Path) -> None:
    profile = tmp_path / "ta.toml"
    profile.write_text('extends = "ci"\n[tracker]\nmethod = "trackastra"\n[tracker.trackastra]\nepochs = 1\n')
    config = build_run_config(profile, "Fluo-N2DH-GOWT1", "mitogen")
    check_run_config(config)
    assert tracker_config(config.tracker, config.seed)[0].name == "trackastra"
    profile.write_text('extends = "ci"\n[tracker]\nmethod = "nearest"\n')
    with pytest.raises(ValueError, match=r"^profile 'ta' \(with its overrides: --param, --downstream, a sweep's grid\): tracker: unknown method 'nearest'"):
        check_run_config(build_run_config(profile, "Fluo-N2DH-GOWT1", "mitogen"))
