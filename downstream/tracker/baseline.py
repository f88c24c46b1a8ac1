"""Non-learned reference tracker: nearest-centroid linking by the same augmented LAP, no divisions.

Cost of a link = centroid distance in median nucleus diameters; a detection farther than
``max_distance`` from every partner starts or ends a track. Nothing is trained, so it measures what
the learned association adds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.ctc import CTCSequence, write_result
from downstream.tracker.features import frame_pair
from downstream.tracker.linking import PairDecision, assign, build_tracks
from downstream.tracker.model import sequence_detections


def track_nearest(seq: CTCSequence, masks: list[np.ndarray], res_dir: Path, max_distance: float = 1.0, *,
                  k_candidates: int = 6, overwrite: bool = False) -> Path:
    """Link ``masks`` (frames 0..n-1 of ``seq``) by nearest centroids; write a validated CTC result."""
    dets = sequence_detections(seq, masks)
    decisions = []
    for t in range(len(masks) - 1):
        fp = frame_pair(dets[t], dets[t + 1], masks[t], masks[t + 1], k_candidates, max_distance)
        decisions.append(PairDecision(assign(len(fp.a), len(fp.b), fp.pairs, fp.distance, 0.5 * max_distance)))
    frames, parents = build_tracks(masks, [d.labels for d in dets], decisions)
    write_result(res_dir, frames, parents, overwrite=overwrite)
    return Path(res_dir)
