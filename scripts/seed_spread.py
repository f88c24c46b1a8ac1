"""The seed spread of the gated metrics in a gate store (issue 32): per generator and metric, each seed's value,
their mean and SD, and the train-segmenter times, as a Markdown table.

    MLFLOW_TRACKING_URI=sqlite:////path/to/.ci-gate/mlflow.db python scripts/seed_spread.py ci

Run it on the store of ``CI_GATE_SEEDS="0 1 2" bash scripts/ci_gate.sh`` (profile ``ci``), or of the same runs
under another profile file whose label is given (``ci-avg`` for ``.../ci-avg.toml``).
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd

from reports.markdown import markdown_table
from reports.runs import latest_per_seed, metric, parent_runs, stage_times

GATED = ("SEG", "TRA", "FID", "FVD")


def spread_table(dataset: str, profile: str) -> str:
    runs = latest_per_seed(parent_runs(dataset, profile))
    seeds = sorted({str(s) for s in runs["params.seed"]}, key=int)
    rows = []
    for generator, group in runs.groupby("tags.generator", sort=False):
        by_seed = {str(r["params.seed"]): r for _, r in group.iterrows()}
        for name in GATED:
            values = [metric(by_seed[s], name) if s in by_seed else None for s in seeds]
            present = [v for v in values if v is not None]
            if not present:
                continue
            row = {"generator": generator, "metric": name}
            row.update({f"seed {s}": f"{v:.4g}" if v is not None else "-" for s, v in zip(seeds, values, strict=True)})
            row["mean"] = f"{statistics.fmean(present):.4g}"
            row["SD"] = f"{statistics.stdev(present):.3g}" if len(present) > 1 else "-"
            rows.append(row)
    times = [stage_times(r).get("train-segmenter") for _, r in runs.iterrows()]
    table = markdown_table(pd.DataFrame(rows), left=("generator", "metric"))
    return table + "\n\ntrain-segmenter s per run: " + ", ".join(f"{t:.0f}" for t in times if t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="the profile label the runs are tagged with (ci)")
    parser.add_argument("--dataset", default="Fluo-N2DH-GOWT1")
    args = parser.parse_args()
    print(spread_table(args.dataset, args.profile))  # the script's result


if __name__ == "__main__":
    main()
