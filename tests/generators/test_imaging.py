"""The shared frame model on real GOWT1 data: what the denoiser removes is the fitted camera noise, the
rendered background has the real speckle statistics, and the rim around observed textures follows the
real outside edge profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import full_masks
from generators.imaging import RIM_REACH, ImagingModel, edge_profile, interior_patches, rim_samples


@pytest.fixture(scope="module")
def seq(gowt1_window: Path) -> CTCSequence:
    return CTCSequence(gowt1_window, "01")


@pytest.fixture(scope="module")
def imaging(seq: CTCSequence) -> ImagingModel:
    return ImagingModel.fit(seq, max_frames=4)


def far_background(labels: np.ndarray, margin: int = 5) -> np.ndarray:
    return ~ndimage.binary_dilation(labels > 0, iterations=margin)


def radial_power(patches: list[np.ndarray]) -> np.ndarray:
    """Radially averaged power spectrum (integer frequency bins) of mean-free square patches."""
    stack = np.stack(patches)
    size = stack.shape[-1]
    power = np.mean(np.abs(np.fft.fft2(stack - stack.mean(axis=(1, 2), keepdims=True))) ** 2, axis=0) / size**2
    f = np.fft.fftfreq(size) * size
    bins = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    return (np.bincount(bins.ravel(), power.ravel()) / np.bincount(bins.ravel()))[1 : size // 2 + 1]


def test_denoiser_removes_only_camera_noise(seq: CTCSequence, imaging: ImagingModel) -> None:
    """Denoise, then add fresh noise from the fitted camera model: inside the nuclei the power spectrum of
    the real frames comes back at every frequency (within 15 %): what was removed is what the camera model
    adds, no texture went with it. What is removed is at most the predicted noise std (and most of it)."""
    rng = np.random.default_rng(0)
    real, renoised, ratios = [], [], []
    for t in (0, 7, 14, 19):
        raw = seq.image(t).astype(np.float64)
        labels = full_masks(seq, t)
        clean = imaging.denoise(raw)
        real += interior_patches(raw, labels, 16)
        renoised += interior_patches(imaging.acquire(clean, rng).astype(np.float64), labels, 16)
        inner = ndimage.binary_erosion(labels > 0, iterations=3)
        predicted = np.sqrt(imaging.read_noise**2 + imaging.gain * clean.astype(np.float64))
        ratios.append((raw - clean - imaging.background)[inner].std() / np.sqrt(np.mean(predicted[inner] ** 2)))
    spectrum_ratio = radial_power(renoised) / radial_power(real)
    print(f"{len(real)} patches; renoised / real power per frequency bin: {spectrum_ratio.round(2)}; "
          f"removed / predicted noise std {np.mean(ratios):.2f}")
    assert len(real) >= 20
    assert np.all(np.abs(spectrum_ratio - 1) < 0.15)
    assert 0.7 < np.mean(ratios) < 1.05


def test_rendered_background_has_the_real_speckle_statistics(seq: CTCSequence, imaging: ImagingModel) -> None:
    """An empty frame through the frame model vs the real far background: fraction of pixels above the
    real 99.9th percentile within 3x, and the share at the dtype floor within 10 points."""
    real = np.concatenate([seq.image(t)[far_background(full_masks(seq, t))] for t in (0, 10, 19)]).astype(float)
    p999 = float(np.percentile(real, 99.9))
    rng = np.random.default_rng(0)
    shape = seq.frame_shape
    synthetic = np.concatenate([imaging.render(np.zeros(shape), t, rng, labels=np.zeros(shape, np.uint16)).ravel()
                                for t in range(3)]).astype(float)
    real_frac, syn_frac = float(np.mean(real > p999)), float(np.mean(synthetic > p999))
    print(f"above real P99.9 = {p999}: real {real_frac:.5f}, synthetic {syn_frac:.5f}; "
          f"at floor: real {np.mean(real <= 0):.3f}, synthetic {np.mean(synthetic <= 0):.3f}")
    assert real_frac / 3 <= syn_frac <= 3 * real_frac
    assert abs(np.mean(real <= 0) - np.mean(synthetic <= 0)) < 0.1


def test_rim_around_observed_textures_follows_the_real_edge_profile(seq: CTCSequence, imaging: ImagingModel) -> None:
    """Real clean signal cut at the real masks, rendered with the rim, vs the real frames: mean raw value
    in bands of distance outside the nuclei (``rim_samples``, same code both sides) within 15 % + 0.5 ADU,
    and the inside edge (0.5-2 px in) not blurred a second time (median edge profile within 0.08)."""
    rng = np.random.default_rng(1)
    real_rim, syn_rim, gaps = [], [], []
    for t in (2, 9, 16):
        labels = full_masks(seq, t)
        clean = np.where(labels > 0, imaging.denoise(seq.image(t)), 0.0)
        rendered = imaging.render(clean, 0, rng, labels=labels)
        real_rim.append(rim_samples(seq.image(t), labels, imaging.background))
        syn_rim.append(rim_samples(rendered, labels, imaging.background))
        d_real, p_real = edge_profile(seq.image(t), labels, imaging.background)
        d_syn, p_syn = edge_profile(rendered, labels, imaging.background)
        inside = dict(zip(d_syn, p_syn, strict=True))
        gaps += [abs(p - inside[d]) for d, p in zip(d_real, p_real, strict=True) if 0 < d < 2 and d in inside]
    distances = np.arange(1.0, RIM_REACH + 0.25, 0.5)
    real_raw, syn_raw = (np.sum([r[0] for r in rims], 0) for rims in (real_rim, syn_rim))
    count = np.sum([r[2] for r in real_rim], 0)
    for lo, hi in ((1, 2), (2, 3), (3, 5), (5, 8)):
        band = (distances >= lo) & (distances < hi)
        real_mean, syn_mean = real_raw[band].sum() / count[band].sum(), syn_raw[band].sum() / count[band].sum()
        print(f"mean raw {lo}-{hi} px outside: real {real_mean:.2f}, rendered {syn_mean:.2f}")
        assert abs(syn_mean - real_mean) < 0.5 + 0.15 * real_mean
    assert gaps and max(gaps) < 0.08, gaps
