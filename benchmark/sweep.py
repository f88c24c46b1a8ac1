"""``python -m benchmark sweep SPEC.toml``: many runs (generators x seeds x datasets x grid points) as one sweep
of Ray tasks that respect the stage DAG, under one MLflow parent run.

A spec is TOML (examples in ``benchmark/sweeps/``)::

    name = "ci-seeds"                  # optional, default: the file's stem
    profile = "ci"                     # a profile name, or a TOML path (relative to the spec)
    generators = ["real", "mitogen"]
    seeds = [0, 1]
    datasets = ["Fluo-N2DH-GOWT1"]
    [grid]                             # optional: lists of generator parameters, every combination
    some_param = [1, 2]

``[[grid]]`` (an array of such tables) takes the union of several products: the paper's Table 2 is two lines
through one shared point. Grid keys are opaque here: each point is handed to ``build_run_config`` as the
generator overrides, exactly as ``--param`` would be, and checked there; keys under ``downstream.`` set the
profile's ``[downstream]`` section instead (the low-data protocol, as ``run --downstream`` would). The spec is checked whole when it
is loaded (keys, types, generators, datasets, the profile, every grid point against every generator's
config), so a typo fails with one line naming the file before any task runs.

Expansion (``plan_sweep``) follows the stage DAG (``benchmark.stages``): one ``floor`` task per dataset and
realism protocol, one ``fit`` task per distinct fit config (the fit cache's key without the data: every seed
and every sampling-only grid point of a generator share it; with the fit's frame ceiling, the ``oracle``
stage, when the profile runs it), and one ``run`` task per (dataset, generator, seed, grid point) that waits
for its fit (a Ray object ref) and then runs the whole pipeline, which finds the fit in the stage cache. Runs do not wait for the floor task: they need the floor only after generating,
by when it is done, and a run that gets there first waits on the stage's lock (so it is computed once)
instead of every run idling behind it from the start. Grouping is only an optimisation: the stage cache's content keys
decide what is computed, so a grouping that missed a sharing would cost time, never give a wrong result.

Resume: a finished task leaves ``<out>/sweeps/<name>-<digest>/tasks/<id>.done.json``. The same sweep run
again skips those tasks and reopens the same MLflow parent run, so a killed sweep resumes where it stopped
(an interrupted task's finished stages are reused by the stage cache); a task whose worker died is retried
by Ray (``--max-retries``). Runs a dead worker left RUNNING are marked KILLED when the sweep ends.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import MAX_SEED, RunConfig, non_negative_int, profile_label, split_point, stable_hash
from benchmark.paths import add_cache_argument

logger = logging.getLogger(__name__)

#: the example specs shipped with the package
SWEEPS_DIR = Path(__file__).parent / "sweeps"
SPEC_KEYS = ("name", "description", "profile", "generators", "seeds", "datasets", "grid")
REQUIRED_KEYS = ("profile", "generators", "seeds", "datasets")
#: the task kinds of a sweep, in the order of the DAG (``floor`` and ``fit`` are ``stages.SHARED_DAGS``)
TASK_KINDS = ("floor", "fit", "run")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SweepSpec:
    """A loaded, checked spec. ``grid`` holds the expanded points (``({},)``: no grid)."""

    path: Path
    name: str
    profile: str
    generators: tuple[str, ...]
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    grid: tuple[dict[str, Any], ...] = ({},)
    description: str = ""

    @property
    def digest(self) -> str:
        """Names the sweep's records and its MLflow parent: the same spec content is the same sweep (comments
        and file location aside), so running it again resumes it."""
        return stable_hash(self.name, self.profile, self.generators, self.seeds, self.datasets, self.grid)

    @property
    def has_grid(self) -> bool:
        return self.grid != ({},)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "profile": self.profile, "generators": list(self.generators),
                "seeds": list(self.seeds), "datasets": list(self.datasets), "grid": list(self.grid),
                "description": self.description, "spec": str(self.path), "digest": self.digest}


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec; every problem is one ``ValueError`` line naming the file."""
    from benchmark.config import load_profile
    from benchmark.datasets import DATASETS
    from generators.registry import available_generators

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: sweep spec not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the sweep spec ({getattr(exc, 'strerror', None) or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(SPEC_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r} (a spec needs {', '.join(REQUIRED_KEYS)})")
    name = _text(path, raw, "name", path.stem)
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{path}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    profile = _text(path, raw, "profile")
    if Path(profile).suffix:  # a TOML path: relative to the spec, absolute for the workers
        profile = str((path.parent / profile).resolve())
    try:
        load_profile(profile)
    except ValueError as exc:
        raise ValueError(f"{path}: profile: {exc}") from None
    return SweepSpec(path=path.resolve(), name=name, profile=profile,
                     generators=_names(path, raw, "generators", available_generators()),
                     seeds=_seeds(path, raw["seeds"]), datasets=_names(path, raw, "datasets", sorted(DATASETS)),
                     grid=grid_points(path, raw.get("grid")), description=_text(path, raw, "description", ""))


def _text(path: Path, raw: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (not value and default is None):
        raise ValueError(f"{path}: {key} must be a non-empty string, got {value!r}")
    return value


def _list(path: Path, value: Any, key: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}: {key} must be a non-empty list, got {value!r}")
    return value


def _names(path: Path, raw: Mapping[str, Any], key: str, known: Sequence[str]) -> tuple[str, ...]:
    values = _list(path, raw[key], key)
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"{path}: {key} must hold strings, got {value!r}")
        if value not in known:
            raise ValueError(f"{path}: unknown {key[:-1]} {value!r} in {key}; known: {', '.join(known)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{path}: {key} lists a name twice: {values}")
    return tuple(values)


def _seeds(path: Path, value: Any) -> tuple[int, ...]:
    seeds = _list(path, value, "seeds")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"{path}: seeds must be integers in [0, {MAX_SEED}], got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds lists a seed twice: {seeds}")
    return tuple(seeds)


def grid_points(path: Path, grid: Any) -> tuple[dict[str, Any], ...]:
    """``[grid]`` (one table of lists: every combination) or ``[[grid]]`` (several: the union), as the distinct
    points in first-seen order; ``({},)`` when there is no grid."""
    if grid is None:
        return ({},)
    tables = grid if isinstance(grid, list) else [grid]
    if not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{path}: grid must be a table of parameter lists or an array of such tables, got {grid!r}")
    points: dict[str, dict[str, Any]] = {}
    for table in map(_dotted, tables):
        if not table:
            raise ValueError(f"{path}: a [grid] table is empty")
        for key, values in table.items():
            _list(path, values, f"grid.{key}")
        for combination in itertools.product(*table.values()):
            point = dict(zip(table, combination, strict=True))
            points.setdefault(json.dumps(point, sort_keys=True), point)
    return tuple(points.values())


def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A grid table with its sub-tables as dotted keys: TOML reads ``sampling.t_first = [...]`` as a nested
    table, and a grid point names that field the way ``--param sampling.t_first=...`` does."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        out.update(_dotted(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


def point_text(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in point.items())


# ------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class SweepTask:
    """One Ray task: ``floor``/``fit`` run the shared stages (``stages.SHARED_DAGS``), ``run`` the whole pipeline
    of one (dataset, generator, seed, grid point). ``needs``: ids of the tasks it waits for. ``num_gpus`` is
    decided when the task is submitted (the cluster's GPUs are known then)."""

    id: str
    kind: str
    config: RunConfig
    needs: tuple[str, ...]
    resources: Any  # benchmark.stages.Resources (imported lazily: stages pulls in the CTC layer)
    point: dict[str, Any] = field(default_factory=dict)
    num_gpus: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "floor":
            return f"floor {self.config.dataset}"
        if self.kind == "fit":
            return f"fit {self.config.generator} {self.config.dataset}"
        text = f"{self.config.generator} seed {self.config.seed} {self.config.dataset}"
        return f"{text} {point_text(self.point)}" if self.point else text


def plan_sweep(spec: SweepSpec) -> list[SweepTask]:
    """The spec as tasks in an order that respects the DAG (every task after those it needs). Every run's
    config is built and checked here (``check_run_config``): an unknown grid key fails now, naming the spec."""
    from benchmark.config import build_run_config
    from benchmark.pipeline import check_run_config
    from benchmark.stages import RUN_DAG, SHARED_DAGS, dag_resources
    from generators.fit_cache import fit_config
    from generators.registry import get_generator

    run_only = [stage for stage in RUN_DAG if not any(stage in dag for dag in SHARED_DAGS.values())]
    shared: dict[str, SweepTask] = {}
    runs: list[SweepTask] = []
    for dataset, generator, point, seed in itertools.product(spec.datasets, spec.generators, spec.grid, spec.seeds):
        config = build_run_config(spec.profile, dataset, generator, seed, *split_point(point))
        try:
            check_run_config(config)
        except ValueError as exc:
            where = f"generator {generator}" + (f", grid point {point_text(point)}" if point else "")
            raise ValueError(f"{spec.path}: {where}: {exc}") from None
        data = (dataset, config.window, config.train_sequence)
        floor_id = f"floor-{dataset}-{stable_hash('floor', data, config.test_sequence, config.realism, length=8)}"
        shared.setdefault(floor_id, SweepTask(floor_id, "floor", config, (), dag_resources(SHARED_DAGS["floor"], config)))
        needs = []  # not the floor: a run reaches it only after generating, by when the floor task has (nearly)
        cls = get_generator(generator)  # finished; the stage lock makes a run that is early wait, not recompute
        if cls.needs_fit:  # keyed like the fit cache, without the data (the same for every task of a dataset)
            fit_id = f"fit-{generator}-{stable_hash('fit', data, generator, fit_config(cls, config.generator_params), length=8)}"
            shared.setdefault(fit_id, SweepTask(fit_id, "fit", config, (), dag_resources(SHARED_DAGS["fit"], config)))
            needs.append(fit_id)
        run_id = f"run-{generator}-s{seed}-{stable_hash(config.to_dict(), length=8)}"
        runs.append(SweepTask(run_id, "run", config, tuple(needs), dag_resources(run_only, config), dict(point)))
    unique = {task.id: task for task in runs}  # two grid tables may share a point: it runs once
    return [*sorted(shared.values(), key=lambda t: TASK_KINDS.index(t.kind)), *unique.values()]


def sweep_run_tags(name: str, digest: str, task_id: str, point: Mapping[str, Any]) -> dict[str, str]:
    """Tags of a task's MLflow run. A grid point also gets ``sweep=<name>`` (the ablation marker: Table 1 leaves
    such runs out, ``reports.sweep`` reads them) and ``grid.<key>`` = the JSON of its value. Its ``downstream.*``
    keys are not part of it: they choose a training condition, which the run's ``condition`` tag names (a
    synthetic-only run of such a sweep is a Table 1 row)."""
    tags = {"sweep_name": name, "sweep_digest": digest, "sweep_task": task_id}
    point = split_point(point)[0]
    if point:
        tags.update({"sweep": name, "grid_point": json.dumps(dict(point), sort_keys=True)})
        tags.update({f"grid.{k}": json.dumps(v) for k, v in point.items()})
    return tags


# ------------------------------------------------------------------------------------------- records
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
    from benchmark.io import atomic_write_text
    from benchmark.logs import cli_logging

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
    from benchmark.pipeline import run_benchmark, run_shared_stages
    from benchmark.stages import generator_device

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

    from benchmark import experiment
    from benchmark.io import atomic_write_text
    from benchmark.machine import cpu_description, machine_class

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


# ------------------------------------------------------------------------------------------- driver
@dataclass
class SweepOutcome:
    """Per task: ``done`` (this time), ``earlier`` (a finished record from before), ``failed`` (its error) or
    ``blocked`` (a task it needs failed)."""

    tasks: list[SweepTask]
    status: dict[str, str]
    records: dict[str, dict[str, Any]]
    errors: dict[str, str]
    parent_runs: dict[str, str]
    folder: Path
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for s in self.status.values() if s == status)


def run_sweep(spec: SweepSpec, out_dir: Path, data_root: str | None = None, address: str | None = None,
              runner: TaskRunner | None = None, max_retries: int = 2, progress: bool | None = None,
              check_data: bool = True, fresh_workers: bool = True) -> SweepOutcome:
    """Plan the spec, skip the tasks a previous sweep finished, run the rest on Ray and log everything under
    one MLflow parent run per dataset. ``runner`` replaces the work of a task (tests); ``check_data`` checks
    every dataset's real sequences here first (``pipeline.check_inputs``) so a broken input fails before any
    task is submitted. ``fresh_workers``: see ``cluster.run_tasks``."""
    from benchmark import cluster, experiment
    from benchmark.paths import require_cache_writable, require_writable
    from benchmark.pipeline import check_inputs, refuse_out_over_inputs

    start = time.perf_counter()
    tasks = plan_sweep(spec)
    out_dir = Path(out_dir).resolve()
    data_root = str(Path(data_root).resolve()) if data_root else None
    folder = sweep_folder(out_dir, spec)
    for task in tasks:  # --out never is, holds or lies inside data a task reads (cheap: paths only)
        refuse_out_over_inputs(task.config, data_root, out_dir)
    require_writable(folder / "tasks", "the sweep's task records under --out")
    require_cache_writable()
    cluster.check_address(address)  # an unreachable --address: one line now, before any MLflow run is opened
    experiment.configure()
    if check_data:
        for dataset in spec.datasets:
            check_inputs(next(t.config for t in tasks if t.config.dataset == dataset), data_root, out_dir)
    earlier = {t.id: record for t in tasks if (record := read_done(folder, t.id)) is not None}
    logger.info("sweep %s: %d tasks (%s), %d finished earlier; records in %s", spec.name, len(tasks),
                ", ".join(f"{sum(t.kind == k for t in tasks)} {k}" for k in TASK_KINDS), len(earlier), folder)
    parents = open_parent_runs(spec, folder, len(tasks))
    context = SweepContext(spec.name, spec.digest, folder, out_dir, data_root, parents)
    status, counts = "FAILED", {}
    try:
        results = cluster.run_tasks(tasks, earlier, context, runner or run_task, address=address,
                                    max_retries=max_retries, progress=progress, fresh_workers=fresh_workers)
        counts = {s: sum(1 for r in results.status.values() if r == s) for s in ("done", "earlier", "failed", "blocked")}
        status = "FINISHED" if not counts["failed"] and not counts["blocked"] else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        close_parent_runs(parents, status, counts)
    return SweepOutcome(tasks, results.status, {**earlier, **results.records}, results.errors, parents, folder,
                        time.perf_counter() - start)


def recorded_outcome(spec: SweepSpec, out_dir: Path) -> SweepOutcome:
    """What the task records under ``out_dir`` say of the sweep, without running anything (``--report-only``):
    ``earlier`` for a finished task, ``not finished`` for the rest. A folder where this sweep never started
    (no ``sweep.json``, no task record) is refused: "0 of N finished" would read as an unfinished sweep."""
    tasks = plan_sweep(spec)
    folder = sweep_folder(Path(out_dir).resolve(), spec)
    started = (folder / "sweep.json").is_file() or any((folder / "tasks").glob("*.json"))
    if not started:
        raise ValueError(f"--out {out_dir}: no sweep {spec.name!r} (spec digest {spec.digest}) has run here "
                         f"(no {folder.relative_to(Path(out_dir).resolve())}); run it without --report-only")
    records = {t.id: record for t in tasks if (record := read_done(folder, t.id)) is not None}
    saved = json.loads((folder / "sweep.json").read_text()).get("parent_runs", {}) if (folder / "sweep.json").is_file() \
        else {}
    return SweepOutcome(tasks, {t.id: "earlier" if t.id in records else "not finished" for t in tasks}, records, {}, saved,
                        folder, 0.0)


def outcome_table(outcome: SweepOutcome) -> str:
    """The sweep's result: one Markdown row per run task (status, MLflow run, headline metrics)."""
    import pandas as pd

    from reports.markdown import markdown_table
    from reports.tables import format_value

    rows = []
    for task in outcome.tasks:
        if task.kind != "run":
            continue
        result = outcome.records.get(task.id, {}).get("result", {})
        rows.append({"run": task.label, "status": outcome.status.get(task.id, "?"),
                     "MLflow run": str(result.get("run_id", "–"))[:8],
                     **{m: format_value(result.get(m)) for m in ("SEG", "TRA", "FID", "FVD")}})
    return markdown_table(pd.DataFrame(rows), left=("run", "status", "MLflow run"))


def _sweep_command(args: argparse.Namespace) -> int:
    from benchmark import experiment
    from reports.sweep import SWEEP_NAME, sweep_markdown, sweep_table, write_sweep_report

    spec = load_spec(args.spec)
    if not args.report_only:
        from benchmark.cluster import check_address

        check_address(args.address)  # an unreachable cluster: one line naming it, before the store is touched
    experiment.configure()
    if args.report_only:
        outcome = recorded_outcome(spec, Path(args.out))
    else:
        outcome = run_sweep(spec, Path(args.out), args.data_root, args.address, max_retries=args.max_retries,
                            progress=False if args.no_progress else None)
    print(f"## Sweep {spec.name} ({outcome.count('done')} run now, {outcome.count('earlier')} earlier, "
          f"{outcome.seconds / 60:.1f} min; MLflow parent run {', '.join(outcome.parent_runs.values()) or '–'})\n")
    print(outcome_table(outcome))  # the result
    failures = [f"{task.label}: {outcome.errors[task.id]}" for task in outcome.tasks if task.id in outcome.errors]
    if spec.name == SWEEP_NAME:  # the paper's Table 2, read back from the store
        for dataset in spec.datasets:
            for path in write_sweep_report(dataset, profile_label(spec.profile), Path(args.out)):
                logger.info("wrote %s", path)
            print(sweep_markdown(sweep_table(dataset, profile_label(spec.profile)), f"Table 2 — {dataset}"))
    for failure in failures:  # part of the result (exit 1): one ``error:`` line each, like the CLI's errors
        print(f"error: sweep task failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    """Register ``sweep`` (hooked into ``python -m benchmark`` by ``benchmark.cli.COMMAND_HOOKS``)."""
    sweep = sub.add_parser("sweep", help="many runs (generators x seeds x datasets x grid) as Ray tasks, one MLflow "
                           "parent", description="Run a sweep spec (TOML: generators, seeds, datasets, profile, "
                           "optional [grid]; examples in benchmark/sweeps/) on a local Ray instance sized to this "
                           "machine, or on the cluster at --address / $RAY_ADDRESS. Fits and the floor are shared; "
                           "finished tasks are skipped when the same sweep runs again.")
    sweep.add_argument("spec", help="sweep spec TOML, e.g. benchmark/sweeps/ci-seeds.toml")
    sweep.add_argument("--out", default="runs", help="stage outputs and sweep records (default: ./runs); on a "
                       "cluster it must be storage every worker sees at the same path")
    sweep.add_argument("--data-root", help="folder holding <dataset>/ (shared storage on a cluster)")
    sweep.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray instance)")
    sweep.add_argument("--max-retries", type=non_negative_int, default=2, help="retries of a task whose worker died (default 2)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    sweep.add_argument("--report-only", action="store_true", help="run nothing: the tasks' state from their records "
                       "under --out (and Table 2 of a table2 sweep from the store)")
    add_cache_argument(sweep)
    sweep.set_defaults(func=_sweep_command)

