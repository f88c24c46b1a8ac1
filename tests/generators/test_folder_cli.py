"""``folder``/``real`` generators and the ``generate`` CLI (fit cache) on a real GOWT1 window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.ctc import CTCSequence, validate_sequence
from benchmark.ctc.validate import errors
from generators.base import GenerateSpec
from generators.registry import get_generator


def test_real_generator_rewrites_training_sequence(gowt1_window: Path, tmp_path: Path) -> None:
    real = CTCSequence(gowt1_window, "01")
    out = get_generator("real")().fit(real).generate(GenerateSpec(1, 6), tmp_path / "real")
    assert errors(validate_sequence(out, "01", require_complete=True)) == []
    seq = CTCSequence(out, "01")
    assert seq.n_frames == 6 and len(seq.seg_files) == 6
    assert np.array_equal(seq.image(3), real.image(3))
    # full masks are larger than the GOWT1 markers
    assert (seq.seg(3) > 0).sum() > (real.tra(3) > 0).sum()


def test_folder_generator_wraps_and_validates(gowt1_window: Path, tmp_path: Path) -> None:
    cls = get_generator("folder")
    assert cls.from_params({"path": str(gowt1_window)}).generate(GenerateSpec(2), tmp_path) == gowt1_window
    with pytest.raises(ValueError):
        cls.from_params({"path": ""}).generate(GenerateSpec(1), tmp_path)


def test_generate_cli_caches_the_fit(gowt1_window: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["generate", "--generator", "mitogen", "--dataset", "Fluo-N2DH-GOWT1", "--data-root",
            str(gowt1_window.parent), "--frames", "4", "--sequences", "2", "--shape", "128", "160",
            "--seed", "3", "--cache", str(tmp_path / "cache"), "--quiet",
            "--param", "max_fit_frames=4", "--param", "imaging_frames=2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["out"] == str(tmp_path / "a")
    states = list((tmp_path / "cache" / "generators").iterdir())
    assert len(states) == 1 and (states[0] / "state.json").is_file()
    stamp = (states[0] / "state.json").stat().st_mtime_ns
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert (states[0] / "state.json").stat().st_mtime_ns == stamp  # loaded, not refitted
    for name in ("01", "02"):
        assert errors(validate_sequence(tmp_path / "b", name, require_complete=True)) == []
        assert (tmp_path / "a" / name / "t003.tif").read_bytes() == (tmp_path / "b" / name / "t003.tif").read_bytes()
