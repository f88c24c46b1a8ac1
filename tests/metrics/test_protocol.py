"""The realism protocol around the extractors: one frozen intensity map per dataset, lineage clips that span
a mitosis, and equal-N feature sets saved for paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.ctc import CTCSequence, Track, window_sequence
from benchmark.datasets import DATASETS
from benchmark.metrics.frechet import Samples
from benchmark.metrics.realism import (
    RealismConfig,
    clip_paths,
    extract_units,
    intensity_range,
    load_feature_sets,
    reference_intensity_map,
    save_feature_sets,
)


def _lineage() -> dict[int, Track]:
    """1 divides into 2 and 3; 3 divides into 4 and 5; 6 is an unrelated root."""
    return {1: Track(1, 0, 9, 0), 2: Track(2, 10, 30, 1), 3: Track(3, 10, 19, 1), 4: Track(4, 20, 40, 3),
            5: Track(5, 20, 25, 3), 6: Track(6, 0, 40, 0)}


def test_track_mode_keeps_every_track_apart():
    paths = clip_paths(_lineage(), "track")
    assert [group for group, _ in paths] == [1, 2, 3, 4, 5, 6]
    assert all(set(path.values()) == {group} for group, path in paths)


def test_lineage_mode_follows_the_mother_into_one_daughter_and_covers_each_track_once():
    tracks = _lineage()
    paths = clip_paths(tracks, "lineage", seed=0)
    seen = [label for _, path in paths for label in sorted(set(path.values()))]
    assert sorted(seen) == sorted(tracks)  # every track on exactly one path
    root = next(path for group, path in paths if group == 1)
    daughters = {root[t] for t in range(10, 20)}
    assert root[9] == 1 and len(daughters) == 1 and daughters <= {2, 3}  # mother then ONE daughter
    assert all(tracks[label].parent in (0, *root.values()) for label in root.values())
    assert clip_paths(tracks, "lineage", seed=0) == paths  # seeded
    choices = {tuple(sorted(set(p.values()))) for seed in range(20) for g, p in clip_paths(tracks, "lineage", seed)
               if g == 1}
    assert len(choices) > 1  # the daughter is drawn, not always the first


def test_unknown_clip_mode_is_one_clear_error():
    with pytest.raises(ValueError, match="clip_mode must be one of track, lineage"):
        RealismConfig(clip_mode="division")


def test_lineage_clips_span_a_real_division(gowt1, tmp_path):
    """GOWT1 01: cell 16 divides at frame 16/17 into 22 (from 17) and 18 (from 21). Only lineage clips show it."""
    out = tmp_path / "Fluo-N2DH-GOWT1"
    window_sequence(CTCSequence(gowt1, "01"), out, frames=range(4, 30), box=(240, 240, 384, 384))
    seq = CTCSequence(out, "01")
    mother = next(label for label, tr in seq.tracks.items() if sum(t.parent == label for t in seq.tracks.values()) == 2)
    lo, hi = DATASETS["Fluo-N2DH-GOWT1"].intensity_map
    spans = {}
    for mode, seeds in (("track", [0]), ("lineage", range(4))):
        for seed in seeds:
            config = RealismConfig(clip_mode=mode, clip_stride=2, seed=seed, progress=False)
            units = extract_units(seq, lo, hi, config, crops=False)
            paths = dict(clip_paths(seq.tracks, mode, seed))
            spans[(mode, seed)] = [len({paths[g][t] for t in range(t0, t0 + 16)}) > 1 for g, t0 in units.clip_rows]
            assert units.clips.shape[1:] == (16, 96, 96)
    assert not any(any(v) for (mode, _), v in spans.items() if mode == "track")
    assert any(any(v) for (mode, _), v in spans.items() if mode == "lineage"), mother


def test_frozen_gowt1_map_is_the_pooled_percentiles_of_both_sequences(gowt1):
    sequences = [CTCSequence(gowt1, name) for name in ("01", "02")]
    frozen, source = reference_intensity_map("Fluo-N2DH-GOWT1", sequences)
    assert "frozen" in source
    assert frozen == pytest.approx(intensity_range(sequences, (0.5, 99.9)))
    # the map is the dataset's, not the reference sequence's own: 02 alone would map far darker
    assert intensity_range(sequences[1:])[1] < 0.5 * frozen[1]


def test_unregistered_dataset_pools_its_sequences(gowt1_window):
    sequences = [CTCSequence(gowt1_window, name) for name in ("01", "02")]
    pooled, source = reference_intensity_map("my-own-data", sequences)
    assert pooled == intensity_range(sequences) and source.startswith("pooled")


def test_feature_sets_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    sets = {"reference_crops": Samples(rng.normal(size=(6, 4)), np.array(["a:1"] * 3 + ["a:2"] * 3)),
            "synthetic_crops": Samples(rng.normal(size=(5, 4)), np.array(["b:1"] * 5))}
    back = load_feature_sets(save_feature_sets(tmp_path / "features.npz", sets))
    assert set(back) == set(sets)
    for name, samples in sets.items():
        assert np.array_equal(back[name].features, samples.features)
        assert list(back[name].groups) == list(samples.groups)
