"""Subcommands ``report``, ``sweep`` and ``check`` (hooked into ``python -m benchmark``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.datasets import DATASETS, DEFAULT_DATASET


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
        print(f"logged real-vs-real floor from {path} as run {run_id}")
    report = build_report(args.dataset, args.profile, Path(args.out), log=not args.no_log,
                          n_boot=args.n_bootstrap, extra_profiles=args.extra_profile or ())
    print(report.markdown.read_text())
    extra = []
    if not sweep_table(args.dataset, args.profile).empty:
        extra = write_sweep_report(args.dataset, args.profile, Path(args.out))
    for path in [report.markdown, report.csv, report.html, *report.figures, *extra]:
        print(f"wrote {path}")
    if report.run_id:
        print(f"logged to MLflow run {report.run_id} (artifacts under report/)")
    return 0


def _sweep_command(args: argparse.Namespace) -> int:
    from benchmark import experiment
    from reports.sweep import run_sweep, sweep_markdown, sweep_table, write_sweep_report

    experiment.configure()
    failures: list[str] = []
    if not args.report_only:
        _, failures = run_sweep(args.dataset, args.profile, Path(args.out), args.generator, args.seed, args.data_root)
    paths = write_sweep_report(args.dataset, args.profile, Path(args.out), args.generator)
    print(sweep_markdown(sweep_table(args.dataset, args.profile, args.generator), "Table 2"))
    for path in paths:
        print(f"wrote {path}")
    for failure in failures:
        print(f"error: sweep point failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def add_report_commands(sub: argparse._SubParsersAction) -> None:
    from benchmark.gate import add_check_command

    report = sub.add_parser("report", help="Table 1 (Markdown, CSV) and an HTML report from the MLflow runs",
                            description="Newest finished parent run per generator -> <out>/reports/<dataset>-<profile>/"
                            " table1.md, table1.csv, report.html (self-contained), figures/; logged as a 'report' run.")
    report.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    report.add_argument("--profile", help="only runs of this profile (default: any)")
    report.add_argument("--out", default="runs", help="output root (default: ./runs)")
    report.add_argument("--floor-json", help="log this real-vs-real floor JSON (scripts/real_floor.py --json) first")
    report.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    report.add_argument("--extra-profile", action="append", metavar="PROFILE",
                        help="also show the newest runs of this profile as '<generator> [PROFILE]' rows "
                        "(e.g. cpu-paper beside cpu); repeatable")
    report.add_argument("--n-bootstrap", type=int, default=200,
                        help="bootstrap replicates of the paired differences (default 200)")
    report.set_defaults(func=_report_command)

    sweep = sub.add_parser("sweep", help="Table 2: BVDM SDEdit depths T_f0 x T_fnon0, sharing the fitted model",
                           description="T_f0 in {100,200,400,600} at T_fnon0=10 and T_fnon0 in {0,10,30,50,200} at "
                           "T_f0=200 (200 = independent frames), each through the full pipeline.")
    sweep.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    sweep.add_argument("--profile", required=True)
    sweep.add_argument("--generator", default="bvdm")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--out", default="runs")
    sweep.add_argument("--data-root", help="folder holding <dataset>/")
    sweep.add_argument("--report-only", action="store_true", help="only rebuild Table 2 from logged sweep runs")
    sweep.set_defaults(func=_sweep_command)

    add_check_command(sub)
