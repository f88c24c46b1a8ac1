"""Speed of BVDM training, fp32 vs bf16, and the wall time of the paper's budget it implies.

Runs the real training loops on ``--device`` (CUDA when present): ``train_ddpm`` (UNet step + RAdam +
EMA) and ``train_flow`` (VoxelMorph step + Adam), for a few iterations at the paper's batch size on crops of
the dataset's crop size
(``crop_size_for``: 128 px GOWT1, 96 px HeLa), in fp32 and in the resolved ``--precision``, and prints
iterations/s, the bf16/fp32 ratio and the projected wall time of the paper-budget fit (DDPM 32 x 10 000,
flow 32 x 2 000). Step time does not depend on the pixel values, so the crops are random. The CPU model
and flags are printed first: compare figures only within one run on one machine.

    .venv/bin/python scripts/bench_bvdm_train.py --precision auto
    .venv/bin/python scripts/bench_bvdm_train.py --precision auto --dataset ../shared/assets/ctc/Fluo-N2DL-HeLa
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import crop_size_for
from generators.bvdm.data import IntensityStats
from generators.bvdm.ddpm import DDPMConfig, train_ddpm
from generators.bvdm.flow import FlowConfig, train_flow
from generators.precision import PRECISIONS, cpu_description, resolve_precision

logger = logging.getLogger("bench_bvdm_train")


def _median_step(stamps: list[float]) -> float:
    """Median seconds between step callbacks, the first three steps (warm-up) left out."""
    return float(np.median(np.diff(stamps[2:])))


def ddpm_seconds_per_iteration(crops: np.ndarray, batch: int, iterations: int, precision: str, device: str) -> float:
    stamps: list[float] = []
    config = DDPMConfig(batch_size=batch, iterations=iterations + 3, checkpoint_every=0, precision=precision)
    train_ddpm(crops, IntensityStats(scale=1.0, fill=-0.5), config, device,
               callback=lambda step, loss: stamps.append(time.perf_counter()))  # loss.item() syncs CUDA
    return _median_step(stamps)


def flow_seconds_per_iteration(pairs: np.ndarray, batch: int, iterations: int, precision: str, device: str) -> float:
    stamps: list[float] = []
    train_flow(pairs, FlowConfig(batch_size=batch, iterations=iterations + 3, precision=precision), device,
               callback=lambda step, loss: stamps.append(time.perf_counter()))
    return _median_step(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/assets/ctc/Fluo-N2DH-GOWT1")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--batch", type=int, default=32, help="paper: 32 for both models")
    parser.add_argument("--iterations", type=int, default=12, help="timed iterations per model and precision")
    parser.add_argument("--ddpm-budget", type=int, default=10_000)
    parser.add_argument("--flow-budget", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    size = crop_size_for(CTCSequence(args.dataset, "01"))
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(256, size, size)).astype(np.float32)
    pairs = rng.random((256, 2, size, size)) > 0.5
    print(f"cpu: {cpu_description()}; device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""))
    print(f"{Path(args.dataset).name}: {size}-px crops, batch {args.batch}, {args.iterations} timed iterations each")
    chosen = resolve_precision(args.precision, args.device)
    rows = {}
    for precision in dict.fromkeys(("fp32", chosen)):
        ddpm = ddpm_seconds_per_iteration(crops, args.batch, args.iterations, precision, args.device)
        flow = flow_seconds_per_iteration(pairs, args.batch, args.iterations, precision, args.device)
        wall = args.ddpm_budget * ddpm + args.flow_budget * flow
        rows[precision] = {"ddpm_s_per_it": ddpm, "flow_s_per_it": flow, "paper_budget_min": wall / 60}
        print(f"{precision}: DDPM {1 / ddpm:.2f} it/s ({ddpm:.2f} s/it), flow {1 / flow:.2f} it/s ({flow:.2f} s/it); "
              f"paper budget (DDPM {args.ddpm_budget} + flow {args.flow_budget} its) {wall / 60:.0f} min")
    if "bf16" in rows:
        print(f"bf16/fp32 DDPM {rows['fp32']['ddpm_s_per_it'] / rows['bf16']['ddpm_s_per_it']:.2f}x, "
              f"flow {rows['fp32']['flow_s_per_it'] / rows['bf16']['flow_s_per_it']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "device": args.device, "crop_size": size,
                                               "batch": args.batch,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
