"""BVDM frames that look real, measured against the real data with the same code on both sides.

A tiny BVDM (ci-like settings, fewer denoising steps) is fitted on a real 384 x 384 x 24 window of
GOWT1 01 and generates a 384 x 384 video of 21 frames. Its pictures are compared with the real window:

- background speckles: the share of far-background pixels (> 5 px from every nucleus) above the real
  far background's 99.9th percentile must be within 3x the real share (the old background sampler
  drew 1 % of its pixels from the unannotated bright objects' tail: ~40x the real share);
- grain: the in-nucleus high-pass std (difference-of-Gaussians residual, 3 px inside the border) of
  frame 20, on the nuclei whose track began in frame 0, must be within 0.7-1.3x the real nuclei's
  (camera noise baked into textures decayed to ~0.3x within 5 frames).

The oracle (real textures through BVDM's own frame path) must reproduce the real cells' brightness
and grain, write the real full masks, and be valid CTC.

What this test does NOT cover: the DDPM's textures at the sampling a run uses. It samples with
``t_first = 40`` (a few denoising steps from the lightly noised flat-filled mask), so the grain it checks
is mostly the frame model's (imaging noise, blur, compositing) and its 60-iteration DDPM is hardly
tested. With the ci profile's own sampling (the default preset, ``t_first = 400``) and the ci profile's
40-iteration DDPM, the in-nucleus grain of a generated window measured 2.1x real (issue 37), outside the
0.7-1.3x bound above. A check at the default preset needs a well-trained fit, more than the CPU suite can
train in its time: once a cpu fit is shipped (issue "Results that outlive a session"), this test should
load it and sample at the default preset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from benchmark.config import config_from_dict
from benchmark.ctc import CTCSequence, validate_sequence, window_sequence
from benchmark.ctc.crops import full_masks
from benchmark.ctc.validate import errors
from generators.base import GenerateSpec
from generators.bvdm.generator import BVDMConfig, BVDMGenerator

torch.set_num_threads(1)  # shared 2-core machine: 2 threads thrash under load
N_FRAMES = 21


@pytest.fixture(scope="module")
def window(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> CTCSequence:
    """The ci profile's window of GOWT1 01: frames 0-23, box (320, 320, 384, 384)."""
    out = tmp_path_factory.mktemp("gowt1_384") / "Fluo-N2DH-GOWT1"
    window_sequence(CTCSequence(gowt1, "01"), out, frames=range(0, 24), box=(320, 320, 384, 384))
    return CTCSequence(out, "01")


@pytest.fixture(scope="module")
def fitted(window: CTCSequence) -> BVDMGenerator:
    config = config_from_dict(BVDMConfig, {
        "progress": False, "max_fit_frames": 12, "imaging_frames": 4,
        "ddpm": {"block_out_channels": [8, 16, 16, 32], "norm_num_groups": 4, "batch_size": 8, "iterations": 60,
                 "checkpoint_every": 0},
        # t_first 40, not the default preset's 400: see the module docstring for what that leaves untested
        "flow": {"batch_size": 8, "iterations": 20}, "sampling": {"t_first": 40, "t_next": 4}})
    return BVDMGenerator(config).fit(window)


@pytest.fixture(scope="module")
def video(fitted: BVDMGenerator, tmp_path_factory: pytest.TempPathFactory) -> CTCSequence:
    out = fitted.generate(GenerateSpec(1, N_FRAMES, (384, 384), seed=0), tmp_path_factory.mktemp("bvdm_picture"))
    return CTCSequence(out, "01")


def far_background(seq: CTCSequence, frames: range) -> np.ndarray:
    """Pixels > 5 px from every full nucleus mask (``full_masks``: GOWT1's TRA markers are smaller than nuclei)."""
    return np.concatenate([seq.image(t)[~ndimage.binary_dilation(full_masks(seq, t) > 0, iterations=5)] for t in frames])


def highpass_std(image: np.ndarray, labels: np.ndarray, keep: set[int] | None = None) -> list[float]:
    """Per nucleus: std of ``image - Gaussian(image, 2)`` over its pixels >= 3 px inside the border."""
    image = np.asarray(image, np.float64)
    residual = image - ndimage.gaussian_filter(image, 2.0)
    inner = ndimage.binary_erosion(labels > 0, iterations=3)
    out = []
    for label in np.unique(labels[inner]):
        sel = inner & (labels == label)
        if (keep is None or label in keep) and sel.sum() >= 50:
            out.append(float(residual[sel].std()))
    return out


def test_background_has_no_speckles(window: CTCSequence, video: CTCSequence) -> None:
    real = far_background(window, range(window.n_frames)).astype(np.float64)
    synthetic = far_background(video, range(video.n_frames)).astype(np.float64)
    p999 = float(np.percentile(real, 99.9))
    real_frac, syn_frac = float(np.mean(real > p999)), float(np.mean(synthetic > p999))
    print(f"far background above the real P99.9 ({p999:.0f}): real {real_frac:.5f}, BVDM {syn_frac:.5f}; "
          f"std real {real.std():.2f}, BVDM {synthetic.std():.2f}")
    assert real_frac / 3 <= syn_frac <= 3 * real_frac


def test_nucleus_grain_at_frame_20_matches_real(window: CTCSequence, video: CTCSequence) -> None:
    tracks = video.tracks
    old = {label for label, track in tracks.items() if track.begin == 0 and track.end >= 20}
    synthetic = highpass_std(video.image(20), video.tra(20), old)
    real = [s for t in range(0, window.n_frames, 4) for s in highpass_std(window.image(t), full_masks(window, t))]
    assert len(synthetic) >= 3 and len(real) >= 10
    ratio = float(np.median(synthetic) / np.median(real))
    print(f"in-nucleus high-pass std: BVDM frame 20 {np.median(synthetic):.2f} ({len(synthetic)} nuclei), "
          f"real {np.median(real):.2f} ({len(real)}): ratio {ratio:.2f}")
    assert 0.7 <= ratio <= 1.3


def test_oracle_is_real_like_and_valid(fitted: BVDMGenerator, window: CTCSequence, tmp_path: Path) -> None:
    out = fitted.render_oracle(window, tmp_path / "oracle", n_frames=4)
    assert errors(validate_sequence(out, "01", require_complete=True)) == []
    oracle = CTCSequence(out, "01")
    assert oracle.n_frames == 4 and oracle.dtype == window.dtype
    ratios, grain = [], []
    for t in range(4):
        labels = full_masks(window, t)
        assert np.array_equal(oracle.tra(t), labels)
        ids = np.unique(labels[labels > 0])
        real_means = np.asarray(ndimage.mean(window.image(t).astype(float), labels, ids))
        oracle_means = np.asarray(ndimage.mean(oracle.image(t).astype(float), labels, ids))
        ratios.extend(oracle_means[real_means > 5] / real_means[real_means > 5])
        grain.append(np.median(highpass_std(oracle.image(t), labels)) / np.median(highpass_std(window.image(t), labels)))
    print(f"oracle / real: cell mean {np.median(ratios):.3f}, high-pass std {np.mean(grain):.2f}")
    assert 0.9 < np.median(ratios) < 1.1
    assert 0.8 < np.mean(grain) < 1.2
