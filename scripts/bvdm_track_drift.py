"""Does a BVDM cell keep its brightness along its track? Fitted model vs the real training sequence.

For one generated video per sampling variant (``generate`` into a temporary folder, read back as
CTC) and for the real sequence, prints the mean grey value
inside the cells per frame (in frame buckets) and the median ratio of a cell's mean grey value at
track age a to its value at age 0 (same track; daughters start a new track). Real nuclei change a
little over the cell cycle; a sampler that drifts shows ratios far from the real ones.

    .venv/bin/python scripts/bvdm_track_drift.py --model RUNS/Fluo-N2DH-GOWT1/stages/fit-XXXX/model \\
        --data-root ../shared/assets/ctc --frames 40 --size 384 \\
        --variant anchor_stats=true --variant anchor_stats=false
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from benchmark.ctc import CTCSequence
from benchmark.datasets import resolve_dataset
from generators.base import GenerateSpec
from generators.bvdm.generator import BVDMGenerator

AGES = (0, 5, 10, 20, 39)


def cell_means(image: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    return dict(zip(ids.tolist(), ndimage.mean(image.astype(np.float64), labels, ids), strict=True))


def summarise(frames: list[dict[int, float]], n_buckets: int = 4) -> dict[str, list[float]]:
    """Per-frame mean over cells in buckets, and median brightness ratio by track age."""
    per_frame = [float(np.mean(list(m.values()))) if m else float("nan") for m in frames]
    buckets = [float(np.nanmean(b)) for b in np.array_split(np.asarray(per_frame), n_buckets)]
    first: dict[int, tuple[int, float]] = {}
    ratios: dict[int, list[float]] = defaultdict(list)
    for f, means in enumerate(frames):
        for label, value in means.items():
            start = first.setdefault(label, (f, value))
            ratios[f - start[0]].append(value / start[1])
    by_age = [float(np.median(ratios[a])) if ratios.get(a) else float("nan") for a in AGES]
    return {"frame_buckets": buckets, "ratio_by_age": by_age, "n_at_age": [len(ratios.get(a, [])) for a in AGES]}


def parse_value(text: str):
    return json.loads(text.lower()) if text.lower() in ("true", "false") or text[:1].isdigit() else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fitted BVDM folder (the fit stage's model/)")
    parser.add_argument("--dataset", default="Fluo-N2DH-GOWT1")
    parser.add_argument("--sequence", default="01", help="the real training sequence")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=384, help="square frame size of the generated video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", default=[],
                        help="comma-separated [generators.bvdm.sampling] overrides, e.g. anchor_stats=false,t_next=30 (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    real = CTCSequence(resolve_dataset(args.dataset, args.data_root), args.sequence)
    n_real = min(args.frames, real.n_frames)
    real_frames = [cell_means(real.image(t), real.tra(t)) for t in range(n_real)]
    rows = {"real": summarise(real_frames)}
    with tempfile.TemporaryDirectory(prefix="bvdm_drift_") as tmp:
        for n, variant in enumerate(args.variant or [""]):
            overrides = dict(item.split("=", 1) for item in variant.split(",") if item)
            generator = BVDMGenerator.load(args.model).with_sampling({f"sampling.{k}": parse_value(v) for k, v in overrides.items()})
            out = generator.generate(GenerateSpec(1, args.frames, (args.size, args.size), args.seed), Path(tmp) / str(n))
            synthetic = CTCSequence(out, "01")
            rows[variant or "default"] = summarise([cell_means(synthetic.image(t), synthetic.tra(t))
                                                    for t in range(synthetic.n_frames)])

    print(f"mean grey inside cells, {args.frames} frames in 4 buckets; median brightness ratio at track age {AGES}")
    for name, row in rows.items():
        buckets = " ".join(f"{v:7.1f}" for v in row["frame_buckets"])
        ages = " ".join(f"{v:5.2f}({n})" for v, n in zip(row["ratio_by_age"], row["n_at_age"], strict=True))
        print(f"{name:32s} | {buckets} | {ages}")


if __name__ == "__main__":
    main()
