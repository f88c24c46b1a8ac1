"""Shared helpers (no tests): benchmark-shaped MLflow runs whose metrics come from REAL scoring.

A run is logged the way ``benchmark.pipeline.run_benchmark`` logs one (parent run tagged
``stage=run``; nested stage runs through the pipeline's own ``Stages``, with ``stage.json`` and the
generate stage's sample PNGs), but the expensive generator/StarDist/tracker stages are replaced by
prepared folders:

- "good": the synthetic dataset is the real held-out window 02 itself (a perfect generator: its FID is
  the real-vs-real floor); the result on 02 is the ground-truth round trip (full masks + GT lineage).
- "broken": the synthetic dataset is uniform noise at the real cell positions; the result on 02 is
  random square blobs with fresh labels in every frame (no tracking).
SEG/DET/TRA come from py-ctcmetrics against the real 02 GT; FID/KID from the realism layer.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from benchmark import experiment
from benchmark.ctc import CTCSequence, window_sequence, write_result, write_sequence
from benchmark.ctc.crops import full_masks
from benchmark.stages import Stages, log_sample_frames, realism_artifacts

DATASET = "Fluo-N2DH-GOWT1"


#: GOWT1's frozen intensity map (benchmark.datasets), the one every row and the floor are scored under
INTENSITY_MAP = (0.0, 123.0)
REFERENCE = "02"


def realism_config():
    from benchmark.metrics.realism import RealismConfig

    # crops only (FVD on a 20-frame window has a handful of clips), few bootstrap replicates: plumbing speed
    return RealismConfig(fvd=False, n_bootstrap=20, progress=False, kid_subset_size=50, kid_subsets=20,
                         intensity_range=INTENSITY_MAP)


def protocol():
    from benchmark.metrics.realism import protocol_tags

    return protocol_tags(DATASET, REFERENCE, INTENSITY_MAP, realism_config().clip_mode, "test")


def link_good_synthetic(window: Path, out: Path) -> Path:
    """A dataset folder holding only the real window's sequence 02 (links: realism features stay cached)."""
    out.mkdir(parents=True)
    for name in ("02", "02_GT"):
        (out / name).symlink_to((window / name).resolve(), target_is_directory=True)
    return out


def export_noise_synthetic(window: Path, out: Path, seed: int = 0) -> Path:
    """Uniform noise over the real intensity range, annotated with the real cells' masks."""
    seq = CTCSequence(window, "01")
    rng = np.random.default_rng(seed)
    lo, hi = (int(v) for v in np.percentile(np.stack([seq.image(t) for t in seq.frames]), (0.5, 99.9)))
    images = [rng.integers(lo, hi + 1, seq.frame_shape).astype(seq.dtype) for _ in seq.frames]
    masks = [full_masks(seq, t) for t in seq.frames]
    write_sequence(out, "01", images, masks, {k: v.parent for k, v in seq.tracks.items()})
    return out


def good_result(window: Path, res_dir: Path) -> Path:
    seq = CTCSequence(window, "02")
    write_result(res_dir, [full_masks(seq, t) for t in seq.frames], {k: v.parent for k, v in seq.tracks.items()})
    return res_dir


def broken_result(window: Path, res_dir: Path, seed: int = 0, per_frame: int = 12, side: int = 10) -> Path:
    seq = CTCSequence(window, "02")
    rng = np.random.default_rng(seed)
    frames, label = [], 1
    for _ in seq.frames:
        frame = np.zeros(seq.frame_shape, np.uint16)
        for _ in range(per_frame):
            y, x = (int(rng.integers(0, s - side)) for s in seq.frame_shape)
            frame[y : y + side, x : x + side] = label
            label += 1
        frames.append(frame)
    write_result(res_dir, frames)
    return res_dir


def log_scored_run(generator: str, profile: str, window: Path, synthetic_dir: Path, res_dir: Path, stage_root: Path,
                   cache: Path, realism: bool = True, tags: dict[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """One parent run with generate / realism / eval-real stage runs; metrics from real scoring."""
    from benchmark.metrics.ctc import ctc_scores
    from benchmark.metrics.realism import realism_scores

    experiment.configure()
    test_seq = CTCSequence(window, REFERENCE)
    all_tags = {"generator": generator, "profile": profile, "stage": "run", **protocol(), **(tags or {})}
    config = {"generator": generator, "profile": profile, "seed": seed, "synthetic": str(synthetic_dir)}
    with experiment.start_run(f"{generator}-s{seed}-{profile}", DATASET, config=config, tags=all_tags) as parent:
        stages = Stages(stage_root / parent.info.run_id, DATASET, log=lambda _msg: None)

        def generate(out: Path) -> dict[str, Any]:
            (out / "synthetic").symlink_to(synthetic_dir.resolve(), target_is_directory=True)
            return {}

        generated = stages.run("generate", (generator, str(synthetic_dir)), generate,
                               artifacts=lambda f: log_sample_frames(f / "synthetic", n=2)
                               if (f / "synthetic" / "01").is_dir() else None)
        if realism:
            folder = generated.folder / "synthetic"
            synthetic = [CTCSequence(folder, p.name) for p in sorted(folder.iterdir()) if p.name.isdigit()]

            def score(out: Path) -> dict[str, Any]:
                # the "good" generator is the reference itself (link_good_synthetic): scored, flagged, not refused
                scores = realism_scores(test_seq, synthetic, realism_config(), cache, features_out=out / "features.npz",
                                        on_shared_inputs="flag")
                (out / "realism.json").write_text(json.dumps(scores, default=str))
                return scores

            stages.run("realism", str(synthetic_dir), score, artifacts=realism_artifacts("realism.json"),
                       tags=protocol())
        stages.run("eval-real", str(res_dir), lambda _out: ctc_scores(res_dir, test_seq.gt_dir, ("SEG", "DET", "TRA")))
        row: dict[str, Any] = {}
        for result in stages.results.values():
            row.update(result.metrics)
            row[f"time_{result.name}_s"] = result.seconds
        experiment.log_metrics(row)
        row["run_id"] = parent.info.run_id
    assert mlflow.active_run() is None
    return row


@dataclass(frozen=True)
class ScoredData:
    """Everything the report/gate tests log runs from (built once per session, reused by both modules)."""

    window: Path
    good_synthetic: Path
    noise_synthetic: Path
    good_res: Path
    broken_res: Path
    cache: Path
    empty_db: Path


WINDOW_FRAMES = range(0, 8)
WINDOW_BOX = (384, 384, 256, 256)


def prepare_scored_data(gowt1: Path, base: Path) -> ScoredData:
    """Build (or reuse, when ``base`` is already complete) the real window, the good/noise synthetic
    datasets, the good/broken result folders and a migrated empty MLflow database to copy per module."""
    data = ScoredData(base / "window" / DATASET, base / "good_synthetic", base / "noise_synthetic",
                      base / "good" / "02_RES", base / "broken" / "02_RES", base / "cache", base / "empty.db")
    if (base / "complete").is_file():
        return data
    shutil.rmtree(base, ignore_errors=True)
    for name in ("01", "02"):
        window_sequence(CTCSequence(gowt1, name), data.window, frames=WINDOW_FRAMES, box=WINDOW_BOX)
    link_good_synthetic(data.window, data.good_synthetic)
    export_noise_synthetic(data.window, data.noise_synthetic)
    good_result(data.window, data.good_res)
    broken_result(data.window, data.broken_res)
    uri = f"sqlite:///{data.empty_db}"
    mlflow.set_tracking_uri(uri)
    mlflow.search_experiments()  # creates the tables (Alembic migrations, seconds) once per session
    (base / "complete").write_text("ok")
    return data


def fresh_store(data: ScoredData, folder: Path) -> str:
    """A new MLflow SQLite store (copy of the migrated empty database) under ``folder``; returns its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data.empty_db, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"
