"""Fixtures shared by the tracker tests: training data that never holds the test sequence, and the test
sequence with full masks grown from its GT markers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import full_masks


@pytest.fixture(scope="module")
def train_01(gowt1_window: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only sequence 01 of the real window: the tracker must never see 02, the test sequence."""
    out = tmp_path_factory.mktemp("train01") / "Fluo-N2DH-GOWT1"
    for name in ("01", "01_GT"):
        shutil.copytree(gowt1_window / name, out / name)
    return out


@pytest.fixture(scope="module")
def test_02(gowt1_window: Path) -> tuple[CTCSequence, list[np.ndarray]]:
    seq = CTCSequence(gowt1_window, "02")
    return seq, [full_masks(seq, t) for t in range(seq.n_frames)]
