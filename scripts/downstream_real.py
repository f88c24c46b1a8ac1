"""Measure the downstream models on real GOWT1: train on sequence 01, score on the held-out 02.

  tracker:   learned tracker (trained on 01 only: GT lineage, full masks grown from TRA markers) vs the untrained
             nearest-neighbour LAP baseline, both linking GT-derived full masks of 02 -> TRA/DET.
  trackastra: trackastra's transformer trained FROM SCRATCH on 01 (the same full-mask export; the --profile's
             [tracker.trackastra], else TrackastraConfig's cpu-sized defaults) next to the learned tracker and the
             nearest-neighbour baseline, all linking GT-derived full masks of 02 -> TRA/DET, train/track seconds.
  gaps:      gap closing (downstream.tracker.gaps) on the learned tracker and the nearest-neighbour baseline: 02's
             GT-derived full masks with 5 % / 15 % of the objects dropped at random (seed 0), each result scored
             as linked (gap_frames = 0) and after close_gaps with 1, 2 and 3 bridged frames -> TRA/DET.
  segmenter: short StarDist trained on 01 full masks (exported as SEG), applied to 02 -> SEG/DET/TRA
             (tracked with the learned tracker).
  thresholds: the real row's StarDist as the pipeline trains it (the --profile's [segmenter], default cpu),
             scored on 02 with the thresholds StarDist's optimize_thresholds fits on 01's held-out frames,
             with StarDist's defaults, and over a probability sweep; plus the validation frames' misses and
             false positives at each probability (why the fitted threshold is not the default).

Usage: .venv/bin/python scripts/downstream_real.py {tracker,trackastra,gaps,segmenter,thresholds,all} [--out DIR] [--epochs N]
       [--steps N] [--patch PX] [--lr LR] [--profile P]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmark.ctc import CTCSequence, ResultSequence, validate_result, write_result, write_sequence
from benchmark.ctc.crops import full_masks
from benchmark.metrics.ctc import ctc_scores
from downstream.segmenter import (
    STARDIST_DEFAULT_THRESHOLDS,
    SegmenterConfig,
    segment_sequence,
    train_segmenter,
)
from downstream.tracker import (
    TrackerConfig,
    track_nearest,
    track_sequence,
    track_with_trackastra,
    tracker_config,
    train_trackastra,
    train_tracker,
)
from downstream.tracker.gaps import close_gaps

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


def _scored_with_gaps(res: Path, test: CTCSequence, out: Path, gap_frames: int) -> dict:
    """``res`` (linked with gap closing off) scored after ``close_gaps`` with ``gap_frames`` bridged frames."""
    result = ResultSequence(res)
    frames = [result.mask(t) for t in range(test.n_frames)]
    parents = {k: v.parent for k, v in result.tracks.items() if v.parent}
    frames, parents, closed = close_gaps(frames, parents, max_frames=gap_frames)
    write_result(out, frames, parents, overwrite=True)
    assert not validate_result(out, test.n_frames)
    return {"gaps_closed": closed, **ctc_scores(out, test.gt_dir, ("TRA", "DET"))}


def run_gaps(out: Path) -> dict:
    """TRA/DET with and without gap closing when 5 % / 15 % of 02's GT-derived objects are missed."""
    test = CTCSequence(DATA, "02")
    masks = [full_masks(test, t) for t in tqdm(range(test.n_frames), desc="02 full masks")]
    train_dir = export_full(DATA, "01", out / "gowt1_01_full")
    model = train_tracker(train_dir, TrackerConfig(gap_frames=0), out / "tracker_gowt1_01_nogaps", overwrite=True)
    rng = np.random.default_rng(0)
    result: dict = {}
    for fraction in (0.05, 0.15):
        damaged = []
        for m in masks:
            labels = np.unique(m)[1:]
            gone = labels[rng.random(len(labels)) < fraction]
            damaged.append(np.where(np.isin(m, gone), 0, m).astype(m.dtype))
        for name in ("learned", "baseline"):
            res = out / f"drop{fraction}" / name / "02_RES"
            if name == "learned":
                track_sequence(model, test, damaged, res, overwrite=True)
            else:
                track_nearest(test, damaged, res, overwrite=True)
            for gap_frames in (0, 1, 2, 3):
                key = f"drop {fraction:.0%} {name} gap_frames={gap_frames}"
                result[key] = _scored_with_gaps(res, test, res.parent / f"gaps{gap_frames}" / "02_RES", gap_frames)
    return result


def run_trackastra(out: Path, profile: str) -> dict:
    """trackastra from scratch vs the learned tracker vs the nearest-neighbour baseline on 02's GT-derived masks."""
    from benchmark.config import build_run_config

    section = build_run_config(profile, "Fluo-N2DH-GOWT1", "real").tracker
    _, config = tracker_config({**section, "method": "trackastra"}, seed=0)
    test = CTCSequence(DATA, "02")
    masks = [full_masks(test, t) for t in tqdm(range(test.n_frames), desc="02 full masks")]
    train_dir = export_full(DATA, "01", out / "gowt1_01_full")
    t0 = time.perf_counter()
    model = train_trackastra(train_dir, config, out / "trackastra_gowt1_01", overwrite=True)
    rows = {"trackastra": {"train_seconds": time.perf_counter() - t0}}
    t0 = time.perf_counter()
    results = {"trackastra": track_with_trackastra(model, test, masks, out / "trackastra" / "02_RES", overwrite=True)}
    rows["trackastra"]["track_seconds"] = time.perf_counter() - t0
    learned, train_s = train_01_tracker(out)
    t0 = time.perf_counter()
    results["learned"] = track_sequence(learned, test, masks, out / "learned" / "02_RES", overwrite=True)
    rows["learned"] = {"train_seconds": train_s, "track_seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    results["baseline"] = track_nearest(test, masks, out / "baseline" / "02_RES", overwrite=True)
    rows["baseline"] = {"train_seconds": 0.0, "track_seconds": time.perf_counter() - t0}
    for name, res in results.items():
        assert not validate_result(res, test.n_frames)
        scores = ctc_scores(res, test.gt_dir, ("TRA", "DET"))
        rows[name].update({k: scores[k] for k in ("TRA", "DET", "AOGM")})
    summary = json.loads((model / "trackastra.json").read_text())
    rows["trackastra"].update({k: summary[k] for k in ("n_parameters", "windows", "pretrained")})
    rows["trackastra"]["loss"] = {k: [round(v, 4) for v in summary["history"][k]] for k in ("train_loss", "val_loss")}
    return {"profile": profile, "config": summary["config"], "on_02": rows}


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


def _scored_at(model_dir: Path, tracker: Path, test: CTCSequence, prob: float, nms: float, out: Path) -> dict:
    """SEG/DET/TRA (+ missed/spurious counts) of the model on ``test`` at the given thresholds."""
    masks = segment_sequence(model_dir, test, thresholds={"prob": prob, "nms": nms})
    res = track_sequence(tracker, test, masks, out / f"02_RES_p{prob:.3f}_n{nms:.2f}", overwrite=True)
    scores = ctc_scores(res, test.gt_dir, ("SEG", "DET", "TRA"))
    return {"prob": prob, "nms": nms, **scores}


def _validation_errors(model_dir: Path, train_dir: Path, probs: list[float], nms: float) -> list[dict]:
    """Misses and false positives (IoU 0.5) on the segmenter's own validation frames at each probability."""
    from stardist.matching import matching_dataset

    from downstream.segmenter import load_frames, load_segmenter, split_frames

    training = json.loads((model_dir / "training.json").read_text())
    model = load_segmenter(model_dir)
    _, val_pairs = split_frames(train_dir, training["config"]["n_val"])
    val = load_frames(val_pairs, "validation frames", True, training["scale"])
    rows = []
    for prob in probs:
        pred = [model.predict_instances(x, prob_thresh=prob, nms_thresh=nms, verbose=False)[0] for x in val.images]
        match = matching_dataset(val.masks, pred, thresh=0.5, show_progress=False)
        rows.append({"prob": prob, "nms": nms, "frames": len(pred), "missed": int(match.fn), "spurious": int(match.fp)})
    return rows


def run_thresholds(out: Path, profile: str) -> dict:
    from benchmark.config import build_run_config, config_from_dict

    train_dir = export_full(DATA, "01", out / "gowt1_01_full")
    segmenter = build_run_config(profile, "Fluo-N2DH-GOWT1", "real").segmenter
    config = config_from_dict(SegmenterConfig, {**segmenter, "thresholds": "optimize"})
    model = out / f"stardist_{profile}_01"
    if not (model / "training.json").is_file():  # a finished model is reused: delete the folder to retrain
        train_segmenter(train_dir, config, model)
    train_s = json.loads((model / "training.json").read_text())["total_seconds"]
    tracker = out / "tracker_gowt1_01"
    if not tracker.is_dir():
        tracker, _ = train_01_tracker(out)
    fitted = json.loads((model / "training.json").read_text())["thresholds"]
    test = CTCSequence(DATA, "02")
    default = STARDIST_DEFAULT_THRESHOLDS
    rows = [{"thresholds": "optimize (fitted on 01's held-out frames)",
             **_scored_at(model, tracker, test, fitted["prob"], fitted["nms"], out)},
            {"thresholds": "default (StarDist's)", **_scored_at(model, tracker, test, default["prob"], default["nms"], out)}]
    rows += [{"thresholds": "sweep", **_scored_at(model, tracker, test, prob, default["nms"], out)} for prob in (0.3, 0.7)]
    probs = [0.3, 0.5, 0.7, 0.8, round(fitted["prob"], 3)]
    steps = json.loads((model / "training.json").read_text())["config"]
    return {"profile": profile, "steps": steps["epochs"] * steps["steps_per_epoch"], "train_seconds": train_s,
            "fitted": fitted, "on_02": rows,
            "validation": _validation_errors(model, train_dir, probs, default["nms"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["tracker", "trackastra", "gaps", "segmenter", "thresholds", "all"])
    parser.add_argument("--out", type=Path, default=Path("runs/downstream_real"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--profile", default="cpu", help="profile whose [segmenter] the thresholds mode trains "
                        "(and whose [tracker.trackastra] the trackastra mode trains)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.what in ("tracker", "all"):
        report["tracker"] = run_tracker(args.out)
    if args.what in ("segmenter", "all"):
        report["segmenter"] = run_segmenter(args.out, args.epochs, args.steps, args.patch, args.lr)
    if args.what == "thresholds":
        report["thresholds"] = run_thresholds(args.out, args.profile)
    if args.what == "gaps":
        report["gaps"] = run_gaps(args.out)
    if args.what == "trackastra":
        report["trackastra"] = run_trackastra(args.out, args.profile)
    (args.out / f"report_{args.what}.json").write_text(json.dumps(report, indent=1))
    for part, values in report.items():
        print(part, json.dumps({k: v for k, v in values.items() if k not in ("summary", "training")}, indent=1))


if __name__ == "__main__":
    main()
