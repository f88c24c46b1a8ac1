"""Fits that stop at a deadline (``benchmark.budget``) and resume from a resume folder, bit for bit.

A campaign gives each ``run`` subprocess ``SYNTHVID_DEADLINE``; a fit still training then checkpoints into
``SYNTHVID_RESUME_ROOT`` (committed to git) and the next session, in a fresh clone (an empty cache: only
the resume folder carries over), continues it from the same step. The resumed fit must EQUAL an
uninterrupted one: every saved tensor (``torch.equal``) and every loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark import budget
from benchmark.ctc import CTCSequence
from benchmark.ctc.crops import crop_size_for
from generators.cellcyclegan.data import TrainingCrops, collect_crops, fit_intensity_scale, sample_frames
from generators.cellcyclegan.train import PROFILES, GANTrainConfig, train_gan
from generators.checkpoints import checkpoint_files
from generators.fit_cache import fit_key, fitted_generator, resume_folder, resume_progress
from generators.registry import get_generator

ROOT = Path(__file__).resolve().parents[1]
BVDM = {"progress": False, "max_fit_frames": 4, "imaging_frames": 2, "denoise": "gaussian", "crop_size": 64,
        "ddpm": {"block_out_channels": [8, 16], "norm_num_groups": 4, "batch_size": 2, "iterations": 6,
                 "checkpoint_every": 4},
        "flow": {"batch_size": 2, "iterations": 4}}
GAN = {**PROFILES["ci"], "iterations": 12, "log_every": 5, "progress": False,
       "mask_fit_frames": 4, "noise_fit_frames": 2}


class Deadline:
    """Stands in for ``benchmark.budget.deadline_reached``: true at the chosen calls (1-based), counting all."""

    def __init__(self, *at: int) -> None:
        self.at, self.calls = set(at), 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls in self.at


def never_consulted() -> bool:
    raise AssertionError("a training step ran: the deadline was consulted")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks train fastest on one thread (two oversubscribe a shared CPU badly, as ``GANTrainConfig.threads``
    says); bit-for-bit comparisons hold for any fixed count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def resume_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "results" / "_resume"
    monkeypatch.setenv(budget.RESUME_ROOT_ENV, str(root))
    return root


def fit_in(cache: Path, name: str, params: dict, seq: CTCSequence, monkeypatch: pytest.MonkeyPatch,
           deadline: Callable[[], bool]) -> Path:
    """Fit ``name`` in ``cache`` (a fresh clone's empty cache) with ``deadline`` as the budget check; the
    stored fit's folder."""
    monkeypatch.setattr(budget, "deadline_reached", deadline)
    fitted_generator(name, params, seq, cache=cache)
    return cache / "generators" / f"{name}-{fit_key(get_generator(name), params, seq)}"


def stopped(cache: Path, name: str, params: dict, seq: CTCSequence, monkeypatch: pytest.MonkeyPatch,
            deadline: Deadline) -> budget.BudgetExhausted:
    with pytest.raises(budget.BudgetExhausted) as caught:
        fit_in(cache, name, params, seq, monkeypatch, deadline)
    assert not (cache / "generators" / f"{name}-{fit_key(get_generator(name), params, seq)}").exists()
    return caught.value


def assert_same_fit(a: Path, b: Path) -> None:
    """Every tensor of every safetensors file equal (torch.equal), every JSON file equal but the fit record,
    the wall times of a history and where the checkpoints went (``config.json``'s ``checkpoint_dir``)."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    for name in files:
        left, right = load_file(a / name), load_file(b / name)
        assert left.keys() == right.keys(), name
        for key in left:
            assert torch.equal(left[key], right[key]), f"{name}: {key} differs"
    for path in sorted(a.rglob("*.json")):
        if path.name not in ("fit_record.json", "history.json"):
            left, right = (json.loads(p.read_text()) for p in (path, b / path.relative_to(a)))
            if path.name == "config.json":
                left, right = ({k: v for k, v in c.items() if k != "checkpoint_dir"} for c in (left, right))
            assert left == right, path.relative_to(a)


def test_a_bvdm_fit_stopped_twice_resumes_in_fresh_clones_to_the_uninterrupted_fit(
        gowt1_window: Path, tmp_path: Path, resume_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped once in the DDPM (step 3 of 6) and once in the flow (step 2 of 4), each time continued with an
    empty cache: the same tensors and loss curves as a fit never stopped; the completed resume folder stays
    (the campaign removes it) and alone gives the same fit again without a training step."""
    seq = CTCSequence(gowt1_window, "01")
    folder = resume_folder("bvdm", BVDM, seq)
    assert folder == resume_root / f"bvdm-{fit_key(get_generator('bvdm'), BVDM, seq)}"
    monkeypatch.setenv(budget.RESUME_ROOT_ENV, str(tmp_path / "other-root"))
    uninterrupted = fit_in(tmp_path / "cache-0", "bvdm", BVDM, seq, monkeypatch, Deadline())
    monkeypatch.setenv(budget.RESUME_ROOT_ENV, str(resume_root))

    error = stopped(tmp_path / "cache-1", "bvdm", BVDM, seq, monkeypatch, Deadline(3))
    assert str(error) == f"BVDM DDPM stopped after step 3 of 6; checkpoint {folder / 'checkpoint-3.safetensors'}"
    assert resume_progress(folder) == {"ddpm": (3, 6), "flow": None}
    error = stopped(tmp_path / "cache-2", "bvdm", BVDM, seq, monkeypatch, Deadline(4))  # DDPM 4, 5; flow 1, 2
    assert (error.what, error.step) == ("BVDM flow", 2)  # the DDPM went on from step 4, not from the start
    assert [p.name for p in checkpoint_files(folder)] == ["checkpoint-6.safetensors"]  # only the newest is committed
    assert resume_progress(folder) == {"ddpm": (6, 6), "flow": (2, 4)}
    rest = Deadline()
    resumed = fit_in(tmp_path / "cache-3", "bvdm", BVDM, seq, monkeypatch, rest)
    assert rest.calls == 1  # flow step 3 only (the last step never asks): resumed, not retrained

    assert_same_fit(uninterrupted, resumed)
    for part in ("ddpm", "flow"):
        curve = json.loads((resumed / part / "loss.json").read_text())
        assert curve == json.loads((uninterrupted / part / "loss.json").read_text()) and len(curve) == BVDM[part]["iterations"]
    assert resume_progress(folder) == {"ddpm": (6, 6), "flow": (4, 4)}  # kept: the campaign removes it
    again = fit_in(tmp_path / "cache-4", "bvdm", BVDM, seq, monkeypatch, never_consulted)
    assert_same_fit(uninterrupted, again)


def test_a_gan_fit_stopped_mid_window_resumes_to_the_uninterrupted_fit(
        gowt1_window: Path, tmp_path: Path, resume_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CellCycleGAN stopped at step 7 of 12 (logging every 5: two losses of a window pending), continued with
    an empty cache: same networks and history (but wall times); the completed folder alone gives it again."""
    seq = CTCSequence(gowt1_window, "01")
    monkeypatch.setenv(budget.RESUME_ROOT_ENV, str(tmp_path / "other-root"))
    uninterrupted = fit_in(tmp_path / "cache-0", "cellcyclegan", GAN, seq, monkeypatch, Deadline())
    monkeypatch.setenv(budget.RESUME_ROOT_ENV, str(resume_root))
    folder = resume_folder("cellcyclegan", GAN, seq)

    assert stopped(tmp_path / "cache-1", "cellcyclegan", GAN, seq, monkeypatch, Deadline(7)).step == 7
    assert resume_progress(folder) == {"gan": (7, 12)}
    rest = Deadline()
    resumed = fit_in(tmp_path / "cache-2", "cellcyclegan", GAN, seq, monkeypatch, rest)
    assert rest.calls == 4  # steps 8 to 11: resumed, not retrained

    assert_same_fit(uninterrupted, resumed)
    assert (uninterrupted / "samples.png").read_bytes() == (resumed / "samples.png").read_bytes()

    def history(fit: Path) -> list[dict]:
        rows = json.loads((fit / "history.json").read_text())["history"]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert history(resumed) == history(uninterrupted) and [r["iteration"] for r in history(resumed)] == [5, 10, 12]
    assert_same_fit(uninterrupted, fit_in(tmp_path / "cache-3", "cellcyclegan", GAN, seq, monkeypatch,
                                          never_consulted))


@pytest.fixture(scope="module")
def crops(gowt1_window: Path) -> TrainingCrops:
    seq = CTCSequence(gowt1_window, "01")
    frames = sample_frames(seq, 4)
    return collect_crops(seq, crop_size_for(seq), fit_intensity_scale(seq, frames), frames)


def fewer(crops: TrainingCrops) -> TrainingCrops:
    """The same crops but the last."""
    return dataclasses.replace(crops, **{f.name: getattr(crops, f.name)[:-1] for f in dataclasses.fields(crops)})


def test_a_checkpoint_of_another_config_is_ignored(crops, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint covers config and data: another seed, or other crops, trains from step 1."""
    config = GANTrainConfig.profile("ci", iterations=3, progress=False)
    train_gan(crops, config, checkpoint_dir=tmp_path)
    for other, data in ((GANTrainConfig.profile("ci", iterations=4, seed=1, progress=False), crops),
                        (GANTrainConfig.profile("ci", iterations=4, progress=False), fewer(crops))):
        steps = Deadline()
        monkeypatch.setattr(budget, "deadline_reached", steps)
        train_gan(data, other, checkpoint_dir=tmp_path)
        assert steps.calls == 3  # steps 1-3 of 4 consulted the deadline: nothing was resumed
    longer = Deadline()  # the same config, longer: continues the 3-step run
    monkeypatch.setattr(budget, "deadline_reached", longer)
    train_gan(crops, GANTrainConfig.profile("ci", iterations=5, progress=False), checkpoint_dir=tmp_path)
    assert longer.calls == 1  # step 4 only


def test_a_changed_checkpoint_is_ignored_with_a_warning(crops, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """One behaviour for a checkpoint that fails its sha256: never loaded, ignored with a warning naming it
    (the fit starts over), and left out of ``resume_progress``."""
    config = GANTrainConfig.profile("ci", iterations=3, progress=False)
    folder = tmp_path / "cellcyclegan-0123456789abcdef"
    train_gan(crops, config, checkpoint_dir=folder / "gan")
    assert resume_progress(folder) == {"gan": (3, 3)}
    path = folder / "gan" / "checkpoint-3.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert resume_progress(folder) == {"gan": None}
    assert f"ignoring unreadable checkpoint {path} ({path}: sha256 mismatch" in caplog.text
    steps = Deadline()
    monkeypatch.setattr(budget, "deadline_reached", steps)
    train_gan(crops, config, checkpoint_dir=folder / "gan")
    assert steps.calls == 2  # retrained from step 1
    assert resume_progress(folder) == {"gan": (3, 3)}


def test_the_deadline_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(budget.DEADLINE_ENV, raising=False)
    assert budget.deadline() is None and not budget.deadline_reached()
    monkeypatch.setenv(budget.DEADLINE_ENV, str(time.time() + 3600))
    assert not budget.deadline_reached()
    monkeypatch.setenv(budget.DEADLINE_ENV, "1.5")
    assert budget.deadline() == 1.5 and budget.deadline_reached()
    for bad in ("soon", "nan", "inf"):
        monkeypatch.setenv(budget.DEADLINE_ENV, bad)
        with pytest.raises(ValueError, match=rf"^SYNTHVID_DEADLINE='{bad}': not a UNIX time in seconds$"):
            budget.deadline()


def test_run_at_a_past_deadline_exits_75_with_one_line_and_leaves_the_checkpoint(gowt1: Path, tmp_path: Path) -> None:
    """``python -m benchmark run`` past its deadline: the fit stops after its first DDPM step, the checkpoint is
    in the resume folder, one line says so, exit status 75; the MLflow runs end KILLED, not FAILED."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "SYNTHVID_CACHE": str(tmp_path / "cache"),
           budget.DEADLINE_ENV: "1", budget.RESUME_ROOT_ENV: str(tmp_path / "resume"),
           "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false", "OMP_NUM_THREADS": "1"}
    args = ["run", "--generator", "bvdm", "--profile", "ci", "--dataset", "Fluo-N2DH-GOWT1", "--data-root",
            str(gowt1.parent), "--out", str(tmp_path / "runs"), "--param", "ddpm.iterations=4"]
    done = subprocess.run([sys.executable, "-m", "benchmark", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 75, done.stderr[-2000:]
    folders = list((tmp_path / "resume").iterdir())
    assert len(folders) == 1 and resume_progress(folders[0]) == {"ddpm": (1, 4), "flow": None}
    line = (f"error: run stopped at its deadline: BVDM DDPM stopped after step 1 of 4; checkpoint "
            f"{folders[0] / 'checkpoint-1.safetensors'}; the same command resumes from the checkpoint")
    assert done.stderr.strip().splitlines()[-1] == line
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.status for r in runs if r.info.status != "FINISHED"} == {"KILLED"}  # the run and its fit stage
