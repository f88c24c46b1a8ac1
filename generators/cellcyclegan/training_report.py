"""Does training move the texture GAN towards the real crops? Figures for the untrained and trained network.

``python -m generators.cellcyclegan.training_report DATASET_DIR [--sequence 01] [--profile ci]
[--iterations N] [--frames N] [--model FITTED_DIR] [--inception] [--out DIR]``

Textures are drawn for the real training crops' own masks, stages and intensities (fresh noise) and
compared with the real crops by (a) the Frechet distance on a fixed texture-feature set
(``realism.py``) and, with ``--inception``, (b) the benchmark's FID and KID on the same masked crops
(pytorch-fid InceptionV3 pool3; GAN units x 255 as 8-bit). Both come with a real-vs-real floor: the
real crops split by track into two halves. ``--model`` scores a fitted ``cellcyclegan`` folder (the
pipeline's fit stage) against a freshly initialised network of the same widths, instead of training.
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
from benchmark.metrics.frechet import frechet_distance, kernel_distance
from benchmark.metrics.realism import Extractors
from generators.cellcyclegan.data import TrainingCrops, collect_crops, fit_intensity_scale, sample_frames
from generators.cellcyclegan.networks import UNetGenerator
from generators.cellcyclegan.realism import crop_features, feature_frechet_distance
from generators.cellcyclegan.train import (
    GENERATOR_FILE,
    GANTrainConfig,
    load_generator,
    make_batch,
    train_gan,
)


@torch.no_grad()
def textures_like(network: UNetGenerator, crops: TrainingCrops, seed: int, batch: int = 32) -> np.ndarray:
    """Masked textures for the real crops' own masks, stages and intensities, fresh noise."""
    _, cond = make_batch(crops, np.arange(len(crops)), np.random.default_rng(seed), 1.0, augment=False)
    out = [network(torch.from_numpy(cond[i : i + batch])).numpy()[:, 0] for i in range(0, len(cond), batch)]
    return np.concatenate(out) * crops.masks


def inception_crop_features(images: np.ndarray, extractors: Extractors, progress: bool = False) -> np.ndarray:
    """Benchmark FID features of masked crops in GAN units ([0, 1] -> 8 bit)."""
    u8 = np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
    return extractors.crop_features(u8, batch_size=50, progress=progress)


def compare(real: np.ndarray, fake: np.ndarray, kid_subset: int = 100) -> dict[str, float]:
    """FID and KID (mean over 50 subsets) of two Inception feature sets."""
    kid, _ = kernel_distance(real, fake, subset_size=kid_subset, n_subsets=50)
    return {"fid": frechet_distance(real, fake), "kid": kid}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--sequence", default="01")
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--intensity-weight", type=float, default=None)
    parser.add_argument("--frames", type=int, default=None, help="annotated frames to take crops from "
                        "(default: the profile's max_train_frames)")
    parser.add_argument("--model", type=Path, default=None, help="a fitted cellcyclegan folder to score instead of training")
    parser.add_argument("--inception", action="store_true", help="also FID/KID on the benchmark's Inception features")
    parser.add_argument("--out", type=Path, default=None, help="where history.json / samples.png go")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("iterations", args.iterations), ("intensity_weight", args.intensity_weight))
                 if v is not None}
    config = GANTrainConfig.profile(args.profile, **overrides)
    torch.set_num_threads(config.threads)
    seq = CTCSequence(args.dataset_dir, args.sequence)
    start = time.perf_counter()
    frames = sample_frames(seq, args.frames or config.max_train_frames)
    crops = collect_crops(seq, crop_size_for(seq), fit_intensity_scale(seq, frames), frames)
    prep = time.perf_counter() - start
    # train_gan seeds torch with config.seed before building its network: this is its initial state
    torch.manual_seed(config.seed)
    if args.model is not None:
        trained, seconds, history = load_generator(args.model / GENERATOR_FILE), float("nan"), []
        untrained = UNetGenerator(trained.widths).eval()
    else:
        untrained = UNetGenerator(config.widths).eval()
        result = train_gan(crops, config, args.out)
        trained, seconds, history = result.generator, result.seconds, result.history
    fake_before, fake_after = textures_like(untrained, crops, 1), textures_like(trained, crops, 1)
    real = crop_features(crops.images, crops.masks)
    tracks = np.unique(crops.labels)
    half = np.isin(crops.labels, tracks[::2])
    figures = {"crops": float(len(crops)), "crop_size": float(crops.images.shape[-1]), "prep_seconds": prep,
               "train_seconds": seconds, "iterations": float(config.iterations) if args.model is None else float("nan"),
               "fd_untrained": feature_frechet_distance(real, crop_features(fake_before, crops.masks)),
               "fd_trained": feature_frechet_distance(real, crop_features(fake_after, crops.masks)),
               "fd_real_split_floor": feature_frechet_distance(real[half], real[~half]),
               "noise_sensitivity": history[-1]["noise_sensitivity"] if history else float("nan")}
    if args.inception:
        extractors = Extractors()  # one Inception network for the three feature sets
        real_inc = inception_crop_features(crops.images, extractors)
        for name, fake in (("untrained", fake_before), ("trained", fake_after)):
            for key, value in compare(real_inc, inception_crop_features(fake, extractors)).items():
                figures[f"{key}_{name}"] = value
        for key, value in compare(real_inc[half], real_inc[~half]).items():
            figures[f"{key}_real_split_floor"] = value
    print(json.dumps(figures, indent=1))  # the script's result, on stdout
    return figures


if __name__ == "__main__":
    main()
