"""Seconds per 1000 crops (FID Inception features) and per 100 clips (FVD I3D features) on this machine.

Usage: .venv/bin/python scripts/bench_features.py [--crops 100] [--clips 8] [--threads 2]
Real GOWT1 01 crops (96 x 96) and 16-frame clips are used; timings exclude model loading and one warm-up batch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmark.ctc import CTCSequence, window_sequence
from benchmark.metrics.realism import Extractors, RealismConfig, extract_units, intensity_range

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared/assets/ctc/Fluo-N2DH-GOWT1"))
    parser.add_argument("--crops", type=int, default=100)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/synthvid-bench", help="scratch folder for a real 20-frame window")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work) / "Fluo-N2DH-GOWT1"
    if not (work / "01").is_dir():
        window_sequence(CTCSequence(args.dataset, "01"), work, frames=range(0, 20))
    seq = CTCSequence(work, "01")
    units = extract_units(seq, *intensity_range([seq]), RealismConfig(progress=False))
    crops, clips = units.crops[: args.crops], units.clips[: args.clips]
    ex = Extractors()
    ex.crop_features(crops[:2], 2, False)  # load + warm up
    ex.clip_features(clips[:1], 1, False)
    start = time.perf_counter()
    ex.crop_features(crops, 50, False)
    crop_s = time.perf_counter() - start
    start = time.perf_counter()
    ex.clip_features(clips, 4, False)
    clip_s = time.perf_counter() - start
    print(f"torch {torch.__version__}, {args.threads} threads, device cpu")
    print(f"{'unit':28s} {'count':>6s} {'seconds':>9s} {'normalised':>22s}")
    print(f"{'FID crops 96->299':28s} {len(crops):6d} {crop_s:9.1f} {crop_s / len(crops) * 1000:12.0f} s / 1000 crops")
    print(f"{'FVD clips 16x96->224':28s} {len(clips):6d} {clip_s:9.1f} {clip_s / len(clips) * 100:12.0f} s / 100 clips")
    print(f"FID weights: {ex.fid_weight.detector} [{ex.fid_weight.route}]")
    print(f"FVD weights: {ex.fvd_weight.detector} [{ex.fvd_weight.route}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
