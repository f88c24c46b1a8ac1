"""``BVDMGenerator``: mask videos (``MaskVideoModel``) textured by the DDPM + VoxelMorph sampler.

``fit`` trains, on one real sequence, the mask model, the texture DDPM (``ddpm.py``) and the flow
model (``flow.py``); ``generate`` samples mask videos, textures all their cells in one continuous
batch (``sampler.py``), maps the normalised textures to the real grey-value range (``CellState
.intensity`` as a gain above background), composes full frames with ``compose_frame`` over a
background drawn from the real background's pixel distribution, smooths a 2-px band at nucleus
borders (Gaussian sigma ``edge_sigma``, as the original's contour smoothing) and writes CTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence, write_sequence
from benchmark.ctc.crops import crop_size_for
from generators.base import GenerateSpec, Generator, GeneratorConfig, register_generator
from generators.bvdm.data import IntensityStats, collect_training_data
from generators.bvdm.ddpm import DDPMConfig, TextureDDPM, train_ddpm
from generators.bvdm.flow import FlowConfig, MaskFlow, train_flow
from generators.bvdm.sampler import SamplerConfig, sample_textures
from generators.masks.compose import compose_frame
from generators.masks.synth import MaskVideoConfig, MaskVideoModel
from generators.masks.video import MaskVideo


@dataclass
class BVDMConfig(GeneratorConfig):
    """Flat (TOML-friendly) parameters. Training defaults are the paper's; profiles shrink them.

    ``crop_size=None``: ``crop_size_for(real)`` (96 HeLa, 128 GOWT1). ``max_fit_frames``: subsample
    the training sequence's annotated frames (pairs of consecutive frames) to bound fitting time.
    """

    crop_size: int | None = None
    max_fit_frames: int | None = None
    ddpm_channels: tuple[int, ...] = (16, 32, 64, 64)
    ddpm_layers_per_block: int = 1
    ddpm_norm_groups: int = 8
    ddpm_batch_size: int = 32
    ddpm_lr: float = 5e-4
    ddpm_iterations: int = 10_000
    ddpm_ema_decay: float = 0.999
    ddpm_checkpoint_every: int = 1000
    flow_batch_size: int = 32
    flow_lr: float = 1e-4
    flow_iterations: int = 2000
    flow_grad_weight: float = 0.01
    augment: bool = True
    t_first: int = 200
    t_next: int = 10
    daughters_inherit: bool = True
    max_batch: int = 64
    warp_mode: str = "bilinear"
    fill_holes: bool = True
    bf16: bool = True
    anchor_stats: bool = True
    anchor_spread: bool = True
    edge_sigma: float = 1.0
    checkpoint_dir: str | None = None
    seed: int = 0

    def ddpm(self) -> DDPMConfig:
        return DDPMConfig(tuple(self.ddpm_channels), self.ddpm_layers_per_block, self.ddpm_norm_groups,
                          self.ddpm_batch_size, self.ddpm_lr, self.ddpm_iterations, self.ddpm_ema_decay,
                          self.ddpm_checkpoint_every, self.augment, self.seed)

    def flow(self) -> FlowConfig:
        return FlowConfig(self.flow_batch_size, self.flow_lr, self.flow_iterations, self.flow_grad_weight,
                          self.augment, self.seed)

    def sampler(self) -> SamplerConfig:
        """The sampler settings of the same names (``cpu_chunk`` keeps its default)."""
        return SamplerConfig(**{f.name: getattr(self, f.name) for f in fields(SamplerConfig) if hasattr(self, f.name)})


@register_generator("bvdm")
class BVDMGenerator(Generator):
    config_class = BVDMConfig
    # the ablation (paper's Table 2) sweeps these without refitting the DDPM and flow model
    sampling_fields = frozenset({"t_first", "t_next", "daughters_inherit", "max_batch", "warp_mode", "fill_holes",
                                 "bf16", "anchor_stats", "anchor_spread",
                                 "edge_sigma"})
    config: BVDMConfig

    def __init__(self, config: BVDMConfig | None = None) -> None:
        super().__init__(config)
        self.mask_model: MaskVideoModel | None = None
        self.ddpm: TextureDDPM | None = None
        self.flow: MaskFlow | None = None
        self.flow_loss: list[float] = []

    @property
    def training_curves(self) -> dict[str, list[float]]:
        """Per-iteration losses to log (MLflow): ``ddpm`` (epsilon MSE) and ``flow`` (MSE + 0.01 grad)."""
        return {"ddpm": list(self.ddpm.loss) if self.ddpm else [], "flow": list(self.flow_loss)}

    def fit(self, real: CTCSequence) -> BVDMGenerator:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        size = cfg.crop_size or crop_size_for(real)
        data = collect_training_data(real, size, cfg.max_fit_frames, cfg.progress)
        self.mask_model = MaskVideoModel.fit(real, crop_size=size,
                                             config=MaskVideoConfig(max_fit_frames=cfg.max_fit_frames,
                                                                    progress=cfg.progress))
        self.ddpm = train_ddpm(data.crops, data.stats, cfg.ddpm(), cfg.device, cfg.checkpoint_dir, cfg.progress)
        self.flow, self.flow_loss = train_flow(data.pairs, cfg.flow(), cfg.device, cfg.progress)
        return self

    def _require_fitted(self) -> None:
        if self.mask_model is None or self.ddpm is None or self.flow is None:
            raise RuntimeError("BVDMGenerator: call fit() or load() before generate()")

    def _save_state(self, directory: Path) -> None:
        self._require_fitted()
        tmp = directory / "mask_model.json.partial"
        tmp.write_text(json.dumps(self.mask_model.to_dict()))
        tmp.replace(directory / "mask_model.json")
        self.ddpm.save_pretrained(directory / "ddpm")
        self.flow.save_pretrained(directory / "flow", self.flow_loss)

    def _load_state(self, directory: Path) -> None:
        path = directory / "mask_model.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; not a fitted BVDM generator folder")
        self.mask_model = MaskVideoModel.from_dict(json.loads(path.read_text()))
        self.ddpm = TextureDDPM.from_pretrained(directory / "ddpm")
        self.flow = MaskFlow.from_pretrained(directory / "flow")
        loss = directory / "flow" / "loss.json"
        self.flow_loss = json.loads(loss.read_text()) if loss.exists() else []

    def sample_masks(self, spec: GenerateSpec) -> list[MaskVideo]:
        self._require_fitted()
        shape = tuple(spec.shape) if spec.shape else None
        return [self.mask_model.sample(spec.n_frames, shape, np.random.default_rng([spec.seed, n]))
                for n in range(spec.n_sequences)]

    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        self._require_fitted()
        out_dir = Path(out_dir)
        videos = self.sample_masks(spec)
        textures = sample_textures(videos, self.ddpm, self.flow, self.config.sampler(), spec.seed, self.config.progress)
        for n, (video, video_textures) in enumerate(zip(videos, textures, strict=True)):
            rng = np.random.default_rng([spec.seed, n, 1])
            images, labels = [], []
            for cells, frame_textures in tqdm(list(zip(video.frames, video_textures, strict=True)), desc=f"BVDM compose {n + 1:02d}",
                                              disable=not self.config.progress, leave=False):
                image, label = render_frame(cells, frame_textures, video.shape, self.ddpm.stats, rng,
                                            self.config.edge_sigma)
                images.append(image)
                labels.append(label)
            write_sequence(out_dir, f"{n + 1:02d}", images, labels, video.parents)
        return out_dir


def render_frame(cells, textures, shape: tuple[int, int], stats: IntensityStats, rng: np.random.Generator,
                 edge_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Compose one frame in the real dtype: textures -> grey values (gain = cell intensity), real-like background."""
    raw = [stats.denormalise(tex, gain=cell.intensity) for cell, tex in zip(cells, textures, strict=True)]
    image, labels = compose_frame(cells, shape, raw, background=stats.low)
    outside = labels == 0
    image[outside] = stats.sample_background(shape, rng)[outside]
    if edge_sigma > 0 and len(cells):
        band = find_boundaries(labels, mode="thick")
        image[band] = ndimage.gaussian_filter(image, edge_sigma)[band]
    image = np.clip(np.rint(image), 0, stats.max_value)
    return image.astype(np.dtype(stats.dtype)), labels
