"""A fourth generator by a newcomer's path (README "Add a generator"): a toy generator in a package of its own,
registered only through the ``synthvid.generators`` entry point (a ``.dist-info`` on ``PYTHONPATH``: nothing
installed, nothing in this repository edited), runs the ci pipeline, appears in Table 1 and is refused by the
gate in one line for having no bounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.ctc import CTCSequence, write_sequence
from benchmark.ctc.crops import annotated_frames, full_masks
from generators.base import GenerateSpec, Generator, GeneratorConfig


@dataclass
class ToyConfig(GeneratorConfig):
    level: float = 60.0


class Toy(Generator):
    """Flat nuclei with Gaussian noise on the real training masks: the simplest video with exact annotation."""

    config_class = ToyConfig

    def fit(self, real: CTCSequence) -> "Toy":
        self.masks = np.stack([full_masks(real, t) for t in annotated_frames(real)]).astype(np.uint16)
        self.parents = {label: track.parent for label, track in real.tracks.items() if track.parent}
        return self

    def generate(self, spec: GenerateSpec, out_dir) -> Path:
        rng = np.random.default_rng(spec.seed)
        masks = self.masks[: spec.n_frames]
        for i in range(spec.n_sequences):
            images = [np.clip((m > 0) * self.config.level + rng.normal(10, 4, m.shape), 0, 255).astype(np.uint8)
                      for m in masks]
            write_sequence(out_dir, f"{i + 1:02d}", images, list(masks), self.parents, overwrite=True)
        return Path(out_dir)

    def _save_state(self, directory: Path) -> None:
        np.savez(directory / "toy.npz", masks=self.masks, parents=np.array(list(self.parents.items())).reshape(-1, 2))

    def _load_state(self, directory: Path) -> None:
        with np.load(directory / "toy.npz") as data:
            self.masks, self.parents = data["masks"], {int(a): int(b) for a, b in data["parents"]}
'''


def _toy_package(root: Path) -> Path:
    """``toypkg`` and its distribution metadata (entry point ``toy``) under ``root``: on PYTHONPATH, importlib
    finds it as an installed distribution."""
    (root / "toypkg").mkdir(parents=True)
    (root / "toypkg" / "__init__.py").write_text("")
    (root / "toypkg" / "toy.py").write_text(TOY)
    info = root / "toypkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[synthvid.generators]\ntoy = toypkg.toy:Toy\n")
    return root


@pytest.mark.slow  # a ci pipeline run (~5 min on 2 cores)
def test_a_fourth_generator_runs_reports_and_is_gated_with_no_edit(shared_assets: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(_toy_package(tmp_path / "site")),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "SYNTHVID_CACHE": str(tmp_path / "cache")}
    weights = Path(os.environ.get("SYNTHVID_CACHE", Path.home() / ".cache" / "synthvid")) / "weights"
    if weights.is_dir():  # the sha256-checked metric weights only; everything else computed afresh
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "weights").symlink_to(weights, target_is_directory=True)
    profile = tmp_path / "quick.toml"  # the ci window, a token StarDist budget: the plumbing is under test
    profile.write_text('extends = "ci"\n[segmenter]\nepochs = 2\nsteps_per_epoch = 2\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1500)

    listed = cli("run", "--help")
    assert "toy" in listed.stdout, listed.stdout[-500:]
    run = cli("run", "--generator", "toy", "--profile", str(profile), "--data-root", str(shared_assets),
              "--out", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert not list((tmp_path / "runs").rglob("oracle-*/stage.json"))  # no render_oracle: the stage is left out
    report = cli("report", "--dataset", "Fluo-N2DH-GOWT1", "--profile", "quick", "--out", str(tmp_path / "out"),
                 "--no-log")
    assert report.returncode == 0, report.stderr[-2000:]
    table = (tmp_path / "out" / "reports" / "Fluo-N2DH-GOWT1-quick" / "table1.csv").read_text()
    assert "\ntoy," in table
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text('[quick."Fluo-N2DH-GOWT1".mitogen.min]\nSEG = 0.1\nTRA = 0.1\n')
    gate = cli("check", "--profile", str(profile), "--thresholds", str(thresholds))
    assert gate.returncode == 1
    lines = [line for line in gate.stdout.splitlines() if line.startswith("NO BOUNDS:")]
    assert len(lines) == 1 and "toy: no entry in the thresholds file" in lines[0], gate.stdout[-1500:]
    assert json.loads((next((tmp_path / "runs").rglob("fit-*/model/generator.json"))).read_text())["name"] == "toy"
