"""Stage runs open before the stage works, and training curves stream into them while it trains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from benchmark import experiment
from benchmark.stages import Stages


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_a_stage_streams_its_curve_into_its_own_running_run(store: str, tmp_path: Path) -> None:
    seen: dict = {}

    def body(out: Path) -> dict:
        with experiment.TrainingStream("toy_", every_s=0.0) as curve:
            for step in range(1, 4):
                curve(step, {"loss": 1.0 / step, "bad": float("nan")})
        client = mlflow.MlflowClient(store)
        run = client.get_run(mlflow.active_run().info.run_id)  # while the stage is still working
        seen.update(status=run.info.status, stage=run.data.tags.get("stage"),
                    curve=[(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "toy_loss")],
                    names=set(run.data.metrics))
        return {"done": 1.0}

    with experiment.start_run("parent", "ds"):
        Stages(tmp_path / "stages", "ds", log=lambda _: None).run("toy", "key", body)
    assert seen["status"] == "RUNNING" and seen["stage"] == "toy"
    assert seen["curve"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert seen["names"] == {"toy_loss"}  # NaN points are dropped, not logged


def test_a_cached_stage_logs_the_saved_history_once(store: str, tmp_path: Path) -> None:
    """A StarDist stage: the epochs stream live; a cached re-run's new stage run gets the saved history,
    and neither run holds a point twice."""
    from benchmark.stages import log_history

    def body(out: Path) -> dict:
        with experiment.TrainingStream("stardist_", every_s=0.0) as curve:
            for epoch, loss in enumerate((3.0, 2.0)):
                curve(epoch, {"loss": loss})
        (out / "stardist").mkdir()
        (out / "stardist" / "history.json").write_text('{"loss": [3.0, 2.0]}')
        return {}

    client = mlflow.MlflowClient(store)
    curves = []
    for _ in range(2):
        with experiment.start_run("parent", "ds"):
            Stages(tmp_path / "stages", "ds", log=lambda _: None).run(
                "train-segmenter", "key", body, artifacts=lambda f: log_history(f / "stardist"))
        runs = client.search_runs([client.get_experiment_by_name("synthvid/ds").experiment_id],
                                  "tags.stage = 'train-segmenter'", order_by=["attributes.start_time DESC"])
        curves.append([(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "stardist_loss")])
    assert curves == [[(0, 3.0), (1, 2.0)], [(0, 3.0), (1, 2.0)]]


def test_without_a_run_streaming_is_free_and_imports_no_mlflow() -> None:
    code = ("import sys\nfrom benchmark.experiment import TrainingStream\n"
            "with TrainingStream('x_', every_s=0) as s:\n    s(1, {'loss': 1.0})\n"
            "assert 'mlflow' not in sys.modules, 'mlflow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_the_run_dag_is_in_topological_order_and_names_every_stage() -> None:
    """``RUN_DAG`` is the pipeline in one place: each stage's needs come before it, and the report's stage
    order knows every stage name."""
    from benchmark.stages import ORACLE_DAG, RUN_DAG
    from reports.runs import STAGES

    for dag in (RUN_DAG, ORACLE_DAG):
        seen: set[str] = set()
        for stage in dag:
            assert set(stage.needs) <= seen, (stage.name, stage.needs)
            seen.add(stage.name)
    assert {s.name for s in RUN_DAG} <= set(STAGES)


def test_a_parent_run_records_the_machine_as_system_metrics(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    with experiment.start_run("parent", "ds") as run:
        with experiment.start_run("stage", "ds", nested=True) as stage:
            time.sleep(3)
    client = mlflow.MlflowClient(store)
    logged = client.get_run(run.info.run_id).data
    assert "system/cpu_utilization_percentage" in logged.metrics and "system/system_memory_usage_megabytes" in logged.metrics
    assert logged.tags["machine_class"] and logged.tags["cpu"]
    assert not any(k.startswith("system/") for k in client.get_run(stage.info.run_id).data.metrics)  # once, not per stage
