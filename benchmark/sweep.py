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
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import experiment
from benchmark.config import non_negative_int
from benchmark.paths import add_cache_argument, require_cache_writable, require_writable
from benchmark.pipeline import check_inputs, refuse_out_over_inputs
from benchmark.sweep_plan import TASK_KINDS, SweepTask, plan_sweep
from benchmark.sweep_spec import SweepSpec, load_spec, write_report
from benchmark.sweep_tasks import (
    SweepContext,
    TaskRunner,
    close_parent_runs,
    open_parent_runs,
    read_done,
    run_task,
    sweep_folder,
)

logger = logging.getLogger(__name__)


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
    from benchmark import cluster  # Ray's side: not imported for --help

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
    for text in write_report(spec, Path(args.out)):  # the spec's report kind (Table 2), read back from the store
        print(text)
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

