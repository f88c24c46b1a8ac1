"""CellCycleGAN-style generator: shared mask videos textured cell by cell by a conditional GAN.

``fit`` fits the shared mask-video model (``generators.masks.synth.MaskVideoModel``), the intensity
mapping, the real noise (``postprocess.fit_noise``) and trains the texture GAN on the real cell
crops. ``generate`` samples mask videos, textures every cell of every frame *independently* (no
temporal propagation, as in the original), composes with ``compose_frame``, applies the release's
post-processing with the fitted noise and writes CTC sequences. Compared with BVDM only the
texturing differs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence, write_sequence
from benchmark.ctc.crops import crop_size_for, full_masks, iter_cell_crops
from benchmark.io import atomic_write_text
from generators.base import GenerateSpec, Generator, register_generator
from generators.cellcyclegan.data import (
    IntensityScale,
    TrainingCrops,
    collect_crops,
    condition,
    fit_intensity_scale,
    sample_frames,
)
from generators.cellcyclegan.postprocess import NoiseFit, PostProcess, fit_noise, postprocess_frame
from generators.cellcyclegan.train import (
    GENERATOR_FILE,
    GANTrainConfig,
    load_generator,
    make_batch,
    resolve_device,
    save_generator,
    save_sample_grid,
    train_gan,
)
from generators.masks.compose import compose_frame
from generators.masks.synth import MaskVideoConfig, MaskVideoModel
from generators.masks.video import CellState, MaskVideo
from generators.real_cells import oracle_frames, oracle_state, real_parents


@dataclass
class CellCycleGANConfig(GANTrainConfig):
    """GAN training settings (see ``GANTrainConfig``; ``GANTrainConfig.profile`` works here too) plus
    mask-model, noise and output settings."""

    crop_size: int | None = None  # None: benchmark.ctc.crops.crop_size_for(real) (96 HeLa, 128 GOWT1)
    mask_fit_frames: int | None = 30  # annotated frames the mask model is fitted on (None = all)
    noise_fit_frames: int = 6  # frames the background / Poisson-Gaussian noise fit uses
    glow_sigma: float = 2.0  # px, release value
    poisson_mix: float = 0.5  # release value
    texture_batch: int = 32  # cells textured per forward pass
    # where the GAN's resume checkpoints go (``<checkpoint_dir>/gan/``; the fit cache sets it): a runtime
    # field (``fit_cache.RUNTIME_FIELDS``), outside the fit key
    checkpoint_dir: str | None = None


@register_generator("cellcyclegan")
class CellCycleGANGenerator(Generator):
    """Conditional-GAN texturing of the shared mask videos (see the module docstring)."""

    config_class = CellCycleGANConfig
    fit_accelerator = True  # a GAN: a sweep gives its fit a GPU when the cluster has one
    resume_parts = ("gan",)
    config: CellCycleGANConfig

    def __init__(self, config: CellCycleGANConfig | None = None) -> None:
        super().__init__(config)
        self.masks: MaskVideoModel | None = None
        self.network: torch.nn.Module | None = None
        self.scale: IntensityScale | None = None
        self.noise: NoiseFit | None = None
        self.reference_level = 0.0  # GAN units of a CellState.intensity of 1
        self.dtype = "uint16"
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._probe: tuple[np.ndarray, np.ndarray] | None = None

    # ---------------------------------------------------------------- fit
    def fit(self, real: CTCSequence) -> CellCycleGANGenerator:
        cfg = self.config
        size = cfg.crop_size or crop_size_for(real)
        self.masks = MaskVideoModel.fit(real, crop_size=size,
                                        config=MaskVideoConfig(max_fit_frames=cfg.mask_fit_frames, progress=cfg.progress))
        frames = sample_frames(real, cfg.max_train_frames)
        self.scale = fit_intensity_scale(real, frames)
        crops = collect_crops(real, size, self.scale, frames, stage_rule=self.masks.config, progress=cfg.progress)
        self.reference_level = reference_level(crops)
        self.noise = fit_noise(real, sample_frames(real, cfg.noise_fit_frames))
        self.dtype = np.dtype(real.dtype).name
        result = train_gan(crops, cfg, checkpoint_dir=Path(cfg.checkpoint_dir) / "gan" if cfg.checkpoint_dir else None)
        self.network, self.history, self.train_seconds = result.generator, result.history, result.seconds
        self._probe = make_batch(crops, np.arange(min(8, len(crops))), np.random.default_rng(cfg.seed + 1), 1.0,
                                 augment=False)
        return self

    # ---------------------------------------------------------------- generate
    def _require_fitted(self) -> None:
        if self.masks is None or self.network is None or self.scale is None or self.noise is None:
            raise RuntimeError("cellcyclegan: call fit() or load() before generate()")

    @torch.no_grad()
    def texture_cells(self, cells: list[CellState], rng: np.random.Generator) -> list[np.ndarray]:
        """One raw-valued ``(S, S)`` texture per cell from its mask, stage, intensity and fresh noise."""
        self._require_fitted()
        if not cells:
            return []
        masks = np.stack([c.crop for c in cells])
        stages = np.array([c.stage for c in cells])
        levels = np.clip(np.array([c.intensity for c in cells], np.float32) * self.reference_level, 0.0, 1.0)
        noise = rng.random(masks.shape, dtype=np.float32)
        cond = torch.from_numpy(condition(masks, stages, levels, noise))
        device = resolve_device(self.config.device)
        network = self.network.to(device)
        out = []
        for i in range(0, len(cells), self.config.texture_batch):
            chunk = cond[i : i + self.config.texture_batch].to(device)
            out.append((network(chunk) * (chunk[:, :1] > 0)).cpu().numpy()[:, 0])
        return list(self.scale.to_raw(np.concatenate(out)))

    def render(self, video: MaskVideo, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Textured, post-processed frames (target dtype) and their label frames for one mask video."""
        self._require_fitted()
        settings = PostProcess(self.config.glow_sigma, self.config.poisson_mix)
        info = np.iinfo(self.dtype) if np.issubdtype(np.dtype(self.dtype), np.integer) else None
        images, labels = [], []
        for cells in tqdm(video.frames, desc="cellcyclegan textures", disable=not self.config.progress, leave=False):
            textures = self.texture_cells(cells, rng)
            image, label = compose_frame(cells, video.shape, textures, background=self.noise.background)
            image = postprocess_frame(image, self.noise, settings, rng)
            if info is not None:
                image = np.clip(np.rint(image), info.min, info.max)
            images.append(image.astype(self.dtype))
            labels.append(label)
        return images, labels

    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        self._require_fitted()
        torch.set_num_threads(self.config.threads)
        out_dir = Path(out_dir)
        for index, seed in enumerate(np.random.SeedSequence(spec.seed).spawn(spec.n_sequences), start=1):
            rng = np.random.default_rng(seed)
            video = self.masks.sample(spec.n_frames, spec.shape, rng, progress=self.config.progress)
            images, labels = self.render(video, rng)
            write_sequence(out_dir, f"{index:02d}", images, labels, video.parents, progress=self.config.progress)
        return out_dir

    def render_oracle(self, real: CTCSequence, out_dir: Path, n_frames: int | None = None) -> Path:
        """Real textures through CellCycleGAN's own path: the raw real crops cut at the real masks (the GAN
        learns noisy raw textures; ``IntensityScale`` round trip, so values outside its range clip), composed
        at the real positions over the fitted background, then the release's post-processing."""
        self._require_fitted()
        out_dir = Path(out_dir)
        size = self.masks.crop_size
        rng = np.random.default_rng([self.config.seed, 1])
        settings = PostProcess(self.config.glow_sigma, self.config.poisson_mix)
        info = np.iinfo(self.dtype) if np.issubdtype(np.dtype(self.dtype), np.integer) else None
        images, labels = [], []
        for t in tqdm(oracle_frames(real, n_frames), desc="cellcyclegan oracle", disable=not self.config.progress,
                      leave=False):
            crops = list(iter_cell_crops(real, size, [t], border_ok=True))
            textures = [self.scale.to_raw(self.scale.to_unit(c.image)) for c in crops]
            image, _ = compose_frame([oracle_state(c, size) for c in crops], real.frame_shape, textures,
                                     background=self.noise.background)
            image = postprocess_frame(image, self.noise, settings, rng)
            if info is not None:
                image = np.clip(np.rint(image), info.min, info.max)
            images.append(image.astype(self.dtype))
            labels.append(full_masks(real, t))
        write_sequence(out_dir, "01", images, labels, real_parents(real), overwrite=True)
        return out_dir

    # ---------------------------------------------------------------- save / load
    def _save_state(self, directory: Path) -> None:
        self._require_fitted()
        save_generator(self.network.cpu(), directory / GENERATOR_FILE)
        state = {
            "masks": self.masks.to_dict(),
            "scale": self.scale.to_dict(),
            "noise": self.noise.to_dict(),
            "reference_level": self.reference_level,
            "dtype": self.dtype,
        }
        atomic_write_text(directory / "state.json", json.dumps(state, indent=1))
        atomic_write_text(directory / "history.json",
                      json.dumps({"seconds": self.train_seconds, "history": self.history}, indent=1))
        if self._probe is not None:
            save_sample_grid(self.network.cpu(), *self._probe, directory / "samples.png", seed=self.config.seed)

    def _load_state(self, directory: Path) -> None:
        path = directory / "state.json"
        try:
            state = json.loads(path.read_text())
            self.masks = MaskVideoModel.from_dict(state["masks"])
            self.scale = IntensityScale(**state["scale"])
            self.noise = NoiseFit(**state["noise"])
            self.reference_level = float(state["reference_level"])
            self.dtype = str(state["dtype"])
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: unreadable CellCycleGAN state ({error})") from error
        self.network = load_generator(directory / GENERATOR_FILE)
        history = directory / "history.json"
        if history.exists():
            payload = json.loads(history.read_text())
            self.history, self.train_seconds = payload["history"], float(payload["seconds"])


def reference_level(crops: TrainingCrops) -> float:
    """GAN-unit brightness of ``CellState.intensity == 1``: the geometric mean of the interphase crops'
    masked means, as the mask model's ``intensity_level`` (its log-normal gain has median 1)."""
    means = crops.cell_means()
    interphase = crops.stages == 0
    use = (interphase if interphase.any() else np.ones(len(crops), bool)) & (means > 0)
    level = float(np.exp(np.mean(np.log(means[use])))) if use.any() else float("nan")
    if not math.isfinite(level) or level <= 0:
        raise ValueError("cellcyclegan: real nuclei are not brighter than the background")
    return level
