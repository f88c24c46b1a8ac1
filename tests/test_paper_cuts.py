"""Paper cuts a new user met (issue 37): ``--param`` read one way by every command, results alone on stdout
while StarDist trains, and a dataset registry that lists only the CTC's 2D fluorescence sets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import parse_params
from benchmark.ctc import CTCSequence, write_sequence
from benchmark.ctc.crops import full_masks
from benchmark.datasets import CTC_URL, DATASETS
from generators.registry import get_generator

GOWT1 = "Fluo-N2DH-GOWT1"
DOTTED = ["--param", "ddpm.batch_size=16", "--param", '{"ddpm": {"iterations": 40}}', "--param", "sampling.t_first=100"]
NESTED = {"ddpm": {"batch_size": 16, "iterations": 40}, "sampling": {"t_first": 100}}
#: each command with its data and an --out that is a FILE: the command fails on --out, right after its
#: generator parameters were checked, so nothing is fitted, generated or logged
COMMANDS = {
    "run": ["run", "--generator", "bvdm", "--profile", "ci"],
    "oracle": ["oracle", "--generator", "bvdm", "--profile", "ci"],
    "generate": ["generate", "--generator", "bvdm", "--dataset", GOWT1],
}
OUT_REFUSED = {"run": "cannot create the stage outputs of --out", "oracle": "cannot create the stage outputs of --out",
               "generate": "exists and is not a folder"}


def test_param_items_merge_into_nested_tables_in_order() -> None:
    assert parse_params(DOTTED[1::2]) == NESTED
    # later items win, sub-tables merge rather than replace
    assert parse_params(['{"ddpm": {"batch_size": 16, "iterations": 40}}', "ddpm.iterations=7"]) == \
        {"ddpm": {"batch_size": 16, "iterations": 7}}
    assert parse_params(["ddpm.iterations=7", '{"ddpm": {"iterations": 40}}']) == {"ddpm": {"iterations": 40}}
    assert parse_params(["t_first=400", "name=a=b"]) == {"t_first": 400, "name": "a=b"}  # flat keys stay flat
    config = get_generator("bvdm").from_params(parse_params(DOTTED[1::2])).config
    assert (config.ddpm.batch_size, config.ddpm.iterations, config.sampling.t_first) == (16, 40, 100)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_dotted_param_is_accepted_by_every_command(command: str, shared_assets: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``generate --param ddpm.batch_size=16`` was refused ("BVDMConfig: unknown parameters
    ['ddpm.batch_size']") while ``run`` took it: now every command gets past its parameter check with it,
    and a misspelled field of the same section is still refused by name."""
    blocker = tmp_path / "out-is-a-file"
    blocker.write_text("not a folder")
    common = [*COMMANDS[command], "--data-root", str(shared_assets), "--out", str(blocker),
              "--cache", str(tmp_path / "cache")]

    assert main([*common, *DOTTED]) == 2
    error = capsys.readouterr().err
    assert OUT_REFUSED[command] in error and "unknown parameters" not in error, error

    assert main([*common, "--param", "ddpm.batchsize=16"]) == 2
    error = capsys.readouterr().err
    assert "unknown parameters ['batchsize']" in error and OUT_REFUSED[command] not in error, error


# --- the dataset registry: the CTC's 2D fluorescence training sets ---------------------------------------

#: the CTC's 2D training sets (celltrackingchallenge.net/datasets); the fluorescence ones are "Fluo-"
CTC_2D = {"BF-C2DL-HSC", "BF-C2DL-MuSC", "DIC-C2DH-HeLa", "Fluo-C2DL-Huh7", "Fluo-C2DL-MSC", "Fluo-N2DH-GOWT1",
          "Fluo-N2DH-SIM+", "Fluo-N2DL-HeLa", "PhC-C2DH-U373", "PhC-C2DL-PSC"}
#: CTC naming: modality - (C)ell or (N)ucleus label, 2D, (H)igh or (L)ow density - cell line
NAME_2D = re.compile(r"^(Fluo|BF|DIC|PhC)-[CN]2D[HL]-[A-Za-z0-9]+\+?$")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_dataset_is_a_2d_ctc_set_with_its_official_url(name: str) -> None:
    info = DATASETS[name]
    assert info.name == name and NAME_2D.match(name), f"{name}: not a CTC 2D dataset name"
    assert name in CTC_2D, f"{name}: not in the CTC's list of 2D datasets"
    assert info.url == f"https://data.celltrackingchallenge.net/training-datasets/{name}.zip" == CTC_URL.format(name=name)


def test_the_registry_holds_every_2d_fluorescence_set() -> None:
    fluorescence = {name for name in CTC_2D if name.startswith("Fluo-")}
    assert fluorescence <= set(DATASETS), f"missing: {sorted(fluorescence - set(DATASETS))}"
    assert not NAME_2D.match("Fluo-N3DH-CE")  # the C. elegans set the registry used to list is 3D


# --- stdout holds results only -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_window(gowt1_window: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 frames of the real window's 01 and 02, full masks as SEG (the way the 'real' generator writes them)."""
    out = tmp_path_factory.mktemp("full") / GOWT1
    for name in ("01", "02"):
        seq = CTCSequence(gowt1_window, name)
        write_sequence(out, name, [seq.image(t) for t in range(4)], [full_masks(seq, t) for t in range(4)],
                       {k: v.parent for k, v in seq.tracks.items()})
    return out


def test_stardist_training_and_prediction_print_nothing_on_stdout(full_window: Path, tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """Keras's epoch bar (StarDist hard-wires ``verbose=1``) and StarDist's notices went to stdout, into the
    middle of ``run``'s result lines; they go to stderr. Captured at the file descriptors, so a write
    from C code would count too."""
    from downstream.segmenter import SegmenterConfig, segment_frames, train_segmenter

    config = SegmenterConfig(patch_size=128, batch_size=2, epochs=2, steps_per_epoch=1, unet_n_filter_base=8)
    model_dir = train_segmenter(full_window, config, tmp_path / "stardist", progress=False)
    masks = segment_frames(model_dir, CTCSequence(full_window, "02"), [0], progress=False)
    out, err = capfd.readouterr()
    assert set(masks) == {0}
    assert out == "", f"stdout got {out[:500]!r}"
    assert "Epoch 2/2" in err and "step" in err  # the progress is still shown, on stderr
