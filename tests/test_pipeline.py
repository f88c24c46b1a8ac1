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
    # only the shared real window and the floor (real training vs held-out) may come from the first run
    assert set(row["cached_stages"]) <= {"window", "floor"}
    summary = format_summary(row)
    assert "stage times" in summary and "floor (real training vs held-out)" in summary
    assert row["FLOOR_FID"] > 0 and row["FLOOR_FVD"] > 0
    if generator != "real":
        assert row["FID"] > 0 and "FVD" in row and row["FID_ci_low"] <= row["FID"] <= row["FID_ci_high"]
        assert row["ORACLE_FID"] > 0  # the frame ceiling of the ci profile
        assert "frame ceiling (oracle)" in summary


def test_every_row_and_the_floor_share_one_reference_and_map(ci_rows: dict[str, dict], store: Path) -> None:
    """The floor scores the real TRAINING sequence against the held-out one, exactly as the generators are
    scored: same reference rows, same frozen intensity map, same clip mode."""
    import json

    import numpy as np

    runs = mlflow.search_runs(experiment_names=[f"synthvid/{DATASET}"])
    stages = runs[runs["tags.mlflow.parentRunId"] == ci_rows["mitogen"]["run_id"]].set_index("tags.stage")
    for stage in ("floor", "realism", "oracle"):
        assert stages.loc[stage, "tags.realism_reference"] == f"{DATASET}/02"
        assert stages.loc[stage, "tags.realism_intensity_map"] == "0..123"
        assert stages.loc[stage, "tags.realism_clip_mode"] == "lineage"
    folders = {s: Path(json.loads((Path(stages.loc[s, "artifact_uri"].removeprefix("file://")) / "stage.json")
                                  .read_text())["folder"]) for s in ("floor", "realism")}
    floor, realism = (np.load(folders[s] / "features.npz") for s in ("floor", "realism"))
    assert np.array_equal(floor["reference_crops_features"], realism["reference_crops_features"])
    floor_scores = json.loads((folders["floor"] / "floor.json").read_text())
    assert floor_scores["real"].endswith("/02") and "/01" in floor_scores["synthetic"]
    assert (floor_scores["intensity_lo"], floor_scores["intensity_hi"]) == (0.0, 123.0)


def test_ci_runs_are_nested_in_mlflow(ci_rows: dict[str, dict]) -> None:
    runs = mlflow.search_runs(experiment_names=[f"synthvid/{DATASET}"])
    parents = runs[runs["tags.stage"] == "run"]
    assert set(parents["tags.generator"]) == {"real", "mitogen"}
    for row in ci_rows.values():
        children = runs[runs["tags.mlflow.parentRunId"] == row["run_id"]]
        expected = {"window", "fit", "generate", "floor", "texture-carry", "train-segmenter", "train-tracker",
                    "eval-real"}
        if row["generator"] != "real":
            expected |= {"realism", "oracle"}
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


def test_a_run_records_its_data_and_curves_in_mlflow(ci_rows: dict[str, dict]) -> None:
    """The parent run lists the real training and held-out sequences and the generate stage the synthetic ones
    (``log_input``, by content digest); StarDist's epochs are in its stage run."""
    from benchmark.ctc import CTCSequence
    from benchmark.ctc.digest import sequence_digest

    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=[f"synthvid/{DATASET}"])
    row = ci_rows["mitogen"]

    def inputs(run_id: str) -> dict[str, tuple[str, str]]:
        return {d.dataset.name: (d.dataset.digest, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
                for d in client.get_run(run_id).inputs.dataset_inputs}

    parent = inputs(row["run_id"])
    assert {name: context for name, (_, context) in parent.items()} == {f"{DATASET}/01": "training",
                                                                        f"{DATASET}/02": "testing"}
    children = runs[runs["tags.mlflow.parentRunId"] == row["run_id"]]
    generate = children[children["tags.stage"] == "generate"].iloc[0]
    synthetic_dir = Path(mlflow.artifacts.load_dict(f"runs:/{generate['run_id']}/stage.json")["folder"]) / "synthetic"
    logged = inputs(generate["run_id"])
    assert set(logged) == {"mitogen/01", "mitogen/02"}
    assert logged["mitogen/01"] == (sequence_digest(CTCSequence(synthetic_dir, "01"))[:16], "synthetic")
    segmenter = children[children["tags.stage"] == "train-segmenter"].iloc[0]
    epochs = client.get_metric_history(segmenter["run_id"], "stardist_loss")
    assert [m.step for m in epochs] == list(range(len(epochs))) and len(epochs) >= 1
