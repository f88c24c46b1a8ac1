"""The paper's Table 2 ablation: BVDM's SDEdit depths T_f0 (first frame) and T_fnon0 (later frames).

Grid: T_f0 in {100, 200, 400, 600} at T_fnon0 = 10, and T_fnon0 in {0, 10, 30, 50, 200} at T_f0 = 200
(T_fnon0 = 200 >= T_f0: every frame independent). Both are sampling-only fields, so every point
reuses the fitted model (the pipeline's stage cache keys ``fit`` on the non-sampling params only).
The grid runs as one sweep, ``benchmark/sweeps/table2.toml`` (``python -m benchmark sweep``): each point's
parent run is tagged ``sweep=table2`` and ``grid.<param>`` = the JSON of its value (``benchmark.sweep``;
runs of the earlier serial sweep carry ``sweep_t_first``/``sweep_t_next`` and are read too). This module
only defines the grid and reads the runs back: a point run with several seeds is one row, the mean over
seeds with a t-interval and ``n_seeds`` (``reports.tables.aggregate_seeds``).

Each row also names its sampler (``scheduler``: the run's ``sampling.scheduler`` parameter or grid tag,
'ddpm' for runs without one), so the grid can be read under the paper's sampler and a fast solver side by
side: a point run under two samplers is two rows, and each sampler gets its own figure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.io import atomic_write_bytes, atomic_write_text
from reports import figures
from reports.document import TableDoc, render_markdown
from reports.runs import TABLE_METRICS, parent_runs
from reports.tables import aggregate_seeds, format_value, n_summary, table_rows, write_csv

SWEEP_NAME = "table2"
#: BVDM's sampling parameters that the grid sets (the keys of ``benchmark/sweeps/table2.toml``'s ``[[grid]]``,
#: fields of ``[generators.bvdm.sampling]``)
T_FIRST_PARAM, T_NEXT_PARAM = "sampling.t_first", "sampling.t_next"
#: the sampler of a run (``[generators.bvdm.sampling] scheduler``); runs without it sampled with DEFAULT_SCHEDULER
SCHEDULER_PARAM, DEFAULT_SCHEDULER = "sampling.scheduler", "ddpm"
T_FIRST_SERIES = (100, 200, 400, 600)
T_NEXT_AT = 10
T_NEXT_SERIES = (0, 10, 30, 50, 200)
T_FIRST_AT = 200


@dataclass(frozen=True)
class SweepPoint:
    t_first: int
    t_next: int
    series: tuple[str, ...]  # "t_first" and/or "t_next": the grid lines this point lies on

    @property
    def overrides(self) -> dict[str, int]:
        return {T_FIRST_PARAM: self.t_first, T_NEXT_PARAM: self.t_next}


def sweep_points() -> list[SweepPoint]:
    """The unique grid points in run order; (200, 10) lies on both lines and runs once."""
    series: dict[tuple[int, int], list[str]] = {}
    for t_first in T_FIRST_SERIES:
        series.setdefault((t_first, T_NEXT_AT), []).append("t_first")
    for t_next in T_NEXT_SERIES:
        series.setdefault((T_FIRST_AT, t_next), []).append("t_next")
    return [SweepPoint(tf, tn, tuple(s)) for (tf, tn), s in series.items()]


def point_of(run: pd.Series) -> tuple[int, int] | None:
    """(T_f0, T_fnon0) of a sweep run: its ``grid.*`` tags (JSON values), else the serial sweep's tags."""
    for first_tag, next_tag in ((f"tags.grid.{T_FIRST_PARAM}", f"tags.grid.{T_NEXT_PARAM}"),
                                ("tags.sweep_t_first", "tags.sweep_t_next")):
        first, after = run.get(first_tag), run.get(next_tag)
        if isinstance(first, str) and isinstance(after, str):
            return int(json.loads(first)), int(json.loads(after))
    return None


def scheduler_of(run: pd.Series) -> str:
    """The sampler a run used: its logged generator parameter (plain text), else its grid tag (JSON), else 'ddpm'."""
    for column in (f"params.generator_params.{SCHEDULER_PARAM}", f"tags.grid.{SCHEDULER_PARAM}"):
        value = run.get(column)
        if isinstance(value, str) and value:
            return str(json.loads(value)) if value.startswith('"') else value
    return DEFAULT_SCHEDULER


def _scheduler_order(name: str) -> tuple[bool, str]:
    return name != DEFAULT_SCHEDULER, name


def sweep_table(dataset: str, profile: str | None, generator: str = "bvdm",
                metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """One row per (sampler, series, grid point) over the newest tagged run of each (sampler, point, seed): one
    seed as it is, several as their mean and t-interval (``n_seeds``); missing points are absent; 'ddpm' first."""
    runs = parent_runs(dataset, profile, sweep=SWEEP_NAME)
    if runs.empty:
        return pd.DataFrame()
    runs = runs[runs["tags.generator"] == generator].sort_values("start_time", ascending=False)
    by_point: dict[tuple[str, tuple[int, int]], list[pd.Series]] = {}
    seen: set[tuple[str, tuple[int, int], str]] = set()
    for _, run in runs.iterrows():
        point, seed, scheduler = point_of(run), str(run.get("params.seed")), scheduler_of(run)
        if point is not None and (scheduler, point, seed) not in seen:
            seen.add((scheduler, point, seed))
            by_point.setdefault((scheduler, point), []).append(run)
    rows = []
    for scheduler in sorted({s for s, _ in by_point}, key=_scheduler_order):
        for point in sweep_points():
            group = by_point.get((scheduler, (point.t_first, point.t_next)))
            if group:
                rows += _point_rows(point, scheduler, aggregate_seeds(table_rows(pd.DataFrame(group), None, metrics),
                                                                      metrics), metrics)
    return pd.DataFrame(rows)


def _point_rows(point: SweepPoint, scheduler: str, summary: dict[str, Any], metrics: Sequence[str]) -> list[dict]:
    """A grid point's row on each grid line it lies on."""
    rows = []
    for series in point.series:
        row: dict[str, Any] = {"series": series, "t_first": point.t_first, "t_next": point.t_next,
                               "scheduler": scheduler, "independent": point.t_next >= point.t_first,
                               "run_id": summary["run_id"], "n_seeds": summary["n_seeds"]}
        for name in metrics:
            for suffix in ("", "_ci_low", "_ci_high"):
                row[f"{name}{suffix}"] = summary.get(f"{name}{suffix}")
        for n_key in ("n_fid", "n_fvd"):
            row[n_key] = summary.get(n_key)
        rows.append(row)
    return rows


def sweep_display(table: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """Strings for Markdown: series label, T_f0, T_fnon0 (marked when frames are independent), the sampler
    (where the table names it), each metric that has a value somewhere (value [CI]) and the number of seeds."""
    shown = [m for m in metrics if m in table.columns and table[m].notna().any()]
    rows = []
    for _, row in table.iterrows():
        label = "T_f0 sweep" if row["series"] == "t_first" else "T_fnon0 sweep"
        t_next = f"{row['t_next']} (indep.)" if row["independent"] else str(row["t_next"])
        cells = {m: format_value(row[m], row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high")) for m in shown}
        seeds = row.get("n_seeds")
        rows.append({"series": label, "T_f0": str(row["t_first"]), "T_fnon0": t_next,
                     "scheduler": str(row.get("scheduler") or DEFAULT_SCHEDULER), **cells,
                     "seeds": str(int(seeds)) if seeds is not None and not pd.isna(seeds) else "–"})
    sampler = ["scheduler"] if "scheduler" in table.columns else []
    return pd.DataFrame(rows, columns=["series", "T_f0", "T_fnon0", *sampler, *shown, "seeds"])


def sweep_doc(table: pd.DataFrame, title: str, metrics: Sequence[str] = TABLE_METRICS) -> TableDoc:
    """Table 2 as a ``TableDoc``: the N note and ``sweep_display``."""
    note = (f"N: {n_summary(table)}. T_fnon0 >= T_f0 means independent frames. A point run with several seeds "
            "shows their mean [95 % t-interval across seeds].")
    return TableDoc(title, sweep_display(table, metrics) if not table.empty else pd.DataFrame(), [note],
                    left=("series",), empty="no sweep runs found")


def sweep_markdown(table: pd.DataFrame, title: str, metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Table 2 in Markdown (``sweep_doc`` rendered)."""
    return render_markdown(sweep_doc(table, title, metrics))


def write_sweep_report(dataset: str, profile: str | None, out_dir: Path, generator: str = "bvdm") -> list[Path]:
    """``table2.md``, ``table2.csv`` and ``table2.png`` under ``<out>/reports/<dataset>-<profile>/`` (the figure
    of a sampler other than 'ddpm': ``table2-<scheduler>.png``)."""
    from reports.report import report_folder

    table = sweep_table(dataset, profile, generator)
    folder = report_folder(out_dir, dataset, profile)
    title = f"Table 2 — {generator} SDEdit depths, {dataset}, profile {profile or 'any'}"
    paths = [atomic_write_text(folder / "table2.md", sweep_markdown(table, title))]
    if not table.empty:
        paths.append(write_csv(table, folder / "table2.csv"))
        for scheduler, part in table.groupby("scheduler", sort=False):
            fig = figures.sweep_lines(part)
            name = "table2.png" if scheduler == DEFAULT_SCHEDULER else f"table2-{scheduler}.png"
            if fig is not None:
                paths.append(atomic_write_bytes(folder / name, figures.figure_png(fig)))
    return paths


def table2_report(dataset: str, profile: str | None, out_dir: Path) -> str:
    """The ``table2`` report kind (entry point ``synthvid.reports``, named by a sweep spec's ``report``): writes
    ``write_sweep_report``'s files and returns Table 2 as Markdown for the sweep command to print."""
    write_sweep_report(dataset, profile, out_dir)
    return sweep_markdown(sweep_table(dataset, profile), f"Table 2 — {dataset}")
