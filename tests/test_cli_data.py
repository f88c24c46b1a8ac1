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
