"""Subcommand ``report`` (hooked into ``python -m benchmark``); ``sweep`` and ``check`` are orchestration and
live in ``benchmark.sweep`` and ``benchmark.gate``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import experiment
from benchmark.bundle_cli import default_results, report_store
from benchmark.config import positive_int, profile_label
from benchmark.datasets import DATASETS, DEFAULT_DATASET
from benchmark.paths import refuse_output_overlapping_inputs

if TYPE_CHECKING:  # imported on use below: the CLI's startup stays fast
    from reports.report import Report

logger = logging.getLogger(__name__)


def _report_command(args: argparse.Namespace) -> int:
    results = None if args.no_results else Path(args.results) if args.results else default_results()
    refuse_report_over_store(Path(args.out), args.dataset, args.profile, [args.floor_json, results])
    with report_store(results):  # the committed bundles imported beside the user's own runs (idempotent)
        report = _write_report(args)
    print(report.markdown.read_text())  # the command's result: Table 1 on stdout
    return 0


def _write_report(args: argparse.Namespace) -> Report:
    """Build (and log) the report and the sweep report from the store as it is now."""
    from reports.report import build_report
    from reports.runs import log_floor
    from reports.sweep import sweep_table, write_sweep_report

    if args.floor_json:
        path = Path(args.floor_json)
        try:
            scores = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the floor JSON ({exc})") from None
        run_id = log_floor(args.dataset, scores, args.profile, source=str(path))
        logger.info("logged real-vs-real floor from %s as run %s", path, run_id)
    report = build_report(args.dataset, args.profile, Path(args.out), log=not args.no_log,
                          n_boot=args.n_bootstrap, extra_profiles=args.extra_profile or (), per_seed=args.per_seed)
    extra = []
    if not sweep_table(args.dataset, args.profile).empty:
        extra = write_sweep_report(args.dataset, args.profile, Path(args.out))
    for path in [report.markdown, report.csv, report.html, *report.figures, *extra]:
        logger.info("wrote %s", path)
    if report.run_id:
        logger.info("logged to MLflow run %s (artifacts under report/)", report.run_id)
    return report


def refuse_report_over_store(out: Path, dataset: str, profile: str | None, read: list[str | Path | None]) -> None:
    """The folder ``report`` writes (``<out>/reports/<dataset>-<profile>``) must not be, hold or lie inside what
    it reads: the local MLflow store (a SQLite file or a file store folder), the artifacts beside a SQLite
    store (``mlartifacts/``: stage records, features) and ``read`` (``--floor-json``, the results bundles)."""
    from reports.report import report_folder

    uri = experiment.tracking_uri()
    store = experiment._local_store(uri)  # None for a tracking server: nothing local to protect
    artifacts = store.parent / "mlartifacts" if store is not None and uri.startswith("sqlite:") else None
    refuse_output_overlapping_inputs(report_folder(out, dataset, profile), [store, artifacts, *read],
                                     f"--out {out} (its report folder)")


def add_report_commands(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="Table 1 (Markdown, CSV) and an HTML report from the MLflow runs",
                            description="Newest finished parent run per generator and seed (seeds averaged) -> "
                            "<out>/reports/<dataset>-<profile>/"
                            " table1.md, table1.csv, report.html (self-contained), figures/; logged as a 'report' run.")
    report.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    report.add_argument("--profile", type=profile_label,
                        help="only runs of this profile: a name or the TOML file `run --profile` was given "
                        "(default: any)")
    report.add_argument("--out", default="runs", help="output root (default: ./runs)")
    report.add_argument("--floor-json", help="log this real-vs-real floor JSON (scripts/real_floor.py --json) first")
    report.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    report.add_argument("--results", metavar="DIR",
                        help="result bundles to import into the store first (`python -m benchmark import`), shown "
                        "beside your own runs; default: results/ beside the checkout when it exists. With no store "
                        "(no MLFLOW_TRACKING_URI, no ./mlflow.db) they go into a temporary one")
    report.add_argument("--no-results", action="store_true", help="read only the store, import no result bundles")
    report.add_argument("--extra-profile", action="append", metavar="PROFILE", type=profile_label,
                        help="also show the newest runs of this profile as '<generator> [PROFILE]' rows "
                        "(e.g. cpu-paper beside cpu); repeatable")
    report.add_argument("--per-seed", action="store_true",
                        help="also a row per seed under each generator run with several seeds (the generator's row is "
                        "the mean over seeds with a t-interval)")
    report.add_argument("--n-bootstrap", type=positive_int, default=200,
                        help="bootstrap replicates of the paired differences (default 200)")
    report.set_defaults(func=_report_command)
