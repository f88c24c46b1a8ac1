"""What one sweep task does and leaves behind, wherever it runs: its record files under the sweep folder, its
log, the pipeline call, and the sweep's MLflow parent runs (``benchmark.cluster`` places the tasks,
``benchmark.sweep`` drives them)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import experiment
from benchmark.config import profile_label
from benchmark.io import atomic_write_text
from benchmark.logs import cli_logging
from benchmark.machine import cpu_description, machine_class
from benchmark.pipeline import run_benchmark, run_shared_stages
from benchmark.stages import generator_device
from benchmark.sweep_plan import SweepTask, sweep_run_tags
from benchmark.sweep_spec import SweepSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepContext:
    """What every task needs to know about its sweep (pickled to the workers: paths must be on storage that
    every worker sees, the same path on each)."""

    name: str
    digest: str
    folder: Path
    out_dir: Path
    data_root: str | None
    parent_runs: dict[str, str]

    def tags(self, task: SweepTask) -> dict[str, str]:
        return sweep_run_tags(self.name, self.digest, task.id, task.point)


def sweep_folder(out_dir: Path, spec: SweepSpec) -> Path:
    return Path(out_dir) / "sweeps" / f"{spec.name}-{spec.digest}"


def task_record(folder: Path, task_id: str, state: str) -> Path:
    """``tasks/<id>.started.json`` (an attempt began: the live ``running`` count) or ``.done.json`` (finished)."""
    return folder / "tasks" / f"{task_id}.{state}.json"


def read_done(folder: Path, task_id: str) -> dict[str, Any] | None:
    path = task_record(folder, task_id, "done")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:  # a torn record cannot exist (atomic); say what it is
        raise ValueError(f"{path}: unreadable task record ({exc}); delete it to run that task again") from None


TaskRunner = Callable[[SweepTask, SweepContext], dict[str, Any]]


def execute_task(task: SweepTask, context: SweepContext, runner: TaskRunner, *upstream: Any) -> dict[str, Any]:
    """The body of one Ray task, in a worker process. ``upstream``: the results of the tasks it needs (Ray
    resolves them first, so the task starts only once its fit and floor are done). Logs to
    ``logs/<id>.log`` in the sweep folder, and records the attempt and the result beside it."""
    attempt = {"task": task.id, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    atomic_write_text(task_record(context.folder, task.id, "started"), json.dumps(attempt))
    log_path = context.folder / "logs" / f"{task.id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "a") as stream, cli_logging(logging.INFO, stream):
        logger.info("task %s (%s) on %s, pid %d", task.id, task.label, attempt["host"], attempt["pid"])
        result = runner(task, context)
        logger.info("task %s done in %.0f s", task.id, time.perf_counter() - start)
    record = {**attempt, "kind": task.kind, "label": task.label, "seconds": time.perf_counter() - start,
              "result": result}
    atomic_write_text(task_record(context.folder, task.id, "done"), json.dumps(record, default=str))
    return record


#: the metrics a run task hands back to the driver (its summary table); everything is in MLflow anyway
SUMMARY_METRICS = ("SEG", "DET", "TRA", "FID", "FVD", "KID", "KVD")


def run_task(task: SweepTask, context: SweepContext) -> dict[str, Any]:
    """The real work of a task: the whole pipeline (``run``) or the shared stages (``floor``, ``fit``), nested
    under the sweep's parent run. A fit given a GPU trains there (``device`` is a runtime field)."""
    parent = context.parent_runs[task.config.dataset]
    if task.kind == "run":
        row = run_benchmark(task.config, context.out_dir, context.data_root, parent_run_id=parent,
                            tags=context.tags(task))
        return {"run_id": row["run_id"], "cached_stages": row["cached_stages"],
                **{k: row[k] for k in SUMMARY_METRICS if k in row}}
    fit_device = "cuda" if task.num_gpus and generator_device(task.config) == "cpu" else None
    return run_shared_stages(task.config, context.out_dir, context.data_root, task.kind, parent_run_id=parent,
                             tags=context.tags(task), fit_device=fit_device)


# ------------------------------------------------------------------------------------------- MLflow parent
def open_parent_runs(spec: SweepSpec, folder: Path, n_tasks: int) -> dict[str, str]:
    """The sweep's parent run in each dataset's experiment (one per dataset: MLflow nests runs within an
    experiment), RUNNING and owned by this process; the runs recorded in ``sweep.json`` are reopened, so a
    resumed sweep keeps all its runs under one parent."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException


    record = folder / "sweep.json"
    saved = json.loads(record.read_text()).get("parent_runs", {}) if record.is_file() else {}
    client = MlflowClient()
    owner = {experiment.HOST_TAG: socket.gethostname(), experiment.PID_TAG: str(os.getpid())}
    parents: dict[str, str] = {}
    for dataset in spec.datasets:
        experiment_id = experiment.ensure_experiment(experiment.experiment_name(dataset))
        run_id = saved.get(dataset)
        try:
            alive = run_id is not None and client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            alive = False
        if alive:
            client.update_run(run_id, status="RUNNING")
            logger.info("sweep %s: resuming MLflow parent run %s (%s)", spec.name, run_id, dataset)
        else:
            tags = {"stage": "sweep", "sweep_name": spec.name, "sweep_digest": spec.digest,
                    "profile": profile_label(spec.profile) or "",
                    "dataset": dataset, "sweep_spec": str(spec.path), "git_commit": experiment.git_commit() or "",
                    "machine_class": machine_class(), "cpu": cpu_description()}
            run_id = client.create_run(experiment_id, run_name=f"sweep-{spec.name}", tags=tags).info.run_id
            client.log_dict(run_id, spec.to_dict(), "sweep.json")
            client.log_param(run_id, "n_tasks", n_tasks)
        for key, value in owner.items():  # the driver's pid: a worker's close_stale_runs leaves it alone
            client.set_tag(run_id, key, value)
        parents[dataset] = run_id
    atomic_write_text(record, json.dumps({"spec": spec.to_dict(), "parent_runs": parents}, indent=2))
    return parents


def close_parent_runs(parents: Mapping[str, str], status: str, counts: Mapping[str, int]) -> None:
    """End each parent run with ``status``; runs under it still RUNNING (a worker that died, or a task this
    sweep cancelled: no process can end them any more) are marked KILLED first."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for run_id in parents.values():
        experiment_id = client.get_run(run_id).info.experiment_id
        running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
        parent_of = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in running}
        orphans, changed = {run_id}, True
        while changed:  # descendants of the parent, through their RUNNING ancestors
            grown = orphans | {r for r, p in parent_of.items() if p in orphans}
            changed, orphans = grown != orphans, grown
        for orphan in sorted(orphans - {run_id}):
            client.set_terminated(orphan, "KILLED")
        if len(orphans) > 1:
            logger.warning("MLflow: marked %d run(s) of the sweep KILLED that stopped workers left RUNNING",
                           len(orphans) - 1)
        for key, value in counts.items():
            client.log_metric(run_id, f"tasks_{key}", value)
        client.set_terminated(run_id, status)


