"""The one fit cache (``generators.fit_cache``): ``generate`` and ``run``'s fit stage share fitted states,
keyed on the resolved fit config, the code versions and the training data's bytes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmark.config import build_run_config
from benchmark.ctc import CTCSequence
from generators.fit_cache import RUNTIME_FIELDS, fit_key, fitted_generator
from generators.registry import get_generator

MITOGEN = {"max_fit_frames": 4, "imaging_frames": 2}


def test_the_key_follows_what_shapes_the_fit_and_nothing_else(gowt1_window: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seq = CTCSequence(gowt1_window, "01")
    bvdm = get_generator("bvdm")
    base = fit_key(bvdm, {}, seq)
    assert fit_key(bvdm, {"sampling": {"t_first": 400, "t_next": 30}}, seq) == base  # sampling: same fit
    assert fit_key(bvdm, {"progress": False, "device": "cpu", "checkpoint_dir": "/x"}, seq) == base  # runtime
    default = bvdm.config_class().ddpm.iterations
    assert fit_key(bvdm, {"ddpm": {"iterations": default}}, seq) == base  # the default, written out: the same
    assert fit_key(bvdm, {"ddpm": {"iterations": default + 1}}, seq) != base
    assert fit_key(bvdm, {}, CTCSequence(gowt1_window, "02")) != base  # other training data
    monkeypatch.setattr(bvdm, "fit_version", bvdm.fit_version + 1)
    assert fit_key(bvdm, {}, seq) != base  # a changed fit: every cached state of it is stale


def test_generate_and_the_run_fit_stage_share_one_fit(gowt1_window: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.stages import FIT, Stages, prepare_context, run_stage

    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mitogen = get_generator("mitogen")
    seq = CTCSequence(gowt1_window, "01")
    first = fitted_generator("mitogen", {**MITOGEN, "progress": False}, seq)  # what `generate` does
    stored = tmp_path / "cache" / "generators" / f"mitogen-{fit_key(mitogen, MITOGEN, seq)}"
    assert (stored / "config.json").is_file()

    def no_second_fit(self: object, real: CTCSequence) -> None:
        raise AssertionError("fitted twice")

    monkeypatch.setattr(mitogen, "fit", no_second_fit)
    config = dataclasses.replace(build_run_config("ci", "Fluo-N2DH-GOWT1", "mitogen", generator_overrides=MITOGEN),
                                 window=None)
    ctx = prepare_context(config, Stages(tmp_path / "stages", "Fluo-N2DH-GOWT1", log=lambda _: None),
                          str(gowt1_window.parent))
    assert ctx.fit_key == stored.name.removeprefix("mitogen-")
    fitted = run_stage(ctx, FIT, {})  # the run's fit stage: the same state, not a new fit
    def state(folder: Path) -> dict:  # the fitted state's config, runtime fields aside
        config = json.loads((folder / "config.json").read_text())
        return {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}

    assert state(fitted.folder / "model") == state(stored)
    assert type(first) is mitogen
