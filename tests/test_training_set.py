"""The low-data protocol (downstream.training_set): K real frames drawn per seed (the same bytes for a repeated
seed, other frames for another), written beside the synthetic video as CTC folders with a manifest; the
segmenter splits real and synthetic frames apart and mixes them to the configured share; bad settings are
one line naming the key; Table 3 pairs each mixed condition with real-only of the same K and seeds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from benchmark.bundles import bundle_path
from benchmark.config import build_run_config, split_point
from benchmark.ctc import CTCSequence, list_sequences
from downstream.segmenter import mixed_split, split_frames
from downstream.training_set import (
    MANIFEST,
    TrainingSetConfig,
    build_training_set,
    draw_frames,
    frame_pool,
    mix,
)
from reports.lowdata import lowdata_display, lowdata_table


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (symlinked sequences followed), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_frames_are_drawn_per_seed_from_the_gt_seg_pool(gowt1_window: Path) -> None:
    real = CTCSequence(gowt1_window, "01")
    pool, name = frame_pool(real, 2)
    assert name == "gt-seg" and pool and set(pool) <= set(real.seg_files) & set(real.tra_files)
    assert frame_pool(real, len(pool) + 1)[1] == "tra"  # more than the GT SEG frames: every TRA frame
    assert frame_pool(real, "all")[1] == "tra"
    draws = {seed: draw_frames(pool, 2, seed) for seed in range(6)}
    assert draws[0] == draw_frames(pool, 2, 0) and len(set(map(tuple, draws.values()))) > 1
    assert all(len(d) == 2 and d == sorted(d) and set(d) <= set(pool) for d in draws.values())
    assert draw_frames(pool, "all", 3) == sorted(pool)


def test_a_repeated_seed_gives_the_same_bytes_another_seed_other_frames(gowt1_window: Path, tmp_path: Path) -> None:
    real = CTCSequence(gowt1_window, "01")
    config = TrainingSetConfig(real_frames=2, synthetic=False)
    first = build_training_set(real, None, config, 0, tmp_path / "a")
    again = build_training_set(real, None, config, 0, tmp_path / "b")
    other = next(m for s in range(1, 20) if (m := build_training_set(real, None, config, s, tmp_path / f"s{s}"))
                 ["real_frames"]["frames"] != first["real_frames"]["frames"])
    assert _digest(tmp_path / "a" / "segmenter") == _digest(tmp_path / "b" / "segmenter")
    assert first == again and other["real_frames"]["frames"] != first["real_frames"]["frames"]
    assert first["condition"] == "real-2" and first["real_sequences"] == ["01"] and not first["synthetic_sequences"]
    written = CTCSequence(tmp_path / "a" / "segmenter", "01")
    frames = first["real_frames"]["frames"]
    assert written.n_frames == 2 and all((written.image(i) == real.image(t)).all() for i, t in enumerate(frames))
    assert list_sequences(tmp_path / "a" / "tracker") == ["01"]  # the real lineage of the window, linked
    assert CTCSequence(tmp_path / "a" / "tracker", "01").tracks == real.tracks


def test_mixed_training_set_splits_real_and_synthetic_apart_and_mixes_them(gowt1_window: Path, tmp_path: Path) -> None:
    real = CTCSequence(gowt1_window, "01")
    synthetic = tmp_path / "synthetic"  # a stand-in video folder: two sequences with full GT
    synthetic.mkdir()
    for name in ("01", "02"):
        for suffix in ("", "_GT"):
            (synthetic / f"{name}{suffix}").symlink_to(gowt1_window / f"{name}{suffix}", target_is_directory=True)
    manifest = build_training_set(real, synthetic, TrainingSetConfig(real_frames=2), 0, tmp_path / "set")
    folder = tmp_path / "set" / "segmenter"
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert manifest["synthetic_sequences"] == ["02", "03"] and manifest["real_fraction"] == 0.5
    (real_train, real_val), (syn_train, syn_val), fraction = mixed_split(folder, 0.15)
    assert fraction == 0.5 and len(real_train) == len(real_val) == 1  # K = 2: one to train, one to validate
    assert {s.name for s, _ in syn_train} == {"02"} and {s.name for s, _ in syn_val} == {"03"}  # whole sequences
    train, val = split_frames(folder, 0.15)
    assert len(train) == len(real_train) + len(syn_train) and len(val) == 2 + len(syn_val) - 1
    # a plain folder (a generator's output) splits as before the protocol existed
    plain_train, plain_val = split_frames(synthetic, 0.15)
    assert [(s.name, t) for s, t in plain_train] == [("01", t) for t, _ in enumerate(plain_train)] or plain_train
    assert {s.name for s, _ in plain_val} == {"02"}


def test_mix_gives_the_real_frames_their_share() -> None:
    real, synthetic = ["r1", "r2"], [f"s{i}" for i in range(46)]
    mixed = mix(real, synthetic, 0.5)
    assert mixed.count("r1") == mixed.count("r2") == 23 and sum(x.startswith("s") for x in mixed) == 46
    assert mix(real, synthetic, 1.0) == real and mix(real, synthetic, None) == real + synthetic
    assert mix(real, synthetic, 0.0) == synthetic
    quarter = mix(real, synthetic, 0.25)
    assert sum(x.startswith("r") for x in quarter) / len(quarter) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize(("settings", "needle"), [
    ({"real_frames": 0, "synthetic": False}, "downstream.real_frames = 0 with downstream.synthetic = false"),
    ({"real_frames": 2, "real_fraction": 1.5}, "downstream.real_fraction must be in [0, 1]"),
    ({"real_frames": -1}, "downstream.real_frames must be an integer >= 0"),
    ({"real_frames": 1}, "needs >= 2 frames"),
    ({"real_frames": "most"}, "or 'all'"),
    ({"pool": "silver"}, "downstream.pool must be one of"),
])
def test_bad_settings_are_refused_when_the_profile_loads(settings: dict, needle: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main

    profile = tmp_path / "bad.toml"
    profile.write_text('extends = "ci"\n[downstream]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    code = main(["run", "--generator", "real", "--profile", str(profile), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "out").exists()


def test_a_k_beyond_the_annotated_frames_is_refused_before_any_work(shared_assets: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = main(["run", "--generator", "real", "--profile", "ci", "--data-root", str(shared_assets), "--out",
                 str(tmp_path / "out"), "--downstream", "real_frames=30", "--downstream", "synthetic=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "downstream.real_frames = 30" in err and "Fluo-N2DH-GOWT1/01 in the window has only" in err, err
    assert not list((tmp_path / "out").rglob("stage.json"))


def test_a_condition_is_a_tag_and_a_bundle_level_not_a_grid_point() -> None:
    generator, downstream = split_point({"sampling.t_first": 400, "downstream.real_frames": 2})
    assert generator == {"sampling.t_first": 400} and downstream == {"real_frames": 2}
    config = build_run_config("lowdata", "Fluo-N2DH-GOWT1", "bvdm", 1, generator, downstream)
    assert config.downstream == {"real_frames": 2} and config.generator_params["sampling"]["t_first"] == 400
    assert TrainingSetConfig(**config.downstream).condition() == "real-2+synthetic"
    assert TrainingSetConfig(real_frames=8, synthetic=False).condition() == "real-8"
    assert TrainingSetConfig(real_frames="all", real_fraction=0.25).condition() == "real-all+synthetic@0.25"
    assert TrainingSetConfig().condition() == "synthetic"
    assert bundle_path("D", "lowdata", "bvdm", 1, condition="real-2+synthetic") == Path("D/lowdata/bvdm/1/real-2+synthetic")
    assert bundle_path("D", "lowdata", "bvdm", 1, condition="synthetic") == Path("D/lowdata/bvdm/1")


def _run(generator: str, condition: str, seed: int, seg: float, tra: float, k: str | None = None) -> dict:
    return {"tags.generator": generator, "tags.condition": condition, "params.seed": str(seed),
            "tags.real_frames": k, "metrics.SEG": seg, "metrics.DET": seg, "metrics.TRA": tra,
            "run_id": f"{generator}{condition}{seed}"}


def test_table3_pairs_each_mixed_condition_with_real_only_of_the_same_k_and_seeds() -> None:
    runs = pd.DataFrame([
        *[_run("real", "real-2", s, 0.40 + 0.01 * s, 0.50) for s in range(3)],
        *[_run("bvdm", "real-2+synthetic", s, 0.50 + 0.01 * s + 0.002 * s * s, 0.50 + 0.01 * (s - 1)) for s in range(3)],
        *[_run("mitogen", "real-2+synthetic", s, 0.30 + 0.013 * s, 0.50) for s in range(3)],
        *[_run("bvdm", "synthetic", s, 0.45, 0.6) for s in range(3)],
    ])
    table = lowdata_table(runs).set_index(["condition", "K"])
    assert list(table.index) == [("bvdm only", "0"), ("real only", "2"), ("real + bvdm", "2"), ("real + mitogen", "2")]
    bvdm = table.loc[("real + bvdm", "2")]
    assert bvdm["gain_SEG"] == pytest.approx((0.10 + 0.102 + 0.108) / 3) and bvdm["gain_SEG_n"] == 3
    assert bvdm["gain_SEG_verdict"] == "helps" and bvdm["gain_SEG_ci_low"] > 0
    assert table.loc[("real + mitogen", "2")]["gain_SEG_verdict"] == "hurts"
    assert bvdm["gain_TRA_verdict"] == "no measurable difference"  # -0.01, 0, +0.01 around 0
    assert pd.isna(table.loc[("real only", "2")].get("gain_SEG"))  # the baseline has no gain of its own
    shown = lowdata_display(lowdata_table(runs))
    assert "(helps)" in shown.loc[shown["condition"] == "real + bvdm", "gain SEG"].item()


@pytest.mark.slow  # a whole ci pipeline run (~4 min on 2 cores)
def test_a_low_data_run_trains_on_its_training_set_and_exports_under_its_condition(
        shared_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.bundle_cli import export_run
    from benchmark.config import build_run_config
    from benchmark.pipeline import run_benchmark

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    profile = tmp_path / "quick.toml"  # the ci window with a token StarDist budget: the plumbing is under test
    profile.write_text('extends = "ci"\n[run]\noracle = false\n[segmenter]\nepochs = 2\nsteps_per_epoch = 2\n')
    config = build_run_config(profile, "Fluo-N2DH-GOWT1", "real", 1, None, {"real_frames": 2, "synthetic": False})
    row = run_benchmark(config, tmp_path / "runs", str(shared_assets))
    stages = tmp_path / "runs" / "Fluo-N2DH-GOWT1" / "stages"
    [training] = [p for p in stages.glob("training-set-*") if not p.name.endswith(".partial")]
    manifest = json.loads((training / "segmenter" / MANIFEST).read_text())
    assert manifest["condition"] == "real-2" and len(manifest["real_frames"]["frames"]) == 2
    [model] = stages.glob("train-segmenter-*/stardist/training.json")
    names = json.loads(model.read_text())["train_frames"] + json.loads(model.read_text())["val_frames"]
    assert sorted(names) == ["01:0", "01:1"]  # one real frame to train on, one to validate: nothing synthetic
    assert 0 <= row["SEG"] <= 1 and row["real_frames_k"] == 2
    bundle = export_run(row["run_id"], tmp_path / "results")
    assert bundle.folder == tmp_path / "results" / "Fluo-N2DH-GOWT1" / "quick" / "real" / "1" / "real-2"
