"""BVDM's fast solvers (``scheduler = "ddim"`` / ``"dpm-solver++"``, ``generators.bvdm.solvers``).

Each job's sub-schedule starts at its noised start and ends on the clean sample in exactly the configured
number of UNet evaluations (counted through a wrapped tiny ``UNet2DModel``, and with an oracle denoiser that
makes any solver ending at noise level 0 return the target exactly); bad values are refused when the profile
loads; continuous batching gives the jobs' textures alone; same seed, same bytes; the fit key is untouched.
Sampling runs on real GOWT1 masks of consecutive frames, with 32-px crops to stay fast.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from benchmark.config import build_run_config
from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import iter_cell_crops
from benchmark.pipeline import check_run_config
from benchmark.shipped import entries
from generators.bvdm.data import IntensityStats
from generators.bvdm.ddpm import DDPMConfig, TextureDDPM, build_unet, make_scheduler
from generators.bvdm.flow import MaskFlow
from generators.bvdm.generator import BVDMConfig, BVDMGenerator
from generators.bvdm.sampler import (
    SamplerConfig,
    plan_jobs,
    sample_textures,
    sample_textures_per_cell,
    unet_evaluations,
)
from generators.bvdm.solvers import SCHEDULERS, ddim_schedule, make_track, sub_schedule
from generators.fit_cache import fit_config, fit_key, profile_fit_inputs
from generators.masks.video import CellState, MaskVideo

CROP = 32
FAST = ("ddim", "dpm-solver++")
torch.set_num_threads(1)


class CountingUNet(torch.nn.Module):
    """The UNet, recording the timestep of every sample it is evaluated on; ``target``: instead of the UNet,
    the exact noise of a sample whose clean value is ``target`` (an oracle denoiser)."""

    def __init__(self, unet: UNet2DModel, target: float | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.target = target
        self.timesteps: list[int] = []
        self.cumprod = make_scheduler().alphas_cumprod

    @property
    def config(self) -> Any:  # what TextureDDPM reads of its UNet (the crop size)
        return self.unet.config

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        self.timesteps.extend(int(v) for v in t)
        if self.target is None:
            return self.unet(x, t)
        a = self.cumprod[t.cpu()].view(-1, 1, 1, 1).to(x)
        return SimpleNamespace(sample=(x - a.sqrt() * self.target) / (1 - a).sqrt())


@pytest.fixture(scope="module")
def mask_video(gowt1_window: Path) -> MaskVideo:
    """Real cells of frames 0-3 of the GOWT1 window: first frames, continuations and the mother/daughter links."""
    seq = CTCSequence(gowt1_window, "01")
    frames = [[CellState(c.label, c.mask, c.centre) for c in iter_cell_crops(seq, CROP, [t])] for t in range(4)]
    parents = {label: track.parent for label, track in seq.tracks.items() if track.parent}
    assert sum(len(f) for f in frames) >= 8
    return MaskVideo(seq.frame_shape, CROP, frames, parents)


@pytest.fixture(scope="module")
def models() -> tuple[TextureDDPM, MaskFlow]:
    """An untrained tiny UNet and flow model: the machinery, not the texture, is under test."""
    torch.manual_seed(0)
    unet = build_unet(DDPMConfig(block_out_channels=(8, 16), norm_num_groups=4), CROP)
    return TextureDDPM(unet, make_scheduler(), IntensityStats(scale=1.0, fill=-0.5)), MaskFlow(CROP).eval()


def _config(scheduler: str, **kw: Any) -> SamplerConfig:
    return SamplerConfig(**{"t_first": 40, "t_next": 6, "scheduler": scheduler, "first_steps": 5,
                            "next_steps": 2, "max_batch": 4, **kw})


def _flat(textures: list) -> np.ndarray:
    return np.stack([t for video in textures for frame in video for t in frame])


@pytest.mark.parametrize("depth, steps", [(400, 25), (400, 10), (400, 3), (600, 4), (10, 2), (10, 10), (10, 1), (1, 1)])
def test_each_sub_schedule_starts_at_the_noised_start_with_the_configured_count(depth: int, steps: int) -> None:
    for schedule in (sub_schedule(depth, steps), ddim_schedule(depth, steps, 1000)):
        assert len(schedule) == steps and schedule[0] == depth - 1 and schedule[-1] >= 0
        assert all(a > b for a, b in zip(schedule, schedule[1:], strict=False))
    assert sub_schedule(10, 10)[-1] == 0  # every timestep when the steps equal the depth
    ddim = make_track("ddim", make_scheduler().config, depth, steps)
    # every DDIM stride is the one its num_inference_steps gives; the last goes past 0 to the clean sample
    strides = [1000 // n for n in ddim.inference_steps]
    assert [a - s for a, s in zip(ddim.timesteps[:-1], strides, strict=False)] == ddim.timesteps[1:]
    assert ddim.timesteps[-1] - strides[-1] < 0
    dpm = make_track("dpm-solver++", make_scheduler().config, depth, steps)
    assert dpm.scheduler.timesteps.tolist() == dpm.timesteps and float(dpm.scheduler.sigmas[-1]) == 0.0


@pytest.mark.parametrize("scheduler", FAST)
def test_unet_evaluations_are_exactly_the_configured_sub_schedules(scheduler: str, mask_video: MaskVideo,
                                                                   models) -> None:
    """Counted through the wrapped UNet under continuous batching: a track's first frame is evaluated at its
    sub-schedule from t_first, a later frame at its sub-schedule from t_next, nothing else."""
    ddpm, flow = models
    config = _config(scheduler)
    counting = CountingUNet(ddpm.unet)
    oracle = TextureDDPM(counting, ddpm.scheduler, ddpm.stats)
    sample_textures([mask_video], oracle, flow, config, seed=3)
    jobs = plan_jobs([mask_video], config, 3, CROP)
    schedule = ddim_schedule if scheduler == "ddim" else (lambda d, n, _: sub_schedule(d, n))
    expected: Counter[int] = Counter()
    for job in jobs.values():
        first = job.source is None
        expected.update(schedule(config.t_first if first else config.t_next,
                                 config.first_steps if first else config.next_steps, 1000))
    assert Counter(counting.timesteps) == expected
    assert len(counting.timesteps) == unet_evaluations(jobs, config) < sum(j.t_start for j in jobs.values())
    assert expected[config.t_first - 1] == sum(j.source is None for j in jobs.values())


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_sampler_ends_on_the_clean_sample(scheduler: str, mask_video: MaskVideo, models) -> None:
    """With an oracle denoiser (the exact noise of a clean value 0.25), a sampler whose last step lands on noise
    level 0 returns 0.25 everywhere, from any start; one that stopped short would keep some noise."""
    ddpm, flow = models
    oracle = TextureDDPM(CountingUNet(ddpm.unet, target=0.25), ddpm.scheduler, ddpm.stats)
    textures = _flat(sample_textures([mask_video], oracle, flow, _config(scheduler, t_first=200, first_steps=4),
                                     seed=5))
    np.testing.assert_allclose(textures, 0.25, atol=1e-4)


@pytest.mark.parametrize("scheduler", FAST)
def test_same_seed_same_bytes_and_batching_changes_nothing(scheduler: str, mask_video: MaskVideo, models) -> None:
    ddpm, flow = models
    config = _config(scheduler)
    a = _flat(sample_textures([mask_video], ddpm, flow, config, seed=1))
    b = _flat(sample_textures([mask_video], ddpm, flow, config, seed=1))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, _flat(sample_textures([mask_video], ddpm, flow, config, seed=2)))
    # one job at a time (each alone in its UNet call) vs all of them in one continuous batch
    alone = _flat(sample_textures([mask_video], ddpm, flow, _config(scheduler, max_batch=1), seed=1))
    batched = _flat(sample_textures([mask_video], ddpm, flow, _config(scheduler, max_batch=64), seed=1))
    np.testing.assert_allclose(alone, a, atol=1e-4, rtol=0)
    np.testing.assert_allclose(batched, a, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="ddpm' only"):
        sample_textures_per_cell([mask_video], ddpm, flow, config, seed=1)


@pytest.mark.parametrize("override, key", [
    ({"sampling.scheduler": "euler"}, "scheduler"),
    ({"sampling.first_steps": 0}, "first_steps"),
    ({"sampling.scheduler": "ddim", "sampling.next_steps": 0}, "next_steps"),
    ({"sampling.scheduler": "dpm-solver++", "sampling.first_steps": 401}, "first_steps"),
    ({"sampling.scheduler": "ddim", "sampling.t_next": 5, "sampling.next_steps": 6}, "next_steps"),
])
def test_bad_values_are_refused_when_the_profile_loads(override: dict[str, Any], key: str) -> None:
    config = build_run_config("ci", "Fluo-N2DH-GOWT1", "bvdm", generator_overrides=override)
    with pytest.raises(ValueError, match=rf"^profile 'ci' \(with its overrides: --param, --downstream, a sweep's grid\): generators\.bvdm\.sampling\.{key}: ") as err:
        check_run_config(config)
    assert "\n" not in str(err.value)


def test_settings_that_leave_steps_unused_are_accepted() -> None:
    """ddpm ignores the step counts; t_next = 0 (no step) and independent frames (t_next >= t_first) use no
    next_steps: the paper's Table 2 grid runs under every scheduler."""
    for override in ({"sampling.first_steps": 1000}, {"sampling.scheduler": "ddim", "sampling.t_next": 0},
                     {"sampling.scheduler": "dpm-solver++", "sampling.t_first": 200, "sampling.t_next": 200}):
        check_run_config(build_run_config("ci", "Fluo-N2DH-GOWT1", "bvdm", generator_overrides=override))
    assert BVDMConfig().sampling.scheduler == "ddpm"
    paper = BVDMGenerator(BVDMConfig()).with_sampling({"sampling": {"scheduler": "ddim"}})
    assert paper.with_sampling({"sampling": {"preset": "paper"}}).config.sampling.scheduler == "ddpm"


def test_the_bvdm_ci_fit_key_is_unchanged(shared_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The solver fields are sampling fields: the shipped ci fit (its card's key) still matches, whichever sampler."""
    monkeypatch.delenv("SYNTHVID_SHIPPED_ROOT", raising=False)
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    (card,) = [e.card for e in entries("fit") if e.card["generator"] == "bvdm" and e.card["profile"] == "ci"]
    cls = BVDMGenerator
    for override in (None, {"sampling.scheduler": "dpm-solver++", "sampling.first_steps": 9}):
        params, seq = profile_fit_inputs("ci", card["dataset"], "bvdm", override, str(shared_assets))
        assert json.loads(json.dumps(fit_config(cls, params))) == card["fit_config"]
        assert fit_key(cls, params, seq) == card["fit_key"]


def test_table2_names_each_rows_sampler() -> None:
    """Table 2's scheduler column: the run's logged parameter, else its grid tag, else 'ddpm'."""
    import pandas as pd

    from reports.sweep import scheduler_of, sweep_display

    assert scheduler_of(pd.Series({"params.generator_params.sampling.scheduler": "ddim"})) == "ddim"
    assert scheduler_of(pd.Series({"tags.grid.sampling.scheduler": '"dpm-solver++"'})) == "dpm-solver++"
    assert scheduler_of(pd.Series({"params.seed": "0"})) == "ddpm"
    grid = pd.DataFrame([{"series": "t_first", "t_first": 200, "t_next": 10, "scheduler": name, "independent": False,
                          "TRA": tra, "n_seeds": 1} for name, tra in (("ddpm", 0.7), ("dpm-solver++", 0.6))])
    shown = sweep_display(grid, metrics=("TRA",))
    assert list(shown.columns) == ["series", "T_f0", "T_fnon0", "scheduler", "TRA", "seeds"]
    assert shown["scheduler"].tolist() == ["ddpm", "dpm-solver++"]
