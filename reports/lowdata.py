"""Table 3: does synthetic data help when annotations are scarce? (the low-data protocol,
``downstream.training_set``).

Rows are training conditions at an annotation budget K (annotated real frames of the training sequence):
``real only`` (K frames), ``real + <generator>`` (K frames beside its synthetic video) and ``<generator> only``
(the synthetic video alone, Table 1's row, K = 0). Each cell is SEG/DET/TRA on the real held-out sequence,
the mean over seeds with a Student-t interval across them (``reports.tables.seed_interval``). The gain of a
``real + <generator>`` row is paired: per seed, its score minus the ``real only`` score of the same K and
seed, which trained on the very same real frames (the draw depends on the seed alone); the interval is a
t-interval of those differences, and the verdict says whether it excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.io import atomic_write_bytes, atomic_write_text
from reports import figures
from reports.document import TableDoc, render_markdown, render_section
from reports.html import Section, image_tag
from reports.runs import SYNTHETIC_CONDITION, latest_per, metric, parent_runs, run_column
from reports.tables import seed_interval, write_csv

METRICS = ("SEG", "DET", "TRA")
REAL_ONLY = "real only"
#: the generator whose video is the real training sequence (its Table 1 row is real-only training at K = all)
REAL_GENERATOR = "real"
TITLE = "Table 3 — does synthetic data help when annotations are scarce?"
NOTE = ("K: annotated real frames of the training sequence (drawn per seed; the same frames for every condition of "
        "a seed). Cells: mean over seeds with a 95 % t-interval across seeds. Gain: the paired difference to "
        "`real only` at the same K and seeds (same real frames), with a 95 % t-interval of the differences; helps / "
        "hurts when it excludes 0, `no measurable difference` when it does not, `1 seed` when there is no interval.")


def lowdata_runs(dataset: str, profile: str | None) -> pd.DataFrame:
    """The newest finished parent run of every (generator, condition, real fraction, seed): the low-data
    conditions and the synthetic-only rows beside them (``parent_runs``'s filters: the default tracker, no
    ablation grid point, no stale bundle); empty when no run is of a low-data condition."""
    runs = parent_runs(dataset, profile, condition=None)
    if runs.empty or (run_column(runs, "tags.condition").fillna(SYNTHETIC_CONDITION) == SYNTHETIC_CONDITION).all():
        return runs.iloc[0:0]
    return latest_per(runs, ["tags.condition", "tags.real_fraction", "params.seed"],
                      {"tags.condition": SYNTHETIC_CONDITION})


def condition_of(run: pd.Series) -> tuple[str, str]:
    """(row label, K) of a run: ``real only`` / ``real + <generator>`` / ``<generator> only`` and K as text."""
    generator, condition = str(run["tags.generator"]), str(run["tags.condition"])
    if condition == SYNTHETIC_CONDITION and generator == REAL_GENERATOR:
        return REAL_ONLY, "all"  # the real row's "video" is the training window itself: every annotated frame
    if condition == SYNTHETIC_CONDITION:
        return f"{generator} only", "0"
    k = str(run.get("tags.real_frames") or condition.split("-")[1].split("+")[0].split("/")[0])
    mixed = "+synthetic" in condition
    label = f"real + {generator}" if mixed else REAL_ONLY
    extra = condition.split("+synthetic", 1)[1] if mixed else condition.partition("/")[1] + condition.partition("/")[2]
    return label + (f" {extra}" if extra else ""), k


def _k_order(k: str) -> tuple[int, float]:
    return (1, math.inf) if k == "all" else (0, float(k))


def lowdata_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (condition, K): seeds, each metric's mean and interval, and for a mixed condition its paired
    gain over ``real only`` (mean, interval, verdict, number of paired seeds)."""
    if runs.empty:
        return pd.DataFrame()
    scores: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    real_k: dict[tuple[str, str], float] = {}
    for _, run in runs.iterrows():
        label, k = condition_of(run)
        seed = str(run.get("params.seed"))
        scores.setdefault((label, k), {})[seed] = {m: metric(run, m) for m in METRICS}
        frames = metric(run, "real_frames_k")
        if frames is not None:
            real_k[(label, k)] = frames
    rows = []
    for (label, k), by_seed in sorted(scores.items(), key=lambda kv: (_k_order(kv[0][1]), kv[0][0] != REAL_ONLY,
                                                                    kv[0][0])):
        row: dict[str, Any] = {"condition": label, "K": k, "real_frames": real_k.get((label, k)),
                               "n_seeds": len(by_seed), "seeds": ",".join(sorted(by_seed, key=_seed_key))}
        for m in METRICS:
            row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = seed_interval(
                [v[m] for v in by_seed.values() if v[m] is not None], (0.0, 1.0))
        baseline = scores.get((REAL_ONLY, k)) if label != REAL_ONLY and k != "0" else None
        if baseline is not None:
            for m in METRICS:
                diffs = [v[m] - baseline[s][m] for s, v in by_seed.items()
                         if s in baseline and v[m] is not None and baseline[s][m] is not None]
                mean, low, high = seed_interval(diffs) if len(set(diffs)) > 1 or len(diffs) < 2 else (
                    (diffs[0], diffs[0], diffs[0]) if diffs else (None, None, None))
                row.update({f"gain_{m}": mean, f"gain_{m}_ci_low": low, f"gain_{m}_ci_high": high,
                            f"gain_{m}_n": len(diffs), f"gain_{m}_verdict": verdict(mean, low, high, len(diffs))})
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.isdigit() else (1 << 30, seed)


def verdict(mean: float | None, low: float | None, high: float | None, n: int) -> str:
    """helps / hurts / no measurable difference (the interval of the paired gain against 0)."""
    if mean is None or n == 0:
        return "no paired real-only run"
    if n < 2 or low is None or high is None:
        return "1 seed: no interval"
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "no measurable difference"


def _cell(row: pd.Series, name: str) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return f"{value:+.3f}" if name.startswith("gain_") else f"{value:.3f}"
    sign = "+" if name.startswith("gain_") else ""
    return f"{value:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]"


def lowdata_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text cells: K, condition, seeds, each metric with its interval, each gain with its verdict."""
    out = []
    for _, row in table.iterrows():
        cells = {"K": row["K"] if row["K"] != "all" or pd.isna(row.get("real_frames")) else
                 f"all ({int(row['real_frames'])})", "condition": row["condition"], "seeds": row["n_seeds"]}
        cells.update({m: _cell(row, m) for m in METRICS})
        for m in METRICS:
            gain = f"gain_{m}"
            cells[f"gain {m}"] = (f"{_cell(row, gain)} ({row[f'{gain}_verdict']})"
                                  if isinstance(row.get(f"{gain}_verdict"), str) else "-")
        out.append(cells)
    return pd.DataFrame(out)


def lowdata_doc(table: pd.DataFrame, title: str, machine: str, bundles: Sequence[str] = ()) -> TableDoc:
    """Table 3 as a ``TableDoc``: the protocol note, the machine class, the table and the bundles it came from."""
    footnotes = [f"From the result bundles: {', '.join(bundles)}"] if bundles else []
    return TableDoc(title, lowdata_display(table), [f"{NOTE} Machine class: {machine}."], footnotes,
                    left=("K", "condition"))


def lowdata_figure(table: pd.DataFrame) -> Any:
    """SEG and TRA against K, one line per condition (synthetic-only rows as dashed horizontal lines)."""
    if table.empty:
        return None
    plt = figures.plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    ks = sorted({k for k in table["K"] if k != "0"}, key=_k_order)
    xs = {k: i for i, k in enumerate(ks)}
    for ax, m in zip(axes, ("SEG", "TRA"), strict=True):
        for label, group in table.groupby("condition", sort=False):
            if label.endswith(" only") and label != REAL_ONLY:
                value = group.iloc[0][m]
                if value is not None and not pd.isna(value):
                    ax.axhline(float(value), linestyle="--", linewidth=1, label=label, color="grey")
                continue
            group = group[group["K"].isin(xs)].sort_values("K", key=lambda s: s.map(lambda k: _k_order(k)))
            x = [xs[k] for k in group["K"]]
            y = list(group[m])
            low = [v - lo if not pd.isna(lo) else 0 for v, lo in zip(y, group[f"{m}_ci_low"], strict=True)]
            high = [hi - v if not pd.isna(hi) else 0 for v, hi in zip(y, group[f"{m}_ci_high"], strict=True)]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label)
        ax.set_xticks(range(len(ks)), ks)
        ax.set_xlabel("annotated real frames K")
        ax.set_ylabel(f"{m} (higher is better)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_lowdata(dataset: str, profile: str | None, folder: Path) -> tuple[str, Section | None, list[Path]]:
    """Table 3 as Markdown text, an HTML section and files (``table3.md``, ``table3.csv``,
    ``figures/table3.png``); empty when the store holds no low-data run."""
    runs = lowdata_runs(dataset, profile)
    table = lowdata_table(runs)
    if table.empty:
        return "", None, []
    machines = sorted({str(m) for m in run_column(runs, "tags.machine_class").dropna()}) or ["unknown"]
    bundles = sorted({str(b) for b in run_column(runs, "tags.bundle").dropna()})
    doc = lowdata_doc(table, f"{TITLE} {dataset}, profile {profile or 'any'}", ", ".join(machines), bundles)
    text = render_markdown(doc)
    written = [atomic_write_text(folder / "table3.md", text), write_csv(table, folder / "table3.csv")]
    figure_html = []
    fig = lowdata_figure(table)
    if fig is not None:
        png = figures.figure_png(fig)
        written.append(atomic_write_bytes(folder / "figures" / "table3.png", png))
        figure_html.append(image_tag(png, alt="SEG and TRA against K"))
    return text, render_section(doc, *figure_html), written
