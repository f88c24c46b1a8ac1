"""The seed spread of the gated metrics in a gate store (issue 32): per generator and metric, each seed's value,
their mean and SD, and the train-segmenter times, as a Markdown table.

    MLFLOW_TRACKING_URI=sqlite:////path/to/.ci-gate/mlflow.db python scripts/seed_spread.py ci

Run it on the store of ``CI_GATE_SEEDS="0 1 2" bash scripts/ci_gate.sh`` (profile ``ci``), or of the same runs
under another profile file whose label is given (``ci-avg`` for ``.../ci-avg.toml``).
"""

from __future__ import annotations

import argparse
import statistics

from reports.runs import latest_per_seed, metric, parent_runs, stage_times

GATED = ("SEG", "TRA", "FID", "FVD")


def spread_table(dataset: str, profile: str) -> str:
    runs = latest_per_seed(parent_runs(dataset, profile))
    seeds = sorted({str(s) for s in runs["params.seed"]}, key=int)
    lines = ["| generator | metric | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | SD |",
             "|---|---|" + "---:|" * (len(seeds) + 2)]
    for generator, group in runs.groupby("tags.generator", sort=False):
        by_seed = {str(r["params.seed"]): r for _, r in group.iterrows()}
        for name in GATED:
            values = [metric(by_seed[s], name) if s in by_seed else None for s in seeds]
            present = [v for v in values if v is not None]
            if not present:
                continue
            sd = f"{statistics.stdev(present):.3g}" if len(present) > 1 else "-"
            cells = " | ".join(f"{v:.4g}" if v is not None else "-" for v in values)
            lines.append(f"| {generator} | {name} | {cells} | {statistics.fmean(present):.4g} | {sd} |")
    times = [stage_times(r).get("train-segmenter") for _, r in runs.iterrows()]
    lines += ["", "train-segmenter s per run: " + ", ".join(f"{t:.0f}" for t in times if t)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="the profile label the runs are tagged with (ci)")
    parser.add_argument("--dataset", default="Fluo-N2DH-GOWT1")
    args = parser.parse_args()
    print(spread_table(args.dataset, args.profile))  # the script's result


if __name__ == "__main__":
    main()
