"""Fast SDEdit solvers for BVDM: diffusers' ``DDIMScheduler`` (eta 0) and ``DPMSolverMultistepScheduler``
(``algorithm_type="dpmsolver++"``), used as they are, on a sub-schedule from a job's SDEdit depth to the
clean texture.

A job of depth ``d`` (``t_first`` for a track's first frame, ``t_next`` for a later one) starts, as with the
paper's ancestral DDPM, from its start noised to ``d - 1``; a fast solver then evaluates the UNet ``steps``
times, at ``sub_schedule(d, steps)``: the first evaluation at ``d - 1``, the others evenly spread down towards
0 (``steps == d``: every timestep), and its last step lands on the clean sample (DPM-Solver++:
``final_sigmas_type="zero"``; DDIM: a stride past 0 takes ``final_alpha_cumprod`` = 1). This is how diffusers'
img2img pipelines cut a schedule by ``strength`` (``get_timesteps``: the tail of the full schedule), except
that the tail here starts exactly at the job's noise level instead of the nearest point of a full-range grid.

diffusers 0.42: ``DPMSolverMultistepScheduler.set_timesteps(timesteps=...)`` takes the sub-schedule as it is.
``DDIMScheduler.set_timesteps`` has no ``timesteps=`` and ``step`` strides by ``num_train_timesteps //
num_inference_steps``; so each DDIM step first sets the ``num_inference_steps`` whose stride reaches the next
timestep (``ddim_schedule``: the same timesteps where every stride is one DDIM can take, which is all of them
up to a stride of 31, and the nearest ones above that).

Each job has its own scheduler (``SolverTrack``): DPM-Solver++ keeps the model outputs of earlier steps per
trajectory, so jobs at different timesteps share the one batched UNet call and then step alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

#: ``[generators.bvdm.sampling] scheduler``: the paper's ancestral DDPM, and the two fast solvers
SCHEDULERS = ("ddpm", "ddim", "dpm-solver++")


def check_solver(scheduler: str, first_steps: int, next_steps: int, t_first: int, t_next: int, where: str) -> None:
    """Refuse an unknown scheduler, a step count < 1, or (fast solvers) more steps than the SDEdit depth they
    cover; one line naming the key (``where``: the table, e.g. ``generators.bvdm.sampling``). ``next_steps``
    is checked against ``t_next`` only where later frames are denoised (``0 < t_next < t_first``)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"{where}.scheduler: unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    for key, steps in (("first_steps", first_steps), ("next_steps", next_steps)):
        if steps < 1:
            raise ValueError(f"{where}.{key}: {steps} UNet evaluations; use at least 1")
    if scheduler == "ddpm":
        return
    if first_steps > t_first:
        raise ValueError(f"{where}.first_steps: {first_steps} steps exceed the SDEdit depth t_first = {t_first}")
    if 0 < t_next < t_first and next_steps > t_next:
        raise ValueError(f"{where}.next_steps: {next_steps} steps exceed the SDEdit depth t_next = {t_next}")


def sub_schedule(depth: int, steps: int) -> list[int]:
    """The ``steps`` timesteps a fast solver evaluates for a job noised to ``depth - 1``: the first at
    ``depth - 1``, the rest evenly spread towards 0 (the last step then goes to the clean sample)."""
    start = depth - 1
    if not 1 <= steps <= depth:
        raise ValueError(f"{steps} steps for an SDEdit depth of {depth}: use 1 to {depth}")
    if steps > start:
        return list(range(start, -1, -1))
    return [int(t) for t in np.round(np.linspace(start, 0, steps + 1))[:-1]]


def ddim_strides(num_train_timesteps: int) -> dict[int, int]:
    """Stride -> ``num_inference_steps`` giving it: every stride ``DDIMScheduler.step`` can take."""
    return {num_train_timesteps // n: n for n in range(num_train_timesteps, 0, -1)}


def ddim_schedule(depth: int, steps: int, num_train_timesteps: int) -> list[int]:
    """``sub_schedule`` with every stride one that DDIM can take: each timestep the nearest reachable one to
    its target, leaving room for one distinct timestep per later evaluation."""
    target = sub_schedule(depth, steps)
    strides = sorted(ddim_strides(num_train_timesteps))
    out = [target[0]]
    for i, goal in enumerate(target[1:], start=1):
        room = out[-1] - (len(target) - 1 - i)
        stride = min((s for s in strides if s <= room), key=lambda s: (abs(out[-1] - s - goal), s))
        out.append(out[-1] - stride)
    return out


@dataclass
class SolverTrack:
    """One job's fast solver: its own diffusers scheduler and the timesteps it still has to evaluate."""

    scheduler: DDIMScheduler | DPMSolverMultistepScheduler
    timesteps: list[int]
    inference_steps: list[int] = field(default_factory=list)  # DDIM: num_inference_steps before each step
    i: int = 0

    @property
    def t(self) -> int:
        """The timestep of the next UNet evaluation; -1 once the texture is clean."""
        return self.timesteps[self.i] if self.i < len(self.timesteps) else -1

    def step(self, eps: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``scheduler.step`` at the current timestep for this job's sample (1, C, H, W)."""
        t = self.t
        if isinstance(self.scheduler, DDIMScheduler):
            self.scheduler.set_timesteps(self.inference_steps[self.i])
            out = self.scheduler.step(eps, t, x, eta=0.0, generator=generator).prev_sample
        else:
            out = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        self.i += 1
        return out


def make_track(name: str, ddpm_config: Any, depth: int, steps: int) -> SolverTrack:
    """A fresh solver for one job of SDEdit depth ``depth`` in ``steps`` evaluations, built ``from_config`` of
    the fitted DDPM's scheduler (same betas, prediction type and timestep count)."""
    if name == "ddim":
        scheduler = DDIMScheduler.from_config(ddpm_config)
        total = scheduler.config.num_train_timesteps
        timesteps = ddim_schedule(depth, steps, total)
        strides = ddim_strides(total)
        # the last step: any stride past 0 lands on final_alpha_cumprod (1: the clean sample)
        inference = [strides[a - b] for a, b in zip(timesteps, timesteps[1:], strict=False)] + [1]
        return SolverTrack(scheduler, timesteps, inference)
    if name == "dpm-solver++":
        scheduler = DPMSolverMultistepScheduler.from_config(ddpm_config, algorithm_type="dpmsolver++",
                                                            variance_type=None, final_sigmas_type="zero")
        timesteps = sub_schedule(depth, steps)
        scheduler.set_timesteps(timesteps=timesteps)
        return SolverTrack(scheduler, timesteps)
    raise ValueError(f"no fast solver {name!r}; fast solvers: {', '.join(SCHEDULERS[1:])}")
