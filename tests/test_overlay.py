"""The one overlay drawer (``benchmark.ctc.overlay``): which pixels it paints, and that the report's
figures and the pipeline's logged samples both go through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.ctc import CTCSequence, write_sequence
from benchmark.ctc.overlay import OUTLINE_RGB, outlined_frame, overlay_frames, scaled_shape

ROOT = Path(__file__).resolve().parents[1]


def two_cells() -> np.ndarray:
    """A 12 x 16 mask: label 1 a 4 x 4 square, label 2 a 5 x 6 rectangle touching it."""
    labels = np.zeros((12, 16), np.uint16)
    labels[2:6, 2:6] = 1
    labels[4:9, 6:12] = 2
    return labels


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = [rng.integers(100, 900, (12, 16)).astype(np.uint16) for _ in range(3)]
    write_sequence(tmp_path / "ds", "01", images, [two_cells()] * 3)
    return tmp_path / "ds"


def test_outline_marks_exactly_the_inner_boundary_of_each_label() -> None:
    labels = two_cells()
    rgb = outlined_frame(np.zeros(labels.shape, np.float32), labels, (0.0, 1.0))
    painted = np.all(rgb == OUTLINE_RGB, axis=2)
    expected = np.zeros(labels.shape, bool)
    for value in (1, 2):
        inside = labels == value
        interior = inside.copy()
        interior[1:-1, 1:-1] = (inside[1:-1, 1:-1] & (labels[:-2, 1:-1] == value) & (labels[2:, 1:-1] == value)
                                & (labels[1:-1, :-2] == value) & (labels[1:-1, 2:] == value))
        expected |= inside & ~interior
    assert np.array_equal(painted, expected)
    assert painted[2, 2] and painted[5, 5] and not painted[3, 3]  # square: rim yes, centre no
    assert not painted[0, 0] and not painted[10, 14]  # background untouched
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 16, 3)
    assert (rgb[~painted] == 0).all()  # the black frame under the window stays black


def test_grey_window_and_shrinking() -> None:
    image = np.array([[0.0, 50.0], [100.0, 200.0]], np.float32)
    rgb = outlined_frame(image, None, (0.0, 100.0))
    assert rgb[..., 0].tolist() == [[0, 128], [255, 255]]  # clipped above hi, channels equal
    assert scaled_shape((600, 300), 384) == (384, 192) and scaled_shape((100, 50), 384) == (100, 50)
    assert scaled_shape((100, 50), None) == (100, 50)


def test_overlay_frames_share_one_window_and_shape(tiny_dataset: Path) -> None:
    seq = CTCSequence(tiny_dataset, "01")
    frames = overlay_frames(seq, [0, 2], max_side=8)
    assert [f.shape for f in frames] == [(6, 8, 3), (6, 8, 3)]
    assert all(np.all(f == OUTLINE_RGB, axis=2).any() for f in frames)


def test_pipeline_logs_the_drawers_frames(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generate stage's sample PNGs are the overlay drawer's frames, one window per frame, TRA masks."""
    import mlflow

    from benchmark.stages import log_sample_frames

    logged: dict[str, np.ndarray] = {}
    monkeypatch.setattr(mlflow, "log_image", lambda image, path: logged.setdefault(path, image))
    log_sample_frames(tiny_dataset, n=2)
    seq = CTCSequence(tiny_dataset, "01")
    assert sorted(logged) == ["samples/frame_000.png", "samples/frame_002.png"]
    for t in (0, 2):
        (expected,) = overlay_frames(seq, [t], prefer=("TRA",))
        assert np.array_equal(logged[f"samples/frame_{t:03d}.png"], expected)


def test_no_other_module_draws_outlines() -> None:
    """``find_boundaries`` outside the drawer is BVDM's edge smoothing band only (not a picture)."""
    users = sorted(str(p.relative_to(ROOT)) for package in ("benchmark", "generators", "downstream", "reports",
                                                            "scripts")
                   for p in (ROOT / package).rglob("*.py") if "find_boundaries" in p.read_text())
    assert users == ["benchmark/ctc/overlay.py", "generators/bvdm/generator.py"]
