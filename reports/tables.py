"""Table 1 (generators x SEG/DET/TRA/FVD/FID/KVD/KID) as a tidy frame, Markdown and CSV.

Realism scores carry 95 % cluster-bootstrap CIs where the metrics layer logged them
(``<metric>_ci_low/_ci_high``) and the N per side they were computed on (``n_fid``, ``n_fvd``); FVD
with N < 400 (400-d features) and FID with N < 2048 (2048-d) are rank-deficient and marked with a dagger;
KVD/KID are unbiased MMD estimates and need no such mark.

Seeds: a generator run with several seeds (a sweep's ``seeds = [0, 1, ...]``) is one row with the mean over
its newest run per seed and a Student-t interval of that mean across seeds, and ``n_seeds``
(``seed_table``); ``report --per-seed`` adds a row per seed under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.io import atomic_write_text
from benchmark.metrics.frechet import MIN_FID_N, MIN_FVD_N
from benchmark.metrics.intervals import INTERVAL_SUMMARY
from reports.document import TableDoc, render_markdown
from reports.runs import REALISM_N, TABLE_METRICS, metric, stage_times

MIN_FRECHET_N = {"FID": MIN_FID_N, "FVD": MIN_FVD_N}
#: ONE table of the direction in which each metric the report shows is better; figure titles and table notes
#: read it through ``better_direction``, which also covers the derived names (``<X>_inf``: the extrapolation of
#: X; ``ORACLE_<X>``: the frame ceiling's X) and refuses a name it does not know instead of guessing "higher"
METRIC_DIRECTION: dict[str, str] = {"SEG": "higher", "DET": "higher", "TRA": "higher", "LNK": "higher",
                                    "FVD": "lower", "FID": "lower", "KVD": "lower", "KID": "lower"}
DERIVED_PREFIXES, DERIVED_SUFFIXES = ("ORACLE_",), ("_inf",)


def better_direction(name: str) -> str:
    """``"lower"`` or ``"higher"``: which way metric ``name`` (a Table 1 column, any case) is better."""
    base = name.upper()
    for prefix in DERIVED_PREFIXES:
        base = base.removeprefix(prefix)
    for suffix in DERIVED_SUFFIXES:
        base = base.removesuffix(suffix.upper())
    if base not in METRIC_DIRECTION:
        raise KeyError(f"metric {name!r}: no better-direction in reports.tables.METRIC_DIRECTION")
    return METRIC_DIRECTION[base]


LOWER_IS_BETTER = frozenset(m for m in TABLE_METRICS if better_direction(m) == "lower")
FLOOR_ROW = "real-vs-real floor"
#: display names of columns whose metric name is not self-explanatory
COLUMN_LABELS = {"FID_inf": "FID∞", "ORACLE_FID": "frame ceiling FID"}


def table_rows(runs: pd.DataFrame, floor: pd.Series | None = None,
               metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """One row per run (``generator``, ``run_id``, ``seed``, each metric with ``_ci_low/_ci_high``, N columns,
    ``time_<stage>_s``), plus the floor row when given."""
    rows: list[dict[str, Any]] = []
    for _, run in runs.iterrows():
        row: dict[str, Any] = {"generator": run.get("tags.generator"), "run_id": run.get("run_id"),
                               "seed": run.get("params.seed"), "machine_class": run.get("tags.machine_class"),
                               "interval": RUN_INTERVAL}
        row.update(_metric_cells(run, metrics))
        row.update(unavailable_notes(run, metrics))
        row.update({f"time_{k}_s": v for k, v in stage_times(run).items()})
        rows.append(row)
    if floor is not None:
        row = {"generator": FLOOR_ROW, "run_id": floor.get("run_id"), "seed": None,
               "machine_class": floor.get("tags.machine_class"), "interval": RUN_INTERVAL}
        row.update(_metric_cells(floor, [m for m in metrics if m in REALISM_N]))
        rows.append(row)
    return pd.DataFrame(rows)


#: the two-sided coverage of the across-seed interval
SEED_LEVEL = 0.95
#: what a row's ``<metric>_ci_low/_high`` hold (its ``interval`` column): one run's own interval (realism:
#: delete-a-track jackknife and split halves; downstream scores have none), or a t-interval across seeds
RUN_INTERVAL = "run"


def seeds_interval(n: int) -> str:
    return f"t, {n} seeds"


#: the values a metric can take (None: unbounded): an interval is cut to them. The true mean lies inside, so
#: the cut interval covers it whenever the uncut one does (with 2 seeds, t = 12.7 reaches far outside)
METRIC_RANGE: dict[str, tuple[float | None, float | None]] = {
    "SEG": (0.0, 1.0), "DET": (0.0, 1.0), "TRA": (0.0, 1.0), "FID": (0.0, None), "FVD": (0.0, None),
    "ORACLE_FID": (0.0, None)}


def seed_interval(values: Sequence[float], bounds: tuple[float | None, float | None] = (None, None)
                  ) -> tuple[float | None, float | None, float | None]:
    """Mean of one metric over seeds and its Student-t interval (``SEED_LEVEL``, n - 1 degrees of freedom), cut
    to ``bounds``. It measures how much the result moves with the run's seed (generation, downstream
    training), which a single run's own interval cannot show. No interval for fewer than 2 seeds, nor when
    every seed gave the same value (a stage the seeds share, e.g. the frame ceiling of their one fit)."""
    from scipy import stats

    finite = [float(v) for v in values if _present(v)]
    if not finite:
        return None, None, None
    mean = sum(finite) / len(finite)
    if len(finite) < 2 or len(set(finite)) == 1:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    half = float(stats.t.ppf(0.5 + SEED_LEVEL / 2, len(finite) - 1)) * sd / math.sqrt(len(finite))
    low, high = mean - half, mean + half
    if bounds[0] is not None:
        low = max(low, bounds[0])
    if bounds[1] is not None:
        high = min(high, bounds[1])
    return mean, low, high


def aggregate_seeds(group: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> dict[str, Any]:
    """One row for the runs of ``group`` (one generator, or one grid point, over seeds): a single run as it is
    (with its own interval), several as ``seed_interval`` of each metric; N columns their smallest value,
    stage times their mean, ``n_seeds`` and ``seeds`` the seeds it covers."""
    first = group.iloc[0].to_dict()
    seeds = sorted({str(s) for s in group.get("seed", pd.Series(dtype=object)) if _present(s)}, key=_seed_order)
    if len(group) == 1:
        return {**first, "n_seeds": 1, "seeds": ",".join(seeds)}
    row: dict[str, Any] = {k: v for k, v in first.items() if not _is_number_column(k, metrics)}
    row.update({"seed": None, "n_seeds": len(group), "seeds": ",".join(seeds), "run_ids": list(group["run_id"]),
                "interval": seeds_interval(len(group))})
    for name in metrics:
        if name in group.columns:
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = seed_interval(
                list(group[name]), METRIC_RANGE.get(name, (None, None)))
    for column in group.columns:
        values = [v for v in group[column] if _present(v)]
        if column in set(REALISM_N.values()) and values:
            row[column] = int(min(values))
        elif column.startswith("time_") and values:
            row[column] = sum(float(v) for v in values) / len(values)
    return row


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.isdigit() else (2**31, seed)


def _is_number_column(column: str, metrics: Sequence[str]) -> bool:
    base = column.removesuffix("_ci_low").removesuffix("_ci_high")
    return base in metrics or column in set(REALISM_N.values()) or column.startswith("time_")


def seed_table(runs: pd.DataFrame, floor: pd.Series | None = None, metrics: Sequence[str] = TABLE_METRICS,
               per_seed: bool = False) -> pd.DataFrame:
    """Table 1 over seeds: one row per generator (``aggregate_seeds`` of its newest run per seed), followed by
    one row per seed (``seed_row``) when ``per_seed``, then the floor row."""
    per_run = table_rows(runs, None, metrics)
    rows: list[dict[str, Any]] = []
    if not per_run.empty:
        for _, group in per_run.groupby("generator", sort=False):
            rows.append(aggregate_seeds(group, metrics))
            if per_seed and len(group) > 1:
                rows += sorted(({**r, "n_seeds": 1, "seeds": str(r["seed"]), "seed_row": True}
                                for r in group.to_dict("records")), key=lambda r: _seed_order(str(r["seed"])))
    floor_rows = table_rows(runs.iloc[:0], floor, metrics) if floor is not None else pd.DataFrame()
    return pd.concat([pd.DataFrame(rows), floor_rows], ignore_index=True) if rows else floor_rows


def unavailable_notes(run: pd.Series, metrics: Sequence[str]) -> dict[str, str]:
    """``<metric>_unavailable``: the reason a run gives (tag ``unavailable_<metric>``) for a metric it could
    not compute, e.g. TRA on a dataset copy with missing frames: shown instead of a blank or a 0."""
    out = {}
    for name in metrics:
        reason = run.get(f"tags.unavailable_{name}")
        if isinstance(reason, str) and reason:
            out[f"{name}_unavailable"] = reason
    return out


def _metric_cells(run: pd.Series, metrics: Sequence[str]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for name in metrics:
        cells[name] = metric(run, name)
        if name in REALISM_N:
            cells[f"{name}_ci_low"] = metric(run, f"{name}_ci_low")
            cells[f"{name}_ci_high"] = metric(run, f"{name}_ci_high")
    for n_key in sorted(set(REALISM_N.values())):
        if any(m in REALISM_N and REALISM_N[m] == n_key for m in metrics):
            value = metric(run, n_key)
            cells[n_key] = int(value) if value is not None else None
    return cells


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def format_value(value: Any, low: Any = None, high: Any = None, digits: int = 4) -> str:
    """``0.8123`` / ``31.2 [28.9, 34.0]``; an en dash for a missing value."""
    if not _present(value):
        return "–"
    text = f"{float(value):.{digits}g}"
    if _present(low) and _present(high):
        text += f" [{float(low):.{digits}g}, {float(high):.{digits}g}]"
    return text


def n_summary(table: pd.DataFrame) -> str:
    """Header note: the N per side of each realism metric family, e.g. ``FID/KID N=2052 crops``."""
    parts = []
    for n_key, label, unit, frechet in (("n_fid", "FID/KID", "crops", "FID"), ("n_fvd", "FVD/KVD", "clips", "FVD")):
        if n_key not in table.columns:
            continue
        values = sorted({int(v) for v in table[n_key] if _present(v)})
        if not values:
            continue
        span = str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"
        minimum = MIN_FRECHET_N[frechet]
        note = f" (†: {frechet} N < {minimum}, rank-deficient, not comparable)" if values[0] < minimum else ""
        parts.append(f"{label} N={span} {unit} per side{note}")
    return "; ".join(parts) if parts else "no realism metrics logged"


def display_table(table: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """Strings for Markdown/HTML: one column per metric (value [CI]), N per row, run id."""
    out = []
    for _, row in table.iterrows():
        seed_row = _present(row.get("seed_row")) and bool(row.get("seed_row"))
        cells = {"generator": f"{row['generator']} · seed {row['seed']}" if seed_row else row["generator"]}
        for name in metrics:
            if name not in table.columns:
                continue
            if not _present(row[name]) and _present(row.get(f"{name}_unavailable")):
                cells[COLUMN_LABELS.get(name, name)] = "n/a‡"
                continue
            text = format_value(row[name], row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high"))
            n_value = row.get(REALISM_N.get(name, ""))
            if name in MIN_FRECHET_N and _present(n_value) and int(n_value) < MIN_FRECHET_N[name] and text != "–":
                text += " †"
            cells[COLUMN_LABELS.get(name, name)] = text
        for n_key, label in (("n_fid", "N crops"), ("n_fvd", "N clips")):
            if n_key in table.columns:
                cells[label] = str(int(row[n_key])) if _present(row[n_key]) else "–"
        if "machine_class" in table.columns and table["machine_class"].map(_present).any():
            cells["machine"] = str(row["machine_class"]) if _present(row["machine_class"]) else "–"
        if "n_seeds" in table.columns:
            cells["seeds"] = str(int(row["n_seeds"])) if _present(row["n_seeds"]) else "–"
        if "n_seeds" in table.columns and (table["n_seeds"].fillna(1) > 1).any():  # rows hold two kinds of interval
            cells["interval"] = _interval_kind(row)
        run_ids = row.get("run_ids")
        if isinstance(run_ids, list) and len(run_ids) > 1:
            cells["run"] = f"{str(run_ids[0])[:8]} +{len(run_ids) - 1}"
        else:
            cells["run"] = str(row["run_id"])[:8] if _present(row.get("run_id")) else "–"
        out.append(cells)
    return pd.DataFrame(out)


def _interval_kind(row: pd.Series) -> str:
    """What the row's brackets hold: its ``interval`` column, else what its seed count implies."""
    if _present(row.get("interval")):
        return str(row["interval"])
    n = row.get("n_seeds")
    return seeds_interval(int(n)) if _present(n) and int(n) > 1 else RUN_INTERVAL


INTERVAL_NOTE = (f"Values with intervals: point estimate at equal N [{INTERVAL_SUMMARY}]. "
                 "Lower is better for " + "/".join(COLUMN_LABELS.get(m, m) for m in TABLE_METRICS
                                                   if better_direction(m) == "lower") + ".")
SEED_NOTE = (f"A row over several seeds (seeds > 1) shows the mean over seeds [{SEED_LEVEL:.0%} Student-t interval of "
             "the mean across seeds, seeds − 1 degrees of freedom, cut to the metric's range: how much the result "
             "moves with the run's seed; none where every seed gave the same value]; N is the smallest over its "
             "runs. The `interval` column says which interval a row's brackets hold: `run` (that run's own, as "
             "above) or `t, n seeds`; with 2 seeds the t quantile is 12.7 and the interval is mostly the cut.")
COLUMN_NOTE = ("FID∞: Fréchet distance extrapolated linearly in 1/N from subsamples (Chong & Forsyth 2020). "
               "frame ceiling FID: the real training textures rendered through the generator's own frame path "
               "(`python -m benchmark oracle`), i.e. what a perfect texture model reaches in that frame model.")


def unavailable_footnote(table: pd.DataFrame) -> str:
    """``‡ TRA: <reason>`` lines for metrics some row could not compute."""
    notes = {}
    for column in table.columns:
        if column.endswith("_unavailable"):
            for value in table[column]:
                if _present(value):
                    notes.setdefault(column[: -len("_unavailable")], str(value))
    return " ".join(f"‡ {name} not available: {reason}." for name, reason in notes.items())


def table1_doc(table: pd.DataFrame, title: str, metrics: Sequence[str] = TABLE_METRICS,
               protocol: str | None = None) -> TableDoc:
    """Table 1 as a ``TableDoc``: the protocol, the N note, the table and the footnote of unavailable metrics."""
    seeds = f" {SEED_NOTE}" if "n_seeds" in table.columns and (table["n_seeds"].fillna(1) > 1).any() else ""
    notes = [protocol] if protocol else []
    notes.append(f"N: {n_summary(table)}. {INTERVAL_NOTE}{seeds} {COLUMN_NOTE} Newest finished run per generator "
                 "and seed.")
    footnote = unavailable_footnote(table)
    return TableDoc(title, display_table(table, metrics), notes, [footnote] if footnote else [],
                    left=("generator", "machine", "interval", "run"), empty="no runs found")


def to_markdown(table: pd.DataFrame, title: str, metrics: Sequence[str] = TABLE_METRICS,
                protocol: str | None = None) -> str:
    """Table 1 in Markdown (``table1_doc`` rendered)."""
    return render_markdown(table1_doc(table, title, metrics, protocol))


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    return atomic_write_text(path, table.to_csv(index=False))
