"""The release's per-frame post-processing (glow, Poisson mix, Gaussian noise), with the noise fitted.

CellCycleGAN hard-codes background 2, a 50 % Poisson mix at unit gain and Gaussian variance 5e-5 on
the [0, 1] scale. Here the background level, the photon gain of the Poisson part (slope of a
Poisson-Gaussian variance-vs-mean fit) and the Gaussian sigma (the real background's noise) are
measured on the real training sequence, in its raw grey values, so the output has its noise level.

Why this is not the shared frame model (``generators.imaging.ImagingModel``), whose camera BVDM and MitoGen
render through: this baseline reproduces the CellCycleGAN release, whose post-processing is a Poisson *mix*
(a fraction ``poisson_mix`` of the frame replaced by its Poisson draw) plus Gaussian noise on the [0, 1]
scale, not a Poisson-Gaussian camera; its parameters mean other things (a mix weight, not a gain), so the
shared model's fit cannot fill them. Measuring them with the same noise-curve estimator would change every
CellCycleGAN number already published by this benchmark (issue 36 asks for none to move); the release's own
path is what the baseline is meant to show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import full_masks

#: median of chi-square(1): median(d^2) = 0.4549 var for Gaussian d (robust to edges and outliers)
_MEDIAN_CHI2_1 = 0.4549364
#: d = x - mean(4-neighbours) has variance 1.25 var for white noise
_RESIDUAL_GAIN = 1.25


def noise_residual(image: np.ndarray) -> np.ndarray:
    """``x - mean of its 4 neighbours``: removes smooth signal, keeps white noise (variance x1.25)."""
    kernel = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)
    return image - ndimage.convolve(image, kernel, mode="reflect")


def robust_variance(residual: np.ndarray) -> float:
    """Noise variance from residuals of :func:`noise_residual` (median-based, edge-robust)."""
    return float(np.median(residual**2) / _MEDIAN_CHI2_1 / _RESIDUAL_GAIN)


def censored_normal_fit(values: np.ndarray, floor: float) -> tuple[float, float]:
    """Maximum-likelihood (mean, sigma) of a normal clipped from below at ``floor`` (e.g. uint8 0).

    Needed where the real background sits at the dtype minimum (GOWT1: ~60 % zeros), so that the
    median and residual noise estimates would both be biased.
    """
    from scipy import optimize, stats

    values = np.asarray(values, np.float64)
    clipped = values <= floor
    free = values[~clipped]
    n_clipped = int(clipped.sum())
    if free.size < 10:
        raise ValueError("censored_normal_fit: fewer than 10 unclipped values")

    def negative_log_likelihood(params: np.ndarray) -> float:
        mu, log_sigma = params
        sigma = float(np.exp(log_sigma))
        return -(n_clipped * stats.norm.logcdf((floor - mu) / sigma)
                 + np.sum(stats.norm.logpdf((free - mu) / sigma)) - free.size * log_sigma)

    start = np.array([float(np.mean(values)), np.log(float(np.std(values)) + 1e-3)])
    result = optimize.minimize(negative_log_likelihood, start, method="Nelder-Mead")
    return float(result.x[0]), float(np.exp(result.x[1]))


@dataclass(frozen=True)
class NoiseFit:
    """Measured on the real sequence, raw grey values.

    ``background``/``background_std``: level and noise sigma far from nuclei; ``gain``/``offset``:
    Poisson-Gaussian fit ``var = gain * mean + offset`` over unclipped signal levels;
    ``dtype_min``/``dtype_max``: the range output frames are clipped to.
    """

    background: float
    background_std: float
    gain: float
    offset: float
    dtype_min: float
    dtype_max: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def fit_noise(seq: CTCSequence, frames: list[int], n_bins: int = 24) -> NoiseFit:
    """Fit background level/std and the variance-vs-mean line on ``frames`` of ``seq``.

    Pixels whose 5x5 neighbourhood touches the dtype's minimum or maximum are excluded (clipping
    biases variance down); bins are quantiles of the 5x5 local mean. A background clipped at the
    dtype minimum gets its level and sigma from a censored-normal fit (the level may be below it).
    """
    info = np.iinfo(seq.dtype) if np.issubdtype(seq.dtype, np.integer) else None
    lo_value = float(info.min) if info else -np.inf
    hi_value = float(info.max) if info else np.inf
    means, residuals, background, bg_residuals = [], [], [], []
    for t in frames:
        image = seq.image(t).astype(np.float32)
        residual = noise_residual(image)
        local_mean = ndimage.uniform_filter(image, 5)
        clipped = (ndimage.minimum_filter(image, 5) <= lo_value) | (ndimage.maximum_filter(image, 5) >= hi_value)
        means.append(local_mean[~clipped])
        residuals.append(residual[~clipped])
        far = ~ndimage.binary_dilation(full_masks(seq, t) > 0, iterations=5)
        background.append(image[far])
        bg_residuals.append(residual[far])
    bg_pixels = np.concatenate(background)
    if bg_pixels.size == 0:
        raise ValueError(f"{seq.image_dir}: no background pixels to fit the noise on")
    level = float(np.median(bg_pixels))
    bg_std = float(np.sqrt(robust_variance(np.concatenate(bg_residuals))))
    if np.mean(bg_pixels <= lo_value) > 0.05:  # background clipped at the dtype minimum
        sample = bg_pixels[:: max(1, bg_pixels.size // 200_000)]
        level, bg_std = censored_normal_fit(sample, lo_value)
    mu, res = np.concatenate(means), np.concatenate(residuals)
    gain, offset = 0.0, bg_std**2
    if mu.size > 100 * n_bins:
        edges = np.unique(np.quantile(mu, np.linspace(0, 1, n_bins + 1)))
        index = np.clip(np.searchsorted(edges, mu, side="right") - 1, 0, len(edges) - 2)
        xs, ys, ws = [], [], []
        for b in range(len(edges) - 1):
            sel = index == b
            if sel.sum() < 100:
                continue
            xs.append(float(mu[sel].mean()))
            ys.append(robust_variance(res[sel]))
            ws.append(float(np.sqrt(sel.sum())))
        if len(xs) >= 3:
            slope, intercept = np.polyfit(xs, ys, 1, w=ws)
            if slope > 0:
                gain, offset = float(slope), float(intercept)
    return NoiseFit(level, bg_std, gain, offset, lo_value, hi_value)


@dataclass(frozen=True)
class PostProcess:
    """Release post-processing settings; the noise parameters come from a :class:`NoiseFit`."""

    glow_sigma: float = 2.0  # px; I <- max(Gauss(I), I)
    poisson_mix: float = 0.5  # I <- m * Poisson part + (1 - m) * I, as in the release


def postprocess_frame(frame: np.ndarray, noise: NoiseFit, settings: PostProcess, rng: np.random.Generator) -> np.ndarray:
    """Glow, Poisson mix and Gaussian noise on a raw-valued frame (background = ``noise.background``).

    The Poisson part counts photons above the background at the fitted gain (grey values per photon),
    so its variance at signal ``s`` is ``gain * s``; the Gaussian sigma is the real background's.
    Returns float32 clipped to the target dtype's range (rounding is the writer's job).
    """
    image = np.asarray(frame, np.float32)
    if settings.glow_sigma > 0:
        image = np.maximum(ndimage.gaussian_filter(image, settings.glow_sigma), image)
    signal = np.maximum(image - noise.background, 0.0)
    if settings.poisson_mix > 0 and noise.gain > 0:
        photons = rng.poisson(signal / noise.gain).astype(np.float32) * noise.gain
        signal = settings.poisson_mix * photons + (1 - settings.poisson_mix) * signal
    image = noise.background + signal  # a level below the dtype minimum is clipped back, as in the real data
    if noise.background_std > 0:
        image = image + rng.normal(0.0, noise.background_std, image.shape).astype(np.float32)
    return np.clip(image, noise.dtype_min, noise.dtype_max).astype(np.float32)
