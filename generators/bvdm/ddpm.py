"""The texture DDPM: a small diffusers ``UNet2DModel`` + ``DDPMScheduler`` trained on cell crops.

Schedule as in BVDM: T = 1000, cosine (``squaredcos_cap_v2``), epsilon prediction, fixed-large
variance, no sample clipping (diffusers' cosine cap differs from the original's beta >= 1e-4 clip in
the first few steps only). Training: RAdam, MSE on epsilon, t uniform in {0..999}, EMA weights
(diffusers ``EMAModel``); the saved model carries the EMA weights. A saved folder holds ``unet/``,
``scheduler/`` (diffusers ``save_pretrained``), ``stats.json`` (intensity normalisation) and
``loss.json`` (per-iteration training loss).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from benchmark.checksums import record_sha256, verify_recorded
from generators.bvdm.data import IntensityStats
from generators.checkpoints import Checkpoints, capture, restore
from generators.checkpoints import training_fingerprint as checkpoint_fingerprint
from generators.precision import autocast, check_precision, memory_format, resolve_precision

logger = logging.getLogger(__name__)

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes


@dataclass
class DDPMConfig:
    """Network size and training schedule. Defaults are the paper's (batch 32, lr 5e-4, 10 000 its).

    ``block_out_channels`` (16, 32, 64, 64) with one ResNet per level and no attention is ~1.0 M
    parameters, the size of the original 0.9 M U-Net; ``ci``/``cpu`` profiles shrink it and the
    iteration count. ``augment``: random flips / 90-degree rotations (the original had none;
    fluorescent nucleus texture has no preferred orientation).
    """

    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    batch_size: int = 32
    lr: float = 5e-4
    iterations: int = 10_000
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    augment: bool = True
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision, "DDPM training precision")


def make_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                         variance_type="fixed_large", clip_sample=False)


def build_unet(config: DDPMConfig, sample_size: int) -> UNet2DModel:
    levels = len(config.block_out_channels)
    if sample_size % (2 ** (levels - 1)):
        raise ValueError(f"crop size {sample_size} is not divisible by 2^{levels - 1} ({levels} UNet levels)")
    return UNet2DModel(sample_size=sample_size, in_channels=1, out_channels=1,
                       block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
                       down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                       add_attention=False, norm_num_groups=config.norm_num_groups)


class TextureDDPM:
    """EMA UNet + scheduler + intensity statistics: everything the sampler needs."""

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler, stats: IntensityStats,
                 loss: list[float] | None = None) -> None:
        self.unet = unet.eval()
        self.scheduler = scheduler
        self.stats = stats
        self.loss = loss or []

    @property
    def crop_size(self) -> int:
        return int(self.unet.config.sample_size)

    def to(self, device: str | torch.device, layout: torch.memory_format = torch.contiguous_format) -> TextureDDPM:
        """Move the UNet to ``device`` with its weights in ``layout`` (channels-last for bf16 on CPU)."""
        self.unet.to(device, memory_format=layout)
        return self

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.unet.to(memory_format=torch.contiguous_format)  # safetensors saves contiguous tensors only
        self.unet.save_pretrained(directory / "unet")
        self.scheduler.save_pretrained(directory / "scheduler")
        (directory / "stats.json").write_text(json.dumps(self.stats.to_dict(), indent=1))
        (directory / "loss.json").write_text(json.dumps(self.loss))
        record_sha256([directory / UNET_WEIGHTS], directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TextureDDPM:
        """Load a saved DDPM: the UNet from safetensors only (never diffusers' pickle fallback), checked
        against the sha256 recorded at save time."""
        directory = Path(directory)
        for part in ("unet", "scheduler", "stats.json"):
            if not (directory / part).exists():
                raise FileNotFoundError(f"{directory / part}: missing part of a saved BVDM DDPM")
        verify_recorded(directory / UNET_WEIGHTS, directory)
        loss = json.loads((directory / "loss.json").read_text()) if (directory / "loss.json").exists() else []
        unet = UNet2DModel.from_pretrained(directory / "unet", low_cpu_mem_usage=False, use_safetensors=True)
        return cls(unet, DDPMScheduler.from_pretrained(directory / "scheduler"),
                   IntensityStats.from_dict(json.loads((directory / "stats.json").read_text())), loss)


def random_dihedral(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one random flip/rot90 per sample (same op on all channels): (B, C, S, S) -> same."""
    ops = torch.randint(0, 8, (batch.shape[0],), generator=generator)
    out = batch.clone()
    for i, op in enumerate(ops.tolist()):
        x = torch.rot90(batch[i], op % 4, dims=(-2, -1))
        out[i] = torch.flip(x, dims=(-1,)) if op >= 4 else x
    return out


def train_ddpm(crops: np.ndarray, stats: IntensityStats, config: DDPMConfig, device: str = "cpu",
               checkpoint_dir: str | Path | None = None, progress: bool = False,
               callback: Callable[[int, float], None] | None = None) -> TextureDDPM:
    """Train on normalised crops ``(N, S, S)``; returns the EMA model with its loss curve.

    Checkpoints (raw + EMA weights, optimiser, step, the sampling generator's RNG state and the loss
    curve so far) go to ``checkpoint_dir/checkpoint-<step>.safetensors`` every ``checkpoint_every``
    iterations (0: never) and at the last one; the last two are kept (the newest only, inside
    ``SYNTHVID_RESUME_ROOT``). They are safetensors, not pickles (``generators.checkpoints``), each checked
    against the sha256 recorded in ``checkpoint_dir/SHA256SUMS`` before it is read (a changed one is ignored
    with a warning). A run that finds a checkpoint of the same config and data there **resumes** from the
    newest one, and ends where an uninterrupted run would have (same batches, same noise, same RNG states:
    bit for bit on the same machine). ``callback(step, loss)`` runs after every step; then, past the
    deadline (``benchmark.budget``), the step just finished is checkpointed and ``BudgetExhausted`` raised.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    data = torch.from_numpy(np.ascontiguousarray(crops, np.float32))[:, None]
    precision = resolve_precision(config.precision, device)
    layout = memory_format(precision, device)
    logger.info("BVDM DDPM: training in %s (requested %s) on %s", precision, config.precision, device)
    unet = build_unet(config, data.shape[-1]).to(device, memory_format=layout).train()
    scheduler = make_scheduler()
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    ema.to(device)
    optimiser = torch.optim.RAdam(unet.parameters(), lr=config.lr)
    losses: list[float] = []
    saved = Checkpoints(checkpoint_dir, training_fingerprint(crops, config), "ddpm", config.iterations, "BVDM DDPM")
    stateful = {"unet": unet, "ema": ema, "optimiser": optimiser, "generator": generator}
    first = 1
    state = saved.latest()
    if state is not None:
        first = restore(state, stateful)
        ema.to(device)
        losses = state["losses"].tolist()  # float64: every loss exactly as it was

    def snapshot() -> dict:
        return capture(step, stateful, losses=torch.tensor(losses, dtype=torch.float64), fingerprint=saved.fingerprint)

    for step in tqdm(range(first, config.iterations + 1), desc="BVDM DDPM", disable=not progress, leave=False,
                     initial=first - 1, total=config.iterations):
        index = torch.randint(0, len(data), (config.batch_size,), generator=generator)
        x0 = data[index]
        if config.augment:
            x0 = random_dihedral(x0, generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
        xt = scheduler.add_noise(x0, noise, t)
        with autocast(precision, device):
            pred = unet(xt.to(device, memory_format=layout), t.to(device)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.to(device))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"DDPM training diverged at step {step} (loss {loss.item()})")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema.step(unet.parameters())
        losses.append(float(loss.item()))
        if step == config.iterations or (config.checkpoint_every and step % config.checkpoint_every == 0):
            saved.write(step, snapshot())
        if callback is not None:
            callback(step, losses[-1])
        saved.stop_at_deadline(step, snapshot)
    ema.copy_to(unet.parameters())
    unet = unet.to(memory_format=torch.contiguous_format)  # safetensors saves contiguous tensors only
    return TextureDDPM(unet.eval(), scheduler, stats, losses)


def training_fingerprint(crops: np.ndarray, config: DDPMConfig) -> str:
    """Hash of the training config and data (``generators.checkpoints.training_fingerprint``): a checkpoint
    resumes only the run it belongs to; ``iterations`` and ``checkpoint_every`` are left out."""
    return checkpoint_fingerprint(config, crops)
