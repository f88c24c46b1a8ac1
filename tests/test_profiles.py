"""Profiles are checked when they are loaded: a misspelt section or ``[run]`` key is one line naming the
profile and the key, before any stage or MLflow run, instead of being silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import BASES, PROFILES, build_run_config, load_profile


@pytest.mark.parametrize("profile", PROFILES)
def test_every_shipped_profile_loads(profile: str) -> None:
    assert load_profile(profile)["run"]


@pytest.mark.parametrize(("text", "named"), [
    ('extends = "ci"\n[segmentor]\nepochs = 3\n', "[segmentor]"),
    ('extends = "ci"\n[run]\nn_sequence = 3\n', "'n_sequence' in [run]"),
    ('extends = "ci"\n[run."Fluo-N2DH-GOWT1"]\nframes = 3\n', "'frames' in [run.\"Fluo-N2DH-GOWT1\"]"),
    ('extends = "ci"\nsegmenter = 3\n', "[segmenter] must be a table"),
])
def test_an_unknown_section_or_key_is_refused_at_load(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="profile") as info:
        build_run_config(str(path), "Fluo-N2DH-GOWT1", "mitogen")
    assert named in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("generator", "text", "needles"), [
    ("mitogen", '[segmentor]\nepochs = 3\n', ["[segmentor]"]),
    ("bvdm", '[generators.bvdm.ddpm]\niteration = 3\n',
     ["profile 'typo'", "generators.bvdm.ddpm: unknown parameters ['iteration']"]),
])
def test_the_cli_refuses_a_bad_profile_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       generator: str, text: str, needles: list[str]) -> None:
    """An unknown section, or a typo inside a nested generator section, is one line before any work."""
    path = tmp_path / "typo.toml"
    path.write_text('extends = "ci"\n' + text)
    out = tmp_path / "runs"
    code = main(["run", "--generator", generator, "--dataset", "Fluo-N2DH-GOWT1", "--profile", str(path),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and all(needle in err for needle in needles)
    assert not out.exists()


def test_dotted_params_merge_into_the_nested_sections() -> None:
    """``--param ddpm.iterations=5`` changes one field of the profile's table and keeps the others."""
    config = build_run_config("ci", "Fluo-N2DH-GOWT1", "bvdm",
                              generator_overrides={"ddpm.iterations": 5, "sampling": {"t_first": 100}})
    ddpm = config.generator_params["ddpm"]
    assert ddpm["iterations"] == 5 and ddpm["block_out_channels"] == [16, 32, 32, 64] and ddpm["batch_size"] == 8
    assert config.generator_params["sampling"] == {"t_first": 100}
    assert config.generator_params["max_fit_frames"] == 12


@pytest.mark.parametrize("base", BASES)
def test_a_base_is_not_a_runnable_profile(base: str) -> None:
    """A base is incomplete on purpose: ``--profile base`` is refused in one line, ``extends`` still works."""
    assert base not in PROFILES
    with pytest.raises(ValueError, match="only a base") as info:
        build_run_config(base, "Fluo-N2DH-GOWT1", "mitogen")
    assert "\n" not in str(info.value)


def test_a_user_profile_may_extend_a_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('extends = "base"\n[segmenter]\nepochs = 3\n')
    config = build_run_config(str(path), "Fluo-N2DH-GOWT1", "mitogen")
    assert config.profile == "mine" and config.segmenter["epochs"] == 3 and config.oracle


@pytest.mark.parametrize(("text", "named"), [
    ('extends = "cpu-papr"\n', "extends unknown profile 'cpu-papr'"),
    ('extends = "missing.toml"\n', "extends unknown profile 'missing.toml'"),
    ('extends = ["ci"]\n', "'extends' must be a profile name"),
    ('extends = ""\n', "'extends' must be a profile name"),
    ('extends = "mine.toml"\n', "circular 'extends' chain mine -> mine"),
    ('extends = "./other.toml"\n', "circular 'extends' chain mine -> other -> mine"),
])
def test_a_bad_extends_is_refused_naming_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     text: str, named: str) -> None:
    """Unknown bases and cycles (however the path is spelt) fail in one line instead of recursing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.toml").write_text(f'extends = "{tmp_path / "mine.toml"}"\n')
    (tmp_path / "mine.toml").write_text(text)
    with pytest.raises(ValueError, match=r"^profile '(\./other|mine)\.toml': ") as info:
        load_profile("mine.toml")
    assert named in str(info.value) and "\n" not in str(info.value)


def test_run_tracker_flag_switches_only_the_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``run --tracker`` sets ``[tracker] method`` and keeps the profile's other tracker keys (so the stages
    before train-tracker are the profile run's); an unknown tracker is one line before any work."""
    from benchmark.pipeline import check_run_config, with_tracker

    config = build_run_config("ci", "Fluo-N2DH-GOWT1", "real")
    assert with_tracker(config, None) is config
    switched = with_tracker(config, "trackastra")
    assert switched.tracker == {**config.tracker, "method": "trackastra"} and config.tracker.get("method") is None
    assert {k: v for k, v in switched.to_dict().items() if k != "tracker"} == {
        k: v for k, v in config.to_dict().items() if k != "tracker"}
    check_run_config(switched)
    out = tmp_path / "out"
    code = main(["run", "--generator", "real", "--profile", "ci", "--tracker", "trackstra", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "tracker: unknown method 'trackstra'; known: learned, trackastra" in err and not out.exists()
