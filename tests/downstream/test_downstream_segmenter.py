"""StarDist trained from scratch on a real GOWT1 window (full nucleus masks exported as SEG, the way
the 'real' generator writes them), then applied to a held-out real sequence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.ctc import CTCFormatError, CTCSequence, window_sequence, write_sequence
from benchmark.ctc.crops import full_masks
from downstream.normalize import normalize_image
from downstream.segmenter import (
    STARDIST_DEFAULT_THRESHOLDS,
    SegmenterConfig,
    effective_patch_size,
    load_segmenter,
    segment_frames,
    segment_sequence,
    split_frames,
    train_segmenter,
)

TINY = SegmenterConfig(patch_size=128, batch_size=2, epochs=2, steps_per_epoch=5, max_threshold_frames=2,
                       unet_n_filter_base=16)


def _export(seq: CTCSequence, out: Path, frames: range) -> None:
    write_sequence(out, seq.name, [seq.image(t) for t in frames], [full_masks(seq, t) for t in frames],
                   {k: v.parent for k, v in seq.tracks.items()})


@pytest.fixture(scope="module")
def full_window(gowt1_window: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sequences 01 and 02 of the real window, 8 frames each, full masks as TRA and SEG of every frame."""
    out = tmp_path_factory.mktemp("full") / "Fluo-N2DH-GOWT1"
    for name in ("01", "02"):
        _export(CTCSequence(gowt1_window, name), out, range(8))
    return out


@pytest.fixture(scope="module")
def trained(full_window: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_segmenter(full_window, TINY, tmp_path_factory.mktemp("models") / "stardist_tiny", progress=False)


@pytest.fixture(scope="module")
def test_sequence(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> CTCSequence:
    """A 4-frame real cut of the held-out GOWT1 02 (prediction costs ~1 s per frame on 2 cores)."""
    out = tmp_path_factory.mktemp("test02") / "Fluo-N2DH-GOWT1"
    window_sequence(CTCSequence(gowt1, "02"), out, frames=range(40, 44), box=(256, 256, 256, 256))
    return CTCSequence(out, "02")


def test_split_holds_out_whole_sequences_or_last_frames(full_window: Path, tmp_path: Path) -> None:
    train, val = split_frames(full_window, 0.15)
    assert {s.name for s, _ in train} == {"01"} and {s.name for s, _ in val} == {"02"}
    single = tmp_path / "single"
    shutil.copytree(full_window / "01", single / "01")
    shutil.copytree(full_window / "01_GT", single / "01_GT")
    train, val = split_frames(single, 0.25)
    assert [t for _, t in val] == [6, 7] and [t for _, t in train] == list(range(6))


def test_patch_never_exceeds_the_frame() -> None:
    config = SegmenterConfig(patch_size=256, grid=(2, 2))
    assert effective_patch_size(config, [(200, 300), (1024, 1024)]) == (192, 256)
    with pytest.raises(ValueError, match="smaller than the minimum"):
        effective_patch_size(config, [(10, 300)])


def test_trains_writes_folder_and_predicts_label_frames(trained: Path, test_sequence: CTCSequence) -> None:
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "weights_best.h5", "thresholds.json", "history.json", "training.json"} <= names
    assert not [p for p in trained.parent.iterdir() if p.name.endswith(".partial")]
    history = json.loads((trained / "history.json").read_text())
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2 and len(history["epoch_seconds"]) == 2
    assert all(np.isfinite(history["loss"]))
    summary = json.loads((trained / "training.json").read_text())
    assert summary["patch_size"] == [128, 128] and summary["pretrained"] is False
    assert all(name.startswith("01:") for name in summary["train_frames"])

    labels = segment_sequence(trained, test_sequence, progress=False)
    assert len(labels) == test_sequence.n_frames == 4
    for frame in labels:
        assert frame.dtype == np.uint16 and frame.shape == test_sequence.frame_shape

    model = load_segmenter(trained)  # reload gives StarDist's default thresholds and the same prediction
    thresholds = json.loads((trained / "thresholds.json").read_text())
    assert thresholds == STARDIST_DEFAULT_THRESHOLDS == {"prob": 0.5, "nms": 0.4}
    assert summary["threshold_policy"] == "default" and summary["threshold_frames"] == 0
    assert summary["thresholds"] == thresholds
    assert (model.thresholds.prob, model.thresholds.nms) == (0.5, 0.4)
    named = segment_frames(trained, test_sequence, [0], progress=False, thresholds=thresholds)
    assert np.array_equal(named[0], labels[0])  # the folder's own values passed explicitly: the same masks
    strict = segment_frames(trained, test_sequence, [0], progress=False, thresholds={"prob": 1.0, "nms": 0.4})
    assert not strict[0].any()  # no pixel of StarDist's probability map exceeds 1: an override is applied
    again, _ = model.predict_instances(normalize_image(test_sequence.image(0)), show_tile_progress=False)
    assert np.array_equal(again.astype(np.uint16), labels[0])


def test_optimize_policy_fits_thresholds_on_validation_frames(full_window: Path, tmp_path: Path) -> None:
    """'optimize' runs StarDist's optimize_thresholds on held-out TRAINING frames (sequence 02 of the window
    here, never a test sequence) and the model folder predicts with what it found."""
    config = SegmenterConfig(**{**TINY.__dict__, "epochs": 1, "steps_per_epoch": 2, "thresholds": "optimize"})
    model_dir = train_segmenter(full_window, config, tmp_path / "stardist_opt", progress=False)
    summary = json.loads((model_dir / "training.json").read_text())
    fitted = json.loads((model_dir / "thresholds.json").read_text())
    assert summary["threshold_policy"] == "optimize" and summary["threshold_frames"] == 2
    assert summary["thresholds"] == fitted and set(fitted) == {"prob", "nms"}
    assert 0.0 < fitted["prob"] < 1.0 and fitted["nms"] in (0.3, 0.4, 0.5)
    model = load_segmenter(model_dir)
    assert (model.thresholds.prob, model.thresholds.nms) == pytest.approx((fitted["prob"], fitted["nms"]))


def test_unknown_threshold_policy_is_refused() -> None:
    with pytest.raises(ValueError, match=r"thresholds must be one of \['default', 'optimize'\], got 'best'"):
        SegmenterConfig(thresholds="best")


def test_existing_model_folder_is_not_overwritten(trained: Path, full_window: Path) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        train_segmenter(full_window, TINY, trained, progress=False)


def test_dataset_without_masks_is_rejected(gowt1_window: Path, tmp_path: Path) -> None:
    shutil.copytree(gowt1_window / "01", tmp_path / "raw" / "01")
    with pytest.raises(CTCFormatError, match="no sequence has NN_GT/SEG"):
        train_segmenter(tmp_path / "raw", TINY, tmp_path / "model", progress=False)


@pytest.mark.slow
def test_same_seed_same_weights(full_window: Path, trained: Path, tmp_path: Path) -> None:
    """Keras auto-names layers per process, so compare weights in layer order, not by name."""
    again = train_segmenter(full_window, TINY, tmp_path / "stardist_tiny", progress=False)
    first, second = load_segmenter(trained).keras_model.get_weights(), load_segmenter(again).keras_model.get_weights()
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert (trained / "thresholds.json").read_text() == (again / "thresholds.json").read_text()


def test_a_torch_optimizer_after_stardist_does_not_crash_the_process() -> None:
    """A run trains StarDist, then a torch model (trackastra) in the same process: triton's native library,
    which torch's first optimizer loads, segfaults when TensorFlow came first. ``stardist_models`` loads it first."""
    import subprocess
    import sys

    code = ("from downstream.segmenter import stardist_models; stardist_models()\n"
            "import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)]); print('alive')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip().endswith("alive"), done.stderr[-2000:]


def test_averaged_weights_are_the_mean_of_the_last_epochs(full_window: Path, trained: Path, tmp_path: Path) -> None:
    """``average_last_epochs``: the model predicts with the mean of the weights after each of its last epochs.
    Epoch 1's weights are TINY's (same seed, same steps); the mean of epochs 1 and 2 lies between epoch 1's and
    the final weights, and the loaded model carries it, not StarDist's best-loss checkpoint."""
    from dataclasses import replace

    one = train_segmenter(full_window, replace(TINY, epochs=1), tmp_path / "one", progress=False)
    averaged = train_segmenter(full_window, replace(TINY, average_last_epochs=2), tmp_path / "avg", progress=False)
    assert json.loads((averaged / "training.json").read_text())["weights_file"] == "weights_average.h5"
    assert json.loads((trained / "training.json").read_text())["weights_file"] == "weights_best.h5"
    last = load_segmenter(averaged)
    last.keras_model.load_weights(str(averaged / "weights_last.h5"))
    first_w = load_segmenter(one).keras_model.get_weights()
    mean_w = load_segmenter(averaged).keras_model.get_weights()
    for a, m, b in zip(first_w, mean_w, last.keras_model.get_weights(), strict=True):
        np.testing.assert_allclose(m, (a.astype(np.float64) + b) / 2, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="average_last_epochs must be in"):
        SegmenterConfig(epochs=2, average_last_epochs=3)


def test_stardist_augmenter_moves_labels_with_the_image_and_widens_intensity(gowt1_window: Path) -> None:
    """Both augmenters flip and rotate image and labels alike (a label must stay on its nucleus); the
    "stardist" one spreads intensities wider than "mild" and adds noise (the candidate against synthetic-trained
    models finding nuclei in the real background). Real frame, seeded global RNG as StarDist's generator uses."""
    from downstream.segmenter import AUGMENTERS

    seq = CTCSequence(gowt1_window, "01")
    t = next(iter(seq.seg_files))
    image = normalize_image(seq.image(t))[:128, :128].astype(np.float32)
    labels = full_masks(seq, t)[:128, :128]
    spreads = {}
    for name, augment in AUGMENTERS.items():
        np.random.seed(3)
        outs = [augment(image, labels) for _ in range(40)]
        for x, y in outs:
            assert x.dtype == np.float32 and y.shape == labels.shape
            # the one flip/rotation of the labels that y is must also be the image's (up to intensity changes)
            views = [np.rot90(a if k < 4 else a[:, ::-1], k % 4) for a in (labels, image) for k in range(8)]
            matches = [k for k in range(8) if np.array_equal(views[k], y)]
            assert matches, f"{name}: labels are not a flip/rotation of the input"
            assert max(np.corrcoef(views[8 + k].ravel(), x.ravel())[0, 1] for k in matches) > 0.9
        spreads[name] = np.std([float(np.mean(x)) for x, _ in outs])
    assert spreads["stardist"] > 2 * spreads["mild"]
    with pytest.raises(ValueError, match="augmenter must be one of"):
        SegmenterConfig(augmenter="strong")


def test_default_augmenter_keeps_the_stage_key() -> None:
    """A model trained before ``augmenter`` existed is the "mild" one: that default stays out of the
    train-segmenter key (cached models and committed bundles stay valid); another value enters it."""
    from types import SimpleNamespace

    from benchmark.stages import segmenter_params

    def params(**segmenter: object) -> dict:
        return segmenter_params(SimpleNamespace(config=SimpleNamespace(seed=0, segmenter=segmenter)))

    assert "augmenter" not in params() and params() == params(augmenter="mild")
    assert params(augmenter="stardist")["augmenter"] == "stardist"
