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

``render(clean, t, rng, labels=...)`` turns a noise-free signal frame (ADU above background) into a raw
frame: bleach -> blur -> rim -> shot noise -> background + illumination -> read noise -> round and clip to the
dtype.

Two kinds of clean frames go through ``render``, and differ only in how the PSF enters:

- a *phantom* (MitoGen: procedural texture, the object before the microscope): the whole frame is
  blurred with the fitted PSF (``render(..., labels=..., phantom=True)``);
- *observed* textures (BVDM, the oracles: learned from or cut out of real frames, which the PSF has
  already blurred): blurring them again would blur the inside twice, so ``render(..., labels=...)``
  leaves the inside alone.

Both get the real rim outside the nuclei (``add_rim``: the real outside edge profile, PSF blur and
out-of-focus haze, ``rim_distance``/``rim_profile`` from ``fit_rim``; for a phantom where it is
brighter than the Gaussian PSF's own spill).

Everything after the PSF (shot noise, background, read noise, clipping at the dtype floor, rounding)
is the same for both and drawn fresh per frame. ``denoise`` inverts the noise part for training
textures: a generalised Anscombe transform with the fitted gain/read noise makes the noise unit
Gaussian, a spectral filter fitted on the real nuclei removes it while keeping the real signal's
power spectrum (``fit_denoiser``), and an unbiased inverse, tabulated by simulating this model's own
noise + clip + round path, maps back to ADU above background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage, optimize, special

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import annotated_frames, full_masks

ILLUMINATION_SCALE = 24.0  # px: correlation length of the synthetic background non-uniformity
RIM_REACH = 10.0  # px outside a nucleus over which the rim (blur + out-of-focus haze) is measured and painted
DENOISE_METHODS = ("spectral", "nlm", "gaussian", "none")
#: px inside a nucleus border from which on a pixel counts as its core: 3 px clears the PSF's blurred rim
#: (GOWT1's fitted PSF sigma is ~1.2 px), so a core level measures the nucleus, not its edge
CORE_DEPTH_PX = 3
#: px around the nuclei left out of the background (blurred rims, out-of-focus haze); the CTC's own margin
BACKGROUND_MARGIN_PX = 5
#: fraction of background pixels at the dtype minimum above which the background counts as clipped (GOWT1:
#: ~60 %; HeLa: none): its level and noise are then recovered as a censored Gaussian's
CLIPPED_BACKGROUND_FRACTION = 0.05
#: without a positive read-noise intercept, the read variance is the median noise of the darkest 30 % of bins
DARK_BIN_QUANTILE = 0.3


def core_mask(labels: np.ndarray) -> np.ndarray:
    """Pixels at least ``CORE_DEPTH_PX`` inside a nucleus: where a nucleus' own level is measured."""
    fg = labels > 0
    return fg & (ndimage.distance_transform_edt(fg) >= CORE_DEPTH_PX)


def snr_cr(image: np.ndarray, labels: np.ndarray, margin: int = BACKGROUND_MARGIN_PX) -> tuple[float, float]:
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
    d_in = ndimage.distance_transform_edt(fg)
    d_out, (oy, ox) = ndimage.distance_transform_edt(~fg, return_indices=True)
    owner = np.where(fg, labels, labels[oy, ox])
    ids = np.unique(labels[labels > 0])
    core = core_mask(labels)
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


def rim_samples(image: np.ndarray, labels: np.ndarray, background: float, reach: float = RIM_REACH,
                step: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outside-edge statistics of one frame: per distance bin (EDT distance to the nearest nucleus pixel,
    bins of ``step`` px centred on ``1, 1.5, ... reach``), the mean raw value, the mean core level (mean
    >= 3 px inside, minus ``background``) of the pixels' nearest nuclei, and the pixel count.

    Means, not medians: where the background is clipped at the dtype floor (GOWT1: 60 % zeros) a
    median hides the faint out-of-focus haze; ``ImagingModel.fit`` undoes the clipping on the means.
    """
    image = np.asarray(image, np.float64)
    fg = labels > 0
    centres = np.arange(1.0, reach + step / 2, step)
    raw, level, count = np.zeros(len(centres)), np.zeros(len(centres)), np.zeros(len(centres))
    if not fg.any() or fg.all():
        return raw, level, count
    d_out, (iy, ix) = ndimage.distance_transform_edt(~fg, return_indices=True)
    core = core_mask(labels)
    ids = np.unique(labels[core])
    cell_level = np.full(int(labels.max()) + 1, np.nan)
    cell_level[ids] = np.asarray(ndimage.mean(image, np.where(core, labels, 0), ids)) - background
    owner_level = cell_level[labels[iy, ix]]
    which = np.rint((d_out - 1.0) / step).astype(int)
    use = ~fg & (which >= 0) & (which < len(centres)) & np.isfinite(owner_level) & (owner_level > 0)
    count = np.bincount(which[use], minlength=len(centres)).astype(float)
    raw = np.bincount(which[use], image[use], minlength=len(centres))
    level = np.bincount(which[use], owner_level[use], minlength=len(centres))
    return raw, level, count


def interior_patches(image: np.ndarray, labels: np.ndarray, size: int, margin: int = 2) -> list[np.ndarray]:
    """Non-overlapping ``size`` x ``size`` patches lying wholly inside nuclei, ``margin`` px from their border."""
    inner = ndimage.binary_erosion(labels > 0, iterations=margin)
    fits = ndimage.minimum_filter(inner.astype(np.uint8), size=size, origin=-(size // 2), mode="constant") > 0
    taken = np.zeros(inner.shape, bool)
    out = []
    for y, x in zip(*np.nonzero(fits), strict=True):
        if y + size <= image.shape[0] and x + size <= image.shape[1] and not taken[y : y + size, x : x + size].any():
            out.append(np.asarray(image[y : y + size, x : x + size], np.float64))
            taken[y : y + size, x : x + size] = True
    return out


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
class FrameMeasurement:
    """What ``ImagingModel.fit`` measures on one annotated frame (raw ADU; full nucleus masks)."""

    t: int
    image: np.ndarray
    labels: np.ndarray
    background: float  # median of the pixels ``BACKGROUND_MARGIN_PX`` away from every nucleus
    background_std: float
    background_mean: float
    at_floor: float  # fraction of those pixels at the dtype minimum
    signal: float  # mean nucleus value above ``background``
    snr: float
    cr: float
    psf_sigma: float
    noise_means: np.ndarray  # (local mean, noise variance) pairs of ``noise_curve``
    noise_variances: np.ndarray

    @classmethod
    def of(cls, seq: CTCSequence, t: int, floor: float | None) -> FrameMeasurement | None:
        """The frame's measurements; None for a frame without nuclei or without background."""
        image = seq.image(t).astype(np.float64)
        labels = full_masks(seq, t)
        fg = labels > 0
        bg = ~ndimage.binary_dilation(fg, iterations=BACKGROUND_MARGIN_PX)
        if not fg.any() or not bg.any():
            return None
        background = float(np.median(image[bg]))
        snr, cr = snr_cr(image, labels)
        means, variances = noise_curve(image, floor=floor)
        return cls(t, image, labels, background, float(image[bg].std()), float(image[bg].mean()),
                   float(np.mean(image[bg] <= floor)) if floor is not None else 0.0,
                   float(image[fg].mean()) - background, snr, cr,
                   fit_edge_sigma(*edge_profile(image, labels, background)), means, variances)


def fit_bleaching(times: Sequence[float], signals: Sequence[float]) -> tuple[float, float]:
    """(rate per frame, signal at t = 0) of ``signal(t) = signal(0) exp(-rate t)``, a log-linear fit over the
    frames with a positive signal; no decay (rate 0, the mean signal) when fewer than two such frames span time."""
    times_a, signals_a = np.asarray(times, float), np.asarray(signals, float)
    positive = signals_a > 0
    if positive.sum() >= 2 and np.ptp(times_a[positive]) > 0:
        slope, intercept = np.polyfit(times_a[positive], np.log(signals_a[positive]), 1)
        bleach_rate = float(max(-slope, 0.0))
        return bleach_rate, float(np.exp(intercept)) if bleach_rate > 0 else float(np.mean(signals_a[positive]))
    return 0.0, float(max(np.mean(signals_a), 1.0))


def fit_noise(measured: Sequence[FrameMeasurement], floor: float | None) -> tuple[float, float, float, float]:
    """(background, read noise, illumination std, gain) of the Poisson-Gaussian camera ``var = read^2 + gain *
    signal`` from the frames' noise curves. The total background std is the one that reproduces the real median
    SNR at the real signal level. A background clipped at the dtype minimum (GOWT1) hides its level and noise:
    both come from a censored Gaussian, and the gain from the curve above it through the origin; otherwise a
    line through the curve gives gain and read variance, and what the total std holds beyond the read noise is
    slowly varying illumination."""
    m = np.concatenate([f.noise_means for f in measured])
    v = np.concatenate([f.noise_variances for f in measured])
    signals, snrs = [f.signal for f in measured], [f.snr for f in measured]
    total_bg = (float(np.median(signals) / np.median(snrs)) if np.median(snrs) > 0
                else float(np.median([f.background_std for f in measured])))
    if floor is not None and float(np.mean([f.at_floor for f in measured])) > CLIPPED_BACKGROUND_FRACTION:
        background, read_noise = censored_normal(float(np.mean([f.background_mean for f in measured])), total_bg, floor)
        above = m - background
        keep = above > 0
        gain = float(max(np.sum(above[keep] * (v[keep] - read_noise**2)) / max(np.sum(above[keep] ** 2), 1e-12), 0.0))
        return background, read_noise, 0.0, gain
    background = float(np.median([f.background for f in measured]))
    if len(m) >= 3 and np.ptp(m) > 0:
        slope, intercept = np.polyfit(m - background, v, 1)
        gain, read_var = float(max(slope, 0.0)), float(max(intercept, 0.0))
        if read_var == 0.0:
            read_var = float(np.median(v[m <= np.quantile(m, DARK_BIN_QUANTILE)]))
    else:
        gain, read_var = 0.0, total_bg**2
    read_var = min(read_var, total_bg**2)
    return background, math.sqrt(read_var), math.sqrt(max(total_bg**2 - read_var, 0.0)), gain


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
    #: outside edge profile: signal at EDT distance ``rim_distance`` px from the nearest nucleus pixel, as a
    #: fraction of that nucleus' core level (``fit_rim``); what ``render`` paints around observed textures
    rim_distance: list[float] = field(default_factory=list)
    rim_profile: list[float] = field(default_factory=list)
    #: radial gain (per frequency in cycles/px) of the spectral denoiser (``fit_denoiser``)
    denoise_freq: list[float] = field(default_factory=list)
    denoise_gain: list[float] = field(default_factory=list)

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
        measured = [m for t in picks if (m := FrameMeasurement.of(seq, t, floor)) is not None]
        if not measured:
            raise ValueError(f"{seq.image_dir}: no annotated frame with both nuclei and background")
        bleach_rate, signal_level = fit_bleaching([m.t for m in measured], [m.signal for m in measured])
        background, read_noise, illumination_std, gain = fit_noise(measured, floor)
        model = cls(background, read_noise, illumination_std, gain, float(np.median([m.psf_sigma for m in measured])),
                    bleach_rate, signal_level, dtype.name, max_value, float(np.median([m.snr for m in measured])),
                    float(np.median([m.cr for m in measured])))
        pairs = [(m.image, m.labels) for m in measured]
        model.fit_rim(pairs)
        model.fit_denoiser(pairs)
        return model

    def fit_rim(self, frames: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Outside edge profile from real (raw frame, full labels) pairs: per distance bin the mean raw value
        is mapped back through this model's camera (``acquisition_table``: mean raw vs signal, which undoes
        the clipping at the dtype floor) and divided by the mean core level of the nearest nuclei."""
        totals = [rim_samples(image, labels, self.background) for image, labels in frames]
        raw, level, count = (np.sum([t[k] for t in totals], axis=0) for k in range(3))
        ok = count >= 50  # near the border some half-pixel bins hold no EDT distance at all
        distances = np.arange(1.0, RIM_REACH + 0.25, 0.5)[ok]
        signal_grid, mean_raw, _ = self.acquisition_table()
        latent = np.interp(raw[ok] / count[ok], mean_raw, signal_grid)
        profile = np.minimum.accumulate(np.clip(latent / np.maximum(level[ok] / count[ok], 1e-9), 0.0, 1.0))
        self.rim_distance, self.rim_profile = distances.tolist(), profile.tolist()

    # ------------------------------------------------------------------ apply
    def illumination(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Static, smooth background non-uniformity with the fitted std (ADU)."""
        if self.illumination_std <= 0:
            return np.zeros(shape, np.float32)
        field = ndimage.gaussian_filter(rng.standard_normal(shape), ILLUMINATION_SCALE, mode="wrap")
        field /= max(float(field.std()), 1e-12)
        return (field * self.illumination_std).astype(np.float32)

    def render(self, clean: np.ndarray, t: int, rng: np.random.Generator, illumination: np.ndarray | None = None,
               bleach_offset: int = 0, *, labels: np.ndarray, phantom: bool = False) -> np.ndarray:
        """One raw frame from a noise-free signal frame (ADU above background) at time ``t``.

        ``labels`` (the frame's nucleus labels) place the real rim outside the nuclei (``add_rim``).
        ``phantom``: ``clean`` is the object itself (MitoGen), blurred whole by the PSF first, and the rim
        only adds where the real rim (out-of-focus haze) is brighter than the Gaussian PSF's; otherwise
        ``clean`` holds observed textures (BVDM, oracles: already blurred by the real PSF), whose inside
        stays as it is.
        """
        signal = clean.astype(np.float64) * math.exp(-self.bleach_rate * (t + bleach_offset))
        if phantom and self.psf_sigma > 0:
            signal = ndimage.gaussian_filter(signal, self.psf_sigma)
        rim = self.add_rim(signal, labels)
        return self.acquire(np.maximum(signal, rim) if phantom else rim, rng, illumination)

    def acquire(self, signal: np.ndarray, rng: np.random.Generator, illumination: np.ndarray | None = None) -> np.ndarray:
        """Camera: shot noise, background (+ illumination), read noise, rounding and clipping to the dtype.

        White noise: on GOWT1 the noise power at the Nyquist frequency is 0.95-0.98 of that at a quarter
        of it, inside nuclei along both axes (a lag-1 correlation below 0.03).
        """
        signal = np.maximum(np.asarray(signal, np.float64), 0.0)
        if self.gain > 0:
            signal = rng.poisson(signal / self.gain) * self.gain
        image = signal + self.background + rng.normal(0.0, self.read_noise, signal.shape)
        if illumination is not None:
            image += illumination
        dtype = np.dtype(self.dtype)
        if dtype.kind in "ui":
            image = np.clip(np.rint(image), np.iinfo(dtype).min, np.iinfo(dtype).max)
        return image.astype(dtype)

    def add_rim(self, signal: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Paint the rim outside the nuclei (PSF blur and out-of-focus haze): at EDT distance d from the
        nearest nucleus pixel, that nucleus' core level (mean signal >= 3 px inside) times ``rim_profile(d)``.

        Inside pixels are returned unchanged. Without a rim profile (``fit_rim`` found no distance bin with
        enough pixels: tiny or crowded frames) a Gaussian of ``psf_sigma`` spreads the signal outside instead.
        """
        signal = np.asarray(signal, np.float64)
        fg = labels > 0
        if not fg.any():
            return signal
        if not self.rim_profile:
            if self.psf_sigma <= 0:
                return signal
            return np.where(fg, signal, ndimage.gaussian_filter(np.where(fg, signal, 0.0), self.psf_sigma))
        d_out, (iy, ix) = ndimage.distance_transform_edt(~fg, return_indices=True)
        owner = labels[iy, ix]
        core = core_mask(labels)
        ids = np.unique(labels[fg])
        level = np.zeros(int(labels.max()) + 1, np.float64)
        level[ids] = ndimage.mean(signal, np.where(core, labels, 0), ids)
        missing = ~np.isfinite(level[ids]) | ~np.isin(ids, np.unique(labels[core]))
        if missing.any():  # nuclei too thin for a core: their mean
            level[ids[missing]] = ndimage.mean(signal, labels, ids[missing])
        fraction = np.interp(d_out, self.rim_distance, self.rim_profile, right=0.0)
        return np.where(fg, signal, np.maximum(level[owner], 0.0) * fraction)

    # ------------------------------------------------------------------ denoise
    def stabilise(self, raw: np.ndarray) -> np.ndarray:
        """Generalised Anscombe transform: Poisson-Gaussian noise of this model -> ~unit Gaussian."""
        gain = max(self.gain, 1e-6)
        inside = gain * (np.asarray(raw, np.float64) - self.background) + 0.375 * gain**2 + self.read_noise**2
        return 2.0 / gain * np.sqrt(np.maximum(inside, 0.0))

    def acquisition_table(self, n_levels: int = 256, n_draws: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(signal, E[raw], E[stabilise(raw)]) on a signal grid, by simulating ``acquire`` (cached per instance).

        The exact, unbiased inverses of the camera: at GOWT1's levels (a few photo-electrons per pixel,
        background clipped at 0 and rounded) the algebraic inverses are biased by several ADU.
        """
        cached = self.__dict__.get("_acquisition")
        if cached is not None:
            return cached
        top = max(self.max_value - self.background, 1.0) if math.isfinite(self.max_value) else 4 * self.signal_level + 1
        signal = np.concatenate([[0.0], np.geomspace(0.05, top, n_levels - 1)])
        rng = np.random.default_rng(0)
        raw = [self.acquire(np.full(n_draws, s), rng).astype(np.float64) for s in signal]
        mean_raw = np.maximum.accumulate([r.mean() for r in raw])
        mean_stable = np.maximum.accumulate([self.stabilise(r).mean() for r in raw])
        self.__dict__["_acquisition"] = (signal, mean_raw, mean_stable)  # not a dataclass field: not saved
        return self.__dict__["_acquisition"]

    def denoise(self, raw: np.ndarray, method: str = "spectral", strength: float = 0.7) -> np.ndarray:
        """Noise-free signal (ADU above background, >= 0) of a raw frame under this noise model.

        In the variance-stabilised domain (unit noise): ``spectral`` (default) multiplies the spectrum by
        the fitted ``denoise_gain(f)`` = sqrt(signal power / observed power) of real nucleus interiors, so
        the result has the REAL signal's power spectrum: denoise-then-renoise gives back the real spectrum
        (on GOWT1, FID 71.8 vs 82.9 for NLM at N = 313). ``nlm``: skimage non-local means, ``h = strength``
        (removes the predicted noise, but also 30 % of the texture power at 4-8 px); ``gaussian``: a
        Gaussian of ``strength`` px; ``none``: only the unbiased conversion to signal.
        """
        if method not in DENOISE_METHODS:
            raise ValueError(f"denoise method {method!r}: use one of {DENOISE_METHODS}")
        stable = self.stabilise(raw)
        if method == "spectral" and self.denoise_gain:
            fy, fx = np.fft.fftfreq(stable.shape[0]), np.fft.fftfreq(stable.shape[1])
            gain = np.interp(np.hypot(fy[:, None], fx[None, :]), self.denoise_freq, self.denoise_gain, right=0.0)
            gain[0, 0] = 1.0
            stable = np.fft.ifft2(np.fft.fft2(stable) * gain).real
        elif method == "spectral":
            raise ValueError("denoise 'spectral' needs a fitted denoise_gain (fit_denoiser found fewer than 5 interior "
                             "patches of 8 px or more: use another method)")
        elif method == "nlm":
            from skimage.restoration import denoise_nl_means

            stable = denoise_nl_means(stable, h=strength, sigma=1.0, patch_size=5, patch_distance=6, fast_mode=True)
        elif method == "gaussian":
            stable = ndimage.gaussian_filter(stable, strength)
        signal, _, mean_stable = self.acquisition_table()
        return np.interp(stable, mean_stable, signal).astype(np.float32)

    def fit_denoiser(self, frames: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Radial gain of the spectral denoiser from real (raw frame, full labels) pairs.

        Power spectrum of mean-free square patches inside the nuclei (2 px in), in the stabilised domain;
        the noise floor is the median power at |f| >= 0.45 cycles/px (the PSF leaves no signal there);
        gain = sqrt(max(P - floor, 0) / P), made non-increasing and 0 from its first zero on.
        """
        for size in (32, 16, 8):
            patches = [p for raw, labels in frames for p in interior_patches(self.stabilise(raw), labels, size)]
            if len(patches) >= 20:
                break
        if len(patches) < 5:
            self.denoise_freq, self.denoise_gain = [], []
            return
        stack = np.stack(patches)
        power = np.mean(np.abs(np.fft.fft2(stack - stack.mean(axis=(1, 2), keepdims=True))) ** 2, axis=0) / size**2
        f = np.fft.fftfreq(size)
        radius = np.hypot(f[:, None], f[None, :])
        floor = float(np.median(power[radius >= 0.45]))
        edges = np.arange(0.0, 0.71 + 1.0 / size, 1.0 / size)
        which = np.digitize(radius, edges) - 1
        freq, gain = [0.0], [1.0]
        for k in range(len(edges) - 1):
            sel = (which == k) & (radius > 0)
            if sel.any():
                observed = float(power[sel].mean())
                freq.append(float(radius[sel].mean()))
                gain.append(math.sqrt(max(observed - floor, 0.0) / observed) if observed > 0 else 0.0)
        gain_a = np.minimum.accumulate(np.asarray(gain))
        if (gain_a <= 0).any():
            gain_a[int(np.argmax(gain_a <= 0)):] = 0.0
        self.denoise_freq, self.denoise_gain = freq, gain_a.tolist()

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_value"] = None if math.isinf(self.max_value) else self.max_value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImagingModel:
        d = dict(d)
        d["max_value"] = float("inf") if d["max_value"] is None else float(d["max_value"])
        for key in ("rim_distance", "rim_profile", "denoise_freq", "denoise_gain"):
            d[key] = [float(x) for x in d[key]]
        return cls(**d)
