"""Adversarial training of the texture GAN on real cell crops (CellCycleGAN's losses and sampling).

Generator loss ``BCE(D(fake), 1) + recon_weight * L1(reconstructed labels, labels)``; discriminator
loss ``(BCE(D(real), 1) + BCE(D(fake), 0)) / 2``. A sample is one real crop, zeroed outside its
mask and multiplied by ``U(aug_low, 1)`` (teaches the intensity control); its conditioning
intensity is the masked mean after scaling. Random flips / quarter turns enlarge the small CTC set. ``intensity_weight`` adds an optional
L1 between the fake's masked mean and its conditioning level (not in the release; used by the
short ``ci``/``cpu`` profiles so the intensity control is learnt within minutes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn
from tqdm.auto import tqdm

from benchmark.experiment import TrainingStream
from benchmark.io import atomic_write, atomic_write_text
from benchmark.safe_weights import load_tensors_and_metadata, save_tensors
from generators.base import GeneratorConfig
from generators.cellcyclegan.data import TrainingCrops, condition
from generators.cellcyclegan.networks import PatchDiscriminator, UNetGenerator
from generators.checkpoints import Checkpoints, capture, restore, training_fingerprint

#: named settings: ``ci`` (seconds, tests), ``cpu`` (minutes on a laptop), ``paper`` (release sizes)
PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"widths": (8, 16, 32, 64), "disc_width": 16, "iterations": 60, "batch_size": 4,
           "max_train_frames": 4, "log_every": 10, "lr": 1e-3, "intensity_weight": 1.0},
    "cpu": {"widths": (16, 32, 64, 128), "disc_width": 32, "iterations": 300, "batch_size": 8,
            "max_train_frames": 24, "log_every": 25, "intensity_weight": 1.0},
    "paper": {"widths": (32, 64, 128, 256), "disc_width": 64, "iterations": 20000, "batch_size": 2,
              "lr": 1e-3, "betas": (0.9, 0.999), "max_train_frames": None, "log_every": 200},
}

T = TypeVar("T", bound="GANTrainConfig")
GENERATOR_FILE = "generator.safetensors"  # the trained generator's weights, sha256 in the folder's SHA256SUMS


@dataclass
class GANTrainConfig(GeneratorConfig):
    """Texture-GAN training settings (defaults = the ``cpu`` profile)."""

    widths: tuple[int, ...] = (16, 32, 64, 128)  # U-Net features per level (release 32/64/128/256)
    disc_width: int = 32  # PatchGAN first-layer features (release 64)
    iterations: int = 300
    batch_size: int = 8  # release 2
    lr: float = 2e-4  # release 1e-3 (Adam)
    betas: tuple[float, float] = (0.5, 0.999)
    recon_weight: float = 1.0  # weight of the L1 label-reconstruction term (release 1)
    intensity_weight: float = 0.0  # L1(masked mean of fake, conditioning level): not in the release;
    # speeds up learning the intensity control on short CPU runs (ci/cpu profiles), 0 = faithful
    aug_low: float = 0.5  # intensity augmentation U(aug_low, 1) (release 0.5)
    max_train_frames: int | None = 24  # annotated frames (evenly spaced) to take crops from
    log_every: int = 25
    seed: int = 0
    threads: int = 1  # torch CPU threads (2 oversubscribes a shared CPU badly)

    @classmethod
    def profile(cls: type[T], name: str, **overrides: Any) -> T:
        """The named profile (``ci``, ``cpu``, ``paper``) with ``overrides`` on top."""
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in PROFILES[name].items() if k in known}, **overrides})


@dataclass
class TrainResult:
    """The trained generator (eval mode, on CPU), the logged curves and the wall time in seconds."""

    generator: UNetGenerator
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def _augment(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Same random quarter turn and flip for each crop and its mask."""
    out_i, out_m = [], []
    for image, mask in zip(images, masks, strict=True):
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, mask = np.rot90(image, k), np.rot90(mask, k)
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        out_i.append(image)
        out_m.append(mask)
    return np.ascontiguousarray(out_i), np.ascontiguousarray(out_m)


def make_batch(crops: TrainingCrops, index: np.ndarray, rng: np.random.Generator, aug_low: float,
               augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(target ``(B,1,S,S)``, conditioning ``(B,3,S,S)``) for crops ``index``, intensity-augmented."""
    images, masks = crops.images[index], crops.masks[index]
    if augment:
        images, masks = _augment(images, masks, rng)
    images = images * rng.uniform(aug_low, 1.0, len(index)).astype(np.float32)[:, None, None]
    area = masks.sum(axis=(1, 2)).clip(min=1)
    levels = (images * masks).sum(axis=(1, 2)) / area
    noise = rng.random(images.shape, dtype=np.float32)
    return images[:, None].astype(np.float32), condition(masks, crops.stages[index], levels, noise)


@torch.no_grad()
def noise_sensitivity(generator: UNetGenerator, cond: torch.Tensor, gen: torch.Generator) -> float:
    """Mean |G(c, z1) - G(c, z2)| inside the masks over the mean texture there: 0 means the noise is ignored."""
    a = cond.clone()
    b = cond.clone()
    a[:, 2] = torch.rand(a[:, 2].shape, generator=gen, device="cpu").to(cond.device)
    b[:, 2] = torch.rand(b[:, 2].shape, generator=gen, device="cpu").to(cond.device)
    mask = (cond[:, :1] > 0).float()
    ya, yb = generator(a), generator(b)
    return float(((ya - yb).abs() * mask).sum() / ((0.5 * (ya + yb) * mask).sum() + 1e-8))


# the training loop reads top to bottom (batch, D step, G step, logging window, checkpoint): split, the order of
# updates and RNG draws that a resumed fit reproduces bit for bit would be spread over helpers
def train_gan(crops: TrainingCrops, config: GANTrainConfig, out_dir: str | Path | None = None,  # noqa: PLR0915
              checkpoint_dir: str | Path | None = None) -> TrainResult:
    """Train generator and discriminator on ``crops``; with ``out_dir``, write ``history.json``,
    ``samples.png`` and ``generator.safetensors`` there (the lead logs the first two to MLflow).

    With ``checkpoint_dir`` the run is checkpointed (``generators.checkpoints``: both networks and
    optimisers, the numpy batch generator's state, the probe and global torch RNG states, the history and
    the partial logging window) at the last step and when the deadline stops it (``benchmark.budget``), and
    resumes from the newest checkpoint of the same config and data there: bit for bit on the same machine,
    and a finished run is loaded, not retrained.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    size = crops.images.shape[-1]
    if size % 2 ** (len(config.widths) - 1):
        raise ValueError(f"crop size {size} is not divisible by 2^{len(config.widths) - 1} (widths {config.widths})")
    generator = UNetGenerator(config.widths).to(device)
    discriminator = PatchDiscriminator(config.disc_width).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=config.betas)
    bce, l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()
    probe_index = np.arange(min(8, len(crops)))
    probe_target, probe_cond = make_batch(crops, probe_index, np.random.default_rng(config.seed + 1), 1.0, augment=False)
    probe_cond_t = torch.from_numpy(probe_cond).to(device)
    probe_gen = torch.Generator().manual_seed(config.seed + 2)

    history: list[dict[str, float]] = []
    curve = TrainingStream("gan_")  # live curves in the fit stage's MLflow run, if any
    window: dict[str, list[float]] = {}
    saved = Checkpoints(checkpoint_dir, gan_fingerprint(crops, config), "gan", config.iterations, "cellcyclegan GAN")
    stateful = {"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d,
                "probe_gen": probe_gen}
    first, elapsed = 1, 0.0
    state = saved.latest()
    if state is not None:
        first = restore(state, stateful)
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        history, window, elapsed = state["history"], state["window"], float(state["seconds"])
    start = time.perf_counter() - elapsed  # a resumed run's seconds go on from where it stopped

    def snapshot() -> dict[str, Any]:
        return capture(it, stateful, numpy_rng=json.dumps(rng.bit_generator.state), history=history, window=window,
                       seconds=time.perf_counter() - start)

    for it in tqdm(range(first, config.iterations + 1), desc="cellcyclegan GAN", disable=not config.progress,
                   leave=False, initial=first - 1, total=config.iterations):
        index = rng.integers(0, len(crops), config.batch_size)
        target, cond = make_batch(crops, index, rng, config.aug_low)
        real = torch.from_numpy(target).to(device)
        cond_t = torch.from_numpy(cond).to(device)
        labels = cond_t[:, :2]
        mask = (labels[:, :1] > 0).float()

        fake = generator(cond_t) * mask  # texture lives inside the mask only (zero outside, like the targets)
        d_real, d_fake = discriminator(real, labels), discriminator(fake.detach(), labels)
        loss_d = 0.5 * (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        d_gen = discriminator(fake, labels)
        loss_adv = bce(d_gen, torch.ones_like(d_gen))
        loss_rec = l1(generator.reconstruct(fake), labels)
        loss_g = loss_adv + config.recon_weight * loss_rec
        if config.intensity_weight > 0:
            area = mask.sum(dim=(1, 2, 3)).clamp(min=1)
            level = (cond_t[:, 1:2] * mask).sum(dim=(1, 2, 3)) / area
            loss_g = loss_g + config.intensity_weight * l1(fake.sum(dim=(1, 2, 3)) / area, level)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        for key, value in (("loss_d", loss_d), ("loss_g_adv", loss_adv), ("loss_recon", loss_rec),
                           ("d_real", torch.sigmoid(d_real).mean()), ("d_fake", torch.sigmoid(d_fake).mean())):
            window.setdefault(key, []).append(float(value.detach()))
        if it % config.log_every == 0 or it == config.iterations:
            generator.eval()
            row = {"iteration": float(it), **{k: float(np.mean(v)) for k, v in window.items()},
                   "noise_sensitivity": noise_sensitivity(generator, probe_cond_t, probe_gen),
                   "seconds": time.perf_counter() - start}
            generator.train()
            history.append(row)
            curve(it, {k: v for k, v in row.items() if k != "iteration"})
            window = {}
        if it == config.iterations:
            saved.write(it, snapshot())
        saved.stop_at_deadline(it, snapshot)
    curve.flush()
    seconds = time.perf_counter() - start
    generator = generator.eval().cpu()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_generator(generator, out / GENERATOR_FILE)
        atomic_write_text(out / "history.json", json.dumps({"seconds": seconds, "history": history}, indent=1))
        save_sample_grid(generator, probe_target, probe_cond, out / "samples.png", seed=config.seed)
    return TrainResult(generator, history, seconds)


def gan_fingerprint(crops: TrainingCrops, config: GANTrainConfig) -> str:
    """The training config and crops a GAN checkpoint belongs to (``generators.checkpoints``): only the
    ``GANTrainConfig`` fields that shape a step or the history count (not the generator's mask, noise and
    output settings, nor ``progress``/``device``); ``iterations`` is left out too, so a longer run
    continues a shorter one."""
    train_fields = {f.name for f in fields(GANTrainConfig)} - {"iterations", "progress", "device"}
    config_fields = {f.name for f in fields(config)}
    return training_fingerprint(config, crops.images, crops.masks, crops.stages,
                                leave_out=config_fields - train_fields)


def save_generator(generator: UNetGenerator, path: Path) -> None:
    """Weights (safetensors, sha256 recorded in the folder's SHA256SUMS) plus, in its header, the widths
    needed to rebuild the network (atomic)."""
    save_tensors(generator.state_dict(), path, metadata={"widths": json.dumps(list(generator.widths))})


def load_generator(path: Path) -> UNetGenerator:
    """The generator ``save_generator`` wrote; refused unless its sha256 matches the recorded one."""
    try:
        tensors, metadata = load_tensors_and_metadata(path)
        generator = UNetGenerator(tuple(json.loads(metadata["widths"])))
        generator.load_state_dict(tensors)
    except (KeyError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"{path}: not a CellCycleGAN generator checkpoint ({error})") from error
    return generator.eval()


@torch.no_grad()
def save_sample_grid(generator: UNetGenerator, target: np.ndarray, cond: np.ndarray, path: Path,
                     seed: int = 0, n_noise: int = 2) -> None:
    """PNG grid: top row real crops, then one row per noise draw for the same masks and intensities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    rows = [target[:, 0]]
    for _ in range(n_noise):
        c = torch.from_numpy(cond.copy())
        c[:, 2] = torch.rand(c[:, 2].shape, generator=gen)
        rows.append((generator(c) * (c[:, :1] > 0)).numpy()[:, 0])
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    atomic_write(path, lambda tmp: plt.imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png"))
