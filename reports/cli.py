"""Subcommand ``report`` (hooked into ``python -m benchmark``); ``sweep`` and ``check`` are orchestration and
live in ``benchmark.sweep`` and ``benchmark.gate``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from benchmark.datasets import DATASETS, DEFAULT_DATASET

logger = logging.getLogger(__name__)


def _report_command(args: argparse.Namespace) -> int:
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
    print(report.markdown.read_text())  # the command's result: Table 1 on stdout
    extra = []
    if not sweep_table(args.dataset, args.profile).empty:
        extra = write_sweep_report(args.dataset, args.profile, Path(args.out))
    for path in [report.markdown, report.csv, report.html, *report.figures, *extra]:
        logger.info("wrote %s", path)
    if report.run_id:
        logger.info("logged to MLflow run %s (artifacts under report/)", report.run_id)
    return 0


def add_report_commands(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="Table 1 (Markdown, CSV) and an HTML report from the MLflow runs",
                            description="Newest finished parent run per generator and seed (seeds averaged) -> "
                            "<out>/reports/<dataset>-<profile>/"
                            " table1.md, table1.csv, report.html (self-contained), figures/; logged as a 'report' run.")
    report.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    report.add_argument("--profile", help="only runs of this profile (default: any)")
    report.add_argument("--out", default="runs", help="output root (default: ./runs)")
    report.add_argument("--floor-json", help="log this real-vs-real floor JSON (scripts/real_floor.py --json) first")
    report.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    report.add_argument("--extra-profile", action="append", metavar="PROFILE",
                        help="also show the newest runs of this profile as '<generator> [PROFILE]' rows "
                        "(e.g. cpu-paper beside cpu); repeatable")
    report.add_argument("--per-seed", action="store_true",
                        help="also a row per seed under each generator run with several seeds (the generator's row is "
                        "the mean over seeds with a t-interval)")
    report.add_argument("--n-bootstrap", type=int, default=200,
                        help="bootstrap replicates of the paired differences (default 200)")
    report.set_defaults(func=_report_command)
