"""The mask-to-mask flow model: voxelmorph's ``VxmPairwise`` (PyTorch, voxelmorph 0.3.4).

A 2D plain displacement field (``integration_steps=0``, no diffeomorphic integration, as BVDM) from
the cell's previous mask (moving) to its current one (fixed), trained with
``MSE(warp(prev), cur) + 0.01 * Grad-L2(flow)`` (neurite's ``MSE`` and ``SpatialGradient``; the
voxelmorph loss classes are deprecated in 0.3.4) on consecutive real mask pairs linked via TRA.
Encoder 4 x 32, decoder 32-32-32-16 (neurite's ``BasicUNet`` needs as many decoder as encoder levels,
so the original's two extra full-resolution decoder convolutions are dropped).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import neurite as ne
import numpy as np
import torch
import voxelmorph as vxm
from tqdm.auto import tqdm

from benchmark.safe_weights import load_tensors, save_tensors
from generators.bvdm.ddpm import random_dihedral
from generators.checkpoints import Checkpoints, capture, restore, training_fingerprint
from generators.precision import autocast, check_precision, resolve_precision

ENCODER = (32, 32, 32, 32)
WEIGHTS_FILE = "flow.safetensors"  # sha256 recorded in the folder's SHA256SUMS
DECODER = (32, 32, 32, 16)


@dataclass
class FlowConfig:
    """Paper settings: Adam lr 1e-4, batch 32, 2000 iterations, gradient weight 0.01."""

    batch_size: int = 32
    lr: float = 1e-4
    iterations: int = 2000
    grad_weight: float = 0.01
    augment: bool = True
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision, "flow training precision")


class MaskFlow(torch.nn.Module):
    """``flow(prev, cur)`` -> displacement (B, 2, S, S); ``warp(image, flow)`` moves any image with it."""

    def __init__(self, crop_size: int) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.net = vxm.nn.models.VxmPairwise(ndim=2, source_channels=1, target_channels=1,
                                             nb_features=[list(ENCODER), list(DECODER)], integration_steps=0)
        self.linear = vxm.nn.modules.SpatialTransformer(interpolation_mode="linear")
        self.nearest = vxm.nn.modules.SpatialTransformer(interpolation_mode="nearest")

    def flow(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        return self.net(prev, cur)

    def warp(self, image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
        """Warp ``image`` (B, C, S, S); pixels pulled from outside the crop take ``fill``."""
        transformer = {"bilinear": self.linear, "nearest": self.nearest}.get(mode)
        if transformer is None:
            raise ValueError(f"warp mode {mode!r}: use 'bilinear' or 'nearest'")
        return transformer(image - fill, flow) + fill

    def save_pretrained(self, directory: str | Path, loss: list[float] | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(self.net.state_dict(), directory / WEIGHTS_FILE)
        (directory / "flow.json").write_text(json.dumps({"crop_size": self.crop_size, "encoder": ENCODER,
                                                         "decoder": DECODER}))
        if loss is not None:
            (directory / "loss.json").write_text(json.dumps(loss))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MaskFlow:
        directory = Path(directory)
        if not (directory / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"{directory / WEIGHTS_FILE}: missing BVDM flow weights")
        meta = json.loads((directory / "flow.json").read_text())
        model = cls(int(meta["crop_size"]))
        model.net.load_state_dict(load_tensors(directory / WEIGHTS_FILE))  # sha256-checked safetensors
        return model.eval()


def train_flow(pairs: np.ndarray, config: FlowConfig, device: str = "cpu", progress: bool = False,
               callback: Callable[[int, float], None] | None = None,
               checkpoint_dir: str | Path | None = None) -> tuple[MaskFlow, list[float]]:
    """Train on ``pairs`` (P, 2, S, S) bool (moving = t, fixed = t+1); returns the model and its loss curve.

    ``callback(step, loss)`` runs after every step (1-based), as in ``train_ddpm``. With ``checkpoint_dir``
    (an argument, not a ``FlowConfig`` field: it must not change the fit key) the run is checkpointed as
    the DDPM's (``generators.checkpoints``: model, optimiser, batch generator and global torch RNG states,
    losses in float64) at the last step and when the deadline stops it (``benchmark.budget``), and resumes
    from the newest checkpoint of the same config and data there: a finished run is loaded, not retrained.
    """
    if len(pairs) == 0:
        raise ValueError("no consecutive mask pairs to train the flow model on (no TRA-linked consecutive frames)")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    data = torch.from_numpy(np.ascontiguousarray(pairs, np.float32))
    model = MaskFlow(data.shape[-1]).to(device).train()
    precision = resolve_precision(config.precision, device)
    mse, smooth = ne.nn.modules.MSE(), ne.nn.modules.SpatialGradient(penalty="l2")
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses: list[float] = []
    saved = Checkpoints(checkpoint_dir, training_fingerprint(config, pairs), "flow", config.iterations, "BVDM flow")
    stateful = {"model": model, "optimiser": optimiser, "generator": generator}
    first = 1
    state = saved.latest()
    if state is not None:
        first = restore(state, stateful)
        losses = state["losses"].tolist()

    def snapshot() -> dict:
        return capture(step, stateful, losses=torch.tensor(losses, dtype=torch.float64))

    for step in tqdm(range(first, config.iterations + 1), desc="BVDM flow", disable=not progress, leave=False,
                     initial=first - 1, total=config.iterations):
        batch = data[torch.randint(0, len(data), (config.batch_size,), generator=generator)]
        if config.augment:
            batch = random_dihedral(batch, generator)
        batch = batch.to(device)
        moving, fixed = batch[:, :1], batch[:, 1:]
        with autocast(precision, device):  # the network in bf16; warp and loss in fp32
            flow = model.flow(moving, fixed)
        flow = flow.float()
        loss = mse(model.warp(moving, flow), fixed) + config.grad_weight * smooth(flow)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.item()))
        if step == config.iterations:
            saved.write(step, snapshot())
        if callback is not None:
            callback(step, losses[-1])
        saved.stop_at_deadline(step, snapshot)
    return model.eval(), losses
