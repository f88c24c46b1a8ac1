"""Train the texture GAN on one real sequence and print the crop-realism figures before/after.

``python -m generators.cellcyclegan.training_report DATASET_DIR [--sequence 01] [--profile ci]
[--iterations N] [--out DIR]``: training seconds, and the Frechet distance on the fixed texture
feature set (``realism.py``) between the real training crops and the generator's textures for the
same masks and intensities, for the untrained and the trained network (plus a real-vs-real floor:
the real crops split by track into two halves).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import crop_size_for
from generators.cellcyclegan.data import TrainingCrops, collect_crops, fit_intensity_scale, sample_frames
from generators.cellcyclegan.networks import UNetGenerator
from generators.cellcyclegan.realism import crop_features, feature_frechet_distance
from generators.cellcyclegan.train import GANTrainConfig, make_batch, train_gan


@torch.no_grad()
def textures_like(network: UNetGenerator, crops: TrainingCrops, seed: int, batch: int = 32) -> np.ndarray:
    """Masked textures for the real crops' own masks, stages and intensities, fresh noise."""
    _, cond = make_batch(crops, np.arange(len(crops)), np.random.default_rng(seed), 1.0, augment=False)
    out = [network(torch.from_numpy(cond[i : i + batch])).numpy()[:, 0] for i in range(0, len(cond), batch)]
    return np.concatenate(out) * crops.masks


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--sequence", default="01")
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--intensity-weight", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="where history.json / samples.png go")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("iterations", args.iterations), ("intensity_weight", args.intensity_weight))
                 if v is not None}
    config = GANTrainConfig.profile(args.profile, **overrides)
    torch.set_num_threads(config.threads)
    seq = CTCSequence(args.dataset_dir, args.sequence)
    start = time.perf_counter()
    frames = sample_frames(seq, config.max_train_frames)
    crops = collect_crops(seq, crop_size_for(seq), fit_intensity_scale(seq, frames), frames)
    prep = time.perf_counter() - start
    real = crop_features(crops.images, crops.masks)
    torch.manual_seed(config.seed)
    before = feature_frechet_distance(real, crop_features(textures_like(UNetGenerator(config.widths).eval(), crops, 1),
                                                          crops.masks))
    result = train_gan(crops, config, args.out)
    after = feature_frechet_distance(real, crop_features(textures_like(result.generator, crops, 1), crops.masks))
    tracks = np.unique(crops.labels)
    half = np.isin(crops.labels, tracks[::2])
    floor = feature_frechet_distance(real[half], real[~half])
    figures = {"crops": float(len(crops)), "crop_size": float(crops.images.shape[-1]), "prep_seconds": prep,
               "train_seconds": result.seconds, "iterations": float(config.iterations),
               "fd_untrained": before, "fd_trained": after, "fd_real_split_floor": floor,
               "noise_sensitivity": result.history[-1]["noise_sensitivity"] if result.history else float("nan")}
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
