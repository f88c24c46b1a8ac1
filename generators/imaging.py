"""Imaging model fitted on a real sequence: bleaching, PSF blur, background, Poisson-Gaussian noise, ADC.

``ImagingModel.fit(seq)`` measures on a few annotated frames (full nucleus masks from
``benchmark.ctc.crops.full_masks``):

- background level (median far from nuclei) and its slowly varying part (uneven illumination);
- photobleaching: exponential decay rate of the mean nucleus signal above background per frame;
- PSF blur: Gaussian sigma of the edge-spread profile across nucleus borders (an erf fit);
- noise: pixel noise variance vs local mean from a Laplacian residual, ``var = read^2 + gain * signal``
  (Poisson-Gaussian: ``gain`` in ADU per photo-electron);
- bit depth/dtype, and the real SNR = (mean_fg - mean_bg)/std_bg and CR = mean_fg/mean_bg (the CTC
  dataset descriptors), which a simulator calibrates against.

``apply(clean_frames, rng)`` turns noise-free signal frames (ADU above background) into raw frames:
bleach -> blur -> shot noise -> background + illumination -> read noise -> round and clip to the dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage, optimize, special

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames, full_masks

ILLUMINATION_SCALE = 24.0  # px: correlation length of the synthetic background non-uniformity


def snr_cr(image: np.ndarray, labels: np.ndarray, margin: int = 5) -> tuple[float, float]:
    """CTC-style SNR = (mean_fg - mean_bg)/std_bg and CR = mean_fg/mean_bg of one frame.

    Background = pixels farther than ``margin`` px from every nucleus (the blurred rims are excluded).
    """
    image = image.astype(np.float64)
    fg = labels > 0
    bg = ~ndimage.binary_dilation(fg, iterations=margin)
    if not fg.any() or not bg.any():
        return float("nan"), float("nan")
    mean_fg, mean_bg, std_bg = image[fg].mean(), image[bg].mean(), image[bg].std()
    return float((mean_fg - mean_bg) / max(std_bg, 1e-9)), float(mean_fg / max(mean_bg, 1e-9))


def edge_profile(image: np.ndarray, labels: np.ndarray, background: float, reach: float = 6.0,
                 step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mean normalised intensity vs signed distance to the nucleus border (inside > 0), in px."""
    image = image.astype(np.float32)
    fg = labels > 0
    d_in, (iy, ix) = ndimage.distance_transform_edt(fg, return_indices=True)
    d_out, (oy, ox) = ndimage.distance_transform_edt(~fg, return_indices=True)
    owner = np.where(fg, labels, labels[oy, ox])
    ids = np.unique(labels[labels > 0])
    core = fg & (d_in >= 3)
    level = np.zeros(int(labels.max()) + 1, np.float64)
    if core.any():
        level[ids] = ndimage.mean(image, np.where(core, labels, 0), ids)
    signed = np.where(fg, d_in - 0.5, -(d_out - 0.5))
    amplitude = level[owner] - background
    use = (np.abs(signed) <= reach) & (amplitude > 0) & (level[owner] > 0)
    # keep the outside pixels that are not closer to another nucleus' border region than to their own
    norm = (image[use] - background) / amplitude[use]
    bins = np.arange(-reach, reach + step, step)
    which = np.digitize(signed[use], bins)
    centres, means = [], []
    for k in range(1, len(bins)):
        sel = which == k
        if sel.sum() >= 20:
            centres.append(0.5 * (bins[k - 1] + bins[k]))
            means.append(float(np.median(norm[sel])))
    return np.asarray(centres), np.asarray(means)


def fit_edge_sigma(distance: np.ndarray, profile: np.ndarray) -> float:
    """Gaussian sigma (px) of a blurred step ``a * Phi((d - d0)/sigma)`` fitted to an edge profile."""
    if len(distance) < 5:
        return 1.0

    def model(d: np.ndarray, a: float, d0: float, sigma: float) -> np.ndarray:
        return a * 0.5 * (1 + special.erf((d - d0) / (sigma * math.sqrt(2))))

    try:
        (a, d0, sigma), _ = optimize.curve_fit(model, distance, profile, p0=(1.0, 0.0, 1.5),
                                               bounds=([0.2, -4.0, 0.3], [3.0, 4.0, 8.0]))
    except RuntimeError:
        return 1.0
    return float(sigma)


def noise_curve(image: np.ndarray, n_bins: int = 24, floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(local mean, pixel noise variance) pairs: variance of a 4-neighbour Laplacian residual / 1.25.

    Bins where more than 2% of the pixels sit at ``floor`` (clipped at the dtype minimum) are skipped.
    """
    image = image.astype(np.float64)
    kernel = np.array([[0, -0.25, 0], [-0.25, 1, -0.25], [0, -0.25, 0]])
    residual = ndimage.convolve(image, kernel, mode="reflect")
    local = ndimage.uniform_filter(image, 5)
    edges = np.unique(np.quantile(local, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.digitize(local, edges) - 1, 0, len(edges) - 2)
    means, variances = [], []
    for k in range(len(edges) - 1):
        sel = which == k
        if sel.sum() < 200:
            continue
        if floor is not None and np.mean(image[sel] <= floor) > 0.02:
            continue
        r = residual[sel]
        mad = np.median(np.abs(r - np.median(r)))
        means.append(float(local[sel].mean()))
        variances.append(float((1.4826 * mad) ** 2 / 1.25))
    return np.asarray(means), np.asarray(variances)


def censored_normal(mean: float, std: float, floor: float) -> tuple[float, float]:
    """(mu, sigma) of a Gaussian whose values clipped at ``floor`` have the given mean and std."""

    def moments(p: np.ndarray) -> np.ndarray:
        mu, sigma = p[0] - floor, abs(p[1]) + 1e-6
        z = mu / sigma
        cdf, pdf = special.ndtr(z), math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        m1 = mu * cdf + sigma * pdf
        m2 = (mu * mu + sigma * sigma) * cdf + mu * sigma * pdf
        return np.array([m1 + floor - mean, math.sqrt(max(m2 - m1 * m1, 1e-12)) - std])

    result = optimize.least_squares(moments, x0=[mean, max(std, 0.5)])
    return float(result.x[0]), float(abs(result.x[1]))


@dataclass
class ImagingModel:
    """Fitted acquisition parameters (ADU of the training sequence; frames as unit of time)."""

    background: float
    read_noise: float  # std (ADU) of white noise at the background level
    illumination_std: float  # std (ADU) of the slowly varying background component
    gain: float  # ADU per photo-electron (slope of noise variance vs signal)
    psf_sigma: float  # px
    bleach_rate: float  # per frame: signal(t) = signal(0) exp(-rate t)
    signal_level: float  # mean nucleus signal above background at t = 0 (ADU)
    dtype: str
    max_value: float
    real_snr: float
    real_cr: float

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, seq: CTCSequence, max_frames: int = 8) -> ImagingModel:
        """Measure background, bleaching, PSF, noise and SNR/CR on up to ``max_frames`` annotated frames."""
        frames = annotated_frames(seq)
        if not frames:
            raise ValueError(f"{seq.image_dir}: no frame has both an image and TRA markers; cannot fit imaging")
        picks = sorted({frames[i] for i in np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int)})
        dtype = np.dtype(seq.dtype)
        max_value = float(np.iinfo(dtype).max) if dtype.kind in "ui" else float("inf")
        floor = float(np.iinfo(dtype).min) if dtype.kind in "ui" else None
        times, signals, backgrounds, bg_std, snrs, crs, sigmas = [], [], [], [], [], [], []
        curve_m, curve_v, bg_means, at_floor = [], [], [], []
        for t in picks:
            image = seq.image(t).astype(np.float64)
            labels = full_masks(seq, t)
            fg = labels > 0
            bg = ~ndimage.binary_dilation(fg, iterations=5)
            if not fg.any() or not bg.any():
                continue
            background = float(np.median(image[bg]))
            times.append(t)
            backgrounds.append(background)
            bg_std.append(float(image[bg].std()))
            bg_means.append(float(image[bg].mean()))
            at_floor.append(float(np.mean(image[bg] <= floor)) if floor is not None else 0.0)
            signals.append(float(image[fg].mean()) - background)
            snr, cr = snr_cr(image, labels)
            snrs.append(snr)
            crs.append(cr)
            d, p = edge_profile(image, labels, background)
            sigmas.append(fit_edge_sigma(d, p))
            m, v = noise_curve(image, floor=floor)
            curve_m.append(m)
            curve_v.append(v)
        if not times:
            raise ValueError(f"{seq.image_dir}: no annotated frame with both nuclei and background")
        times_a, signals_a = np.asarray(times, float), np.asarray(signals, float)
        positive = signals_a > 0
        if positive.sum() >= 2 and np.ptp(times_a[positive]) > 0:
            slope, intercept = np.polyfit(times_a[positive], np.log(signals_a[positive]), 1)
            bleach_rate = float(max(-slope, 0.0))
            signal_level = float(np.exp(intercept)) if bleach_rate > 0 else float(np.mean(signals_a[positive]))
        else:
            bleach_rate, signal_level = 0.0, float(max(np.mean(signals_a), 1.0))
        background = float(np.median(backgrounds))
        m, v = np.concatenate(curve_m), np.concatenate(curve_v)
        # background std that reproduces the real median SNR at the real signal level
        total_bg = float(np.median(signals_a) / np.median(snrs)) if np.median(snrs) > 0 else float(np.median(bg_std))
        clipped = floor is not None and float(np.mean(at_floor)) > 0.05
        if clipped:
            # background sits at the dtype minimum (GOWT1): recover the latent Gaussian offset and noise
            background, read_noise = censored_normal(float(np.mean(bg_means)), total_bg, floor)
            read_var, illumination_std = read_noise**2, 0.0
            above = m - background
            keep = above > 0
            gain = float(max(np.sum(above[keep] * (v[keep] - read_var)) / max(np.sum(above[keep] ** 2), 1e-12), 0.0))
        else:
            if len(m) >= 3 and np.ptp(m) > 0:
                slope, intercept = np.polyfit(m - background, v, 1)
                gain, read_var = float(max(slope, 0.0)), float(max(intercept, 0.0))
                if read_var == 0.0:
                    read_var = float(np.median(v[m <= np.quantile(m, 0.3)]))
            else:
                gain, read_var = 0.0, total_bg**2
            read_var = min(read_var, total_bg**2)
            read_noise = math.sqrt(read_var)
            illumination_std = math.sqrt(max(total_bg**2 - read_var, 0.0))
        return cls(background, read_noise, illumination_std, gain, float(np.median(sigmas)), bleach_rate, signal_level,
                   dtype.name, max_value, float(np.median(snrs)), float(np.median(crs)))

    # ------------------------------------------------------------------ apply
    def illumination(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Static, smooth background non-uniformity with the fitted std (ADU)."""
        if self.illumination_std <= 0:
            return np.zeros(shape, np.float32)
        field = ndimage.gaussian_filter(rng.standard_normal(shape), ILLUMINATION_SCALE, mode="wrap")
        field /= max(float(field.std()), 1e-12)
        return (field * self.illumination_std).astype(np.float32)

    def render(self, clean: np.ndarray, t: int, rng: np.random.Generator, illumination: np.ndarray | None = None,
               bleach_offset: int = 0) -> np.ndarray:
        """One raw frame from a noise-free signal frame (ADU above background) at time ``t``."""
        signal = clean.astype(np.float64) * math.exp(-self.bleach_rate * (t + bleach_offset))
        if self.psf_sigma > 0:
            signal = ndimage.gaussian_filter(signal, self.psf_sigma)
        signal = np.maximum(signal, 0.0)
        if self.gain > 0:
            signal = rng.poisson(signal / self.gain) * self.gain
        image = signal + self.background + rng.normal(0.0, self.read_noise, signal.shape)
        if illumination is not None:
            image += illumination
        dtype = np.dtype(self.dtype)
        if dtype.kind in "ui":
            image = np.clip(np.rint(image), np.iinfo(dtype).min, np.iinfo(dtype).max)
        return image.astype(dtype)

    def iter_apply(self, clean_frames: Sequence[np.ndarray] | Iterator[np.ndarray], rng: np.random.Generator,
                   shape: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Stream ``render`` over frames (t = 0, 1, ...) with one static illumination field per video."""
        illumination = None
        for t, clean in enumerate(clean_frames):
            if illumination is None:
                illumination = self.illumination(shape or clean.shape, rng)
            yield self.render(clean, t, rng, illumination)

    def apply(self, clean_frames: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """Raw frames (the fitted dtype) from noise-free signal frames (ADU above background)."""
        return list(self.iter_apply(clean_frames, rng))

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_value"] = None if math.isinf(self.max_value) else self.max_value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImagingModel:
        d = dict(d)
        d["max_value"] = float("inf") if d.get("max_value") is None else float(d["max_value"])
        return cls(**d)
