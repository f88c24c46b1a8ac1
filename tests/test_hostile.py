"""Hostile-but-fair input to the CLI (issue 16): every bad input ends with ONE line on stderr naming the file
(or argument) and a non-zero exit, or with a correct result; nothing that existed before is lost or changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.ctc import CTCSequence, validate_sequence
from benchmark.ctc.validate import errors
from generators.cli import MANIFEST

GOWT1 = "Fluo-N2DH-GOWT1"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python -m benchmark ARGS`` run in this process."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, *needles: str) -> str:
    """The single stderr line of a refused command; it must name each of ``needles`` (file, argument)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): compared before/after a refused command."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. generate --out: no data loss
@pytest.fixture(scope="module")
def fit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fit cache for the module's `generate` calls (mitogen fits once on the GOWT1 window)."""
    return tmp_path_factory.mktemp("fit_cache")


def generate_args(window: Path, cache: Path, out: Path, generator: str = "mitogen", sequences: int = 2) -> list[str]:
    return ["generate", "--generator", generator, "--dataset", GOWT1, "--data-root", str(window.parent),
            "--frames", "3", "--sequences", str(sequences), "--shape", "96", "112", "--cache", str(cache), "--quiet",
            "--param", "max_fit_frames=4", "--param", "imaging_frames=2", "--out", str(out)]


def real_args(window: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--generator", "real", "--dataset", GOWT1, "--data-root", str(window.parent),
            "--frames", "3", "--quiet", "--out", str(out), *extra]


def test_generate_refuses_a_folder_holding_a_real_dataset(gowt1_window: Path, fit_cache: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    shutil.copytree(gowt1_window, out)
    before = snapshot(out)
    code, _, err = run_cli(generate_args(gowt1_window, fit_cache, out), capsys)
    assert code == 2
    one_error_line(err, str(out), "--overwrite")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left beside it


def test_generate_twice_with_fewer_sequences_leaves_no_stale_sequence(gowt1_window: Path, fit_cache: Path,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert run_cli(generate_args(gowt1_window, fit_cache, out, sequences=2), capsys)[0] == 0
    assert {"01", "02", "01_GT", "02_GT", MANIFEST} <= {p.name for p in out.iterdir()}
    code, stdout, _ = run_cli(generate_args(gowt1_window, fit_cache, out, sequences=1), capsys)
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["out"] == str(out)
    names = {p.name for p in out.iterdir()}
    assert "02" not in names and "02_GT" not in names and "01" in names
    assert errors(validate_sequence(out, "01", require_complete=True)) == []
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["generator"] == "mitogen" and manifest["spec"]["n_sequences"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_generate_refuses_output_with_foreign_files_or_of_another_generator(
        gowt1_window: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert run_cli(real_args(gowt1_window, out), capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    code, _, err = run_cli(real_args(gowt1_window, out), capsys)
    assert code == 2
    one_error_line(err, str(out), "notes.txt")
    assert snapshot(out) == before
    (out / "notes.txt").unlink()
    before = snapshot(out)
    code, _, err = run_cli(["generate", "--generator", "mitogen", *real_args(gowt1_window, out)[3:]], capsys)
    assert code == 2
    one_error_line(err, str(out), "'real'")
    assert snapshot(out) == before


def test_generate_overwrite_replaces_the_whole_folder(gowt1_window: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    shutil.copytree(gowt1_window, out)
    assert run_cli(real_args(gowt1_window, out, "--overwrite"), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["01", "01_GT", MANIFEST])  # the real 02 did not survive
    assert CTCSequence(out, "01").n_frames == 3


def test_failed_generate_keeps_the_earlier_output(gowt1_window: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from generators.folder import RealGenerator

    out = tmp_path / "syn"
    assert run_cli(real_args(gowt1_window, out), capsys)[0] == 0
    before = snapshot(out)

    def half_write(self, spec, out_dir):  # writes part of a sequence, then dies
        (Path(out_dir) / "01").mkdir(parents=True)
        (Path(out_dir) / "01" / "t000.tif").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(RealGenerator, "generate", half_write)
    with pytest.raises(RuntimeError, match="killed"):
        main(real_args(gowt1_window, out))
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_generate_into_an_empty_folder_is_allowed(gowt1_window: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert run_cli(real_args(gowt1_window, out), capsys)[0] == 0
    assert (out / MANIFEST).is_file() and CTCSequence(out, "01").n_frames == 3


def test_generate_refuses_an_unwritable_out_before_fitting(gowt1_window: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(real_args(gowt1_window, blocker / "out"), capsys)
    assert code == 2
    one_error_line(err, str(blocker / "out"), "not a folder")
    assert blocker.read_text() == "x"
    code, _, err = run_cli(real_args(gowt1_window, blocker), capsys)
    assert code == 2
    one_error_line(err, str(blocker), "not a folder")
    if Path("/proc/self").is_dir():  # a read-only place even for root
        code, _, err = run_cli(real_args(gowt1_window, "/proc/synthvid-out"), capsys)
        assert code == 2
        one_error_line(err, "/proc/synthvid-out", "cannot write")


@pytest.mark.parametrize(("option", "values", "needle"), [
    ("--sequences", ["0"], "--sequences"),
    ("--frames", ["-3"], "--frames"),
    ("--shape", ["0", "0"], "--shape"),
    ("--frames", ["abc"], "--frames"),
])
def test_generate_rejects_non_positive_counts(option: str, values: list[str], needle: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--generator", "real", "--dataset", GOWT1, "--data-root", str(tmp_path), "--quiet",
            "--out", str(tmp_path / "out"), option, *values]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_error_line(err, needle, "positive integer")
    assert not (tmp_path / "out").exists()


def test_generate_spec_rejects_non_positive_sizes() -> None:
    from generators.base import GenerateSpec

    for kwargs in ({"n_sequences": 0}, {"n_frames": -1}, {"shape": (0, 0)}):
        with pytest.raises(ValueError, match="positive integer"):
            GenerateSpec(**kwargs)
    assert GenerateSpec(n_frames=np.int64(3)).n_frames == 3
