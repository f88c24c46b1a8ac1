"""A generator's capabilities are checked before any stage: one without ``render_oracle`` runs every other stage
of a run (the frame-ceiling stage is left out, not failed after fit and generate), and ``oracle`` refuses it at
once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.config import build_run_config
from benchmark.ctc import CTCSequence
from benchmark.stages import ORACLE, ORACLE_DAG
from generators.base import GenerateSpec, Generator
from generators.registry import get_generator


class NoOracle(Generator):
    """A plug-in that fits and generates but has no frame path to render real textures through."""

    name = "no-oracle"

    def fit(self, real: CTCSequence) -> NoOracle:
        return self

    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        return Path(out_dir)


def _ctx(generator_cls: type[Generator], oracle: bool = True) -> SimpleNamespace:
    return SimpleNamespace(generator_cls=generator_cls, config=SimpleNamespace(oracle=oracle))


def test_the_oracle_stage_runs_only_for_a_generator_that_renders_one() -> None:
    assert not NoOracle.renders_oracle() and get_generator("bvdm").renders_oracle()
    assert not ORACLE.when(_ctx(NoOracle)) and ORACLE.when(_ctx(get_generator("mitogen")))
    assert not ORACLE.when(_ctx(get_generator("mitogen"), oracle=False))
    oracle_stage = next(s for s in ORACLE_DAG if s.name == "oracle")
    assert not oracle_stage.when(_ctx(NoOracle)) and oracle_stage.when(_ctx(get_generator("cellcyclegan"), False))


def test_the_oracle_command_refuses_a_generator_without_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benchmark import pipeline

    monkeypatch.setattr(pipeline, "check_inputs", lambda *a: pytest.fail("refused only after the input checks"))
    monkeypatch.setattr(pipeline, "get_generator", lambda name: NoOracle)  # the name run_oracle looks up
    config = build_run_config("ci", "Fluo-N2DH-GOWT1", "mitogen")
    with pytest.raises(ValueError, match="does not implement render_oracle"):
        pipeline.run_oracle(config, tmp_path)


@pytest.mark.parametrize(("command", "param", "where"), [
    ("run", "sampling.device=cuda", "generators.bvdm.sampling.device = 'cuda'"),
    ("oracle", "device=cuda:1", "generators.bvdm.device = 'cuda:1'"),
])
def test_an_accelerator_this_machine_lacks_is_refused_before_any_stage(
        command: str, param: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from benchmark.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main([command, "--generator", "bvdm", "--profile", "ci", "--param", param, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and where in err and "no such device" in err, err
    assert not (tmp_path / "o").exists()
