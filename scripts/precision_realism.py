"""Does bf16 sampling change BVDM's realism? The same fitted model sampled in fp32 and in bf16, scored
against the held-out sequence under the dataset's frozen map, with the paired difference of the two.

Both videos share masks, seeds and per-job noise; only the UNet's arithmetic differs. FID/KID of each
against the reference (``realism_scores``) and the paired difference D(ref, bf16) - D(ref, fp32) on the
same reference rows (``paired_difference``): an interval that contains 0 means bf16 is indistinguishable
from fp32 at this N. Videos and features are kept under ``--out`` and reused by a re-run.

    .venv/bin/python scripts/precision_realism.py --model RUNS/Fluo-N2DH-GOWT1/stages/fit-*/model \\
        --data-root ../shared/assets/ctc --frames 24 --out precision-check
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from benchmark.ctc import CTCSequence, list_sequences
from benchmark.datasets import dataset_info, resolve_dataset
from benchmark.metrics.intervals import paired_difference
from benchmark.metrics.realism import (
    RealismConfig,
    load_feature_sets,
    realism_scores,
    reference_intensity_map,
)
from generators.base import GenerateSpec
from generators.bvdm.generator import BVDMGenerator
from generators.precision import cpu_description, resolve_precision

logger = logging.getLogger("precision_realism")


def generate(model: Path, precision: str, spec: GenerateSpec, out: Path) -> float:
    """Sample ``spec`` with ``precision`` into ``out`` (kept when already there); returns the seconds it took."""
    if out.is_dir():
        return float("nan")
    generator = BVDMGenerator.load(model).with_sampling({"sampling.precision": precision})
    generator.config.progress = True
    start = time.perf_counter()
    generator.generate(spec, out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved BVDMGenerator (a run's fit-*/model folder)")
    parser.add_argument("--dataset", default="Fluo-N2DH-GOWT1")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--sequences", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-crops", type=int, default=1024)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    out = Path(args.out)
    folder = resolve_dataset(args.dataset, args.data_root)
    reference = CTCSequence(folder, dataset_info(args.dataset).test_sequence)
    intensity, source = reference_intensity_map(args.dataset, [reference])
    config = RealismConfig(intensity_range=intensity, max_crops=args.max_crops, fvd=False)
    spec = GenerateSpec(n_sequences=args.sequences, n_frames=args.frames, shape=None, seed=args.seed)
    print(f"cpu: {cpu_description()}; bf16 resolves to {resolve_precision('bf16', 'cpu')} (auto: "
          f"{resolve_precision('auto', 'cpu')})")
    scores, features = {}, {}
    for precision in ("fp32", "bf16"):
        videos = out / precision
        seconds = generate(Path(args.model), precision, spec, videos)
        synthetic = [CTCSequence(videos, name) for name in list_sequences(videos)]
        scores[precision] = realism_scores(reference, synthetic, config, features_out=out / f"features-{precision}.npz")
        features[precision] = load_feature_sets(out / f"features-{precision}.npz")
        row = scores[precision]
        print(f"{precision}: generate {seconds:.0f} s; FID {row['fid']:.2f} [{row['fid_ci_low']:.2f}, "
              f"{row['fid_ci_high']:.2f}], KID {row['kid']:.4f} [{row['kid_ci_low']:.4f}, {row['kid_ci_high']:.4f}], "
              f"N={row['n_fid']} (reference {reference.dataset_dir.name}/{reference.name}, map {intensity} {source})")
    result = {"cpu": cpu_description(), "scores": scores, "paired": {}}
    for metric, statistic in (("FID", "frechet"), ("KID", "kernel")):
        interval = paired_difference(features["fp32"]["reference_crops"], features["bf16"]["synthetic_crops"],
                                     features["fp32"]["synthetic_crops"], kind=statistic, seed=args.seed)
        verdict = "distinguishable" if interval.excludes_zero else "indistinguishable at this N"
        print(f"paired {metric}(bf16) - {metric}(fp32): {interval.point:.4g} [{interval.low:.4g}, {interval.high:.4g}] "
              f"-> {verdict}")
        result["paired"][metric] = {"difference": interval.point, "ci_low": interval.low, "ci_high": interval.high,
                                    "excludes_zero": bool(interval.excludes_zero)}
    (out / "precision_realism.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
