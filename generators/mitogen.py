"""MitoGen-style simulator: fitted mask video + per-cell fractal texture advected with the cell + imaging model.

Per cell, a fractal (fBm: 6 octaves of band-limited Gaussian noise, amplitude ratio ``persistence`` per
octave) texture lives in the cell's canonical crop. Between frames it is carried along by the cell's own
deformation (the synthetic contours have point correspondence, so the canonical flow is the exact radial
map ``rho -> rho * r_t(alpha) / r_t-1(alpha)``; translation and rotation happen at composition) and
evolves slowly by blending in fresh noise. Daughters inherit their mother's last texture. Cells in the
pre-division stage are brighter (fitted stage brightness) with smoother, condensed chromatin. A cell's
level is the mask model's log-normal brightness (``intensity_level * CellState.intensity``, shared with
BVDM). The clean phantom (ADU above background) then goes through the frame model shared by every
generator, ``generators.imaging.ImagingModel.render``, whose background, noise, PSF and bleaching are
fitted on the same real sequence; as a phantom (the object, not an observation) it is blurred whole by
the PSF, where BVDM's observed textures are not; both get the real rim (blur + out-of-focus haze).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence, write_sequence
from benchmark.ctc.crops import annotated_frames, full_masks
from generators.base import GenerateSpec, Generator, GeneratorConfig, register_generator
from generators.imaging import ImagingModel
from generators.masks.compose import compose_frame
from generators.masks.shape_model import radius_at
from generators.masks.synth import MaskVideoConfig, MaskVideoModel
from generators.real_cells import clean_cell_crops, oracle_frames, oracle_state, real_parents

OCTAVES = 6


@dataclass
class MitoGenConfig(GeneratorConfig):
    """Texture and fitting knobs; 0 for ``texture_scale``/``texture_contrast`` means 'fit on the data'."""

    texture_scale: float = 0.0  # px, base (coarsest) feature size of the fBm before the PSF
    texture_contrast: float = 0.0  # std/mean of the texture before the PSF
    texture_persistence: float = 0.5  # amplitude ratio between successive octaves
    texture_evolution: float = 0.03  # fraction of the texture variance renewed per frame
    mitotic_smoothing: float = 0.5  # contrast factor in the pre-division stage (condensed, smoother)
    max_fit_frames: int = 40  # annotated frames used for the shape/scene fit (evenly spaced)
    imaging_frames: int = 8


def fbm_filter(size: int, scale: float, persistence: float = 0.5, octaves: int = OCTAVES) -> np.ndarray:
    """Fourier-domain amplitude filter of an fBm: octave k is Gaussian-smoothed noise at ``scale / 2^k``."""
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    total = np.zeros((size, size))
    norm = 0.0
    for k in range(octaves):
        s = max(scale / 2**k, 0.35)
        gauss = np.exp(-2 * math.pi**2 * s * s * f2)
        # a Gaussian-smoothed white noise of width s has variance ~ 1 / (8 pi s^2): equalise, then weight
        weight = persistence**k * math.sqrt(8 * math.pi) * s
        total += weight * gauss
        norm += weight**2 / (8 * math.pi * s * s)
    return total / math.sqrt(norm)


def fbm(filt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One zero-mean, unit-variance fBm field ``(S, S)`` (periodic)."""
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal(filt.shape)) * filt).real
    return ((field - field.mean()) / max(float(field.std()), 1e-9)).astype(np.float32)


def measure_texture(seq: CTCSequence, imaging: ImagingModel, max_frames: int = 6) -> tuple[float, float]:
    """(lag-1 autocorrelation, noise-corrected CV) of the real nucleus interiors (after the real PSF)."""
    frames = annotated_frames(seq)
    picks = sorted({frames[i] for i in np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int)})
    read_var = imaging.read_noise**2
    rhos, cvs = [], []
    for t in picks:
        image = seq.image(t).astype(np.float64)
        labels = full_masks(seq, t)
        inner = ndimage.binary_erosion(labels > 0, iterations=2) & (labels > 0)
        for label, sl in enumerate(ndimage.find_objects(np.where(inner, labels, 0)), start=1):
            if sl is None:
                continue
            region = image[sl]
            sel = inner[sl] & (labels[sl] == label)
            both = sel[:, 1:] & sel[:, :-1]
            if sel.sum() < 30 or both.sum() < 20:
                continue
            mean = float(region[sel].mean()) - imaging.background
            if mean <= 0:
                continue
            noise = read_var + imaging.gain * mean
            var_tex = float(region[sel].var()) - noise
            diff_var = float(np.var((region[:, 1:] - region[:, :-1])[both])) - 2 * noise
            if var_tex <= 0:
                continue
            rhos.append(float(np.clip(1 - diff_var / (2 * var_tex), 0.05, 0.995)))
            cvs.append(math.sqrt(var_tex) / mean)
    if not rhos:
        return 0.7, 0.1
    return float(np.median(rhos)), float(np.median(cvs))


def canonical_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Polar coordinates (rho, alpha) of every crop pixel around the crop centre (canonical frame)."""
    c = (size - 1) / 2
    u, v = np.mgrid[0:size, 0:size].astype(np.float64) - c
    return np.hypot(u, v), np.arctan2(v, u)


def advect(texture: np.ndarray, previous: np.ndarray, current: np.ndarray,
           grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Carry a canonical texture from contour ``previous`` to ``current`` (radii, 60 rays) by the radial map."""
    rho, alpha = grid
    size = texture.shape[0]
    c = (size - 1) / 2
    source = rho * radius_at(previous, alpha) / np.maximum(radius_at(current, alpha), 1e-6)
    coords = [c + source * np.cos(alpha), c + source * np.sin(alpha)]
    return ndimage.map_coordinates(texture, coords, order=1, mode="reflect").astype(np.float32)


@register_generator("mitogen")
class MitoGenGenerator(Generator):
    """Procedural MitoGen-style videos fitted on one real sequence (no learning)."""

    config_class = MitoGenConfig

    def __init__(self, config: MitoGenConfig | None = None) -> None:
        super().__init__(config)
        self.masks: MaskVideoModel | None = None
        self.imaging: ImagingModel | None = None
        self.texture: dict[str, float] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, real: CTCSequence) -> MitoGenGenerator:
        cfg: MitoGenConfig = self.config  # type: ignore[assignment]
        self.masks = MaskVideoModel.fit(real, config=MaskVideoConfig(max_fit_frames=cfg.max_fit_frames,
                                                                     progress=cfg.progress))
        self.imaging = ImagingModel.fit(real, max_frames=cfg.imaging_frames)
        rho1, cv = measure_texture(real, self.imaging)
        # measured correlation length includes the PSF: l_m^2 = l^2 + 2 sigma^2 for a Gaussian field
        measured = math.sqrt(-1.0 / (2 * math.log(rho1)))
        scale = cfg.texture_scale or math.sqrt(max(measured**2 - 2 * self.imaging.psf_sigma**2, 1.0))
        contrast = cfg.texture_contrast or self._contrast_before_psf(cv, scale)
        self.texture = {"scale": float(scale), "contrast": float(contrast), "measured_rho1": rho1,
                        "measured_cv": cv}
        return self

    def _contrast_before_psf(self, cv_after: float, scale: float) -> float:
        """Pre-PSF contrast whose blurred fBm has the measured CV (the PSF removes fine-octave variance)."""
        assert self.imaging is not None and self.masks is not None
        size = self.masks.crop_size
        field = fbm(fbm_filter(size, scale, self.config.texture_persistence), np.random.default_rng(0))
        blurred = ndimage.gaussian_filter(field, self.imaging.psf_sigma, mode="wrap")
        return float(np.clip(cv_after / max(float(blurred.std()), 1e-3), 0.0, 1.5))

    # ------------------------------------------------------------------ save / load
    def _save_state(self, directory: Path) -> None:
        if self.masks is None or self.imaging is None:
            raise RuntimeError("mitogen: fit() before save()")
        state = {"masks": self.masks.to_dict(), "imaging": self.imaging.to_dict(), "texture": self.texture}
        (directory / "state.json").write_text(json.dumps(state, indent=1))

    def _load_state(self, directory: Path) -> None:
        path = directory / "state.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fitted mitogen state is missing")
        state = json.loads(path.read_text())
        self.masks = MaskVideoModel.from_dict(state["masks"])
        self.imaging = ImagingModel.from_dict(state["imaging"])
        self.texture = {k: float(v) for k, v in state["texture"].items()}

    # ------------------------------------------------------------------ generate
    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        if self.masks is None or self.imaging is None:
            raise RuntimeError("mitogen: fit() or load() before generate()")
        out_dir = Path(out_dir)
        for index in range(spec.n_sequences):
            rng = np.random.default_rng([spec.seed, index])
            images, labels, parents = self.render_sequence(spec.n_frames, spec.shape, rng,
                                                           desc=f"mitogen {index + 1:02d}")
            write_sequence(out_dir, f"{index + 1:02d}", images, labels, parents, overwrite=True,
                           progress=self.config.progress)
        (out_dir / "generator.json").write_text(json.dumps(
            {"generator": self.name, "config": asdict(self.config), "spec": asdict(spec)}, indent=1))
        return out_dir

    def render_sequence(self, n_frames: int, shape: tuple[int, int] | None, rng: np.random.Generator,
                        desc: str = "mitogen") -> tuple[list[np.ndarray], list[np.ndarray], dict[int, int]]:
        """Raw frames (fitted dtype), track-labelled masks and the parent map of one synthetic video."""
        assert self.masks is not None and self.imaging is not None
        cfg: MitoGenConfig = self.config  # type: ignore[assignment]
        video, contours = self.masks.sample_with_contours(n_frames, shape, rng)
        size = video.crop_size
        filt = fbm_filter(size, self.texture["scale"], cfg.texture_persistence)
        grid = canonical_grid(size)
        keep = math.sqrt(1 - cfg.texture_evolution)
        fresh = math.sqrt(cfg.texture_evolution)
        level = self.level
        textures: dict[int, np.ndarray] = {}
        images, labels = [], []
        illumination = self.imaging.illumination(video.shape, rng)
        for t in tqdm(range(n_frames), desc=desc, disable=not self.config.progress, leave=False):
            cells = video.frames[t]
            rendered = []
            for cell in cells:
                radii = contours[t][cell.label]
                if cell.label in textures:
                    tex = advect(textures[cell.label], contours[t - 1][cell.label], radii, grid)
                    tex = keep * tex + fresh * fbm(filt, rng)
                else:
                    mother = video.parents.get(cell.label, 0)
                    if mother in textures and t > 0 and mother in contours[t - 1]:
                        tex = advect(textures[mother], contours[t - 1][mother], radii, grid)
                        tex = keep * tex + fresh * fbm(filt, rng)
                    else:
                        tex = fbm(filt, rng)
                tex = (tex - tex.mean()) / max(float(tex.std()), 1e-6)
                textures[cell.label] = tex
                contrast = self.texture["contrast"] * (cfg.mitotic_smoothing if cell.stage == 1 else 1.0)
                rendered.append(np.maximum(level * cell.intensity * (1 + contrast * tex), 0.0))
            alive = {c.label for c in cells}
            for label in [k for k in textures if k not in alive and k not in video.parents.values()]:
                del textures[label]
            clean, frame_labels = compose_frame(cells, video.shape, rendered, background=0.0)
            if t == 0:
                level_fix = self._edge_loss(clean, frame_labels)
            images.append(self.imaging.render(clean * level_fix, t, rng, illumination, labels=frame_labels, phantom=True))
            labels.append(frame_labels)
        return images, labels, video.parents

    @property
    def level(self) -> float:
        """ADU above background of a cell of ``intensity`` 1 (cell-weighted, from the mask model)."""
        assert self.masks is not None and self.imaging is not None
        return self.masks.intensity_level or self.imaging.signal_level

    def _edge_loss(self, clean: np.ndarray, frame_labels: np.ndarray) -> float:
        """Gain that keeps the cells' mean levels through the PSF (the blur moves signal out of each mask):
        the median over the first frame's cells of clean / blurred in-mask mean."""
        assert self.imaging is not None
        ids = np.unique(frame_labels[frame_labels > 0])
        if not len(ids) or self.imaging.psf_sigma <= 0:
            return 1.0
        blurred = ndimage.gaussian_filter(clean, self.imaging.psf_sigma)
        before = np.asarray(ndimage.mean(clean, frame_labels, ids))
        after = np.asarray(ndimage.mean(blurred, frame_labels, ids))
        ok = after > 0
        return float(np.median(before[ok] / after[ok])) if ok.any() else 1.0

    # ------------------------------------------------------------------ oracle
    def render_oracle(self, real: CTCSequence, out_dir: Path, n_frames: int | None = None) -> Path:
        """Real textures through MitoGen's own frame path: denoised real signal (MitoGen's textures are
        noise-free signal above background) cut at the real masks, composed at the real positions, the
        PSF edge-loss gain, then ``ImagingModel.render`` as a phantom (blurred whole, rim, fresh noise)."""
        if self.masks is None or self.imaging is None:
            raise RuntimeError("mitogen: fit() or load() before render_oracle()")
        out_dir = Path(out_dir)
        size = self.masks.crop_size
        rng = np.random.default_rng([0, 1])
        illumination = self.imaging.illumination(real.frame_shape, rng)
        images, labels = [], []
        for index, (t, cells) in enumerate(clean_cell_crops(real, size, oracle_frames(real, n_frames), self.imaging,
                                                            border_ok=True, progress=self.config.progress,
                                                            desc="mitogen oracle")):
            states = [oracle_state(crop, size) for crop, _ in cells]
            clean, _ = compose_frame(states, real.frame_shape, [np.where(c.mask, s, 0.0) for c, s in cells])
            masks = full_masks(real, t)
            if index == 0:
                level_fix = self._edge_loss(clean, masks)
            images.append(self.imaging.render(clean * level_fix, index, rng, illumination, labels=masks, phantom=True))
            labels.append(masks)
        write_sequence(out_dir, "01", images, labels, real_parents(real), overwrite=True)
        return out_dir
