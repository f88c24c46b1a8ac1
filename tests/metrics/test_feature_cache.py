"""One feature cache: ``metrics realism --cache DIR`` and the pipeline's stages both keep features in
``DIR/features/`` (a bug once nested them in ``features/features/``, so the CLI never reused the pipeline's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.metrics import realism


def test_the_cli_writes_and_reuses_features_in_the_one_cache(gowt1_window: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    args = ["metrics", "realism", "--real", str(gowt1_window / "02"), "--synthetic", str(gowt1_window / "01"),
            "--no-fvd", "--max-crops", "40", "--n-bootstrap", "0", "--cache", str(cache)]
    assert main(args) == 0
    first = capsys.readouterr().out
    written = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.npz"))
    assert written and all(p.startswith("features/crops-") for p in written), written

    def not_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were computed again instead of read from the cache")

    monkeypatch.setattr(realism, "_units_both", not_again)
    assert main(args) == 0
    assert capsys.readouterr().out == first  # same scores, from the cached features
