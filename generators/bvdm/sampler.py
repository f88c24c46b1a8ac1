"""BVDM inference: textures for every cell of every frame of one or more mask videos.

Per cell-frame (a *job*), as in the paper: a track's first frame starts from its bare mask (filled
with the mean nucleus intensity; ``start='field'``: plus a Gaussian random field with the real
crops' spectrum, see ``start_field``) forward-noised to ``t_first - 1`` and denoised to 0 (SDEdit); a later
frame warps the cell's previous textured output with the VoxelMorph flow from its previous to its
current mask, sets it to background outside the current mask, re-noises to ``t_next - 1`` and
denoises. ``t_next >= t_first`` makes every frame independent (a fresh SDEdit from the mask).

Iterated warp + shallow re-noise + denoise is a Markov chain with no pull back to the data: each
pass shifts the in-mask mean a little (bilinear resampling blurs, an imperfect DDPM is biased), and
the shifts add up along a track (GOWT1 ``cpu`` model, ``scripts/bvdm_track_drift.py``: a cell's
mean grey value fell to 0.72 of its first frame's after 39 frames; real nuclei: 1.03).
``anchor_stats`` (ours, on by default) re-centres each warped texture on the in-mask mean and spread
of its track's first textured frame (a daughter inherits her mother's anchor) before re-noising,
which removes the drift (0.99 after 39 frames) and leaves the texture pattern alone.

Two drivers produce the same textures for the same seed:

* ``sample_textures`` - **continuous batching**: jobs whose input exists (a new track, or a cell
  whose previous frame is finished) join one running batch, up to ``max_batch``, across cells, frames
  and videos; every iteration is ONE UNet call with per-sample timesteps, so a new track's 200-step
  start and other cells' 10-step continuations share calls, and a cell never waits for its frame.
  The update is ``ancestral_step``: the diffusers ``DDPMScheduler.step`` formula evaluated per sample
  from the scheduler's own ``alphas_cumprod`` (``step`` itself takes one scalar t). The equivalence
  with ``step`` for a uniform batch is a test.
* ``sample_textures_per_cell`` - the original procedure: cell by cell, frame by frame, batch 1,
  diffusers ``scheduler.step``: the baseline of the speed benchmark.

Sampler (``scheduler``): 'ddpm' is the paper's ancestral chain above, one step per timestep, and the
default. 'ddim' and 'dpm-solver++' are diffusers' fast solvers (``generators.bvdm.solvers``): each job gets
its own scheduler, evaluates the UNet ``first_steps`` (a track's first frame) or ``next_steps`` (a later
frame) times on a sub-schedule from its noised start to the clean texture, and steps alone after the shared
batched UNet call. ``sample_textures_per_cell`` stays 'ddpm' only.

Randomness is per job: a ``torch.Generator`` seeded from (seed, video, label, frame) draws the start
noise and then each step's noise in step order, so results do not depend on how jobs are batched;
they differ between drivers only by floating-point effects of batched convolutions.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from benchmark import mutants
from generators.bvdm.data import BACKGROUND
from generators.bvdm.ddpm import TextureDDPM
from generators.bvdm.flow import MaskFlow
from generators.bvdm.solvers import SolverTrack, check_solver, make_track
from generators.masks.video import MaskVideo
from generators.precision import autocast, check_precision, memory_format, resolve_precision

JobKey = tuple[int, int, int]  # (video, frame, index of the cell in that frame's list)


@dataclass
class SamplerConfig:
    """``t_first``/``t_next``: SDEdit depth of a track's first / later frames (paper 200 / 10).

    ``daughters_inherit``: a daughter starts from its mother's last texture warped into its mask
    (False: restart from the bare mask with ``t_first`` steps, as the original). ``warp_mode``:
    'bilinear' (ours) or 'nearest' (original). ``fill_holes``: pixels of the new mask that the warped
    previous mask does not cover get the cell's mean texture value instead of background.
    ``precision``: the UNet's arithmetic, 'fp32', 'bf16' or 'auto' (bf16 where the device has native
    bf16: CUDA >= sm80, AVX512-BF16 or AMX CPUs; ``generators.precision``). bf16 rounds differently, so a
    run's output depends on the resolved precision; fp32 is the default for that reason.
    ``cpu_chunk``: on CPU the UNet runs the batch in chunks of this many crops (large batches of
    128-px activations fall out of cache and run slower per sample than small ones).
    ``anchor_stats``: re-centre a warped texture on its track's first-frame in-mask mean before
    re-noising (False: the paper's procedure, which drifts; see the module doc); ``anchor_spread``:
    also rescale its in-mask standard deviation to the first frame's.
    ``start``: a new track's SDEdit start inside its mask: 'flat' (the fill value, the paper's) or
    'field' (fill + a random field with the training crops' spectrum, ``IntensityStats.start_spectrum``):
    a flat start at t = 200 pins every structure coarser than ~8 px to the flat fill.
    ``scheduler``: 'ddpm' (the paper's ancestral chain: ``t_first`` / ``t_next`` UNet evaluations), 'ddim' or
    'dpm-solver++' (diffusers' solvers, ``generators.bvdm.solvers``); ``first_steps`` / ``next_steps``: the
    fast solvers' UNet evaluations for a track's first frame (from ``t_first``) and for a later frame (from
    ``t_next``), at most that depth; 'ddpm' ignores both. ``t_next = 0`` takes no step with any scheduler.
    """

    #: the table these fields are read from, named in validation errors
    section: ClassVar[str] = "sampler"

    t_first: int = 200
    t_next: int = 10
    daughters_inherit: bool = True
    max_batch: int = 64
    warp_mode: str = "bilinear"
    fill_holes: bool = True
    precision: str = "fp32"
    device: str = "cpu"
    cpu_chunk: int = 8
    anchor_stats: bool = True
    anchor_spread: bool = True
    start: str = "flat"
    scheduler: str = "ddpm"
    first_steps: int = 25
    next_steps: int = 2

    def __post_init__(self) -> None:
        check_precision(self.precision, "sampling precision")
        check_solver(self.scheduler, self.first_steps, self.next_steps, self.t_first, self.t_next, self.section)


START_MODES = ("flat", "field")


@dataclass
class Job:
    key: JobKey
    label: int
    mask: np.ndarray
    source: JobKey | None
    t_start: int
    generator: torch.Generator
    x: torch.Tensor | None = field(default=None, repr=False)
    k: int = 0
    anchor: tuple[float, float] | None = None  # in-mask (mean, std) of the track's first textured frame
    solver: SolverTrack | None = field(default=None, repr=False)  # a fast solver's own state; None: ddpm

    def finish(self, x: torch.Tensor) -> None:
        """Record the finished texture's in-mask statistics if this job starts a track."""
        if self.anchor is None:
            values = x[0, 0][torch.from_numpy(self.mask).to(x.device)]
            self.anchor = (float(values.mean()), float(values.std())) if values.numel() > 1 else None
        self.x = None


def job_generator(seed: int, video: int, label: int, frame: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, video, label, frame]).generate_state(2, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def plan_jobs(videos: Sequence[MaskVideo], config: SamplerConfig, seed: int, crop_size: int) -> dict[JobKey, Job]:
    """One job per cell and frame with its texture source (own previous frame, or the mother's last)."""
    if config.t_first < 1 or config.t_next < 0:
        raise ValueError(f"t_first must be >= 1 and t_next >= 0 (got {config.t_first}, {config.t_next})")
    if config.start not in START_MODES:
        raise ValueError(f"start {config.start!r}: use one of {START_MODES}")
    independent = config.t_next >= config.t_first
    jobs: dict[JobKey, Job] = {}
    for v, video in enumerate(videos):
        if video.crop_size != crop_size:
            raise ValueError(f"mask video {v} has {video.crop_size}-px crops but the DDPM was trained on {crop_size}-px crops")
        last_seen: dict[int, JobKey] = {}
        for f, cells in enumerate(video.frames):
            for i, cell in enumerate(cells):
                source = last_seen.get(cell.label)
                parent = video.parents.get(cell.label, 0)
                if source is None and config.daughters_inherit and parent:
                    source = last_seen.get(parent)
                if independent:
                    source = None
                key = (v, f, i)
                jobs[key] = Job(key, cell.label, np.asarray(cell.crop, bool), source,
                                config.t_first if source is None else config.t_next,
                                job_generator(seed, v, cell.label, f))
            for i, cell in enumerate(cells):
                last_seen[cell.label] = (v, f, i)
    return jobs


def ancestral_step(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   scheduler: DDPMScheduler) -> torch.Tensor:
    """``DDPMScheduler.step`` (epsilon prediction, no clipping, full 1000-step chain) with per-sample ``t``.

    ``x``, ``eps``, ``noise``: (B, C, H, W); ``t``: (B,) long; no noise is added where t == 0.
    """
    if scheduler.config.prediction_type != "epsilon" or scheduler.config.clip_sample or scheduler.config.thresholding:
        raise ValueError("ancestral_step supports epsilon prediction without clipping/thresholding only")
    variance_type = scheduler.config.variance_type
    if variance_type not in ("fixed_large", "fixed_small"):
        raise ValueError(f"ancestral_step: variance_type {variance_type!r} not supported")
    cumprod = scheduler.alphas_cumprod.to(x.device)
    t = t.to(x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)
    alpha_prod_t = cumprod[t].view(shape)
    alpha_prod_prev = torch.where(t > 0, cumprod[(t - 1).clamp(min=0)], torch.ones_like(cumprod[t])).view(shape)
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_prev = 1 - alpha_prod_prev
    current_alpha = alpha_prod_t / alpha_prod_prev
    current_beta = 1 - current_alpha
    x0 = (x - beta_prod_t ** (0.5) * eps) / alpha_prod_t ** (0.5)
    mean = (alpha_prod_prev ** (0.5) * current_beta) / beta_prod_t * x0 + current_alpha ** (0.5) * beta_prod_prev / beta_prod_t * x
    if variance_type == "fixed_large":
        variance = current_beta
    else:
        variance = torch.clamp(beta_prod_prev / beta_prod_t * current_beta, min=1e-20)
    std = torch.where(t.view(shape) > 0, variance ** 0.5, torch.zeros_like(variance))
    return mean + std * noise


def prepare_models(ddpm: TextureDDPM, flow: MaskFlow | None, config: SamplerConfig) -> SamplerConfig:
    """Put the models on the config's device (the UNet in its precision's layout); returns the config with
    ``precision`` resolved to 'fp32' or 'bf16' for this device."""
    device = torch.device(config.device)
    precision = resolve_precision(config.precision, device)
    ddpm.to(device, memory_format(precision, device))
    if flow is not None:
        flow.to(device).eval()
    return replace(config, precision=precision)


def predict_eps(ddpm: TextureDDPM, x: torch.Tensor, t: torch.Tensor, config: SamplerConfig) -> torch.Tensor:
    """The UNet's noise prediction in fp32, evaluated in ``config.precision`` (resolved) and CPU-sized chunks."""
    t = t.to(x.device)
    chunk = config.cpu_chunk if x.device.type == "cpu" and config.cpu_chunk > 0 else len(x)
    layout = memory_format(config.precision, x.device)
    with torch.inference_mode(), autocast(config.precision, x.device):
        return torch.cat([ddpm.unet(x[i : i + chunk].contiguous(memory_format=layout), t[i : i + chunk]).sample.float()
                          for i in range(0, len(x), chunk)])


def prepare_jobs(jobs: Sequence[Job], outputs: dict[JobKey, torch.Tensor], all_jobs: dict[JobKey, Job],
                 ddpm: TextureDDPM, flow: MaskFlow | None, config: SamplerConfig, device: torch.device) -> None:
    """Build each job's start ``x`` (noised to ``t_start - 1``) in one batch: bare masks and warped textures."""
    fill = ddpm.stats.fill
    masks = torch.from_numpy(np.stack([j.mask for j in jobs]).astype(np.float32))[:, None].to(device)
    x0 = torch.where(masks > 0.5, torch.full_like(masks, fill), torch.full_like(masks, BACKGROUND))
    if config.start == "field":
        for i, job in enumerate(jobs):
            if job.source is None:
                field = start_field(ddpm.stats.start_spectrum, job.mask.shape[-1], job.generator).to(device)
                x0[i, 0] = torch.where(masks[i, 0] > 0.5, fill + field, x0[i, 0])
    warped_idx = [i for i, j in enumerate(jobs) if j.source is not None]
    if warped_idx:
        if flow is None:
            raise ValueError("continuing tracks need the flow model (or set t_next >= t_first)")
        cur = masks[warped_idx]
        prev_mask = torch.from_numpy(np.stack([all_jobs[jobs[i].source].mask for i in warped_idx]).astype(np.float32))
        prev_mask = prev_mask[:, None].to(device)
        prev_tex = torch.cat([outputs[jobs[i].source] for i in warped_idx])
        with torch.inference_mode():
            disp = flow.flow(prev_mask, cur)
            tex = flow.warp(prev_tex, disp, config.warp_mode, fill=BACKGROUND)
            covered = flow.warp(prev_mask, disp, "bilinear") > 0.5
        inside = cur > 0.5
        tex = torch.where(inside, tex, torch.full_like(tex, BACKGROUND))
        if config.fill_holes:
            known = inside & covered
            count = known.sum(dim=(1, 2, 3), keepdim=True)
            mean = (tex * known).sum(dim=(1, 2, 3), keepdim=True) / count.clamp(min=1)
            mean = torch.where(count > 0, mean, torch.full_like(mean, fill))
            tex = torch.where(inside & ~covered, mean.expand_as(tex), tex)
        for i in warped_idx:  # a continuing track (or a daughter) keeps its source's anchor
            jobs[i].anchor = all_jobs[jobs[i].source].anchor
        if config.anchor_stats:
            tex = anchor_to(tex, inside, [jobs[i].anchor for i in warped_idx], rescale=config.anchor_spread)
        if not mutants.active("bvdm-no-flow"):  # the gate's injected regression drops the carried texture
            x0[warped_idx] = tex
    scheduler = ddpm.scheduler
    for i, job in enumerate(jobs):
        noise = torch.randn((1, 1) + job.mask.shape, generator=job.generator).to(device)
        job.k = job.t_start - 1
        start = x0[i : i + 1]
        job.x = scheduler.add_noise(start, noise, torch.tensor([job.k], device=device)) if job.k >= 0 else start


def start_field(spectrum: Sequence[float], size: int, generator: torch.Generator) -> torch.Tensor:
    """(S, S) zero-mean Gaussian random field with the radial amplitude ``spectrum`` (per integer FFT bin),
    from white noise drawn with the job's own generator (so batching does not change it)."""
    white = torch.randn((size, size), generator=generator, dtype=torch.float64)
    if not len(spectrum):
        return torch.zeros((size, size), dtype=torch.float32)
    freq = torch.fft.fftfreq(size, dtype=torch.float64) * size
    radius = torch.round(torch.hypot(freq[:, None], freq[None, :])).long()
    table = torch.tensor(list(spectrum) + [0.0], dtype=torch.float64)
    amplitude = table[radius.clamp(max=len(spectrum))]
    return torch.fft.ifft2(torch.fft.fft2(white) * amplitude).real.float()


def anchor_to(tex: torch.Tensor, inside: torch.Tensor, anchors: Sequence[tuple[float, float] | None],
              rescale: bool = True, max_gain: float = 2.0) -> torch.Tensor:
    """Shift each texture's in-mask values to its anchor's mean (``rescale``: and std); outside unchanged.

    ``tex``, ``inside``: (B, 1, S, S); the std ratio is clamped to [1 / max_gain, max_gain] so a
    nearly flat warped texture is not blown up into noise. ``None`` anchors are left as they are.
    """
    out = tex.clone()
    for b, anchor in enumerate(anchors):
        mask = inside[b]
        values = tex[b][mask]
        if anchor is None or values.numel() < 2:
            continue
        mean, std = values.mean(), values.std()
        gain = (anchor[1] / std.clamp(min=1e-6)).clamp(1 / max_gain, max_gain) if rescale else 1.0
        out[b][mask] = (values - mean) * gain + anchor[0]
    return out


def _nest(videos: Sequence[MaskVideo], textures: dict[JobKey, np.ndarray]) -> list[list[list[np.ndarray]]]:
    return [[[textures[(v, f, i)] for i in range(len(cells))] for f, cells in enumerate(video.frames)]
            for v, video in enumerate(videos)]


def cell_steps(jobs: dict[JobKey, Job]) -> int:
    """UNet evaluations (one cell, one denoising step each) the jobs need with the 'ddpm' sampler."""
    return sum(j.t_start for j in jobs.values())


def job_evaluations(job: Job, config: SamplerConfig) -> int:
    """UNet evaluations of one job under ``config.scheduler``: its depth for 'ddpm', else its step count."""
    if config.scheduler == "ddpm" or job.t_start == 0:
        return job.t_start
    return config.first_steps if job.source is None else config.next_steps


def unet_evaluations(jobs: dict[JobKey, Job], config: SamplerConfig) -> int:
    """Cell-steps (one cell, one UNet evaluation) the jobs need under ``config.scheduler``."""
    return sum(job_evaluations(j, config) for j in jobs.values())


def attach_solver(job: Job, ddpm: TextureDDPM, config: SamplerConfig) -> None:
    """Give a prepared job (noised to ``job.k``) its own fast solver; 'ddpm' jobs and jobs without steps keep none."""
    if config.scheduler == "ddpm" or job.k < 0:
        return
    job.solver = make_track(config.scheduler, ddpm.scheduler.config, job.t_start, job_evaluations(job, config))
    if job.solver.t != job.k:
        raise AssertionError(f"solver starts at t={job.solver.t}, the job is noised to t={job.k}")


def solver_update(running: Sequence[Job], x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Each job's own scheduler step on its own sample, after the shared UNet call; ``job.k`` follows."""
    out = []
    for i, job in enumerate(running):
        out.append(job.solver.step(eps[i : i + 1], x[i : i + 1], job.generator))
        job.k = job.solver.t + 1  # the loop's ``k -= 1`` then leaves it at the next timestep (-1: done)
    return torch.cat(out)


# one batched state machine over every cell-frame job (ready queue, prepare, one UNet call per
# batch, solver or ancestral step, finish): kept whole so the order of its RNG draws, which fixes the output of a
# seed, stays visible in one place
def sample_textures(videos: Sequence[MaskVideo], ddpm: TextureDDPM, flow: MaskFlow | None, config: SamplerConfig,  # noqa: C901, PLR0912
                    seed: int = 0, progress: bool = False) -> list[list[list[np.ndarray]]]:
    """Batched sampler: ``textures[v][f][i]`` (S, S) float32 normalised, for ``videos[v].frames[f][i]``."""
    device = torch.device(config.device)
    config = prepare_models(ddpm, flow, config)
    jobs = plan_jobs(videos, config, seed, ddpm.crop_size)
    dependents: dict[JobKey, list[JobKey]] = defaultdict(list)
    ready: list[JobKey] = []
    for key, job in jobs.items():
        if job.source is None:
            ready.append(key)
        else:
            dependents[job.source].append(key)
    heapq.heapify(ready)
    outputs: dict[JobKey, torch.Tensor] = {}
    uses = {key: len(dependents[key]) for key in jobs}
    textures: dict[JobKey, np.ndarray] = {}
    running: list[Job] = []
    bar = tqdm(total=unet_evaluations(jobs, config), desc="BVDM sampling (cell-steps)", disable=not progress,
               leave=False)

    def finish(job: Job) -> None:
        textures[job.key] = job.x[0, 0].float().cpu().numpy()
        if uses[job.key]:
            outputs[job.key] = job.x
        for key in dependents[job.key]:
            heapq.heappush(ready, key)
        job.finish(job.x)

    while ready or running:
        admitted = []
        while ready and len(running) + len(admitted) < config.max_batch:
            admitted.append(jobs[heapq.heappop(ready)])
        if admitted:
            prepare_jobs(admitted, outputs, jobs, ddpm, flow, config, device)
            for job in admitted:
                attach_solver(job, ddpm, config)
                if job.source is not None:
                    uses[job.source] -= 1
                    if not uses[job.source]:
                        outputs.pop(job.source, None)
                if job.k < 0:
                    finish(job)
                else:
                    running.append(job)
        if not running:
            continue
        x = torch.cat([j.x for j in running])
        t = torch.tensor([j.k for j in running], dtype=torch.long)
        eps = predict_eps(ddpm, x, t, config)
        if config.scheduler == "ddpm":
            noise = torch.cat([torch.randn((1,) + tuple(x.shape[1:]), generator=j.generator) if j.k > 0
                               else torch.zeros((1,) + tuple(x.shape[1:])) for j in running]).to(device)
            x = ancestral_step(x, eps, t, noise, ddpm.scheduler)
        else:
            x = solver_update(running, x, eps)
        bar.update(len(running))
        still = []
        for i, job in enumerate(running):
            job.x = x[i : i + 1]
            job.k -= 1
            if job.k < 0:
                finish(job)
            else:
                still.append(job)
        running = still
    bar.close()
    return _nest(videos, textures)


def per_cell_order(jobs: dict[JobKey, Job]) -> list[Job]:
    """The original order: video by video, track by track (by first frame, then label), frame by frame."""
    tracks: dict[tuple[int, int], list[Job]] = defaultdict(list)
    for key, job in jobs.items():
        tracks[(key[0], job.label)].append(job)
    ordered = sorted(tracks.values(), key=lambda js: (js[0].key[0], js[0].key[1], js[0].label))
    return [job for track in ordered for job in track]


def sample_textures_per_cell(videos: Sequence[MaskVideo], ddpm: TextureDDPM, flow: MaskFlow | None,
                             config: SamplerConfig, seed: int = 0, progress: bool = False,
                             max_jobs: int | None = None) -> list[list[list[np.ndarray]]]:
    """The original procedure: track by track, frame by frame, batch 1, ``DDPMScheduler.step``.

    ``max_jobs`` stops after that many cell-frames (for timing a slow loop); missing textures are None.
    The baseline of the batching benchmark only: 'ddpm' only (fast solvers run in ``sample_textures``).
    """
    if config.scheduler != "ddpm":
        raise ValueError(f"the per-cell loop samples with 'ddpm' only, not {config.scheduler!r}: use sample_textures")
    device = torch.device(config.device)
    config = prepare_models(ddpm, flow, config)
    scheduler = DDPMScheduler.from_config(ddpm.scheduler.config)  # fresh: full 1000-step chain, prev_t = t - 1
    jobs = plan_jobs(videos, config, seed, ddpm.crop_size)
    outputs: dict[JobKey, torch.Tensor] = {}
    textures: dict[JobKey, np.ndarray] = {}
    bar = tqdm(total=cell_steps(jobs), desc="BVDM per-cell loop (cell-steps)", disable=not progress, leave=False)
    for job in per_cell_order(jobs)[:max_jobs]:
        prepare_jobs([job], outputs, jobs, ddpm, flow, config, device)
        x = job.x
        for k in range(job.k, -1, -1):
            eps = predict_eps(ddpm, x, torch.tensor([k]), config)
            x = scheduler.step(eps, k, x, generator=job.generator).prev_sample
            bar.update(1)
        outputs[job.key] = x
        textures[job.key] = x[0, 0].float().cpu().numpy()
        job.finish(x)
    bar.close()
    return [[[textures.get((v, f, i)) for i in range(len(cells))] for f, cells in enumerate(video.frames)]
            for v, video in enumerate(videos)]
