"""`python -m benchmark data ...`, the dataset registry and the MLflow module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from benchmark import experiment
from benchmark.cli import main
from benchmark.datasets import DatasetNotFound, resolve_dataset


def test_data_info_gowt1(shared_assets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "Fluo-N2DH-GOWT1", "--data-root", str(shared_assets)]) == 0
    out = capsys.readouterr().out
    # counts from the dataset notes (assets.md), not from our code
    assert "sequence 01: 92 frames of 1024x1024 uint8, 92 present" in out
    assert "sequence 02: 92 frames of 1024x1024 uint8, 92 present" in out
    assert "27 tracks, 4 with a parent" in out and "50 tracks, 2 with a parent" in out
    assert "missing frames: none" in out


def test_data_info_hela_lists_missing_frames(shared_assets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "Fluo-N2DL-HeLa", "--data-root", str(shared_assets)]) == 0
    out = capsys.readouterr().out
    assert "sequence 01: 92 frames of 700x1100 uint16, 49 present" in out
    assert "missing frames: 0, 3, 5-6, 8, 10" in out
    assert "265 tracks, 188 with a parent" in out and "674 tracks, 422 with a parent" in out


def test_missing_data_gives_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNTHVID_DATA_ROOT", raising=False)
    with pytest.raises(DatasetNotFound, match="data fetch Fluo-N2DL-HeLa.*--data-root"):
        resolve_dataset("Fluo-N2DL-HeLa", tmp_path / "nowhere")
    result = subprocess.run([sys.executable, "-m", "benchmark", "data", "info", "Fluo-N2DL-HeLa", "--data-root",
                             str(tmp_path)], capture_output=True, text=True, env={**_env(), "SYNTHVID_CACHE": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not found" in result.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "SYNTHVID_DATA_ROOT"}


def test_mlflow_run_logs_config_tags_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = {"generator": "mitogen", "segmenter": {"epochs": 2, "grid": [2, 2]}}
    with experiment.start_run("mitogen-s0", "Fluo-N2DH-GOWT1", config=config, tags={"stage": "run"}) as run:
        experiment.log_metrics({"SEG": 0.5, "TRA": None, "bad": float("nan")})
    runs = mlflow.search_runs(experiment_names=["synthvid/Fluo-N2DH-GOWT1"])
    row = runs.iloc[0]
    assert row["run_id"] == run.info.run_id
    assert row["params.segmenter.epochs"] == "2" and row["params.segmenter.grid"] == "[2, 2]"
    assert row["metrics.SEG"] == 0.5 and "metrics.TRA" not in runs.columns
    assert row["tags.version.torch"].startswith("2.14") and row["tags.stage"] == "run"
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/config.json") == config


@pytest.mark.parametrize("name", ["Fluo-N2DH-GOWT1", "Fluo-N2DL-HeLa"])
def test_the_frozen_intensity_maps_come_from_the_command(name: str, shared_assets: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Each frozen map in benchmark/intensity_maps.toml is what ``data intensity-map`` derives from the data."""
    assert main(["data", "intensity-map", name, "--data-root", str(shared_assets)]) == 0
    assert capsys.readouterr().out.strip().endswith("frozen: the same")


def test_intensity_map_write_adds_a_map_and_never_silently_replaces_one(
        shared_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark import datasets

    maps = tmp_path / "intensity_maps.toml"  # the HeLa entry only: GOWT1 is a "new" dataset here
    header = "".join(line for line in datasets.INTENSITY_MAPS.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    maps.write_text(header + '\n["Fluo-N2DL-HeLa"]\nlo = 33032.0\nhi = 35009.0\ndtype = "uint16"\nsource = "x"\n')
    monkeypatch.setattr(datasets, "INTENSITY_MAPS", maps)
    monkeypatch.setattr(datasets.frozen_intensity_maps, "__defaults__", (maps,))
    assert "Fluo-N2DH-GOWT1" not in datasets.frozen_intensity_maps()
    assert main(["data", "intensity-map", "Fluo-N2DH-GOWT1", "--data-root", str(shared_assets), "--write"]) == 0
    assert datasets.frozen_intensity_maps()["Fluo-N2DH-GOWT1"] == {
        "lo": 0.0, "hi": 123.0, "dtype": "uint8", "source": "pooled P0.5/P99.9 of 01+02, 92 + 92 frames"}
    assert maps.read_text().startswith("# The realism protocol's ONE frozen")  # the header is kept
    changed = maps.read_text().replace("hi = 123.0", "hi = 124.0")
    maps.write_text(changed)
    code = main(["data", "intensity-map", "Fluo-N2DH-GOWT1", "--data-root", str(shared_assets), "--write"])
    assert code == 2 and "pass --replace" in capsys.readouterr().err and maps.read_text() == changed
    assert main(["data", "intensity-map", "Fluo-N2DH-GOWT1", "--data-root", str(shared_assets), "--write",
                 "--replace"]) == 0
    assert datasets.frozen_intensity_maps()["Fluo-N2DH-GOWT1"]["hi"] == 123.0
