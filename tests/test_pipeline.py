"""`python -m benchmark run` end to end with the ci profile on a real GOWT1 window: the `real` row and
the `mitogen` row, resumption after a crash during downstream training, and the MLflow layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from benchmark.config import build_run_config
from benchmark.ctc import validate_result
from benchmark.pipeline import format_summary, run_benchmark

DATASET = "Fluo-N2DH-GOWT1"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("SYNTHVID_CACHE", str(root / "cache"))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def ci_rows(store: Path, shared_assets: Path) -> dict[str, dict]:
    rows = {}
    for generator in ("real", "mitogen"):
        config = build_run_config("ci", DATASET, generator, seed=0)
        rows[generator] = run_benchmark(config, store / "runs", data_root=str(shared_assets))
    return rows


@pytest.mark.parametrize("generator", ["real", "mitogen"])
def test_ci_run_scores_real_data(ci_rows: dict[str, dict], generator: str) -> None:
    row = ci_rows[generator]
    for metric in ("SEG", "DET", "TRA"):
        assert 0.0 <= row[metric] <= 1.0, (metric, row)
    assert validate_result(row["result_dir"]) == []
    assert row["cached_stages"] in ([], ["window"])  # only the shared real window may come from the first run
    assert "stage times" in format_summary(row)
    if generator != "real":
        assert row["FID"] > 0 and "FVD" in row


def test_ci_runs_are_nested_in_mlflow(ci_rows: dict[str, dict]) -> None:
    runs = mlflow.search_runs(experiment_names=[f"synthvid/{DATASET}"])
    parents = runs[runs["tags.stage"] == "run"]
    assert set(parents["tags.generator"]) == {"real", "mitogen"}
    for row in ci_rows.values():
        children = runs[runs["tags.mlflow.parentRunId"] == row["run_id"]]
        expected = {"window", "fit", "generate", "train-segmenter", "train-tracker", "eval-real"}
        assert expected <= set(children["tags.stage"])
        parent = runs[runs["run_id"] == row["run_id"]].iloc[0]
        assert parent["metrics.TRA"] == pytest.approx(row["TRA"])


def test_resume_after_crash_in_downstream_training(ci_rows: dict[str, dict], store: Path, shared_assets: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    stages = store / "runs" / DATASET / "stages"
    for folder in stages.glob("train-tracker-*"):
        shutil.rmtree(folder)
    for folder in stages.glob("eval-real-*"):
        shutil.rmtree(folder)
    config = build_run_config("ci", DATASET, "real", seed=0)

    import downstream.tracker.model as tracker_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during tracker training")

    monkeypatch.setattr(tracker_model, "train_tracker", killed)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config, store / "runs", data_root=str(shared_assets))
    assert not [p for p in stages.glob("train-tracker-*") if not p.name.endswith(".partial")]
    monkeypatch.undo()
    row = run_benchmark(config, store / "runs", data_root=str(shared_assets))
    assert {"window", "fit", "generate", "train-segmenter"} <= set(row["cached_stages"])
    assert "train-tracker" not in row["cached_stages"] and "eval-real" not in row["cached_stages"]
    assert row["TRA"] == pytest.approx(ci_rows["real"]["TRA"])  # same seed, same result
