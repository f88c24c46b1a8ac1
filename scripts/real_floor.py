"""Real-vs-real floor: the real training sequence (01) scored like a generator against the held-out one (02).

The dataset's ONE frozen intensity map (``benchmark.datasets``) is used, exactly as for every generator of
Table 1; intervals are point +- z SE with the SE from a cluster bootstrap over tracks (the distance at this N).

Usage: .venv/bin/python scripts/real_floor.py [--dataset ../shared/assets/ctc/Fluo-N2DH-GOWT1]
       [--n-bootstrap 200] [--threads 2] [--max-crops N] [--max-clips N] [--clip-mode lineage] [--json out.json]
Features are cached (``$SYNTHVID_CACHE``), so a rerun only redoes the statistics.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from benchmark.ctc import CTCSequence
from benchmark.metrics.realism import CLIP_MODES, RealismConfig, real_floor, reference_intensity_map

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("real_floor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared/assets/ctc/Fluo-N2DH-GOWT1"))
    parser.add_argument("--train", default="01")
    parser.add_argument("--reference", default="02")
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fvd", action="store_true")
    parser.add_argument("--clip-mode", default="lineage", choices=CLIP_MODES)
    parser.add_argument("--max-crops", type=int, help="cap per sequence (default: all crops)")
    parser.add_argument("--max-clips", type=int, help="cap per sequence (default: all clips)")
    parser.add_argument("--json", help="also write the result dict here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    folder = Path(args.dataset)
    train, reference = CTCSequence(folder, args.train), CTCSequence(folder, args.reference)
    intensity, source = reference_intensity_map(folder.name, [train, reference])
    config = RealismConfig(n_bootstrap=args.n_bootstrap, fvd=not args.no_fvd, max_crops=args.max_crops,
                           max_clips=args.max_clips, clip_mode=args.clip_mode, intensity_range=intensity)
    result = real_floor(train, reference, config)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["intensity_source"] = source
    log.info("real-vs-real floor, %s %s vs reference %s (B=%d, point +- z SE, cluster bootstrap over tracks)",
             folder, args.train, args.reference, args.n_bootstrap)
    for metric, n_key in (("fid", "n_fid"), ("kid", "n_fid"), ("fvd", "n_fvd"), ("kvd", "n_fvd")):
        if result.get(metric) is not None:
            log.info("  %-4s N=%5d  %12.5f  [%.5f, %.5f]", metric.upper(), result[n_key], result[metric],
                     result[metric + "_ci_low"], result[metric + "_ci_high"])
    log.info("  FID_inf %s; intensity map %s..%s (%s); clip mode %s; wall %s s", result.get("fid_inf"),
             result["intensity_lo"], result["intensity_hi"], source, args.clip_mode, result["wall_s"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
