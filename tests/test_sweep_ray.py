"""A sweep on a real local Ray cluster of 2 worker processes: tasks land on both, a task whose worker is killed
is retried and the sweep completes, and the same sweep run again computes nothing.

The tasks are cheap but go through the real machinery: the sweep's plan (ci profile, real generator
registry), Ray scheduling with the tasks' DAG dependencies, the sweep's task records, an MLflow run per task
nested under the sweep's parent run, and the stage cache (``Stages``, with its folder locks) for the work
itself: a toy stage whose body records each execution. The pipeline's own stages are exercised by
``tests/test_pipeline.py``; here a real ci run per task would take minutes. Workers are reused between tasks
(``fresh_workers=False``): a fresh process per cheap task would spend the test's time importing MLflow.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from benchmark import experiment  # noqa: E402
from benchmark.sweep import run_sweep  # noqa: E402
from benchmark.sweep_plan import SweepTask  # noqa: E402
from benchmark.sweep_spec import load_spec  # noqa: E402
from benchmark.sweep_tasks import SweepContext  # noqa: E402

SPEC = """
name = "toy"
profile = "ci"
generators = ["mitogen", "real"]
seeds = [0, 1, 2]
datasets = ["Fluo-N2DH-GOWT1"]
"""


def toy_runner(task: SweepTask, context: SweepContext) -> dict[str, Any]:
    """One task: an MLflow run under the sweep's parent holding one cached stage. The task named in
    ``victim.txt`` kills its own worker process on its first attempt (``killed-once`` marks that it did); with a
    file ``slow``, run tasks wait until it is removed."""
    from benchmark.stages import Stages

    root = context.out_dir
    tags = {**context.tags(task), "stage": "run" if task.kind == "run" else f"{task.kind}-task"}
    with experiment.start_run(task.id, task.config.dataset, parent_run_id=context.parent_runs[task.config.dataset],
                              tags=tags):
        victim = root / "victim.txt"
        if victim.is_file() and victim.read_text() == task.id and not (root / "killed-once").exists():
            (root / "killed-once").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-task, its MLflow run left RUNNING
        deadline = time.monotonic() + 120
        while task.kind == "run" and (root / "slow").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the run stays open until the test removes ``slow`` (or the interrupt kills it)

        def body(out: Path) -> dict[str, Any]:
            begin = time.time()
            time.sleep(1.0)  # long enough that two tasks overlap
            with open(root / "computed.log", "a") as fh:
                fh.write(f"{task.id} {os.getpid()} {begin} {time.time()}\n")
            return {"seed": task.config.seed}

        Stages(root / "stages", task.config.dataset, log=lambda _line: None).run(task.kind, task.id, body)
    return {"pid": os.getpid()}


@pytest.fixture(scope="module")
def two_workers() -> None:
    """A local Ray cluster with 2 CPUs: at most 2 worker processes run the 1-CPU tasks at once."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20,
             logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    return tmp_path


def child_runs(parent: str, dataset: str = "Fluo-N2DH-GOWT1") -> list:
    client = experiment_client()
    exp = client.get_experiment_by_name(experiment.experiment_name(dataset))
    return client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)


def experiment_client():
    from mlflow import MlflowClient

    experiment.configure()
    return MlflowClient()


def test_sweep_on_two_workers_retries_a_killed_worker_and_resumes_without_recomputing(
        two_workers: None, store: Path) -> None:
    spec_path = store / "toy.toml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)
    out = store / "out"
    out.mkdir()
    victim = "run-mitogen-s1-"
    (out / "victim.txt").write_text(next(t.id for t in _plan(spec) if t.id.startswith(victim)))

    first = run_sweep(spec, out, runner=toy_runner, max_retries=2, progress=False, check_data=False, fresh_workers=False)

    # every task done: 1 floor + 1 fit (mitogen; `real` fits nothing) + 6 runs, despite the killed worker
    assert first.count("done") == 8 and not first.errors
    killed_pid = int((out / "killed-once").read_text())
    pids = {record["result"]["pid"] for record in first.records.values()}
    assert len(pids - {killed_pid}) >= 2, f"tasks ran in one worker process only: {pids}"
    spans = sorted((float(line.split()[2]), float(line.split()[3])) for line in
                   (out / "computed.log").read_text().splitlines())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), "no two tasks ran at once"
    assert first.records[(out / "victim.txt").read_text()]["result"]["pid"] != killed_pid  # retried elsewhere
    computed = (out / "computed.log").read_text().splitlines()
    assert len(computed) == 8 and len({line.split()[0] for line in computed}) == 8  # each stage once
    # runs wait for their fit: every mitogen run's stage began after the fit's had ended
    fit_end = next(float(line.split()[3]) for line in computed if line.startswith("fit-mitogen"))
    assert all(float(line.split()[2]) >= fit_end for line in computed if line.startswith("run-mitogen"))

    # MLflow: one parent, FINISHED; under it 6 finished runs, 2 shared-stage tasks, and the killed attempt KILLED
    (parent,) = first.parent_runs.values()
    client = experiment_client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = child_runs(parent)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["stage"] for r in finished) == ["fit-task", "floor-task", *["run"] * 6]
    killed = [r for r in children if r.info.status == "KILLED"]
    assert [r.data.tags["sweep_task"] for r in killed] == [(out / "victim.txt").read_text()]
    assert not [r for r in children if r.info.status == "RUNNING"]

    # the same sweep again: every task is found finished, nothing is computed, no run is logged
    again = run_sweep(spec, out, runner=toy_runner, progress=False, check_data=False, fresh_workers=False)
    assert again.count("earlier") == 8 and again.count("done") == 0
    assert again.parent_runs == first.parent_runs  # resumed under the same parent
    assert (out / "computed.log").read_text().splitlines() == computed
    assert len(child_runs(parent)) == len(children)

    # without the task records (lost, or another --out for them) the stage cache still computes nothing
    for record in (first.folder / "tasks").glob("*.done.json"):
        record.unlink()
    third = run_sweep(spec, out, runner=toy_runner, progress=False, check_data=False, fresh_workers=False)
    assert third.count("done") == 8
    assert (out / "computed.log").read_text().splitlines() == computed


def test_a_failing_task_is_marked_failed_and_blocks_only_what_needs_it(two_workers: None, store: Path) -> None:
    spec_path = store / "toy.toml"
    spec_path.write_text(SPEC.replace('seeds = [0, 1, 2]', 'seeds = [0]'))
    spec = load_spec(spec_path)

    def failing_fit(task: SweepTask, context: SweepContext) -> dict[str, Any]:
        if task.kind == "fit":
            with experiment.start_run(task.id, task.config.dataset,
                                      parent_run_id=context.parent_runs[task.config.dataset],
                                      tags={**context.tags(task), "stage": "fit-task"}):
                raise RuntimeError("the fit diverged")
        return {"pid": os.getpid()}

    outcome = run_sweep(spec, store / "out", runner=failing_fit, progress=False, check_data=False, fresh_workers=False)
    status = {t.id.split("-")[0] + "-" + t.id.split("-")[1]: outcome.status[t.id] for t in outcome.tasks}
    assert status == {"floor-Fluo": "done", "fit-mitogen": "failed", "run-mitogen": "blocked", "run-real": "done"}
    fit_id = next(t.id for t in outcome.tasks if t.kind == "fit")
    assert outcome.errors[fit_id] == "RuntimeError: the fit diverged"
    (parent,) = outcome.parent_runs.values()
    client = experiment_client()
    assert client.get_run(parent).info.status == "FAILED"
    (fit_run,) = [r for r in child_runs(parent) if r.data.tags.get("stage") == "fit-task"]
    assert fit_run.info.status == "FAILED"
    records = sorted(p.name for p in (outcome.folder / "tasks").glob("*.done.json"))
    assert len(records) == 2 and not any(name.startswith("fit-") for name in records)
    json.loads((outcome.folder / "sweep.json").read_text())  # the parent run is recorded for a resume


def test_an_interrupted_sweep_is_killed_and_resumes_under_the_same_parent(two_workers: None, store: Path) -> None:
    """Ctrl-C (SIGINT) of the driver while run tasks work: the parent and the runs it cancelled end KILLED,
    finished tasks keep their records; the same sweep again runs only the rest, under the same parent."""
    import threading

    spec_path = store / "toy.toml"
    spec_path.write_text(SPEC.replace("[0, 1, 2]", "[0, 1]"))
    spec = load_spec(spec_path)
    out = store / "out"
    tasks_dir = out / "sweeps" / f"{spec.name}-{spec.digest}" / "tasks"

    def interrupt_once_a_run_works() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tasks_dir.glob("run-*.started.json")):
            time.sleep(0.1)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    out.mkdir()
    (out / "slow").touch()
    threading.Thread(target=interrupt_once_a_run_works, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, runner=toy_runner, progress=False, check_data=False, fresh_workers=False)
    parents = json.loads((tasks_dir.parent / "sweep.json").read_text())["parent_runs"]
    (parent,) = parents.values()
    client = experiment_client()
    assert client.get_run(parent).info.status == "KILLED"
    time.sleep(2.0)  # the cancelled workers are gone
    statuses = [r.info.status for r in child_runs(parent)]
    assert "RUNNING" not in statuses and "KILLED" in statuses
    finished_before = {p.name for p in tasks_dir.glob("*.done.json")}
    assert len(finished_before) < 6

    (out / "slow").unlink()
    again = run_sweep(spec, out, runner=toy_runner, progress=False, check_data=False, fresh_workers=False)
    assert again.count("earlier") == len(finished_before) and again.count("done") == 6 - len(finished_before)
    assert again.parent_runs == parents and client.get_run(parent).info.status == "FINISHED"
    runs = [r for r in child_runs(parent) if r.data.tags["stage"] == "run" and r.info.status == "FINISHED"]
    assert sorted(r.data.tags["sweep_task"] for r in runs) == sorted(t.id for t in again.tasks if t.kind == "run")


def _plan(spec):
    from benchmark.sweep_plan import plan_sweep

    return plan_sweep(spec)


@pytest.mark.slow
def test_the_cli_sweeps_the_real_pipeline_on_local_ray_and_resumes(shared_assets: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmark sweep`` end to end: the `real` generator, ci profile, 2 seeds, on a local Ray instance
    the command starts itself (minutes: StarDist and the tracker train twice, the floor is scored once)."""
    from benchmark.cli import main

    if ray.is_initialized():
        ray.shutdown()  # the command starts its own local instance
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    weights = Path(os.environ.get("HOME", "~")).expanduser() / ".cache" / "synthvid" / "weights"
    if weights.is_dir():
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "weights").symlink_to(weights)
    spec = tmp_path / "real.toml"
    spec.write_text(SPEC.replace('["mitogen", "real"]', '["real"]').replace("[0, 1, 2]", "[0, 1]"))
    args = ["sweep", str(spec), "--out", str(tmp_path / "out"), "--data-root", str(shared_assets), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("| done |") == 2
    experiment.configure()
    client = experiment_client()
    (parent,) = [r for r in client.search_runs(
        [client.get_experiment_by_name(experiment.experiment_name("Fluo-N2DH-GOWT1")).experiment_id],
        "tags.stage = 'sweep'")]
    runs = [r for r in child_runs(parent.info.run_id) if r.data.tags["stage"] == "run"]
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and r.data.metrics.get("SEG", 0) > 0 for r in runs)
    assert main(args) == 0  # again: nothing to run
    assert capsys.readouterr().out.count("| earlier |") == 2
