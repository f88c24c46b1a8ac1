"""Speed of the BVDM sampler: continuous batching vs the original per-cell, batch-1 loop; or, with
``--scheduler``, the paper's ancestral DDPM vs diffusers' fast solvers (``generators.bvdm.solvers``).

**Samplers** (``--scheduler NAME`` repeatable; 'ddpm' always runs first as the baseline): on a FITTED model
(``--model DIR``, or the fit of ``--profile ci|cpu`` on GOWT1 01: the shipped ci fit works out of the box;
a profile whose fit is neither shipped nor cached is refused, nothing is fitted here), one mask video of
the real GOWT1 frame size and length is sampled; each sampler textures its first ``--frames`` frames and
prints its UNet evaluations, cell-steps per second, wall time, and the wall time of the whole GOWT1-sized
video: measured when ``--frames`` covers it, otherwise extrapolated from the measured rate (said so on the
line), and the ratio to 'ddpm'. All in one run on one machine, whose CPU model and flags come first.

    .venv/bin/python scripts/bench_bvdm_sampler.py --scheduler ddim --scheduler dpm-solver++ \
        --first-steps 25 --next-steps 2 --profile ci --frames 3

**Batching** (no ``--scheduler``):

Both drivers texture the SAME mask video (sampled from a ``MaskVideoModel`` fitted on the real
sequence, GOWT1-sized by default) with the same UNet, flow model, steps and device. Timing does not
depend on the weights, so without ``--generator-dir`` untrained models of the configured size are
used. The loop is slow: by default it runs for ``--loop-jobs`` cell-frames (whole tracks first, so
both 200-step starts and 10-step continuations are included) and its full time is extrapolated
from its measured cell-steps per second; ``--loop-jobs 0`` runs it to the end.

Also printed: the UNet's FLOPs per cell-step (``torch.utils.flop_counter``), the GFLOP/s each driver
reaches, and with ``--batch-sweep 1 8 32`` the UNet's own throughput per batch size: the ceiling any
batching can reach on this device is the best of those over batch 1.

Efficiency against the device, in the same run: the batched sampler runs in fp32 and, when
``--precision`` resolves to bf16 (``auto``: where the CPU has AVX512-BF16 or AMX, or a CUDA GPU bf16),
in bf16 too (``bf16/fp32 N.NNx``); the dense-matmul peak of each precision is measured here as well
(best of square GEMMs of 1024-4096), and the sampler's GFLOP/s is reported as a fraction of it. The
CPU model and flags are printed first: compare figures only within one run on one machine.

    .venv/bin/python scripts/bench_bvdm_sampler.py --frames 5 --loop-jobs 12
    .venv/bin/python scripts/bench_bvdm_sampler.py --precision auto --frames 3 --skip-loop   # GOWT1-sized
    .venv/bin/python scripts/bench_bvdm_sampler.py --precision auto --frames 3 --skip-loop \
        --dataset ../shared/assets/ctc/Fluo-N2DL-HeLa                                         # HeLa-sized
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.ctc import CTCSequence
from generators.bvdm.data import IntensityStats
from generators.bvdm.ddpm import DDPMConfig, TextureDDPM, build_unet, make_scheduler
from generators.bvdm.flow import MaskFlow
from generators.bvdm.generator import BVDMGenerator
from generators.bvdm.sampler import (
    SamplerConfig,
    cell_steps,
    per_cell_order,
    plan_jobs,
    sample_textures,
    sample_textures_per_cell,
    unet_evaluations,
)
from generators.bvdm.solvers import SCHEDULERS
from generators.masks.synth import MaskVideoConfig, MaskVideoModel
from generators.precision import PRECISIONS, cpu_description, resolve_precision


def _models(args: argparse.Namespace, crop: int) -> tuple[TextureDDPM, MaskFlow]:
    if args.generator_dir:
        generator = BVDMGenerator.load(args.generator_dir)
        return generator.ddpm, generator.flow
    torch.manual_seed(0)
    config = DDPMConfig(block_out_channels=tuple(args.channels), norm_num_groups=args.groups)
    stats = IntensityStats(scale=1.0, fill=-0.5)
    return TextureDDPM(build_unet(config, crop), make_scheduler(), stats), MaskFlow(crop).eval()


def unet_flops_per_sample(ddpm: TextureDDPM, crop: int) -> float:
    """FLOPs of one UNet evaluation of one crop (multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        ddpm.unet(torch.zeros(1, 1, crop, crop), torch.tensor([1]))
    return float(counter.get_total_flops())


def unet_throughput(ddpm: TextureDDPM, crop: int, batch: int, device: str, seconds: float = 5.0) -> float:
    """Cell-steps per second of bare UNet calls at one batch size (after one warm-up call)."""
    x = torch.randn(batch, 1, crop, crop, device=device)
    t = torch.full((batch,), 5, device=device)
    with torch.inference_mode():
        ddpm.unet(x, t)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            ddpm.unet(x, t)
            calls += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return calls * batch / (time.perf_counter() - start)


def matmul_peak(device: str, precision: str, seconds: float = 2.0) -> float:
    """Best GFLOP/s of square dense matmuls (n = 1024, 2048, 4096) in ``precision``: the device's practical peak."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = 0.0
    for n in (1024, 2048, 4096):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        a @ b
        calls, times = 0, []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 3:
            tick = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - tick)
            calls += 1
        best = max(best, 2 * n**3 / min(times) / 1e9)
    return best


def time_batched(video, ddpm: TextureDDPM, flow: MaskFlow, config: SamplerConfig, seed: int, device: str) -> float:
    """Seconds of one batched sampling of ``video`` (after a short warm-up of the same precision)."""
    warm = dataclasses.replace(config, t_first=2, t_next=1, first_steps=1, next_steps=1)
    sample_textures([dataclasses.replace(video, frames=video.frames[:1])], ddpm, flow, warm, seed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    sample_textures([video], ddpm, flow, config, seed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


GOWT1 = "Fluo-N2DH-GOWT1"


def fitted_bvdm(args: argparse.Namespace) -> BVDMGenerator:
    """``--model DIR``, else the fit of ``--profile`` (shipped or cached; refused when it would have to be fitted)."""
    if args.model:
        return BVDMGenerator.load(args.model)
    from benchmark.shipped import entries
    from generators.fit_cache import fit_folder, fit_key, fitted_generator, profile_fit_inputs

    params, seq = profile_fit_inputs(args.profile, GOWT1, "bvdm", data_root=str(Path(args.dataset).parent))
    key = fit_key(BVDMGenerator, params, seq)
    shipped = any(e.card.get("fit_key") == key for e in entries("fit"))
    if not (shipped or (fit_folder("bvdm", params, seq) / "config.json").is_file()):
        raise SystemExit(f"error: no shipped or cached bvdm fit of profile {args.profile!r} (key {key}): "
                         f"fit it first (python -m benchmark generate --profile {args.profile}) or pass --model DIR")
    return fitted_generator("bvdm", params, seq)


def compare_schedulers(args: argparse.Namespace) -> None:
    """The ``--scheduler`` mode (module docstring): one line per sampler, the ratio to 'ddpm' last."""
    from benchmark.machine import cpu_description, machine_class

    print(f"machine {machine_class()}: {cpu_description(torch.get_num_threads())}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""))
    generator = fitted_bvdm(args)
    real = CTCSequence(args.dataset, args.sequence)
    full = generator.mask_model.sample(real.n_frames, real.frame_shape, np.random.default_rng(args.seed))
    short = dataclasses.replace(full, frames=full.frames[: args.frames])
    base = dataclasses.replace(generator.config.sampling, device=args.device, max_batch=args.max_batch,
                               t_first=args.t_first or generator.config.sampling.t_first,
                               t_next=generator.config.sampling.t_next if args.t_next is None else args.t_next)
    measured = len(short) >= len(full)
    how = "measured" if measured else f"extrapolated from {len(short)} of {len(full)} frames"
    print(f"GOWT1-sized video: {full.shape} x {len(full)} frames, {sum(map(len, full.frames))} cell-frames; "
          f"timed on its first {len(short)} frames ({sum(map(len, short.frames))} cell-frames); "
          f"t_first {base.t_first}, t_next {base.t_next}, max_batch {base.max_batch}, precision {base.precision}")
    rows: list[dict[str, float | str]] = []
    for name in dict.fromkeys(("ddpm", *args.scheduler)):
        config = dataclasses.replace(base, scheduler=name, first_steps=args.first_steps, next_steps=args.next_steps)
        seconds = time_batched(short, generator.ddpm, generator.flow, config, args.seed, args.device)
        evals = unet_evaluations(plan_jobs([short], config, args.seed, generator.ddpm.crop_size), config)
        full_evals = unet_evaluations(plan_jobs([full], config, args.seed, generator.ddpm.crop_size), config)
        rate = evals / seconds
        rows.append({"scheduler": name, "unet_evaluations": evals, "cell_steps_per_s": rate, "wall_s": seconds,
                     "video_unet_evaluations": full_evals, "video_wall_s": seconds if measured else full_evals / rate,
                     "video_timing": how})
        steps = "" if name == "ddpm" else f" ({args.first_steps} first / {args.next_steps} next steps)"
        print(f"{name:>13}{steps}: {evals} UNet evaluations in {seconds:.1f} s = {rate:.1f} cell-steps/s; GOWT1-sized "
              f"video {full_evals} evaluations, {rows[-1]['video_wall_s']:.0f} s ({how}); "
              f"{rows[0]['video_wall_s'] / rows[-1]['video_wall_s']:.2f}x faster than ddpm")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine_class": machine_class(), "cpu": cpu_description(),
                                               "device": args.device, "samplers": rows}, indent=1))


# a measurement script's main: arguments, the machine line, then the measured sequence in the order it runs
def main() -> None:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", action="append", choices=SCHEDULERS, default=[],
                        help="compare this sampler with ddpm on a fitted model (repeatable)")
    parser.add_argument("--first-steps", type=int, default=SamplerConfig.first_steps,
                        help="fast solvers: UNet evaluations of a track's first frame")
    parser.add_argument("--next-steps", type=int, default=SamplerConfig.next_steps,
                        help="fast solvers: UNet evaluations of a later frame")
    fit = parser.add_mutually_exclusive_group()
    fit.add_argument("--model", default=None, help="--scheduler: a saved BVDMGenerator folder")
    fit.add_argument("--profile", default="ci", choices=("ci", "cpu"), help="--scheduler: the fit of this profile")
    parser.add_argument("--dataset", default="../shared/assets/ctc/Fluo-N2DH-GOWT1")
    parser.add_argument("--sequence", default="01")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--generator-dir", default=None, help="a saved BVDMGenerator (else untrained models)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 64])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--t-first", type=int, default=None, help="default 200 (--scheduler: the fit's)")
    parser.add_argument("--t-next", type=int, default=None, help="default 10 (--scheduler: the fit's)")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--loop-jobs", type=int, default=12, help="cell-frames of the loop to time (0 = all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="sampler precision; bf16 (or auto resolving to it) also times fp32 for the ratio")
    parser.add_argument("--skip-loop", action="store_true", help="do not time the per-cell loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sweep", type=int, nargs="*", default=[], help="UNet-only throughput at these batch sizes")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.scheduler:
        compare_schedulers(args)
        return
    args.t_first = 200 if args.t_first is None else args.t_first
    args.t_next = 10 if args.t_next is None else args.t_next
    print(f"device {args.device}: {cpu_description() if args.device == 'cpu' else torch.cuda.get_device_name(0)}")

    seq = CTCSequence(args.dataset, args.sequence)
    if args.generator_dir:
        mask_model = BVDMGenerator.load(args.generator_dir).mask_model
    else:
        mask_model = MaskVideoModel.fit(seq, config=MaskVideoConfig(max_fit_frames=10))
    video = mask_model.sample(args.frames, None, np.random.default_rng(args.seed))
    ddpm, flow = _models(args, mask_model.crop_size)
    config = SamplerConfig(t_first=args.t_first, t_next=args.t_next, max_batch=args.max_batch, device=args.device)
    jobs = plan_jobs([video], config, args.seed, mask_model.crop_size)
    total_steps = cell_steps(jobs)
    cells = [len(f) for f in video.frames]
    print(f"video {video.shape} x {len(video)} frames, {mask_model.crop_size}-px crops, cells/frame "
          f"{min(cells)}-{max(cells)} (mean {np.mean(cells):.1f}), {len(jobs)} cell-frames, {total_steps} cell-steps, "
          f"UNet {sum(p.numel() for p in ddpm.unet.parameters()) / 1e6:.2f} M params, device {args.device}")

    flops = unet_flops_per_sample(ddpm.to(args.device), mask_model.crop_size)
    print(f"UNet: {flops / 1e9:.3f} GFLOP per cell-step")
    sweep = {}
    for batch in args.batch_sweep:
        sweep[batch] = unet_throughput(ddpm, mask_model.crop_size, batch, args.device)
        print(f"UNet alone, batch {batch:3d}: {sweep[batch]:7.1f} cell-steps/s = {sweep[batch] * flops / 1e9:6.1f} GFLOP/s")
    if sweep:
        base = sweep.get(1)
        if base:
            print(f"batching ceiling on this device (best / batch 1): {max(sweep.values()) / base:.2f}x")

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    precision = resolve_precision(args.precision, args.device)
    efficiency = {}
    for name in dict.fromkeys(("fp32", precision)):
        peak = matmul_peak(args.device, name)
        seconds = time_batched(video, ddpm, flow, dataclasses.replace(config, precision=name), args.seed, args.device)
        rate = total_steps / seconds
        efficiency[name] = {"batched_s": seconds, "cell_steps_per_s": rate, "gflops": rate * flops / 1e9,
                            "peak_gflops": peak, "fraction_of_peak": rate * flops / 1e9 / peak}
        print(f"batched {name}: {seconds:.1f} s, {rate:.1f} cell-steps/s = {rate * flops / 1e9:.1f} GFLOP/s; "
              f"dense {name} matmul peak {peak:.1f} GFLOP/s; sampler at {100 * rate * flops / 1e9 / peak:.0f} % of it")
    if "bf16" in efficiency:
        print(f"bf16/fp32 {efficiency['fp32']['batched_s'] / efficiency['bf16']['batched_s']:.2f}x "
              "(batched sampler, same video, same run)")
    batched_s = efficiency[precision]["batched_s"]
    config = dataclasses.replace(config, precision=precision)
    if args.skip_loop:
        _write_json(args, video, jobs, total_steps, flops, sweep, efficiency, precision, None)
        return

    limit = args.loop_jobs or None
    timed_steps = sum(j.t_start for j in per_cell_order(jobs)[: limit or len(jobs)])
    sync()
    start = time.perf_counter()
    sample_textures_per_cell([video], ddpm, flow, config, args.seed, max_jobs=limit)
    sync()
    loop_s = time.perf_counter() - start
    loop_rate = timed_steps / loop_s
    loop_full = total_steps / loop_rate
    kind = "measured" if limit is None or limit >= len(jobs) else f"extrapolated from {limit} cell-frames / {timed_steps} cell-steps"
    print(f"per-cell loop: {loop_s:.1f} s for {timed_steps} cell-steps, {loop_rate:.1f} cell-steps/s "
          f"= {loop_rate * flops / 1e9:.1f} GFLOP/s; "
          f"full video {loop_full:.1f} s ({kind})")
    print(f"speed-up batched / per-cell loop ({precision}): {loop_full / batched_s:.2f}x")
    loop = {"loop_cell_steps_per_s": loop_rate, "loop_full_s": loop_full, "loop_timing": kind,
            "speedup": loop_full / batched_s}
    _write_json(args, video, jobs, total_steps, flops, sweep, efficiency, precision, loop)


def _write_json(args, video, jobs, total_steps, flops, sweep, efficiency, precision, loop) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": args.device, "cpu": cpu_description(), "precision": precision, "frames": len(video),
            "frame_shape": list(video.shape), "cell_frames": len(jobs), "cell_steps": total_steps,
            "unet_gflop_per_cell_step": flops / 1e9, "unet_cell_steps_per_s_by_batch": sweep,
            "efficiency": efficiency, **(loop or {})}, indent=1))


if __name__ == "__main__":
    main()
