"""``python -m benchmark sweep``: run the paper's Table 2 grid (BVDM SDEdit depths) through the pipeline.

Orchestration only: the grid and the Table 2 read-back live in ``reports.sweep`` (which reads the run
store and never runs anything); this module runs each grid point with ``benchmark.pipeline`` and tags
its parent run so that ``reports.sweep`` finds it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.config import seed_int
from benchmark.datasets import DATASETS, DEFAULT_DATASET
from benchmark.paths import add_cache_argument

if TYPE_CHECKING:  # reports.sweep loads pandas and MLflow: not at ``--help`` time
    from reports.sweep import SweepPoint

logger = logging.getLogger(__name__)


def run_sweep(dataset: str, profile: str, out_dir: Path, generator: str = "bvdm", seed: int = 0,
              data_root: str | None = None, points: Sequence[SweepPoint] | None = None,
              runner: Callable[..., dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every grid point through ``run_benchmark``; returns (rows, failures). A failing point does not
    stop the others (its message is collected)."""
    from mlflow.tracking import MlflowClient

    from benchmark.config import build_run_config
    from benchmark.pipeline import run_benchmark
    from reports.sweep import SWEEP_NAME, sweep_points

    runner = runner or run_benchmark
    client = MlflowClient()
    rows, failures = [], []
    for point in points or sweep_points():
        config = build_run_config(profile, dataset, generator, seed, point.overrides)
        try:
            row = runner(config, Path(out_dir), data_root)
        except Exception as exc:  # noqa: BLE001 - report and continue with the next point
            failures.append(f"T_f0={point.t_first} T_fnon0={point.t_next}: {type(exc).__name__}: {exc}")
            continue
        client.set_tag(row["run_id"], "sweep", SWEEP_NAME)
        client.set_tag(row["run_id"], "sweep_t_first", str(point.t_first))
        client.set_tag(row["run_id"], "sweep_t_next", str(point.t_next))
        rows.append(row)
    return rows, failures


def _sweep_command(args: argparse.Namespace) -> int:
    from benchmark import experiment
    from reports.sweep import sweep_markdown, sweep_table, write_sweep_report

    experiment.configure()
    failures: list[str] = []
    if not args.report_only:
        _, failures = run_sweep(args.dataset, args.profile, Path(args.out), args.generator, args.seed, args.data_root)
    paths = write_sweep_report(args.dataset, args.profile, Path(args.out), args.generator)
    print(sweep_markdown(sweep_table(args.dataset, args.profile, args.generator), "Table 2"))  # the result
    for path in paths:
        logger.info("wrote %s", path)
    for failure in failures:  # part of the result (exit 1): one ``error:`` line each, like the CLI's errors
        print(f"error: sweep point failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    """Register ``sweep`` (hooked into ``python -m benchmark`` by ``benchmark.cli.COMMAND_HOOKS``)."""
    sweep = sub.add_parser("sweep", help="Table 2: BVDM SDEdit depths T_f0 x T_fnon0, sharing the fitted model",
                           description="T_f0 in {100,200,400,600} at T_fnon0=10 and T_fnon0 in {0,10,30,50,200} at "
                           "T_f0=200 (200 = independent frames), each through the full pipeline.")
    sweep.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    sweep.add_argument("--profile", required=True)
    sweep.add_argument("--generator", default="bvdm")
    sweep.add_argument("--seed", type=seed_int, default=0)
    sweep.add_argument("--out", default="runs")
    sweep.add_argument("--data-root", help="folder holding <dataset>/")
    add_cache_argument(sweep)
    sweep.add_argument("--report-only", action="store_true", help="only rebuild Table 2 from logged sweep runs")
    sweep.set_defaults(func=_sweep_command)
