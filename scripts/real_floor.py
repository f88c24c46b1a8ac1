"""Real-vs-real floor (sequence 01 vs 02 of one dataset) for FID, KID, FVD, KVD with 95% cluster-bootstrap CIs.

Usage: .venv/bin/python scripts/real_floor.py [--dataset ../shared/assets/ctc/Fluo-N2DH-GOWT1]
       [--n-bootstrap 200] [--threads 2] [--max-crops N] [--max-clips N] [--json out.json]
Features are cached (``$SYNTHVID_CACHE``), so a rerun only redoes the statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmark.metrics.realism import RealismConfig, real_floor

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared/assets/ctc/Fluo-N2DH-GOWT1"))
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fvd", action="store_true")
    parser.add_argument("--max-crops", type=int, help="cap per sequence (default: all crops)")
    parser.add_argument("--max-clips", type=int, help="cap per sequence (default: all clips)")
    parser.add_argument("--json", help="also write the result dict here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    config = RealismConfig(n_bootstrap=args.n_bootstrap, fvd=not args.no_fvd, max_crops=args.max_crops,
                           max_clips=args.max_clips)
    result = real_floor(args.dataset, config)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"real-vs-real floor, {args.dataset} 01 vs 02 (B={args.n_bootstrap}, 95% cluster-bootstrap CI)")
    for metric, n_key in (("fid", "n_fid"), ("kid", "n_fid"), ("fvd", "n_fvd"), ("kvd", "n_fvd")):
        if metric in result and result[metric] is not None:
            print(f"  {metric.upper():4s} N={result[n_key]:5d}  {result[metric]:12.5f}  "
                  f"[{result[metric + '_ci_low']:.5f}, {result[metric + '_ci_high']:.5f}]")
    print(f"  intensity lo/hi {result['intensity_lo']}/{result['intensity_hi']}; "
          f"fvd rank-deficient: {result.get('fvd_rank_deficient')}; wall {result['wall_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
