"""Re-indexed frame subset of the shared HeLa 01 GT and the real tracker result 01_RES (for cross-checks).

The copy's GT TRA covers 48 of 92 frames, so neither py-ctcmetrics nor traccuracy can score 01_RES as
is. Keeping the GT TRA frames only, re-indexed 0..47 in both GT and RES, gives a consistent temporally
subsampled pair: links then join consecutive kept frames on both sides, lineage is re-derived from the
labels present (parents kept when they end before the child begins).
"""

from __future__ import annotations

from pathlib import Path

from benchmark.ctc import CTCSequence, ResultSequence, write_result
from benchmark.metrics.ctc import write_tra_subset


def write_hela_subset(hela: Path, out: Path) -> tuple[Path, Path]:
    """Write ``out/01_GT/TRA`` and ``out/01_RES`` for the GT TRA frames of HeLa 01; return (res, gt)."""
    seq = CTCSequence(hela, "01")
    res = ResultSequence(hela / "01_RES")
    kept = sorted(t for t in seq.tra_files if t in res.mask_files)
    gt_dir = write_tra_subset(seq, kept, out / "01_GT")
    res_dir = out / "01_RES"
    write_result(res_dir, [res.mask(t) for t in kept], {tr.label: tr.parent for tr in res.tracks.values()})
    return res_dir, gt_dir
