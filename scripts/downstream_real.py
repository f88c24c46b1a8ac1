"""Measure the downstream models on real GOWT1: train on sequence 01, score on the held-out 02.

  tracker:   learned tracker (trained on 01 only: GT lineage, full masks grown from TRA markers) vs the untrained
             nearest-neighbour LAP baseline, both linking GT-derived full masks of 02 -> TRA/DET.
  segmenter: short StarDist trained on 01 full masks (exported as SEG), applied to 02 -> SEG/DET/TRA
             (tracked with the learned tracker).

Usage: .venv/bin/python scripts/downstream_real.py {tracker,segmenter,all} [--out DIR] [--epochs N] [--steps N] [--patch PX] [--lr LR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence, validate_result, write_sequence
from benchmark.ctc.crops import full_masks
from benchmark.metrics.ctc import ctc_scores
from downstream.segmenter import SegmenterConfig, segment_sequence, train_segmenter
from downstream.tracker import TrackerConfig, track_nearest, track_sequence, train_tracker

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "ctc" / "Fluo-N2DH-GOWT1"


def export_full(dataset: Path, name: str, out: Path) -> Path:
    """Copy sequence ``name`` with full nucleus masks as TRA and SEG (what the 'real' export does)."""
    if (out / name).is_dir():
        return out
    seq = CTCSequence(dataset, name)
    masks = [full_masks(seq, t) for t in tqdm(range(seq.n_frames), desc=f"full masks {name}")]
    write_sequence(out, name, [seq.image(t) for t in range(seq.n_frames)], masks,
                   {k: v.parent for k, v in seq.tracks.items()})
    return out


def train_01_tracker(out: Path) -> tuple[Path, float]:
    """Tracker trained on the 01-only full-mask export (02, the test sequence, is never seen)."""
    train_dir = export_full(DATA, "01", out / "gowt1_01_full")
    t0 = time.perf_counter()
    model = train_tracker(train_dir, TrackerConfig(), out / "tracker_gowt1_01", overwrite=True)
    return model, time.perf_counter() - t0


def run_tracker(out: Path) -> dict:
    test = CTCSequence(DATA, "02")
    masks = [full_masks(test, t) for t in tqdm(range(test.n_frames), desc="02 full masks")]
    model, train_s = train_01_tracker(out)
    t0 = time.perf_counter()
    learned = track_sequence(model, test, masks, out / "learned" / "02_RES", overwrite=True)
    track_s = time.perf_counter() - t0
    baseline = track_nearest(test, masks, out / "baseline" / "02_RES", overwrite=True)
    result = {"train_seconds": train_s, "track_seconds": track_s,
              "summary": json.loads((model / "tracker.json").read_text())}
    for name, res in (("learned", learned), ("baseline", baseline)):
        assert not validate_result(res, test.n_frames)
        result[name] = ctc_scores(res, test.gt_dir, ("TRA", "DET"))
    return result


def run_segmenter(out: Path, epochs: int, steps: int, patch: int, lr: float) -> dict:
    train_dir = export_full(DATA, "01", out / "gowt1_01_full")
    config = SegmenterConfig(epochs=epochs, steps_per_epoch=steps, patch_size=patch, batch_size=4,
                             learning_rate=lr)
    t0 = time.perf_counter()
    model = train_segmenter(train_dir, config, out / "stardist_gowt1_01", overwrite=True)
    train_s = time.perf_counter() - t0
    test = CTCSequence(DATA, "02")
    t0 = time.perf_counter()
    masks = segment_sequence(model, test)
    predict_s = time.perf_counter() - t0
    np.savez_compressed(out / "stardist_02_masks.npz", *masks)
    tracker = out / "tracker_gowt1_01"
    if not tracker.is_dir():
        tracker, _ = train_01_tracker(out)
    result = {"train_seconds": train_s, "predict_seconds": predict_s,
              "training": json.loads((model / "training.json").read_text())}
    learned = track_sequence(tracker, test, masks, out / "stardist" / "02_RES", overwrite=True)
    baseline = track_nearest(test, masks, out / "stardist_baseline" / "02_RES", overwrite=True)
    result["learned"] = ctc_scores(learned, test.gt_dir, ("SEG", "DET", "TRA"))
    result["baseline"] = ctc_scores(baseline, test.gt_dir, ("DET", "TRA"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["tracker", "segmenter", "all"])
    parser.add_argument("--out", type=Path, default=Path("runs/downstream_real"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.what in ("tracker", "all"):
        report["tracker"] = run_tracker(args.out)
    if args.what in ("segmenter", "all"):
        report["segmenter"] = run_segmenter(args.out, args.epochs, args.steps, args.patch, args.lr)
    (args.out / f"report_{args.what}.json").write_text(json.dumps(report, indent=1))
    for part, values in report.items():
        print(part, json.dumps({k: v for k, v in values.items() if k not in ("summary", "training")}, indent=1))


if __name__ == "__main__":
    main()
