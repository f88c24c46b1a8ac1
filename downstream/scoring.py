"""SEG/DET/TRA of a CTC result folder with py-ctcmetrics, quiet and with None values dropped.

``evaluate_sequence`` prints its whole result dict and returns None for every metric of an invalid
result, so SEG is computed in its own call (it skips trajectory validation) and threads stay at 1.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def ctc_scores(res_dir: Path, gt_dir: Path, metrics: Sequence[str] = ("DET", "TRA"), threads: int = 1) -> dict[str, float]:
    """Scores for ``res_dir`` (``maskTTT.tif`` + ``res_track.txt``) against ``gt_dir`` (``NN_GT``).

    Asking for SEG together with other metrics runs it in a separate call.
    """
    from ctc_metrics import evaluate_sequence

    wanted = list(metrics)
    calls = [["SEG"]] if "SEG" in wanted else []
    rest = [m for m in wanted if m != "SEG"]
    if rest:
        calls.append(rest)
    out: dict[str, float] = {}
    for call in calls:
        with contextlib.redirect_stdout(io.StringIO()):
            result = evaluate_sequence(str(res_dir), str(gt_dir), metrics=call, threads=threads)
        for key, value in result.items():
            if value is not None and np.isscalar(value) and not isinstance(value, str):
                out[key] = float(value)
    return out
