"""BVDM on real GOWT1 data: scheduler equivalence, batched == per-cell loop, temporal coherence,
determinism, and a generated dataset that validates.

Models are tiny and trained for a few iterations: the tests check the sampling machinery and the
pipeline, not texture quality. Sampler tests use real masks of consecutive GOWT1 frames (a real
cell's crop per frame, linked by its TRA label) as a hand-made ``MaskVideo``, with 64-px crops to
stay fast (GOWT1 nuclei larger than 64 px are cut at the crop edge, still real shapes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import config_from_dict
from benchmark.ctc import CTCSequence, validate_sequence
from benchmark.ctc.crops import crop_size_for, iter_cell_crops
from generators.base import GenerateSpec
from generators.bvdm.data import TrainingData, collect_training_data
from generators.bvdm.ddpm import DDPMConfig, TextureDDPM, make_scheduler, train_ddpm
from generators.bvdm.flow import FlowConfig, MaskFlow, train_flow
from generators.bvdm.generator import BVDMConfig, BVDMGenerator, BVDMSampling
from generators.bvdm.sampler import (
    SamplerConfig,
    ancestral_step,
    plan_jobs,
    sample_textures,
    sample_textures_per_cell,
)
from generators.imaging import ImagingModel
from generators.masks.video import CellState, MaskVideo
from generators.registry import get_generator

CROP = 64
torch.set_num_threads(1)  # shared 2-core machine: 2 threads thrash under load


@pytest.fixture(scope="module")
def gowt1_seq(gowt1_window: Path) -> CTCSequence:
    return CTCSequence(gowt1_window, "01")


@pytest.fixture(scope="module")
def imaging(gowt1_seq: CTCSequence) -> ImagingModel:
    return ImagingModel.fit(gowt1_seq, max_frames=4)


@pytest.fixture(scope="module")
def training_data(gowt1_seq: CTCSequence, imaging: ImagingModel) -> TrainingData:
    return collect_training_data(gowt1_seq, CROP, imaging, max_frames=6)


@pytest.fixture(scope="module")
def tiny_models(training_data: TrainingData) -> tuple[TextureDDPM, MaskFlow]:
    data = training_data
    ddpm = train_ddpm(data.crops, data.stats, DDPMConfig(block_out_channels=(8, 16), norm_num_groups=4,
                                                         batch_size=4, iterations=20, lr=2e-3))
    flow, _ = train_flow(data.pairs, FlowConfig(batch_size=4, iterations=5))
    return ddpm, flow


@pytest.fixture(scope="module")
def real_mask_video(gowt1_seq: CTCSequence) -> MaskVideo:
    """Real cells of frames 0-4: canonical crop = the cell's full mask, pose = its centroid."""
    frames = [[CellState(c.label, c.mask, c.centre) for c in iter_cell_crops(gowt1_seq, CROP, [t])] for t in range(5)]
    parents = {label: track.parent for label, track in gowt1_seq.tracks.items() if track.parent}
    video = MaskVideo(gowt1_seq.frame_shape, CROP, frames, parents)
    assert sum(len(f) for f in frames) >= 10, "window too sparse for a meaningful sampler test"
    return video


def test_ancestral_step_matches_scheduler_step() -> None:
    """Per-sample update == diffusers DDPMScheduler.step for a uniform batch, at every kind of t."""
    scheduler = make_scheduler()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((5, 1, 16, 16), generator=gen)
    eps = torch.randn((5, 1, 16, 16), generator=gen)
    for t in (0, 1, 9, 199, 999):
        ours = ancestral_step(x, eps, torch.full((5,), t), torch.randn((5, 1, 16, 16), generator=torch.Generator().manual_seed(t)),
                              scheduler)
        theirs = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    # mixed timesteps: each sample equals its own uniform-batch result
    t = torch.tensor([0, 5, 50, 500, 999])
    noise = torch.randn((5, 1, 16, 16), generator=gen)
    mixed = ancestral_step(x, eps, t, noise, scheduler)
    for i in range(5):
        single = ancestral_step(x[i : i + 1], eps[i : i + 1], t[i : i + 1], noise[i : i + 1], scheduler)
        torch.testing.assert_close(mixed[i : i + 1], single)


def test_plan_sources(real_mask_video: MaskVideo) -> None:
    jobs = plan_jobs([real_mask_video], SamplerConfig(t_first=20, t_next=4), seed=0, crop_size=CROP)
    for (_, f, _), job in jobs.items():
        earlier = {c.label for cells in real_mask_video.frames[:f] for c in cells}
        expect_source = job.label in earlier or (real_mask_video.parents.get(job.label, 0) in earlier)
        assert (job.source is not None) == expect_source
        assert job.t_start == (4 if job.source else 20)
    independent = plan_jobs([real_mask_video], SamplerConfig(t_first=20, t_next=20), seed=0, crop_size=CROP)
    assert all(j.source is None and j.t_start == 20 for j in independent.values())


def test_batched_equals_per_cell_loop(real_mask_video: MaskVideo, tiny_models) -> None:
    """Same seed, same noise per job: the continuous batch equals the batch-1 loop with scheduler.step.

    Only floating-point differences of batched vs single convolutions remain (~1e-6), so a tight
    absolute tolerance of 1e-4 on [-1, 1]-scaled textures.
    """
    ddpm, flow = tiny_models
    config = SamplerConfig(t_first=16, t_next=4, max_batch=5)  # max_batch < cells: admission queue exercised
    batched = sample_textures([real_mask_video, real_mask_video], ddpm, flow, config, seed=7)
    looped = sample_textures_per_cell([real_mask_video, real_mask_video], ddpm, flow, config, seed=7)
    for video_b, video_l in zip(batched, looped, strict=True):
        for frame_b, frame_l in zip(video_b, video_l, strict=True):
            for tex_b, tex_l in zip(frame_b, frame_l, strict=True):
                np.testing.assert_allclose(tex_b, tex_l, atol=1e-4, rtol=0)
    # the two videos have the same masks but are different samples (video index enters the seed)
    assert not np.allclose(batched[0][0][0], batched[1][0][0])


def test_same_seed_same_output(real_mask_video: MaskVideo, tiny_models) -> None:
    ddpm, flow = tiny_models
    config = SamplerConfig(t_first=12, t_next=3)
    a = sample_textures([real_mask_video], ddpm, flow, config, seed=1)
    b = sample_textures([real_mask_video], ddpm, flow, config, seed=1)
    c = sample_textures([real_mask_video], ddpm, flow, config, seed=2)
    flat = [np.stack(f) for f in a[0]], [np.stack(f) for f in b[0]], [np.stack(f) for f in c[0]]
    assert all(np.array_equal(x, y) for x, y in zip(flat[0], flat[1], strict=True))
    assert not np.array_equal(flat[0][0], flat[2][0])


def _masked_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean((a[mask] - b[mask]) ** 2))


def test_consecutive_frames_more_alike_than_independent_samples(real_mask_video: MaskVideo, tiny_models) -> None:
    """Metric: MSE of normalised textures over the pixels inside both masks.

    coherent = MSE between a cell's texture at frame f and f+1 (paper settings 200 / 10);
    independent = MSE between two independent 200-step DDPM samples of the same frame-(f+1) mask
    (``t_next >= t_first``, another seed). Coherent must be well below independent.
    """
    ddpm, flow = tiny_models
    video = MaskVideo(real_mask_video.shape, CROP, real_mask_video.frames[:3], real_mask_video.parents)
    coherent = sample_textures([video], ddpm, flow, SamplerConfig(t_first=200, t_next=10), seed=0)[0]
    independent = sample_textures([video], ddpm, flow, SamplerConfig(t_first=200, t_next=200), seed=99)[0]
    same, other = [], []
    for f in range(1, len(video.frames)):
        previous = {c.label: (c.crop, tex) for c, tex in zip(video.frames[f - 1], coherent[f - 1], strict=True)}
        for i, cell in enumerate(video.frames[f]):
            if cell.label not in previous:
                continue
            prev_mask, prev_tex = previous[cell.label]
            same.append(_masked_mse(coherent[f][i], prev_tex, cell.crop & prev_mask))
            other.append(_masked_mse(coherent[f][i], independent[f][i], cell.crop))
    assert len(same) >= 4
    print(f"masked texture MSE: consecutive frames {np.mean(same):.4f}, independent samples {np.mean(other):.4f}")
    assert np.mean(same) < 0.5 * np.mean(other), (np.mean(same), np.mean(other))


def test_the_no_flow_mutant_drops_the_carried_texture(real_mask_video: MaskVideo, tiny_models,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's ``bvdm-no-flow`` regression (benchmark.mutants): first frames are untouched, continuing frames
    lose the texture the flow carried, so consecutive frames are far less alike."""
    ddpm, flow = tiny_models
    video = MaskVideo(real_mask_video.shape, CROP, real_mask_video.frames[:3], real_mask_video.parents)
    config = SamplerConfig(t_first=200, t_next=10)
    normal = sample_textures([video], ddpm, flow, config, seed=0)[0]
    monkeypatch.setenv("SYNTHVID_MUTANT", "bvdm-no-flow")
    mutant = sample_textures([video], ddpm, flow, config, seed=0)[0]

    def consecutive_mse(textures) -> float:
        out = []
        for f in range(1, len(video.frames)):
            previous = {c.label: (c.crop, tex) for c, tex in zip(video.frames[f - 1], textures[f - 1], strict=True)}
            out += [_masked_mse(tex, previous[c.label][1], c.crop & previous[c.label][0])
                    for c, tex in zip(video.frames[f], textures[f], strict=True) if c.label in previous]
        return float(np.mean(out))

    assert all(np.array_equal(a, b) for a, b in zip(normal[0], mutant[0], strict=True))
    assert consecutive_mse(mutant) > 2 * consecutive_mse(normal), (consecutive_mse(mutant), consecutive_mse(normal))


def _track_stats(video: MaskVideo, textures) -> dict[int, list[tuple[float, float]]]:
    """In-mask (mean, std) of each track's normalised texture, frame by frame."""
    stats: dict[int, list[tuple[float, float]]] = {}
    for cells, frame in zip(video.frames, textures, strict=True):
        for cell, tex in zip(cells, frame, strict=True):
            values = tex[cell.crop]
            stats.setdefault(cell.label, []).append((float(values.mean()), float(values.std())))
    return stats


def test_anchored_warping_keeps_each_track_on_its_first_frame_statistics(real_mask_video: MaskVideo, tiny_models) -> None:
    """t_next = 0: later frames are the warped texture itself, so anchoring must reproduce the first
    frame's in-mask mean exactly (the std too, unless the 2x gain clamp bites)."""
    ddpm, flow = tiny_models
    anchored = sample_textures([real_mask_video], ddpm, flow, SamplerConfig(t_first=20, t_next=0), seed=3)[0]
    for label, series in _track_stats(real_mask_video, anchored).items():
        mean0, std0 = series[0]
        for mean, std in series[1:]:
            assert mean == pytest.approx(mean0, abs=1e-4), label
            assert std == pytest.approx(std0, rel=1e-3) or not 0.5 < std / std0 < 2.0, label


def test_anchoring_reduces_brightness_drift_along_tracks(real_mask_video: MaskVideo, tiny_models) -> None:
    """Metric: mean over tracks of |in-mask mean at the track's last frame - at its first frame|
    (normalised units), paper settings 200 / 10, five real GOWT1 frames, with and without anchoring."""
    ddpm, flow = tiny_models

    def drift(anchor: bool) -> float:
        config = SamplerConfig(t_first=200, t_next=10, anchor_stats=anchor)
        stats = _track_stats(real_mask_video, sample_textures([real_mask_video], ddpm, flow, config, seed=5)[0])
        return float(np.mean([abs(s[-1][0] - s[0][0]) for s in stats.values() if len(s) >= 4]))

    anchored, free = drift(True), drift(False)
    print(f"brightness drift over 5 frames: anchored {anchored:.4f}, paper procedure {free:.4f}")
    assert anchored < 0.5 * free, (anchored, free)


FIT_RUN: dict[str, str] = {}


@pytest.fixture(scope="module")
def fitted_generator(gowt1_seq: CTCSequence, tmp_path_factory: pytest.TempPathFactory) -> BVDMGenerator:
    """Fitted inside an MLflow run (as the pipeline's fit stage is), so its curves stream there."""
    from benchmark import experiment

    config = config_from_dict(BVDMConfig, {
        "progress": False, "max_fit_frames": 6,
        "ddpm": {"block_out_channels": [8, 16], "norm_num_groups": 4, "batch_size": 4, "iterations": 5},
        "flow": {"batch_size": 4, "iterations": 3}, "sampling": {"t_first": 8, "t_next": 2}})
    mp = pytest.MonkeyPatch()
    FIT_RUN["store"] = f"sqlite:///{tmp_path_factory.mktemp('fit-run') / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", FIT_RUN["store"])
    try:
        with experiment.start_run("fit", "bvdm-test") as run:
            FIT_RUN["run_id"] = run.info.run_id
            return get_generator("bvdm")(config).fit(gowt1_seq)
    finally:
        mp.undo()


def test_the_fit_streams_its_loss_curves_into_the_active_run(fitted_generator: BVDMGenerator) -> None:
    import mlflow

    client = mlflow.MlflowClient(FIT_RUN["store"])
    for name, curve in fitted_generator.training_curves.items():
        logged = client.get_metric_history(FIT_RUN["run_id"], f"{name}_loss")
        assert [m.step for m in logged] == list(range(1, len(curve) + 1))
        assert [m.value for m in logged] == pytest.approx(curve)


def test_generated_dataset_validates_and_reloads_identically(fitted_generator: BVDMGenerator, gowt1_seq: CTCSequence,
                                                             tmp_path: Path) -> None:
    assert fitted_generator.ddpm.crop_size == crop_size_for(gowt1_seq) == fitted_generator.mask_model.crop_size
    curves = fitted_generator.training_curves
    assert len(curves["ddpm"]) == 5 and len(curves["flow"]) == 3
    spec = GenerateSpec(n_sequences=2, n_frames=3, shape=(200, 240), seed=4)
    fitted_generator.save(tmp_path / "model")
    first = fitted_generator.generate(spec, tmp_path / "a")
    again = BVDMGenerator.load(tmp_path / "model").generate(spec, tmp_path / "b")
    for name in ("01", "02"):
        assert [p for p in validate_sequence(first, name) if p.severity == "error"] == []
        seq = CTCSequence(first, name)
        assert seq.n_frames == 3 and seq.frame_shape == (200, 240) and seq.dtype == gowt1_seq.dtype
        image, labels = seq.image(0), seq.tra(0)
        assert labels.max() > 0
        assert image[labels > 0].mean() > image[labels == 0].mean()  # textured nuclei over real background
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)


class _Killed(Exception):
    """Stands in for the fit being killed mid-training."""


def test_ddpm_training_resumes_from_its_last_checkpoint(training_data: TrainingData, tmp_path: Path) -> None:
    """Killed at step 7 (checkpoints every 3): a rerun picks up checkpoint-6 and ends where an uninterrupted
    run ends: same loss curve, same EMA weights (float tolerance)."""
    data = training_data
    config = DDPMConfig(block_out_channels=(8, 16), norm_num_groups=4, batch_size=4, iterations=10, lr=2e-3,
                        checkpoint_every=3, seed=5)
    uninterrupted = train_ddpm(data.crops, data.stats, config)

    def kill_at_7(step: int, loss: float) -> None:
        if step == 7:
            raise _Killed

    with pytest.raises(_Killed):
        train_ddpm(data.crops, data.stats, config, checkpoint_dir=tmp_path, callback=kill_at_7)
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*.safetensors"))
    assert names == ["checkpoint-3.safetensors", "checkpoint-6.safetensors"]
    steps: list[int] = []
    resumed = train_ddpm(data.crops, data.stats, config, checkpoint_dir=tmp_path,
                         callback=lambda step, loss: steps.append(step))
    assert steps == [7, 8, 9, 10]
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*.safetensors"))
    assert names == ["checkpoint-10.safetensors", "checkpoint-9.safetensors"]
    np.testing.assert_allclose(resumed.loss, uninterrupted.loss, rtol=1e-5)
    for (name, a), b in zip(uninterrupted.unet.state_dict().items(), resumed.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # a finished run resumes at its end (nothing to redo); another seed ignores these checkpoints
    again: list[int] = []
    train_ddpm(data.crops, data.stats, config, checkpoint_dir=tmp_path, callback=lambda step, loss: again.append(step))
    assert again == []
    other = DDPMConfig(**{**config.__dict__, "seed": 6, "iterations": 2})
    fresh: list[int] = []
    train_ddpm(data.crops, data.stats, other, checkpoint_dir=tmp_path, callback=lambda step, loss: fresh.append(step))
    assert fresh == [1, 2]


def test_paper_preset_and_explicit_fields() -> None:
    """A sampling table that names a preset takes its values for the fields it leaves out; explicit ones win;
    switching the preset of a fitted generator resets the preset's fields; unknown presets are refused."""
    def sampling(**table: object) -> BVDMSampling:
        return config_from_dict(BVDMConfig, {"sampling": table}).sampling

    paper = sampling(preset="paper")
    assert (paper.t_first, paper.t_next, paper.start, paper.warp_mode) == (200, 10, "flat", "nearest")
    assert not (paper.daughters_inherit or paper.fill_holes or paper.anchor_stats or paper.anchor_spread)
    assert paper.edge_sigma == 1.0
    assert sampling(preset="paper", t_first=400).t_first == 400
    ours = BVDMConfig().sampling
    assert (ours.start, ours.t_first, ours.edge_sigma) == ("flat", 400, 0.0) and ours.anchor_stats
    assert ours.warp_mode == "bilinear" and sampling(preset="default") == ours
    assert sampling(start="field").start == "field"
    switched = BVDMGenerator(BVDMConfig()).with_sampling({"sampling": {"preset": "paper", "t_next": 30}})
    assert (switched.config.sampling.start, switched.config.sampling.t_next) == ("flat", 30)
    assert (switched.config.sampling.t_first, switched.config.sampling.warp_mode) == (200, "nearest")
    kept = switched.with_sampling({"sampling.precision": "bf16"}).config.sampling  # dotted; the rest stays
    assert (kept.precision, kept.t_next, kept.warp_mode) == ("bf16", 30, "nearest")
    back = switched.with_sampling({"sampling": {"preset": "default"}}).config.sampling
    assert back == dataclasses.replace(ours, precision="bf16")
    with pytest.raises(ValueError, match="preset"):
        sampling(preset="nonsense")
    with pytest.raises(ValueError, match="not sampling parameters"):
        BVDMGenerator(BVDMConfig()).with_sampling({"ddpm.iterations": 3})


def test_nested_sections_are_checked_and_old_flat_keys_point_to_the_new_ones() -> None:
    """``[generators.bvdm.ddpm]`` is DDPMConfig itself (no prefixed copy), checked like the top level; an old
    flat key is refused with its new name; a state saved with the flat config loads into the sections."""
    config = config_from_dict(BVDMConfig, {"ddpm": {"iterations": 7, "block_out_channels": [8, 16]},
                                           "flow": {"lr": 1e-3}, "max_fit_frames": 3})
    assert isinstance(config.ddpm, DDPMConfig) and config.ddpm.iterations == 7
    assert config.ddpm.block_out_channels == (8, 16) and config.ddpm.batch_size == DDPMConfig().batch_size
    assert isinstance(config.flow, FlowConfig) and config.flow.lr == 1e-3
    with pytest.raises(ValueError, match=r"BVDMConfig.ddpm: unknown parameters \['iteration'\]"):
        config_from_dict(BVDMConfig, {"ddpm": {"iteration": 7}})
    with pytest.raises(ValueError, match=r"BVDMConfig.flow: parameter 'iterations' = 'many' is not of type int"):
        config_from_dict(BVDMConfig, {"flow": {"iterations": "many"}})
    with pytest.raises(ValueError, match="'ddpm_iterations' is now 'ddpm.iterations'"):
        config_from_dict(BVDMConfig, {"ddpm_iterations": 7})
    with pytest.raises(ValueError, match="BVDMConfig.ddpm: expected a table"):
        config_from_dict(BVDMConfig, {"ddpm": 7})
    flat = {"ddpm_iterations": 7, "flow_lr": 1e-3, "augment": False, "train_precision": "bf16", "seed": 3,
            "preset": "paper", "t_first": None, "t_next": 30, "precision": "bf16", "device": "cpu"}
    upgraded = config_from_dict(BVDMConfig, BVDMGenerator.upgrade_saved_config(flat))
    assert (upgraded.ddpm.iterations, upgraded.flow.lr, upgraded.seed) == (7, 1e-3, 3)
    assert not upgraded.ddpm.augment and not upgraded.flow.augment
    assert (upgraded.ddpm.precision, upgraded.flow.precision, upgraded.ddpm.seed, upgraded.flow.seed) == \
        ("bf16", "bf16", 3, 3)
    assert (upgraded.sampling.preset, upgraded.sampling.t_first, upgraded.sampling.t_next) == ("paper", 200, 30)
    assert upgraded.sampling.precision == "bf16"


def test_partial_copy_pairs_frames_at_its_smallest_gap(hela: Path, tmp_path: Path) -> None:
    """The shared HeLa 01 has no two consecutive annotated frames (2, 9, 11, 13, ...): flow pairs come from
    the smallest gap it has (2), linked by TRA label, instead of none (which left BVDM unfittable on HeLa).
    A copy of its frames 9, 11 and 13 (images, TRA markers, track table) keeps the partial structure."""
    import shutil

    out = tmp_path / "Fluo-N2DL-HeLa"
    (out / "01").mkdir(parents=True)
    (out / "01_GT" / "TRA").mkdir(parents=True)
    for t in (9, 11, 13):
        shutil.copy(hela / "01" / f"t{t:03d}.tif", out / "01")
        shutil.copy(hela / "01_GT" / "TRA" / f"man_track{t:03d}.tif", out / "01_GT" / "TRA")
    shutil.copy(hela / "01_GT" / "TRA" / "man_track.txt", out / "01_GT" / "TRA")
    seq = CTCSequence(out, "01")
    data = collect_training_data(seq, 32, ImagingModel.fit(seq, max_frames=2), denoise="none")
    assert data.pair_gap == 2 and len(data.pairs) > 50
    moving, fixed = data.pairs[:, 0], data.pairs[:, 1]
    overlap = (moving & fixed).sum(axis=(1, 2)) / np.maximum((moving | fixed).sum(axis=(1, 2)), 1)
    assert np.median(overlap) > 0.3  # the same cell two frames apart, not an unrelated pair


def test_bf16_sampling_is_deterministic_and_close_to_fp32(real_mask_video: MaskVideo, tiny_models) -> None:
    """bf16 autocast (channels-last on CPU) changes the rounding, not the sample: the same seed gives the same
    bf16 textures twice, and they track the fp32 textures (same noise per job) closely but not bit for bit."""
    ddpm, flow = tiny_models
    fp32 = sample_textures([real_mask_video], ddpm, flow, SamplerConfig(t_first=12, t_next=3), seed=3)
    bf16_config = SamplerConfig(t_first=12, t_next=3, precision="bf16")
    bf16 = sample_textures([real_mask_video], ddpm, flow, bf16_config, seed=3)
    again = sample_textures([real_mask_video], ddpm, flow, bf16_config, seed=3)
    a, b, c = (np.concatenate([np.stack(f).ravel() for f in video[0]]) for video in (fp32, bf16, again))
    np.testing.assert_array_equal(b, c)
    assert not np.array_equal(a, b), "bf16 sampling produced fp32's exact bits: autocast did not take effect"
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.abs(a - b).mean() < 0.05 * a.std()


def test_bf16_training_keeps_fp32_weights_and_saves(training_data: TrainingData, tmp_path: Path) -> None:
    """Autocast trains in bf16 but keeps fp32 (EMA) weights; the saved model reloads (contiguous tensors)."""
    data = training_data
    config = DDPMConfig(block_out_channels=(8, 16), norm_num_groups=4, batch_size=4, iterations=4, lr=2e-3,
                        precision="bf16")
    ddpm = train_ddpm(data.crops, data.stats, config)
    assert all(np.isfinite(ddpm.loss)) and len(ddpm.loss) == 4
    assert all(p.dtype == torch.float32 for p in ddpm.unet.parameters())
    ddpm.save_pretrained(tmp_path / "ddpm")
    reloaded = TextureDDPM.from_pretrained(tmp_path / "ddpm")
    for a, b in zip(ddpm.unet.state_dict().values(), reloaded.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    flow, losses = train_flow(data.pairs, FlowConfig(batch_size=4, iterations=3, precision="bf16"))
    assert len(losses) == 3 and all(np.isfinite(losses))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_equals_per_cell_loop_on_cuda(real_mask_video: MaskVideo, tiny_models, precision: str) -> None:
    """The CUDA path (``-m gpu``): the continuous batch equals the batch-1 loop on the GPU, in fp32 to the
    CPU test's tolerance and in bf16 (autocast) to bf16's rounding of batched vs single convolutions."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ddpm, flow = tiny_models
    config = SamplerConfig(t_first=16, t_next=4, max_batch=5, device="cuda", precision=precision)
    batched = sample_textures([real_mask_video], ddpm, flow, config, seed=7)
    looped = sample_textures_per_cell([real_mask_video], ddpm, flow, config, seed=7)
    tolerance = 1e-4 if precision == "fp32" else 5e-2
    for frame_b, frame_l in zip(batched[0], looped[0], strict=True):
        for tex_b, tex_l in zip(frame_b, frame_l, strict=True):
            np.testing.assert_allclose(tex_b, tex_l, atol=tolerance, rtol=0)
    ddpm.to("cpu")
    flow.to("cpu")


@pytest.mark.parametrize(("device", "expected"), [("cpu", "fp32"), ("cuda", "auto")])
def test_a_state_saved_before_the_precision_option_still_loads(fitted_generator: BVDMGenerator, tmp_path: Path,
                                                               device: str, expected: str) -> None:
    """A cached fit written with the old boolean ``bf16`` (CUDA-only autocast) loads, sampling as it did."""
    fitted_generator.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    values = json.loads(path.read_text())
    for section in ("ddpm", "flow", "sampling"):
        del values[section]["precision"]
    path.write_text(json.dumps({**values, "bf16": True, "device": device}))
    loaded = BVDMGenerator.load(tmp_path / "model")
    assert loaded.config.sampling.precision == expected
    assert loaded.config.ddpm.precision == loaded.config.flow.precision == "fp32"
