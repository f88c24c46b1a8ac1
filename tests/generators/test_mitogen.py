"""MitoGen-style generator on a real GOWT1 window: valid CTC output, TRA round trip, determinism, save/load."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from ctc_metrics.scripts.evaluate import evaluate_sequence
from ctc_metrics.scripts.validate import validate_sequence as ctc_validate

from benchmark.ctc import CTCSequence, validate_sequence, write_result
from benchmark.ctc.validate import errors
from generators.base import GenerateSpec
from generators.imaging import snr_cr
from generators.mitogen import MitoGenConfig, MitoGenGenerator
from generators.registry import get_generator

SPEC = GenerateSpec(n_sequences=1, n_frames=10, shape=(192, 224), seed=0)


@pytest.fixture(scope="module")
def fitted(gowt1_window: Path) -> MitoGenGenerator:
    cfg = MitoGenConfig(progress=False, max_fit_frames=8, imaging_frames=4)
    return MitoGenGenerator(cfg).fit(CTCSequence(gowt1_window, "01"))


@pytest.fixture(scope="module")
def generated(fitted: MitoGenGenerator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fitted.generate(SPEC, tmp_path_factory.mktemp("mitogen") / "syn")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.tif")) + sorted(folder.rglob("*.txt")):
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_registered() -> None:
    assert get_generator("mitogen") is MitoGenGenerator


def test_output_is_valid_ctc(generated: Path) -> None:
    assert errors(validate_sequence(generated, "01", require_complete=True)) == []
    seq = CTCSequence(generated, "01")
    assert seq.n_frames == SPEC.n_frames and seq.frame_shape == SPEC.shape
    assert seq.dtype == np.uint8  # GOWT1's bit depth
    assert len(seq.seg_files) == SPEC.n_frames
    # py-ctcmetrics' own validation of the GT labels written as a result
    res = generated / "01_RES"
    write_result(res, [seq.tra(t) for t in range(seq.n_frames)],
                 {k: v.parent for k, v in seq.tracks.items() if v.parent})
    assert ctc_validate(str(res), threads=1)["Valid"] == 1


def test_gt_to_res_round_trip_gives_tra_one(generated: Path) -> None:
    seq = CTCSequence(generated, "01")
    res = generated / "01_RES"
    if not res.exists():
        write_result(res, [seq.tra(t) for t in range(seq.n_frames)],
                     {k: v.parent for k, v in seq.tracks.items() if v.parent})
    scores = evaluate_sequence(str(res), str(generated / "01_GT"), metrics=["TRA"], threads=1)
    assert scores["TRA"] == pytest.approx(1.0)


def test_snr_and_contrast_follow_the_real_sequence(generated: Path, fitted: MitoGenGenerator) -> None:
    seq = CTCSequence(generated, "01")
    snr, cr = snr_cr(seq.image(0), seq.tra(0))
    assert fitted.imaging is not None
    assert abs(snr - fitted.imaging.real_snr) / fitted.imaging.real_snr < 0.35
    assert abs(cr - fitted.imaging.real_cr) / fitted.imaging.real_cr < 0.35


def test_same_seed_same_bytes_other_seed_differs(fitted: MitoGenGenerator, generated: Path, tmp_path: Path) -> None:
    again = fitted.generate(SPEC, tmp_path / "again")
    other = fitted.generate(GenerateSpec(1, SPEC.n_frames, SPEC.shape, seed=1), tmp_path / "other")
    base = _digest(generated / "01") + _digest(generated / "01_GT")
    assert _digest(again / "01") + _digest(again / "01_GT") == base
    assert _digest(other / "01") + _digest(other / "01_GT") != base


def test_save_load_reproduces(fitted: MitoGenGenerator, generated: Path, tmp_path: Path) -> None:
    fitted.save(tmp_path / "state")
    loaded = MitoGenGenerator.load(tmp_path / "state")
    out = loaded.generate(SPEC, tmp_path / "loaded")
    assert _digest(out / "01") == _digest(generated / "01")


def test_texture_advection_follows_the_contour() -> None:
    """Same contour: texture unchanged; a contour grown 1.25x: the texture is the 1.25x zoom."""
    from generators.mitogen import advect, canonical_grid, fbm, fbm_filter

    tex = fbm(fbm_filter(64, 4.0), np.random.default_rng(0))
    radii = np.full(60, 20.0)
    grid = canonical_grid(64)
    assert np.abs(advect(tex, radii, radii, grid) - tex)[8:-8, 8:-8].max() < 1e-4
    grown = advect(tex, radii, radii * 1.25, grid)
    c = 31.5
    # a point at offset 10 px in the grown texture came from offset 8 px
    assert grown[int(c + 10.5), int(c + 0.5)] == pytest.approx(
        float(tex[int(c + 8.5), int(c + 0.5)]), abs=0.15)
    assert np.corrcoef(grown[16:48, 16:48].ravel(), tex[16:48, 16:48].ravel())[0, 1] < 0.95


def test_oracle_renders_the_real_cells_through_the_frame_model(fitted: MitoGenGenerator, gowt1_window: Path,
                                                                tmp_path: Path) -> None:
    """Real textures through MitoGen's path: valid CTC, TRA = the real full masks, real-like cell levels
    (the PSF edge-loss gain keeps each cell's mean through the blur) and the real SNR."""
    from scipy import ndimage

    from benchmark.ctc.crops import full_masks

    real = CTCSequence(gowt1_window, "01")
    out = fitted.render_oracle(real, tmp_path / "oracle", n_frames=3)
    assert errors(validate_sequence(out, "01", require_complete=True)) == []
    oracle = CTCSequence(out, "01")
    assert oracle.n_frames == 3
    for t in range(3):
        labels = full_masks(real, t)
        assert np.array_equal(oracle.tra(t), labels)
        ids = np.unique(labels[labels > 0])
        ratio = np.median(np.asarray(ndimage.mean(oracle.image(t).astype(float), labels, ids))
                          / np.asarray(ndimage.mean(real.image(t).astype(float), labels, ids)))
        assert 0.85 < ratio < 1.15, ratio
    snr, _ = snr_cr(oracle.image(0), oracle.tra(0))
    real_snr, _ = snr_cr(real.image(0), full_masks(real, 0))
    assert 0.7 < snr / real_snr < 1.3, (snr, real_snr)
