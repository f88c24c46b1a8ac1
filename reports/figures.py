"""Report figures: metric bars with CIs, stage timings, sample frames and animated previews with mask
outlines, sweep line plots. Figures are matplotlib (Agg); previews are GIFs written with Pillow.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from benchmark.ctc import CTCSequence  # noqa: E402
from benchmark.ctc.overlay import overlay_frames  # noqa: E402
from reports.tables import COLUMN_LABELS, FLOOR_ROW, TABLE_METRICS, better_direction  # noqa: E402


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (closed afterwards)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _finite(value: object) -> bool:
    return value is not None and isinstance(value, (int, float, np.floating)) and math.isfinite(float(value))


def metric_bars(table: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> Figure | None:
    """One panel per metric with a bar per generator and its CI; the real-vs-real floor (with CI) as a
    dashed line and band. None when no metric has a value."""
    runs = table[table["generator"] != FLOOR_ROW]
    floor = table[table["generator"] == FLOOR_ROW]
    shown = [m for m in metrics if m in table.columns and any(_finite(v) for v in runs[m])]
    if not shown:
        return None
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False)
    names = list(runs["generator"])
    colours = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    for ax, name in zip(axes.flat, shown, strict=False):
        values = np.array([float(v) if _finite(v) else np.nan for v in runs[name]])
        bars = ax.bar(range(len(names)), np.nan_to_num(values), color=colours)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.3g}" for v in values], fontsize=7)
        low_col, high_col = f"{name}_ci_low", f"{name}_ci_high"
        if low_col in runs.columns:
            for i, (v, lo, hi) in enumerate(zip(values, runs[low_col], runs[high_col], strict=True)):
                if _finite(v) and _finite(lo) and _finite(hi):
                    ax.errorbar(i, v, yerr=[[max(v - lo, 0)], [max(hi - v, 0)]], color="black", capsize=3, lw=1)
        if not floor.empty and name in floor.columns and _finite(floor[name].iloc[0]):
            ax.axhline(float(floor[name].iloc[0]), ls="--", color="grey", lw=1, label="real-vs-real")
            lo, hi = floor.get(low_col), floor.get(high_col)
            if lo is not None and _finite(lo.iloc[0]) and _finite(hi.iloc[0]):
                ax.axhspan(float(lo.iloc[0]), float(hi.iloc[0]), color="grey", alpha=0.2)
            ax.legend(fontsize=7, loc="best")
        for i, v in enumerate(values):
            if np.isnan(v):
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{COLUMN_LABELS.get(name, name)} ({better_direction(name)} is better)", fontsize=9)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def timing_bars(table: pd.DataFrame) -> Figure | None:
    """Stacked horizontal bars of stage wall times (s) per generator; None when no times were logged."""
    runs = table[table["generator"] != FLOOR_ROW]
    time_cols = [c for c in runs.columns if c.startswith("time_") and c.endswith("_s")]
    if runs.empty or not time_cols:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(runs) + 1.4))
    left = np.zeros(len(runs))
    colours = plt.get_cmap("tab20")(np.arange(len(time_cols)) % 20)
    for colour, col in zip(colours, time_cols, strict=True):
        values = np.array([float(v) if _finite(v) else 0.0 for v in runs[col]])
        ax.barh(range(len(runs)), values, left=left, color=colour, label=col[5:-2])
        left += values
    ax.set_yticks(range(len(runs)), list(runs["generator"]))
    ax.invert_yaxis()
    ax.set_xlabel("wall time per stage (s; cached stages show their original time)")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    return fig


def sample_frames(dataset_dir: Path, sequence: str = "01", n: int = 4, max_side: int = 384) -> Figure:
    """``n`` frames spread over the sequence, with mask outlines."""
    seq = CTCSequence(dataset_dir, sequence)
    frames = seq.frames
    times = [frames[i] for i in np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)]
    images = overlay_frames(seq, times, max_side)
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.8), squeeze=False)
    for ax, t, image in zip(axes[0], times, images, strict=True):
        ax.imshow(image)
        ax.set_title(f"t={t}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def preview_gif(dataset_dir: Path, sequence: str = "01", n_frames: int = 16, max_side: int = 256,
                fps: float = 4.0) -> bytes:
    """An animated GIF of the first ``n_frames`` frames with mask outlines (looping)."""
    seq = CTCSequence(dataset_dir, sequence)
    times = seq.frames[:n_frames]
    if not times:
        raise ValueError(f"{seq.image_dir}: no frames to animate")
    frames = [Image.fromarray(f) for f in overlay_frames(seq, times, max_side)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps),
                   loop=0, optimize=False)
    return buffer.getvalue()


def sweep_lines(table: pd.DataFrame, metrics: Sequence[str] = ("SEG", "TRA", "FID", "FVD")) -> Figure | None:
    """Line plots of the sweep: per metric, the T_f0 series (at the fixed T_fnon0) and the T_fnon0 series."""
    shown = [m for m in metrics if m in table.columns and any(_finite(v) for v in table[m])]
    if not shown or table.empty:
        return None
    fig, axes = plt.subplots(2, len(shown), figsize=(3.2 * len(shown), 5.6), squeeze=False)
    for row, (series, x_col, label) in enumerate((("t_first", "t_first", "T_f0 (first frame)"),
                                                  ("t_next", "t_next", "T_fnon0 (later frames)"))):
        part = table[table["series"].str.contains(series)].sort_values(x_col)
        for ax, name in zip(axes[row], shown, strict=True):
            values = [float(v) if _finite(v) else np.nan for v in part[name]]
            ax.plot(part[x_col], values, marker="o")
            lo_col, hi_col = f"{name}_ci_low", f"{name}_ci_high"
            if lo_col in part.columns:
                lo = [float(v) if _finite(v) else np.nan for v in part[lo_col]]
                hi = [float(v) if _finite(v) else np.nan for v in part[hi_col]]
                ax.fill_between(part[x_col], lo, hi, alpha=0.2)
            ax.set_xlabel(label, fontsize=8)
            ax.set_title(f"{COLUMN_LABELS.get(name, name)} ({better_direction(name)} is better)", fontsize=9)
    fig.tight_layout()
    return fig
