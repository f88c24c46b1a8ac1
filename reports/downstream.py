"""Where the downstream loses: TRA's AOGM error broken down by cause, for every row of Table 1.

TRA = 1 - min(AOGM, AOGM_0) / AOGM_0, and AOGM is a weighted sum of error counts (Matula et al., PLoS ONE
2015; the CTC weights below). 1 - TRA therefore splits into one share per error type, in proportion to its
weighted count: while AOGM < AOGM_0 the share is ``weight * count / AOGM_0``, the TRA a row would gain if
that error type were gone; a row whose AOGM exceeds AOGM_0 has TRA 0, and its loss of 1 is shared the same
way. A reader sees whether a low row lost its score to missed cells (a weak segmenter), to merges, or to
linking (a weak tracker), and whether a generator's row fails differently from the real-trained ceiling.

The counts are py-ctcmetrics' AOGM parts that the eval stage logs on each parent run (``AOGM_FN`` ...).

Table 1d puts each generator's scores under every tracker that was run (``run --tracker``; the parent run's
``tracker`` tag) side by side and says whether ranking the generators by TRA gives the same order under each:
a ranking that flips with the tracker is a statement about the tracker, not the data.
Reads the run store only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from benchmark.config import DEFAULT_TRACKER
from reports.document import TableDoc, render_markdown
from reports.runs import latest_per_tracker, metric

#: AOGM weights of the CTC's TRA (w_NS, w_FN, w_FP, w_ED, w_EA, w_EC), and what each count means
AOGM_PARTS: dict[str, tuple[float, str]] = {
    "FN": (10.0, "missed cells (FN)"),
    "NS": (5.0, "merged cells (NS)"),
    "FP": (1.0, "spurious or split detections (FP)"),
    "EA": (1.5, "missing links (EA)"),
    "ED": (1.0, "extra links (ED)"),
    "EC": (1.0, "links of the wrong kind (EC)"),
}
DETECTION_PARTS = ("FN", "NS", "FP")
READING_NOTE = ("Each cell: the TRA lost to that error type, weight × count / AOGM_0, with the count in "
                "parentheses (CTC weights: missed 10, merged 5, spurious 1, missing link 1.5, extra link 1, wrong "
                "link kind 1). The parts add up to 1 − TRA (a row with TRA 0 shares its loss of 1 the same way). Detection = missed + merged + spurious: the segmenter's "
                "share; links = the rest. A missed cell also takes its links with it (they count as missing links), "
                "so only extra and wrong-kind links, and missing links beyond the missed cells', are the tracker's.")


def breakdown_row(name: str, run: Mapping[str, Any]) -> dict[str, Any]:
    """SEG/DET/TRA of one run and its TRA loss per AOGM part (NaN where the run logged no breakdown)."""
    row: dict[str, Any] = {"generator": name, **{m: metric(run, m) for m in ("SEG", "DET", "TRA")}}
    counts = {part: metric(run, f"AOGM_{part}") for part in AOGM_PARTS}
    weighted = {part: AOGM_PARTS[part][0] * c for part, c in counts.items() if c is not None}
    aogm, aogm_0, tra = sum(weighted.values()), metric(run, "AOGM_0"), row["TRA"]
    # the TRA lost, shared in proportion to the weighted counts (= w * count / AOGM_0 while AOGM < AOGM_0)
    lost = (1.0 - tra) / aogm if tra is not None and aogm > 0 else (1.0 / aogm_0 if aogm_0 else None)
    for part in AOGM_PARTS:
        row[f"n_{part}"] = counts[part]
        row[f"loss_{part}"] = weighted[part] * lost if part in weighted and lost is not None else None
    losses = {part: row[f"loss_{part}"] for part in AOGM_PARTS}
    known = [v for v in losses.values() if v is not None]
    row["loss_detection"] = sum(losses[p] or 0.0 for p in DETECTION_PARTS) if known else None
    row["loss_links"] = sum(losses[p] or 0.0 for p in AOGM_PARTS if p not in DETECTION_PARTS) if known else None
    row["main_cause"] = AOGM_PARTS[max(losses, key=lambda p: losses[p] or 0.0)][1] if known and max(known) > 0 else ""
    return row


def downstream_breakdown(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per parent run (``tags.generator`` names it), in the table's order; empty when no run logged
    a TRA breakdown (e.g. partial GT without tracking)."""
    rows = [breakdown_row(str(run["tags.generator"]), run) for _, run in runs.iterrows()]
    table = pd.DataFrame(rows)
    if table.empty or table[[f"n_{p}" for p in AOGM_PARTS]].isna().all().all():
        return pd.DataFrame()
    return table


def _cell(loss: Any, count: Any) -> str:
    if loss is None or pd.isna(loss):
        return "–"
    return f"{loss:.3f} ({int(count)})"


def breakdown_display(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for Markdown/HTML: scores, then the TRA loss of each cause with its count."""
    rows = []
    for _, row in table.iterrows():
        cells = {"generator": row["generator"]}
        for name in ("SEG", "DET", "TRA"):
            cells[name] = "–" if row[name] is None or pd.isna(row[name]) else f"{row[name]:.3f}"
        for part, (_, label) in AOGM_PARTS.items():
            cells[label] = _cell(row[f"loss_{part}"], row[f"n_{part}"])
        for key, label in (("loss_detection", "lost to detection"), ("loss_links", "lost to links")):
            cells[label] = "–" if row[key] is None or pd.isna(row[key]) else f"{row[key]:.3f}"
        cells["main cause"] = row["main_cause"]
        rows.append(cells)
    return pd.DataFrame(rows)


def breakdown_doc(table: pd.DataFrame, title: str) -> TableDoc:
    """Table 1c as a ``TableDoc``: how to read it and ``breakdown_display`` (or why there is none)."""
    return TableDoc(title, breakdown_display(table), [] if table.empty else [READING_NOTE],
                    left=("generator", "main cause"), empty="no run logged a TRA error breakdown (AOGM parts)")


def breakdown_markdown(table: pd.DataFrame, title: str) -> str:
    """Table 1c in Markdown (``breakdown_doc`` rendered)."""
    return render_markdown(breakdown_doc(table, title))


TRACKER_NOTE = ("Each generator's newest run with each tracker (`python -m benchmark run --tracker NAME`; the stages "
                "before train-tracker are shared with the profile's own run). TRA rank: 1 = best TRA among the "
                "generators scored with the same tracker.")


def tracker_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1d: SEG/DET/TRA of every (generator, tracker) and the row's TRA rank within its tracker; empty
    unless at least two trackers were run."""
    latest = latest_per_tracker(runs)
    if latest.empty or latest["tags.tracker"].nunique() < 2:
        return pd.DataFrame()
    rows = [{"generator": str(run["tags.generator"]), "tracker": str(run["tags.tracker"]),
             **{m: metric(run, m) for m in ("SEG", "DET", "TRA")}} for _, run in latest.iterrows()]
    table = pd.DataFrame(rows)
    table["TRA_rank"] = table.groupby("tracker")["TRA"].rank(ascending=False, method="min")
    return table


def tracker_orders(table: pd.DataFrame) -> dict[str, list[str]]:
    """Per tracker, the generators scored under EVERY tracker, best TRA first (the order compared)."""
    scored = table.dropna(subset=["TRA"])
    common = set.intersection(*(set(group["generator"]) for _, group in scored.groupby("tracker")))
    orders = {}
    for tracker, group in scored.groupby("tracker"):
        kept = group[group["generator"].isin(common)].sort_values("TRA", ascending=False, kind="stable")
        orders[str(tracker)] = list(kept["generator"])
    return dict(sorted(orders.items(), key=lambda item: (item[0] != DEFAULT_TRACKER, item[0])))


def order_sentence(table: pd.DataFrame) -> str:
    """Whether ranking by TRA orders the generators the same way under every tracker, in words."""
    orders = tracker_orders(table)
    text = "; ".join(f"{tracker}: {' > '.join(order)}" for tracker, order in orders.items())
    if len({tuple(order) for order in orders.values()}) == 1:
        return f"Ranked by TRA, the generators keep the same order under every tracker ({text})."
    return f"Ranked by TRA, the order of the generators CHANGES with the tracker ({text})."


def tracker_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"generator": row["generator"], "tracker": row["tracker"],
                          **{m: "–" if pd.isna(row[m]) else f"{row[m]:.3f}" for m in ("SEG", "DET", "TRA")},
                          "TRA rank": "–" if pd.isna(row["TRA_rank"]) else str(int(row["TRA_rank"]))}
                         for _, row in table.iterrows()])


def tracker_doc(table: pd.DataFrame, title: str) -> TableDoc:
    """Table 1d as a ``TableDoc`` (only meaningful when two or more trackers were run: ``tracker_table``)."""
    return TableDoc(title, tracker_display(table), [TRACKER_NOTE, order_sentence(table)],
                    left=("generator", "tracker"))


def tracker_markdown(table: pd.DataFrame, title: str) -> str:
    """Table 1d in Markdown, or nothing when only one tracker was run."""
    return "" if table.empty else "\n" + render_markdown(tracker_doc(table, title))
