"""Shared fixtures: the real CTC data beside the checkout (``../shared/assets/ctc``).

Without it, tests that need it skip with the reason; under CI (``CI=true``) its absence fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from benchmark.ctc import CTCSequence, window_sequence

# The repository's shipped fits (fits/) and result bundles (results/) are for users: a test that wants them sets
# SYNTHVID_SHIPPED_ROOT itself (tests/test_shipped_fits.py); every other test fits and reports from its own data,
# whatever the checkout ships (subprocesses inherit this).
os.environ.setdefault("SYNTHVID_SHIPPED_ROOT", tempfile.mkdtemp(prefix="synthvid-no-shipped-"))

ASSETS = Path(os.environ.get("SYNTHVID_DATA_ROOT", Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "ctc"))


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """Path of the real CTC datasets; skip (or fail under CI) when absent."""
    if not (ASSETS / "Fluo-N2DH-GOWT1" / "01").is_dir():
        message = f"real CTC data not found at {ASSETS} (set SYNTHVID_DATA_ROOT or place ../shared beside the checkout)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return ASSETS


@pytest.fixture(scope="session")
def gowt1(shared_assets: Path) -> Path:
    return shared_assets / "Fluo-N2DH-GOWT1"


@pytest.fixture(scope="session")
def hela(shared_assets: Path) -> Path:
    return shared_assets / "Fluo-N2DL-HeLa"


@pytest.fixture(scope="session")
def gowt1_window(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 256 x 256 x 20-frame cut of GOWT1 01 and 02 (a small dataset for fast tests)."""
    out = tmp_path_factory.mktemp("gowt1_window") / "Fluo-N2DH-GOWT1"
    for name in ("01", "02"):
        window_sequence(CTCSequence(gowt1, name), out, frames=range(0, 20), box=(384, 384, 256, 256))
    return out
