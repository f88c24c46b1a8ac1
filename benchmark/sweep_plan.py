"""A sweep spec as tasks that respect the stage DAG: shared ``floor`` and ``fit`` tasks, one ``run`` task per
(dataset, generator, seed, grid point), and the tags each task's MLflow run carries."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmark.config import RunConfig, build_run_config, split_point, stable_hash
from benchmark.pipeline import check_run_config
from benchmark.stages import RUN_DAG, SHARED_DAGS, dag_resources
from benchmark.sweep_spec import SweepSpec, point_text
from generators.fit_cache import fit_config
from generators.registry import get_generator

#: the task kinds of a sweep, in the order of the DAG (``floor`` and ``fit`` are ``stages.SHARED_DAGS``)
TASK_KINDS = ("floor", "fit", "run")


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


