"""Hostile-but-fair input to the CLI (issue 16, and round 3: issue 31, at the end of the file): every bad input
ends with ONE line on stderr naming the file (or argument) and a non-zero exit, or with a correct result; nothing
that existed before is lost or changed."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.config import PROFILE_DIR, build_run_config, load_profile, profile_label
from benchmark.ctc import CTCSequence, validate_sequence, window_sequence
from benchmark.ctc.io import read_tiff, write_tiff
from benchmark.ctc.validate import errors
from benchmark.paths import refuse_output_overlapping_inputs
from generators.cli import MANIFEST
from tests.test_reports_data import DATASET, ScoredData, fresh_store, log_scored_run, prepare_scored_data

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


@pytest.mark.parametrize(("option", "values", "needle"), [
    ("--shape", ["100000", "100000"], "shape (100000, 100000) exceeds 8192 pixels a side"),
    ("--sequences", ["100"], "n_sequences = 100, but CTC names sequences 01-99")])
def test_generate_refuses_impossible_sizes_before_fitting(option: str, values: list[str], needle: str,
                                                          real_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--generator", "mitogen", "--dataset", GOWT1, "--data-root", real_root, "--frames", "2",
            "--quiet", "--cache", tmp_path / "fits", "--out", tmp_path / "out", option, *values]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_error_line(err, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "fits").exists()  # refused before the fit


def test_generate_says_what_it_wrote_when_it_differs_from_the_request(gowt1_window: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """``real`` writes its one real sequence whatever is asked: the JSON line, the manifest and a warning say so."""
    out = tmp_path / "out"
    code, stdout, _ = run_cli(real_args(gowt1_window, out, "--frames", "999", "--sequences", "2"), capsys)
    assert code == 0
    record = json.loads(stdout.strip().splitlines()[-1])
    assert record["written"] == {"01": 20} and record["spec"]["n_frames"] == 999
    assert json.loads((out / MANIFEST).read_text())["written"] == {"01": 20}
    assert any("wrote {'01': 20}" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ 2, 4, 5. metrics seg-tra: GT as strict as the result
def label_frames(n: int = 5, size: int = 40) -> list[np.ndarray]:
    """A tiny annotated video: cell 1 drifts right, cell 2 divides into 3 and 4 at t=2."""
    frames = []
    for t in range(n):
        frame = np.zeros((size, size), np.uint16)
        frame[5:12, 5 + t:12 + t] = 1
        if t < 2:
            frame[20:30, 20:30] = 2
        else:
            frame[18:24, 20:30] = 3
            frame[27:33, 20:30] = 4
        frames.append(frame)
    return frames


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    """A dataset folder with ``01_GT`` (lineage 3, 4 <- 2) and a perfect ``01_RES`` of it."""
    from benchmark.ctc import write_result, write_sequence

    labels = label_frames()
    write_sequence(tmp_path / "ds", "01", [(f > 0).astype(np.uint8) * 100 for f in labels], labels, {3: 2, 4: 2})
    write_result(tmp_path / "ds" / "01_RES", labels, {3: 2, 4: 2})
    return tmp_path / "ds"


def seg_tra(ds: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_cli(["metrics", "seg-tra", "--res", ds / "01_RES", "--gt", ds / "01_GT"], capsys)


def write_frame(path: Path, array: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, array)


def scores_of(stdout: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in stdout.strip().splitlines()[1:])


def test_a_perfect_result_scores_one(scored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = seg_tra(scored, capsys)
    assert code == 0 and err == ""
    scores = scores_of(out)
    assert scores["valid"] == "1.00000" and scores["TRA"] == "1.00000" and scores["SEG"] == "1.00000"


def _gt_tracks(ds: Path, name: str, table: str) -> Path:
    """Replace the GT lineage of sequence ``name`` with ``table``; returns the track file."""
    track_file = ds / f"{name}_GT" / "TRA" / "man_track.txt"
    track_file.write_text(table)
    return track_file


def _gt_parent_cycle(ds: Path, name: str = "01") -> tuple[Path, str]:
    return _gt_tracks(ds, name, "1 0 4 0\n2 0 1 4\n3 2 4 2\n4 2 4 2\n"), "parent cycle 2 -> 4 -> 2"


def _gt_self_parent(ds: Path, name: str = "01") -> tuple[Path, str]:
    return _gt_tracks(ds, name, "1 0 4 1\n2 0 1 0\n3 2 4 2\n4 2 4 2\n"), "parent cycle 1 -> 1"


def _gt_empty_tra_frame(ds: Path, name: str = "01") -> tuple[Path, str]:
    frame = ds / f"{name}_GT" / "TRA" / "man_track002.tif"
    write_frame(frame, np.zeros((40, 40), np.uint16))
    return frame, "tracks [1, 3, 4] are alive at frame 2"


def _gt_negative_label(ds: Path, name: str = "01") -> tuple[Path, str]:
    frame = ds / f"{name}_GT" / "TRA" / "man_track001.tif"
    labels = label_frames()[1].astype(np.int16)
    labels[labels == 1] = -1
    write_frame(frame, labels)
    return frame, "negative labels"


def _gt_unlisted_parent(ds: Path, name: str = "01") -> tuple[Path, str]:
    return _gt_tracks(ds, name, "1 0 4 0\n2 0 1 999\n3 2 4 2\n4 2 4 2\n"), "names parent 999, which is not listed"


def _gt_empty_seg_file(ds: Path, name: str = "01") -> tuple[Path, str]:
    frame = ds / f"{name}_GT" / "SEG" / "man_seg002.tif"
    frame.write_bytes(b"")
    return frame, "unreadable TIFF"


def _gt_float_seg(ds: Path, name: str = "01") -> tuple[Path, str]:
    frame = ds / f"{name}_GT" / "SEG" / "man_seg003.tif"
    write_frame(frame, label_frames()[3].astype(np.float32))
    return frame, "dtype float32"


def _gt_missing_tra_frame(ds: Path) -> tuple[Path, str]:
    (ds / "01_GT" / "TRA" / "man_track004.tif").unlink()
    (ds / "01_RES" / "mask004.tif").unlink()
    return ds / "01_GT" / "TRA", "missing TRA frames 4"


def _res_missing_track_file(ds: Path) -> tuple[Path, str]:
    (ds / "01_RES" / "res_track.txt").unlink()
    return ds / "01_RES" / "res_track.txt", "track file is missing"


def _res_float_mask(ds: Path) -> tuple[Path, str]:
    frame = ds / "01_RES" / "mask001.tif"
    write_frame(frame, label_frames()[1].astype(np.float32))
    return frame, "dtype float32"


def _res_wrong_shape(ds: Path) -> tuple[Path, str]:
    for t, labels in enumerate(label_frames()):
        write_frame(ds / "01_RES" / f"mask{t:03d}.tif", labels[:30, :30])
    return ds / "01_RES" / "mask000.tif", "shape (30, 30) differs from the GT's (40, 40)"


def _res_empty_file(ds: Path) -> tuple[Path, str]:
    (ds / "01_RES" / "mask002.tif").write_bytes(b"")
    return ds / "01_RES" / "mask002.tif", "unreadable TIFF"


def _res_missing_mask(ds: Path) -> tuple[Path, str]:
    (ds / "01_RES" / "mask002.tif").unlink()
    return ds / "01_RES", "4 result masks but 5 GT TRA frames"


BROKEN_INPUT = {f.__name__[1:]: f for f in (
    _gt_parent_cycle, _gt_self_parent, _gt_empty_tra_frame, _gt_negative_label, _gt_unlisted_parent,
    _gt_empty_seg_file, _gt_float_seg, _gt_missing_tra_frame, _res_missing_track_file, _res_float_mask,
    _res_wrong_shape, _res_empty_file, _res_missing_mask)}


@pytest.mark.parametrize("case", sorted(BROKEN_INPUT))
def test_seg_tra_rejects_broken_input_naming_the_file(case: str, scored: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, problem = BROKEN_INPUT[case](scored)
    before = snapshot(scored)
    code, out, err = seg_tra(scored, capsys)
    assert code == 2 and out == ""
    one_error_line(err, f"{path}: ", problem)
    assert snapshot(scored) == before


def test_validate_gt_names_a_cycle_as_a_cycle(scored: Path) -> None:
    from benchmark.ctc import validate_gt

    assert validate_gt(scored / "01_GT") == []
    _gt_parent_cycle(scored)
    # one problem: the cycle, not the time-order complaint about each of its edges
    assert [p.message for p in validate_gt(scored / "01_GT")] == [
        "parent cycle 2 -> 4 -> 2 (a track cannot descend from itself)"]


@pytest.mark.parametrize("where", ["res", "gt"])
def test_tab_or_mixed_separated_track_tables_score_like_spaces(where: str, scored: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    expected = scores_of(seg_tra(scored, capsys)[1])
    track_file = scored / "01_RES" / "res_track.txt" if where == "res" else scored / "01_GT" / "TRA" / "man_track.txt"
    lines = track_file.read_text().splitlines()
    track_file.write_text(lines[0] + "\n" + "".join(line.replace(" ", "\t") + "\n\n" for line in lines[1:]))
    before = snapshot(scored)
    code, out, err = seg_tra(scored, capsys)
    assert code == 0 and err == ""
    assert scores_of(out) == expected
    assert snapshot(scored) == before  # scored through a normalised copy, the user's file untouched


def test_an_all_empty_result_scores_zero(scored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for t in range(5):
        write_frame(scored / "01_RES" / f"mask{t:03d}.tif", np.zeros((40, 40), np.uint16))
    (scored / "01_RES" / "res_track.txt").write_text("")
    code, out, err = seg_tra(scored, capsys)
    assert code == 0 and err == ""
    scores = scores_of(out)
    assert scores["SEG"] == scores["DET"] == scores["TRA"] == "0.00000" and scores["valid"] == "1.00000"


def test_an_inconsistent_result_is_scored_invalid(scored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (scored / "01_RES" / "res_track.txt").write_text("1 0 3 0\n2 0 1 0\n3 2 4 2\n4 2 4 2\n")  # 1 is in mask004
    code, out, err = seg_tra(scored, capsys)
    assert code == 0 and err == ""
    scores = scores_of(out)
    assert scores["valid"] == "0.00000" and scores["TRA"] == "n/a"
    assert "mask004.tif" in scores["invalid_reason"]


# ------------------------------------------------------------------ 3, 4. run / generate: the real input and parameters
@pytest.fixture
def real_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a tiny synthetic ``Fluo-N2DH-GOWT1/{01,02}``; MLflow and the cache point into tmp_path."""
    from benchmark.ctc import write_sequence

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    labels = label_frames()
    for name in ("01", "02"):
        write_sequence(tmp_path / "root" / GOWT1, name, [(f > 0).astype(np.uint8) * 100 for f in labels], labels,
                       {3: 2, 4: 2})
    return tmp_path / "root"


def _in_float_labels(ds: Path, name: str) -> tuple[Path, str]:
    frame = ds / f"{name}_GT" / "TRA" / "man_track002.tif"
    write_frame(frame, label_frames()[2].astype(np.float32))
    return frame, "dtype float32"


def _in_unlisted_label(ds: Path, name: str) -> tuple[Path, str]:
    frame = ds / f"{name}_GT" / "TRA" / "man_track003.tif"
    labels = label_frames()[3]
    labels[35:38, 35:38] = 77
    write_frame(frame, labels)
    return frame, "labels [77] are not listed in man_track.txt"


def _in_nan_pixels(ds: Path, name: str) -> tuple[Path, str]:
    for t, labels in enumerate(label_frames()):  # float raw frames are fine; a NaN in one of them is not
        image = np.where(labels > 0, 100.0, 5.0).astype(np.float32)
        if t == 2:
            image[:2, :3] = np.nan
        write_frame(ds / name / f"t{t:03d}.tif", image)
    return ds / name / "t002.tif", "6 NaN or infinite pixel(s) in a raw frame"


def _in_binary_track_file(ds: Path, name: str) -> tuple[Path, str]:
    path = ds / f"{name}_GT" / "TRA" / "man_track.txt"
    path.write_bytes(b"\xff\xfe\x00\x01")
    return path, "not a text table of integers (byte 0xff at offset 0)"


def _in_unreadable_image(ds: Path, name: str) -> tuple[Path, str]:
    (ds / name / "t001.tif").write_bytes(b"")
    return ds / name / "t001.tif", "unreadable TIFF"


BROKEN_REAL = {"float labels": _in_float_labels, "negative labels": _gt_negative_label,
               "parent cycle": _gt_parent_cycle, "empty TRA frame": _gt_empty_tra_frame,
               "label not in lineage": _in_unlisted_label, "unreadable image": _in_unreadable_image,
               "NaN pixels": _in_nan_pixels, "binary track file": _in_binary_track_file}


def run_args(root: Path, out: Path, *extra: str, generator: str = "real") -> list[str]:
    return ["run", "--generator", generator, "--profile", "ci", "--dataset", GOWT1, "--data-root", str(root),
            "--out", str(out), *extra]


@pytest.mark.parametrize("sequence", ["01", "02"])
@pytest.mark.parametrize("case", sorted(BROKEN_REAL))
def test_run_refuses_broken_real_input_before_any_stage(case: str, sequence: str, real_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, problem = BROKEN_REAL[case](real_root / GOWT1, sequence)  # 01 trains, 02 is held out
    before = snapshot(real_root)
    code, _, err = run_cli(run_args(real_root, tmp_path / "runs"), capsys)
    assert code == 2
    line = one_error_line(err, f"{path}: ", problem)
    assert ".partial" not in line  # the user's file, never the window stage's copy of it
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
    assert snapshot(real_root) == before


@pytest.mark.parametrize("case", sorted(BROKEN_REAL))
def test_generate_refuses_broken_real_input_before_fitting(case: str, real_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, problem = BROKEN_REAL[case](real_root / GOWT1, "01")
    before = snapshot(real_root)
    args = ["generate", "--generator", "mitogen", "--dataset", GOWT1, "--data-root", real_root, "--frames", "3",
            "--quiet", "--out", tmp_path / "out"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_error_line(err, f"{path}: ", problem)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert snapshot(real_root) == before


def test_partial_real_input_is_accepted_with_warnings(real_root: Path) -> None:
    from benchmark.ctc.validate import check_input_sequence

    (real_root / GOWT1 / "01" / "t002.tif").unlink()  # like the shared HeLa copy: frames missing
    (real_root / GOWT1 / "01_GT" / "TRA" / "man_track002.tif").unlink()
    problems = check_input_sequence(real_root / GOWT1, "01")
    assert problems and all(p.severity == "warning" for p in problems)


@pytest.mark.parametrize("command", ["run", "oracle"])
@pytest.mark.parametrize(("param", "needles"), [
    ("ddpm.iteration=3", ["generators.bvdm.ddpm: unknown parameters ['iteration']"]),
    ("ddpm_iterations=3", ["'ddpm_iterations' is now 'ddpm.iterations'"]),
    ('sampling.preset="fast"', ["BVDM preset 'fast'"]),
    ('{"flow": {"iterations": "many"}}', ["generators.bvdm.flow: parameter 'iterations' = 'many' is not of type int"]),
    ("sampling=3", ["generators.bvdm.sampling: expected a table"]),
])
def test_run_rejects_a_bad_nested_param_before_any_stage(command: str, param: str, needles: list[str],
                                                         real_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """BVDM's nested sections are checked like the flat ones, naming the table (``--param`` dotted keys)."""
    args = run_args(real_root, tmp_path / "runs", "--param", param, generator="bvdm")
    code, _, err = run_cli([command, *args[1:]], capsys)
    assert code == 2
    one_error_line(err, *needles)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("param", "needles"), [
    ("[1,2]", ["--param '[1,2]'", "JSON object"]),
    ("{max_fit_frames: 3}", ["--param", "not valid JSON"]),
    ('{"max_fit_frames": "abc"}', ["max_fit_frames", "'abc'", "not of type int"]),
    ('{"no_such_field": 1}', ["unknown parameters ['no_such_field']"]),
])
@pytest.mark.parametrize("command", ["run", "oracle"])
def test_run_rejects_bad_param_before_any_stage(command: str, param: str, needles: list[str], real_root: Path,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = run_args(real_root, tmp_path / "runs", "--param", param, generator="mitogen")
    code, _, err = run_cli([command, *args[1:]], capsys)
    assert code == 2
    one_error_line(err, *needles)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_generate_rejects_an_ill_typed_param_before_fitting(real_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--generator", "mitogen", "--dataset", GOWT1, "--data-root", real_root, "--quiet",
            "--param", "max_fit_frames=abc", "--out", tmp_path / "out"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_error_line(err, "max_fit_frames", "not of type int")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_config_types_are_checked() -> None:
    from benchmark.config import config_from_dict
    from generators.mitogen import MitoGenConfig

    config = config_from_dict(MitoGenConfig, {"max_fit_frames": np.int64(4), "progress": False})
    assert config.max_fit_frames == 4
    for bad in ({"max_fit_frames": "4"}, {"max_fit_frames": 4.5}, {"max_fit_frames": True}, {"progress": 1}):
        with pytest.raises(ValueError, match="is not of type"):
            config_from_dict(MitoGenConfig, bad)


def test_unwritable_mlflow_store_is_one_line(real_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for uri, needle in ((f"sqlite:///{blocker}/mlflow.db", "is not a folder"),
                        (f"sqlite:///{tmp_path}", "wrong kind"),
                        *([("sqlite:////proc/synthvid/mlflow.db", "cannot write")] if Path("/proc/self").is_dir()
                          else [])):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        code, _, err = run_cli(run_args(real_root, tmp_path / "runs"), capsys)
        assert code == 2
        one_error_line(err, "MLFLOW_TRACKING_URI=", needle)
        assert not (tmp_path / "runs").exists()
    assert blocker.read_text() == "x"


def test_a_corrupt_mlflow_store_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import experiment

    store = tmp_path / "mlflow.db"
    store.write_text("not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI=.*cannot open the MLflow store") as info:
        experiment.ensure_experiment("synthvid/hostile")
    assert "\n" not in str(info.value)
    assert store.read_text() == "not a database"


def test_run_refuses_an_unwritable_out_before_any_stage(real_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(run_args(real_root, blocker), capsys)
    assert code == 2
    one_error_line(err, str(blocker), "not a folder")
    assert blocker.read_text() == "x" and not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------------ 6. data info: what is true of every frame
def data_info(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return run_cli(["data", "info", GOWT1, "--data-root", root, *extra], capsys)


def test_data_info_counts_cells_of_every_frame(real_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = data_info(real_root, capsys)
    assert code == 0
    assert "sequence 01: 5 frames of 40x40 uint8, 5 present" in out
    assert "cells per frame (TRA): min 2, mean 2.6, max 3" in out  # 2, 2, 3, 3, 3 cells (label_frames)
    assert "lineage: 4 tracks, 2 with a parent, 1 dividing cells" in out
    assert "error:" not in out and "warning:" not in out


def test_data_info_on_an_empty_tra_frame_says_zero_and_names_it(real_root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    frame, problem = _gt_empty_tra_frame(real_root / GOWT1, "01")
    code, out, _ = data_info(real_root, capsys)
    assert code == 0
    assert "cells per frame (TRA): min 0, mean 2.0, max 3" in out and "min -1" not in out
    assert f"error: {frame}: {problem}" in out


def test_data_info_reports_every_shape_and_dtype(real_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_frame(real_root / GOWT1 / "01" / "t003.tif", np.zeros((32, 40), np.uint16))
    code, out, _ = data_info(real_root, capsys)
    assert code == 0
    assert "sequence 01: 5 frames of MIXED shapes 40x40 (4), 32x40 (1) and dtypes uint8 (4), uint16 (1)" in out
    assert f"error: {real_root / GOWT1 / '01'}: raw frames disagree in shape/dtype" in out
    code, out, _ = data_info(real_root, capsys, "--json")
    facts = json.loads(out)[0]
    assert facts["shape"] is None and facts["shapes"] == {"40x40": 4, "32x40": 1}
    assert facts["dtypes"] == {"uint8": 4, "uint16": 1}


def test_data_info_without_man_track_says_lineage_unknown(real_root: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    track_file = real_root / GOWT1 / "01_GT" / "TRA" / "man_track.txt"
    track_file.unlink()
    code, out, _ = data_info(real_root, capsys)
    assert code == 0
    section = out.split("sequence 02")[0]
    assert "lineage: unknown (no readable man_track.txt)" in section and "0 tracks" not in section
    assert f"warning: {track_file}: missing" in section
    assert "cells per frame (TRA): min 2, mean 2.6, max 3" in section
    assert json.loads(data_info(real_root, capsys, "--json")[1])[0]["tracks"] is None


def test_data_info_gowt1_cells_match_the_tra_files(gowt1: Path) -> None:
    import tifffile

    from benchmark.datasets import describe_sequence

    seq = CTCSequence(gowt1, "01")
    counts = [len(set(np.unique(tifffile.imread(path)).tolist()) - {0}) for path in seq.tra_files.values()]
    facts = describe_sequence(seq)
    assert facts["cells_per_frame"] == (min(counts), pytest.approx(np.mean(counts)), max(counts))
    assert facts["problems"] == [] and facts["shapes"] == {"1024x1024": 92}


def test_seg_tra_json_is_written_whole(scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "scores.json"
    code, _, _ = run_cli(["metrics", "seg-tra", "--res", scored / "01_RES", "--gt", scored / "01_GT",
                          "--json", target], capsys)
    assert code == 0 and json.loads(target.read_text())["TRA"] == pytest.approx(1.0)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    code, _, err = run_cli(["metrics", "seg-tra", "--res", scored / "01_RES", "--gt", scored / "01_GT",
                            "--threads", "0"], capsys)
    assert code == 2
    one_error_line(err, "--threads", "positive integer")


# ------------------------------------------------------------------ 7. stale caches: every stage keyed on what it reads
@pytest.fixture
def window_root(gowt1_window: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the real GOWT1 cut (folder ``Fluo-N2DH-GOWT1``); MLflow and the cache in tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    shutil.copytree(gowt1_window, tmp_path / "root" / GOWT1)
    return tmp_path / "root"


def _ci_config(window: dict | None):
    import dataclasses

    from benchmark.config import build_run_config

    return dataclasses.replace(build_run_config("ci", GOWT1, "real"), window=window)


def _brighten_raw_frame(root: Path, name: str, t: int) -> np.ndarray:
    """Rewrite one raw frame in place with new pixel values (same name, shape and dtype)."""
    path = root / GOWT1 / name / f"t{t:03d}.tif"
    image = CTCSequence(root / GOWT1, name).image(t)
    changed = (image.astype(np.int64) + 7).clip(0, np.iinfo(image.dtype).max).astype(image.dtype)
    write_frame(path, changed)
    return changed


def test_the_window_stage_is_keyed_on_the_bytes_it_cuts(window_root: Path, tmp_path: Path) -> None:
    from benchmark.stages import Stages, prepare_real

    config = _ci_config({"frames": [0, 6], "box": [0, 0, 96, 96]})
    logs: list[str] = []
    stages = Stages(tmp_path / "stages", GOWT1, log=logs.append)
    first, _, _ = prepare_real(config, str(window_root), stages)
    assert prepare_real(config, str(window_root), stages)[0] == first and "[window] cached" in logs[-1]

    changed = _brighten_raw_frame(window_root, "01", 3)
    second, _, _ = prepare_real(config, str(window_root), stages)
    assert second != first and "[window] running" in logs[-2]
    assert np.array_equal(CTCSequence(second, "01").image(3), changed[:96, :96])
    assert not np.array_equal(CTCSequence(first, "01").image(3), changed[:96, :96])  # the old cut stays intact


def test_the_fit_and_realism_keys_follow_the_raw_frames(window_root: Path, tmp_path: Path) -> None:
    """Unwindowed data: the fit key (``data_key``) covers the training raw frames and GT, the realism and
    evaluation key (``reference_digest``) the held-out ones; neither depends on where the data lives."""
    from benchmark.stages import Stages, prepare_context

    config = _ci_config(None)
    stages = Stages(tmp_path / "stages", GOWT1, log=lambda _: None)
    before = prepare_context(config, stages, str(window_root))
    _brighten_raw_frame(window_root, "01", 2)
    after_train = prepare_context(config, stages, str(window_root))
    assert after_train.data_key != before.data_key and after_train.reference_digest == before.reference_digest
    _brighten_raw_frame(window_root, "02", 2)
    after_reference = prepare_context(config, stages, str(window_root))
    assert after_reference.data_key == after_train.data_key
    assert after_reference.reference_digest != after_train.reference_digest

    moved = tmp_path / "moved"
    shutil.copytree(window_root / GOWT1, moved / GOWT1)
    elsewhere = prepare_context(config, stages, str(moved))
    assert (elsewhere.data_key, elsewhere.reference_digest) == (after_reference.data_key,
                                                                after_reference.reference_digest)


def test_file_digests_rehash_only_what_changed(window_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.ctc import digest

    digest.forget_memo()
    hashed: list[Path] = []
    real_sha = digest.sha256_file
    monkeypatch.setattr(digest, "sha256_file", lambda p: hashed.append(p) or real_sha(p))
    seq = CTCSequence(window_root / GOWT1, "01")
    files = digest.sequence_files(seq)
    first = digest.sequence_digest(seq)
    assert sorted(hashed) == files
    hashed.clear()
    digest.forget_memo()  # a new process: the memo is read back from the cache
    assert digest.sequence_digest(seq) == first and hashed == []
    _brighten_raw_frame(window_root, "01", 4)
    changed = digest.sequence_digest(seq)
    assert changed != first and hashed == [window_root / GOWT1 / "01" / "t004.tif"]


# ------------------------------------------------------------------ 8. concurrency: one writer per stage folder
SLOW_STAGE = """
import sys, time
from pathlib import Path
from benchmark.stages import Stages

root, marker, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def body(out):
    marker.write_text("started")
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:  # holds the stage until the other run waits
        time.sleep(0.05)
    (out / "made-by.txt").write_text("first")
    return {"value": 1.0}

Stages(root, "ds", log=lambda _: None).run("slow", "key", body)
"""


def test_a_second_run_waits_for_the_stage_another_is_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys
    import time

    from benchmark.stages import Stages

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    marker, release = tmp_path / "started", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", SLOW_STAGE, str(tmp_path / "stages"), str(marker), str(release)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.1)
        logs: list[str] = []

        def log(line: str) -> None:  # the first writer finishes only once this run has said it waits
            logs.append(line)
            if "waiting" in line:
                release.write_text("go")

        def must_not_run(out: Path) -> dict:
            raise AssertionError("the stage ran twice")

        result = Stages(tmp_path / "stages", "ds", log=log).run("slow", "key", must_not_run)
    finally:
        release.write_text("go")
        first.wait(timeout=120)
    assert first.returncode == 0
    assert "busy" in logs[0] and f"pid {first.pid}" in logs[0] and "waiting" in logs[0]
    assert result.cached and result.metrics == {"value": 1.0}
    assert (result.folder / "made-by.txt").read_text() == "first"


def test_generate_into_a_folder_another_generate_is_writing_waits(tmp_path: Path) -> None:
    from benchmark.io import folder_lock

    waits: list[str] = []
    with folder_lock(tmp_path / "out"):  # the same process may not take it twice: a thread stands in
        import threading

        done = threading.Event()

        def second() -> None:
            with folder_lock(tmp_path / "out", on_wait=waits.append):
                done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not done.wait(1.0)  # blocked while the first holds it
    thread.join(timeout=10)
    assert done.is_set() and len(waits) == 1 and str(tmp_path / "out") in waits[0]


# ------------------------------------------------------------------ 9. killed runs are marked in MLflow
def _parent_run_status(store: Path, dataset: str = GOWT1) -> list[tuple[str, str]]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(f"synthvid/{dataset}")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'run'")
    return [(r.info.run_name, r.info.status) for r in runs]


def test_sigterm_marks_the_run_killed_and_keeps_finished_stages(gowt1: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "SYNTHVID_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", *run_args(gowt1.parent, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # progress is logged to stderr
        lines.append(line)
        if line.startswith("[floor] running"):  # the window stage has finished
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stderr.read().splitlines()
    assert proc.wait(timeout=300) == 143  # 128 + SIGTERM, the shell's convention (Ctrl-C stays 130)
    last = lines[-1].strip()
    assert last == "error: run interrupted by SIGTERM; finished stages are kept and the same command resumes"
    assert _parent_run_status(tmp_path / "mlflow.db") == [("real-s0-ci", "KILLED")]
    stages = out / GOWT1 / "stages"
    assert not list(stages.glob("*.partial"))
    windows = [p for p in stages.glob("window-*") if p.is_dir()]
    assert len(windows) == 1 and (windows[0] / "stage.json").is_file()


VICTIM = """
import sys, time
from pathlib import Path
from benchmark import experiment

with experiment.start_run(sys.argv[2], "ds"):
    Path(sys.argv[1]).write_text("started")
    time.sleep(600)
"""


def test_a_run_left_running_by_a_killed_process_is_closed_by_the_next(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys
    import time

    import mlflow

    from benchmark import experiment

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    victims = {}
    for name in ("killed", "alive"):
        marker = tmp_path / name
        victims[name] = subprocess.Popen([sys.executable, "-c", VICTIM, str(marker), name])
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert victims[name].poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    try:
        victims["killed"].kill()  # SIGKILL: nothing in the process can close its run
        victims["killed"].wait(timeout=30)
        with experiment.start_run("next", "ds"):
            pass
        client = mlflow.MlflowClient(store)
        runs = client.search_runs([client.get_experiment_by_name("synthvid/ds").experiment_id])
        status = {r.info.run_name: r.info.status for r in runs}
        assert status == {"killed": "KILLED", "alive": "RUNNING", "next": "FINISHED"}
    finally:
        victims["alive"].kill()
        victims["alive"].wait(timeout=30)


# ------------------------------------------------------------------ 10. user mistakes are one line, bugs keep their traceback
def test_a_user_mistake_is_one_line_and_debug_shows_its_traceback(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["run", "--generator", "real", "--param", "[1, 2]", "--out", tmp_path], capsys)
    assert code == 2
    one_error_line(err, "--param", "expected a JSON object")
    with pytest.raises(ValueError, match="expected a JSON object"):
        main(["--debug", "run", "--generator", "real", "--param", "[1, 2]", "--out", str(tmp_path)])


def test_a_bug_is_not_disguised_as_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import pipeline

    def broken(items: list[str] | None) -> dict:
        return {}["missing"]  # a KeyError from the harness's own code, not from the user's input

    monkeypatch.setattr(pipeline, "parse_params", broken)
    with pytest.raises(KeyError, match="missing"):
        main(["run", "--generator", "real", "--out", str(tmp_path)])


@pytest.mark.parametrize("seed", ["-1", "2147483648", "1.5"])
@pytest.mark.parametrize("command", ["run", "generate"])  # sweep: seeds in its spec (test_sweep_spec)
def test_seeds_out_of_range_are_refused_before_any_work(command: str, seed: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([command, "--seed", seed, "--out", tmp_path / "out"], capsys)
    assert code == 2
    one_error_line(err, "--seed", seed)
    assert not (tmp_path / "out").exists()


def test_a_track_file_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    from benchmark.ctc import read_tracks

    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("1 0 4 0\n2 0 1 0\n3 2 4 2\n")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))  # Windows editors
    assert read_tracks(marked) == read_tracks(plain)


@pytest.mark.parametrize(("frames", "needles"), [
    ("[0, 24]", ["cannot window frames 0-23", "no raw image or TRA marker at t=5-23"]),  # 5 frames here
    ("[0, 5]", ["window box (y0, x0, height, width) = (320, 320, 384, 384) does not fit", "40 x 40 pixels"])])
def test_a_window_that_does_not_fit_the_data_is_refused_before_any_stage(frames: str, needles: list[str],
                                                                         real_root: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The ``ci`` window (frames 0-23, a 384 x 384 box at (320, 320)) cannot be cut from 5 frames of 40 x 40."""
    from benchmark.config import PROFILE_DIR

    profile = tmp_path / "small.toml"
    profile.write_text((PROFILE_DIR / "ci.toml").read_text().replace("frames = [0, 24]", f"frames = {frames}"))
    args = run_args(real_root, tmp_path / "runs")
    args[args.index("--profile") + 1] = str(profile)
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_error_line(err, "profile 'small' [window]", f"{real_root / GOWT1 / '01'}: ", *needles)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------------ 11. metrics realism: nothing scored that cannot be
@pytest.mark.parametrize(("extra", "needle"), [
    (["--intensity", "5", "5"], "realism.intensity_range must be finite with lo < hi, got (5, 5)"),
    (["--no-fid", "--no-fvd"], "both fid and fvd are off, nothing to score")])
def test_metrics_realism_refuses_settings_that_cannot_score(extra: list[str], needle: str, real_root: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ds = real_root / GOWT1
    code, _, err = run_cli(["metrics", "realism", "--real", ds / "01", "--synthetic", ds / "02", *extra], capsys)
    assert code == 2
    one_error_line(err, needle)


def test_metrics_realism_refuses_a_broken_synthetic_frame(real_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = real_root / GOWT1
    path, problem = _in_nan_pixels(ds, "02")
    code, _, err = run_cli(["metrics", "realism", "--real", ds / "01", "--synthetic", ds / "02", "--no-fvd"], capsys)
    assert code == 2
    one_error_line(err, f"{path}: {problem}")


@pytest.mark.parametrize("params", [["t_first=400", "max_fit_frames=3"], ['{"t_first": 400, "max_fit_frames": 3}'],
                                    ['{"t_first": 1}', "t_first=400", "max_fit_frames=3"]])
def test_param_is_one_style_on_every_command(params: list[str]) -> None:
    """``--param`` reads KEY=VALUE or a JSON object, repeatably, the same way for run, oracle and generate."""
    from benchmark.cli import build_parser
    from benchmark.config import parse_params

    for command in (["run", "--generator", "bvdm"], ["oracle", "--generator", "bvdm"],
                    ["generate", "--generator", "bvdm", "--dataset", GOWT1, "--out", "x"]):
        args = build_parser().parse_args([*command, *(a for p in params for a in ("--param", p)), "--cache", "c"])
        assert parse_params(args.param) == {"t_first": 400, "max_fit_frames": 3} and args.cache == "c"
    with pytest.raises(ValueError, match="expected KEY=VALUE with a parameter name"):
        parse_params(["=3"])


def test_a_cache_that_is_not_a_folder_is_one_line_before_any_work(real_root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cache-file").write_text("not a folder")
    args = ["generate", "--generator", "mitogen", "--dataset", GOWT1, "--data-root", real_root, "--frames", "2",
            "--quiet", "--cache", tmp_path / "cache-file", "--out", tmp_path / "out"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    one_error_line(err, str(tmp_path / "cache-file"), "is not a folder")
    assert not (tmp_path / "out").exists() and (tmp_path / "cache-file").read_text() == "not a folder"


# ------------------ Round 3 (issue 31): data loss, external folders, test-set leaks
# Hostile input, round 3 (issue 31, part A): no writing command reaches the data it reads, whatever the flags;
# external synthetic data (``--generator folder``) is scored end to end as its own row; a folder holding real
# frames of the run (the held-out sequence as "synthetic") is refused; ``generate --generator folder`` refuses
# options it cannot honour. Every refusal is one ``error:`` line (exit 2) and changes nothing.

@pytest.fixture
def data_root(gowt1_window: Path, tmp_path: Path) -> Path:
    """A data root of the test's own: ``<root>/Fluo-N2DH-GOWT1`` = the real 256 x 256 x 20 GOWT1 window."""
    root = tmp_path / "root"
    shutil.copytree(gowt1_window, root / GOWT1)
    return root


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MLflow store and cache inside the test's folder (never the checkout's)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    return tmp_path


def external_synthetic(gowt1: Path, out: Path) -> Path:
    """A small CTC dataset that is NOT a frame of the run's real data: a 128 x 128 corner of GOWT1 01 at frames
    30-33 (outside every window the tests cut; other pixels than any real frame)."""
    window_sequence(CTCSequence(gowt1, "01"), out, frames=range(30, 34), box=(0, 0, 128, 128))
    return out


# ------------------------------------------------------------------ the guard itself
def test_guard_refuses_is_inside_contains_and_links(tmp_path: Path) -> None:
    data = tmp_path / "data" / GOWT1
    data.mkdir(parents=True)
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    for out, relation in ((data, "is"), (data / "01", "lies inside"), (tmp_path / "data", "contains"),
                          (tmp_path / "link", "is"), (tmp_path / "link" / "new" / "x", "lies inside"),
                          (data / ".." / GOWT1, "is")):
        with pytest.raises(ValueError) as info:
            refuse_output_overlapping_inputs(out, [None, data], "--out")
        assert f"--out {relation} the input {data.resolve()}" in str(info.value) and str(out) in str(info.value)
    refuse_output_overlapping_inputs(tmp_path / "data" / "synthetic", [data, None], "--out")  # a sibling is fine
    refuse_output_overlapping_inputs(tmp_path / "data2", [data], "--out")  # a common prefix is not containment


# ------------------------------------------------------------------ generate: --overwrite never reaches the data
def mitogen_args(root: Path | None, out: Path, cache: Path) -> list[str]:
    return ["generate", "--generator", "mitogen", "--dataset", GOWT1, *(["--data-root", str(root)] if root else []),
            "--frames", "3", "--sequences", "1", "--cache", str(cache), "--quiet", "--param", "max_fit_frames=4",
            "--out", str(out), "--overwrite"]


@pytest.mark.parametrize("where", ["dataset", "inside", "sequence-gt", "root", "link"])
def test_generate_overwrite_never_replaces_the_data_it_fits_on(where: str, data_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    dataset = data_root / GOWT1
    (tmp_path / "link").symlink_to(dataset, target_is_directory=True)
    out = {"dataset": dataset, "inside": dataset / "synthetic", "sequence-gt": dataset / "02_GT",
           "root": data_root, "link": tmp_path / "link"}[where]
    before = snapshot(data_root)
    code, stdout, err = run_cli(mitogen_args(data_root, out, tmp_path / "cache"), capsys)
    assert code == 2 and stdout == ""
    one_error_line(err, str(out), str(dataset.resolve()), "--out")
    assert snapshot(data_root) == before
    assert not (tmp_path / "cache" / "generators").exists()  # refused before the fit


def test_generate_overwrite_never_reaches_the_default_data_root(data_root: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """No --data-root: the dataset the command resolves ($SYNTHVID_DATA_ROOT here) is protected the same way."""
    monkeypatch.setenv("SYNTHVID_DATA_ROOT", str(data_root))
    before = snapshot(data_root)
    code, _, err = run_cli(mitogen_args(None, data_root / GOWT1, tmp_path / "cache"), capsys)
    assert code == 2
    one_error_line(err, str(data_root / GOWT1), "--out is the input")
    assert snapshot(data_root) == before


def test_generate_folder_out_inside_its_own_source_is_refused(data_root: Path, gowt1: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    source = external_synthetic(gowt1, tmp_path / "external")
    before = snapshot(source)
    code, _, err = run_cli(["generate", "--generator", "folder", "--param", f"path={source}", "--dataset", GOWT1,
                            "--data-root", data_root, "--out", source / "copy", "--overwrite", "--quiet"], capsys)
    assert code == 2
    one_error_line(err, str(source / "copy"), "lies inside", str(source.resolve()))
    assert snapshot(source) == before


# ------------------------------------------------------------------ run / oracle / report / sweep --out
@pytest.mark.parametrize("command", ["run", "oracle"])
def test_run_out_inside_the_data_is_refused(command: str, data_root: Path, stores: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(data_root)
    for out in (data_root, data_root / GOWT1 / "runs"):
        code, _, err = run_cli([command, "--generator", "mitogen", "--dataset", GOWT1, "--data-root", data_root,
                                "--profile", "ci", "--out", out], capsys)
        assert code == 2
        one_error_line(err, str(out), str((data_root / GOWT1).resolve()))
    assert snapshot(data_root) == before
    assert not (stores / "mlflow.db").exists()  # refused before the store is opened


def test_run_out_inside_the_external_folder_is_refused(data_root: Path, gowt1: Path, stores: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = external_synthetic(gowt1, stores / "external")
    before = snapshot(source)
    code, _, err = run_cli(["run", "--generator", "folder", "--param", f"path={source}", "--dataset", GOWT1,
                            "--data-root", data_root, "--profile", "ci", "--out", source], capsys)
    assert code == 2
    one_error_line(err, str(source), "--out is the input")
    assert snapshot(source) == before


def test_report_out_inside_the_mlflow_artifacts_is_refused(stores: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifacts = stores / "mlartifacts"
    (artifacts / "0").mkdir(parents=True)
    (artifacts / "0" / "keep.json").write_text("{}")
    before = snapshot(stores)
    code, _, err = run_cli(["report", "--dataset", GOWT1, "--profile", "ci", "--no-log", "--out", artifacts], capsys)
    assert code == 2
    one_error_line(err, str(artifacts.resolve()), "lies inside")
    assert snapshot(stores) == before


def test_report_out_inside_the_results_it_imports_is_refused(stores: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = stores / "results"
    results.mkdir()
    (results / "keep.txt").write_text("a bundle")
    before = snapshot(results)
    code, _, err = run_cli(["report", "--dataset", GOWT1, "--no-log", "--results", results, "--out", results], capsys)
    assert code == 2
    one_error_line(err, str(results.resolve()), "lies inside")
    assert snapshot(results) == before


def test_sweep_out_holding_the_data_is_refused(data_root: Path, stores: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(data_root)
    code, _, err = run_cli(["sweep", "benchmark/sweeps/ci-seeds.toml", "--data-root", data_root, "--out", data_root,
                            "--no-progress"], capsys)
    assert code == 2
    one_error_line(err, str(data_root), "--out contains the input")
    assert snapshot(data_root) == before


# ------------------------------------------------------------------ generate --generator folder: honest options
@pytest.mark.parametrize("option", [["--frames", "3"], ["--sequences", "1"], ["--shape", "64", "64"], ["--seed", "0"]])
def test_generate_folder_refuses_options_it_cannot_honour(option: list[str], data_root: Path, gowt1: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = external_synthetic(gowt1, tmp_path / "external")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["generate", "--generator", "folder", "--param", f"path={source}", "--dataset", GOWT1,
                                 "--data-root", data_root, "--out", out, "--quiet", *option], capsys)
    assert code == 2 and stdout == ""
    one_error_line(err, option[0], str(source))
    assert not out.exists()


def test_generate_folder_copies_the_validated_folder_into_out(data_root: Path, gowt1: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    source = external_synthetic(gowt1, tmp_path / "external")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["generate", "--generator", "folder", "--param", f"path={source}", "--dataset", GOWT1,
                                 "--data-root", data_root, "--out", out, "--quiet", "--cache", tmp_path / "cache"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert Path(result["out"]) == out and Path(result["source"]) == source
    assert snapshot(out) == {**snapshot(source), MANIFEST: (out / MANIFEST).read_bytes()}
    assert json.loads((out / MANIFEST).read_text())["generator"] == "folder"


# ------------------------------------------------------------------ test-set leaks
def test_generate_folder_refuses_a_renamed_copy_of_the_held_out_sequence(data_root: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``02`` (and its GT) copied as sequence ``01`` of a "synthetic" dataset: equal pixels, other file names."""
    leak = tmp_path / "leak"
    shutil.copytree(data_root / GOWT1 / "02", leak / "01")
    shutil.copytree(data_root / GOWT1 / "02_GT", leak / "01_GT")
    code, _, err = run_cli(["generate", "--generator", "folder", "--param", f"path={leak}", "--dataset", GOWT1,
                            "--data-root", data_root, "--out", tmp_path / "out", "--quiet",
                            "--cache", tmp_path / "cache"], capsys)
    assert code == 2
    one_error_line(err, str(leak), "sequence 01 equals", str(data_root / GOWT1 / "02"), "test-set leak")
    assert not (tmp_path / "out").exists()


def test_run_refuses_external_data_sharing_frames_with_the_held_out_sequence(shared_assets: Path, gowt1: Path,
                                                                             stores: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Three full frames of the real 02, re-saved as a "synthetic" sequence 01, beside a clean sequence 02: the
    run is refused before any MLflow run or stage, naming the folder and the held-out sequence."""
    leak = external_synthetic(gowt1, stores / "leak")  # 01: clean
    shutil.move(leak / "01", leak / "02")
    shutil.move(leak / "01_GT", leak / "02_GT")
    window_sequence(CTCSequence(gowt1, "02"), leak, frames=range(5, 8), name="01")  # whole frames, re-encoded
    code, _, err = run_cli(["run", "--generator", "folder", "--param", f"path={leak}", "--dataset", GOWT1,
                            "--data-root", shared_assets, "--profile", "ci", "--out", stores / "runs"], capsys)
    assert code == 2
    one_error_line(err, str(leak), "shares 3 of its 3 raw frames with", "held-out reference", str(gowt1 / "02"))
    assert not (stores / "runs" / GOWT1 / "stages").exists()



# ------------------------------------------------------------------ run --generator folder: the stage wiring
def test_folder_generate_stage_uses_the_external_folder_and_is_keyed_by_its_content(shared_assets: Path, gowt1: Path,
                                                                                    stores: Path) -> None:
    """The generate stage of ``folder`` links ``synthetic`` to the folder the generator returns (every later
    stage reads it), realism runs for it, its key holds the folder's content digest (a changed frame is a new
    stage) and an empty stage saved as done under the old key is never reused."""
    from benchmark import experiment
    from benchmark.config import build_run_config
    from benchmark.ctc.io import write_tiff
    from benchmark.stages import (
        FIT,
        GENERATE,
        ORACLE,
        REALISM,
        Stages,
        prepare_context,
        run_dag,
        synthetic_sequences,
    )

    source = external_synthetic(gowt1, stores / "external")
    config = build_run_config("ci", GOWT1, "folder", 0, {"path": str(source)})
    experiment.configure()
    stages = Stages(stores / "runs" / GOWT1 / "stages", GOWT1)
    with experiment.start_run("wiring", GOWT1):
        ctx = prepare_context(config, stages, str(shared_assets))
        old = stages.folder("generate", (ctx.fit_key, ctx.sampling, ctx.spec.__dict__), GENERATE.version)
        old.mkdir(parents=True)  # what the old code saved as done: an empty stage, keyed without the data
        (old / "stage.json").write_text(json.dumps({"metrics": {}, "seconds": 0.0, "key": "old",
                                                    "version": GENERATE.version}))
        results = run_dag(ctx, (FIT, GENERATE))
        generated = results["generate"]
        assert generated.folder != old and not generated.cached
        assert (generated.folder / "synthetic").resolve() == source.resolve()
        assert [(s.name, s.n_frames) for s in synthetic_sequences(generated)] == [("01", 4)]
        assert REALISM.when(ctx) and not ORACLE.when(ctx)  # FID/FVD for external data; no frame model to render
        key = GENERATE.key(ctx, results)
        seq = CTCSequence(source, "01")
        write_tiff(seq.image_files[0], seq.image(0) // 2)  # one frame of the external data changes
        changed = prepare_context(config, Stages(stages.root, GOWT1), str(shared_assets))
        assert GENERATE.key(changed, results) != key
    assert source.is_dir() and (source / "01").is_dir()  # the stage folder links to the data, never owns it


# ------------------------------------------------------------------ end to end: a real `generate` output, scored
@pytest.mark.slow
def test_run_scores_a_real_generate_output_as_its_own_report_row(shared_assets: Path, gowt1: Path, stores: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``generate`` (mitogen, fitted on the ci window of 01) -> ``run --generator folder --param path=...`` with
    the ci profile on the real GOWT1 data -> ``report``: the folder's row, scored for realism and downstream."""
    import mlflow
    import pandas as pd

    window = stores / "window"
    window_sequence(CTCSequence(gowt1, "01"), window / GOWT1, frames=range(0, 24), box=(320, 320, 384, 384))
    syn = stores / "syn"
    code, _, err = run_cli(["generate", "--generator", "mitogen", "--dataset", GOWT1, "--data-root", window,
                            "--frames", "24", "--sequences", "2", "--param", "max_fit_frames=12",
                            "--param", "imaging_frames=4", "--quiet", "--out", syn], capsys)
    assert code == 0, err
    code, summary, err = run_cli(["run", "--generator", "folder", "--param", f"path={syn}", "--dataset", GOWT1,
                                  "--data-root", shared_assets, "--profile", "ci", "--out", stores / "runs"], capsys)
    assert code == 0, err
    assert summary.startswith("generator folder:syn ") and "realism: FID" in summary
    runs = mlflow.search_runs(experiment_names=[f"synthvid/{GOWT1}"], filter_string="tags.stage = 'run'")
    (run,) = [r for _, r in runs.iterrows() if r["tags.generator"] == "folder:syn"]
    assert 0 <= run["metrics.SEG"] <= 1 and run["metrics.FID"] > 0 and run["metrics.FLOOR_FID"] > 0
    stages = mlflow.search_runs(experiment_names=[f"synthvid/{GOWT1}"],
                                filter_string=f"tags.mlflow.parentRunId = '{run['run_id']}'").set_index("tags.stage")
    generate = json.loads((Path(stages.loc["generate", "artifact_uri"].removeprefix("file://")) / "stage.json")
                          .read_text())
    assert (Path(generate["folder"]) / "synthetic").resolve() == syn.resolve()
    assert stages.loc["realism", "metrics.FID"] == pytest.approx(run["metrics.FID"])  # scored as a generator
    code, _, err = run_cli(["report", "--dataset", GOWT1, "--profile", "ci", "--no-log", "--out", stores / "runs"],
                           capsys)
    assert code == 0, err
    table = pd.read_csv(stores / "runs" / "reports" / f"{GOWT1}-ci" / "table1.csv").set_index("generator")
    assert "folder:syn" in table.index
    assert table.loc["folder:syn", "SEG"] == pytest.approx(run["metrics.SEG"], abs=1e-3)


# ------------------ Round 3 (issue 31): silent wrong results
# Hostile input, round 3 (issue 31, part B): inputs that used to give a silent wrong result now end in one
# clear line (exit 2) or in the correct result: ``extends`` resolution and loops, identical or overlapping
# realism inputs, frames whose dtype or range does not fit the frozen intensity map, ``sweep --report-only``
# where no sweep ran, the report's better-direction labels, and every numeric option of every command.

# ------------------------------------------------------------------ 1. extends: against the naming profile's folder
@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is NOT the profiles' folder, holding decoys a cwd-relative lookup would find."""
    cwd = tmp_path / "cwd"
    (cwd / "sub").mkdir(parents=True)
    (cwd / "parent.toml").write_text("[segmenter]\nepochs = 999\n")
    (cwd / "sub" / "parent.toml").write_text("[segmenter]\nepochs = 998\n")
    monkeypatch.chdir(cwd)
    return cwd


def test_a_relative_extends_resolves_against_the_profile_folder(tmp_path: Path, elsewhere: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "sub").mkdir(parents=True)
    (profiles / "parent.toml").write_text('extends = "ci"\n[segmenter]\nepochs = 7\n')
    (profiles / "sub" / "parent.toml").write_text('extends = "../parent.toml"\n[tracker]\nmax_iter = 5\n')
    (profiles / "child.toml").write_text('extends = "parent.toml"\n[realism]\nmax_crops = 10\n')
    (profiles / "nested.toml").write_text('extends = "sub/parent.toml"\n')
    child = load_profile(profiles / "child.toml")
    assert child["segmenter"]["epochs"] == 7 and child["realism"]["max_crops"] == 10
    assert child["window"] == load_profile("ci")["window"]  # the chain goes on into the shipped ci
    nested = load_profile(profiles / "nested.toml")
    assert nested["segmenter"]["epochs"] == 7 and nested["tracker"]["max_iter"] == 5
    monkeypatch.chdir(profiles)  # the same profile gives the same config wherever it runs
    assert load_profile(profiles / "child.toml") == child and load_profile("nested.toml") == nested


def test_a_bare_extends_name_is_the_shipped_profile_even_beside_a_file_of_that_name(tmp_path: Path,
                                                                                     elsewhere: Path) -> None:
    (tmp_path / "ci.toml").write_text("[segmenter]\nepochs = 999\n")  # beside the profile: not what "ci" names
    (elsewhere / "ci.toml").write_text("[segmenter]\nepochs = 998\n")  # in the cwd: neither
    (tmp_path / "mine.toml").write_text('extends = "ci"\n')
    assert load_profile(tmp_path / "mine.toml") == load_profile("ci")


def _loop_a_b(root: Path) -> tuple[Path, str]:
    (root / "sub").mkdir()
    (root / "a.toml").write_text('extends = "sub/b.toml"\n')
    (root / "sub" / "b.toml").write_text('extends = "../a.toml"\n')
    return root / "a.toml", "circular 'extends' chain a -> b -> a"


def _loop_self(root: Path) -> tuple[Path, str]:
    (root / "self.toml").write_text('extends = "self.toml"\n')
    return root / "self.toml", "circular 'extends' chain self -> self"


def _loop_self_spelt_otherwise(root: Path) -> tuple[Path, str]:
    (root / "sub").mkdir()
    (root / "self.toml").write_text('extends = "./sub/../self.toml"\n')
    return root / "self.toml", "circular 'extends' chain self -> self"


def _loop_through_a_symlink(root: Path) -> tuple[Path, str]:
    (root / "a.toml").write_text('extends = "link.toml"\n')
    os.symlink(root / "a.toml", root / "link.toml")
    return root / "a.toml", "circular 'extends' chain a -> a"


def _loop_of_three(root: Path) -> tuple[Path, str]:
    for name, base in (("a", "b.toml"), ("b", "c.toml"), ("c", "a.toml")):
        (root / f"{name}.toml").write_text(f'extends = "{base}"\n')
    return root / "a.toml", "circular 'extends' chain a -> b -> c -> a"


def _loop_of_one_stem_in_two_folders(root: Path) -> tuple[Path, str]:
    (root / "x").mkdir()
    (root / "y").mkdir()
    (root / "x" / "p.toml").write_text('extends = "../y/p.toml"\n')
    (root / "y" / "p.toml").write_text('extends = "../x/p.toml"\n')
    x, y = (str((root / d / "p.toml").resolve()) for d in ("x", "y"))
    return root / "x" / "p.toml", f"circular 'extends' chain {x} -> {y} -> {x}"


LOOPS: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "a -> b -> a through folders": _loop_a_b, "self": _loop_self, "self, spelt otherwise": _loop_self_spelt_otherwise,
    "through a symlink": _loop_through_a_symlink, "three files": _loop_of_three,
    "one stem in two folders": _loop_of_one_stem_in_two_folders}


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_an_extends_loop_is_named_as_a_loop(case: str, tmp_path: Path, elsewhere: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Self-reference and relative loops used to read as "unknown profile" from any other directory."""
    root = tmp_path / "profiles"
    root.mkdir()
    profile, chain = LOOPS[case](root)
    with pytest.raises(ValueError, match="circular 'extends' chain") as info:
        load_profile(profile)
    assert chain in str(info.value) and "\n" not in str(info.value)
    out = tmp_path / "runs"
    code, _, err = run_cli(["run", "--generator", "real", "--profile", profile, "--out", out], capsys)
    assert code == 2 and not out.exists()
    one_error_line(err, chain)


def test_an_extends_path_that_is_missing_says_where_it_looked(tmp_path: Path, elsewhere: Path) -> None:
    (elsewhere / "base2.toml").write_text("[segmenter]\nepochs = 3\n")  # in the cwd only: not found
    (tmp_path / "mine.toml").write_text('extends = "base2.toml"\n')
    with pytest.raises(ValueError) as info:
        load_profile(tmp_path / "mine.toml")
    assert f"extends unknown profile 'base2.toml' (no file {tmp_path / 'base2.toml'}" in str(info.value)


# ------------------------------------------------------------------ 2. every numeric option is checked by argparse
def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.Action]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, f"{prefix} {name}".strip())
        else:
            out.append((prefix, action))
    return out


def test_no_command_takes_a_bare_int_or_float() -> None:
    """``type=int``/``type=float`` accept -1, 0, nan and inf and log them as settings: every numeric option
    of every command goes through a validator of ``benchmark.config`` instead."""
    from benchmark.cli import build_parser

    options = _commands(build_parser())
    assert {"report", "sweep", "check", "metrics realism"} <= {command for command, _ in options}
    bare = [f"{command} {'/'.join(a.option_strings)}" for command, a in options if a.type in (int, float)]
    assert not bare, bare


@pytest.mark.parametrize(("args", "option", "value"), [
    (["report"], "--n-bootstrap", "-1"),
    (["report"], "--n-bootstrap", "0"),
    (["report"], "--n-bootstrap", "1.5"),
    (["metrics", "realism", "--real", "r", "--synthetic", "s"], "--n-bootstrap", "-1"),
    (["metrics", "realism", "--real", "r", "--synthetic", "s"], "--max-crops", "1"),
    (["metrics", "realism", "--real", "r", "--synthetic", "s"], "--max-crops", "-5"),
    (["metrics", "realism", "--real", "r", "--synthetic", "s"], "--max-clips", "0"),
    (["metrics", "realism", "--real", "r", "--synthetic", "s"], "--intensity", "nan"),
    (["metrics", "realism", "--real", "r", "--synthetic", "s"], "--intensity", "inf"),
    (["metrics", "seg-tra", "--res", "r", "--gt", "g"], "--threads", "0"),
    (["sweep", "spec.toml"], "--max-retries", "-1"),
    (["check"], "--write-thresholds", "-0.1"),
    (["check"], "--write-thresholds", "1.5"),
    (["check"], "--write-thresholds", "nan"),
    (["check"], "--time-margin", "-1"),
    (["check"], "--time-margin", "inf"),
    (["check"], "--k", "nan"),
    (["check"], "--k", "-1"),
    (["check"], "--min-seeds", "0"),
    (["check"], "--min-seeds", "2.5"),
])
def test_a_numeric_option_out_of_range_is_one_line_before_any_work(args: list[str], option: str, value: str,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    extra = [option, value] + (["5"] if option == "--intensity" else [])
    code, out, err = run_cli([*args, *extra, *(["--out", tmp_path / "o"] if args[0] in ("report", "sweep") else [])],
                             capsys)
    assert code == 2 and out == "" and not (tmp_path / "o").exists()
    one_error_line(err, option, value)


@pytest.mark.parametrize(("args", "dest", "value"), [
    (["sweep", "spec.toml", "--max-retries", "0"], "max_retries", 0),
    (["metrics", "realism", "--real", "r", "--synthetic", "s", "--n-bootstrap", "0"], "n_bootstrap", 0),
    (["metrics", "realism", "--real", "r", "--synthetic", "s", "--max-crops", "2"], "max_crops", 2),
    (["check", "--write-thresholds", "0"], "write_thresholds", 0.0),
    (["check", "--time-margin", "0"], "time_margin", 0.0),
    (["report", "--n-bootstrap", "1"], "n_bootstrap", 1),
])
def test_the_smallest_meaningful_value_is_still_accepted(args: list[str], dest: str, value: float) -> None:
    from benchmark.cli import build_parser

    assert getattr(build_parser().parse_args(args), dest) == value


# ------------------------------------------------------------------ 3. sweep --report-only where no sweep ran
@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    return tmp_path


SPEC = Path(__file__).resolve().parents[1] / "benchmark" / "sweeps" / "ci-seeds.toml"


@pytest.mark.parametrize("out", ["empty", "missing", "other-sweep"])
def test_report_only_where_no_sweep_ran_says_so(out: str, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = store / out
    if out == "empty":
        folder.mkdir()
    if out == "other-sweep":  # another spec's records are not this sweep's
        (folder / "sweeps" / "table2-0123456789ab" / "tasks").mkdir(parents=True)
        (folder / "sweeps" / "table2-0123456789ab" / "sweep.json").write_text("{}")
    code, stdout, err = run_cli(["sweep", SPEC, "--report-only", "--out", folder], capsys)
    assert code == 2 and stdout == ""
    one_error_line(err, f"--out {folder}", "no sweep 'ci-seeds'", "without --report-only")


def test_report_only_of_a_started_sweep_still_lists_its_unfinished_tasks(store: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.sweep_spec import load_spec
    from benchmark.sweep_tasks import sweep_folder

    out = store / "runs"
    folder = sweep_folder(out.resolve(), load_spec(SPEC))
    (folder / "tasks").mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"parent_runs": {}}))
    code, stdout, err = run_cli(["sweep", SPEC, "--report-only", "--out", out], capsys)
    assert code == 0 and "not finished" in stdout and "0 run now, 0 earlier" in stdout, (stdout, err)


# ------------------------------------------------------------------ 4. one table of better-directions
def test_every_reported_metric_has_its_direction_from_one_table() -> None:
    from reports.runs import TABLE_METRICS
    from reports.tables import INTERVAL_NOTE, LOWER_IS_BETTER, METRIC_DIRECTION, better_direction

    for name in TABLE_METRICS:
        assert better_direction(name) in ("lower", "higher")
    for name in ("FID", "FVD", "KID", "KVD", "FID_inf", "ORACLE_FID", "ORACLE_FVD", "fid_inf", "FVD_inf"):
        assert better_direction(name) == "lower", name
    for name in ("SEG", "DET", "TRA", "ORACLE_SEG"):
        assert better_direction(name) == "higher", name
    assert LOWER_IS_BETTER == {m for m in TABLE_METRICS if METRIC_DIRECTION[m.upper().removeprefix("ORACLE_")
                                                                            .removesuffix("_INF")] == "lower"}
    assert "FID∞" in INTERVAL_NOTE and "frame ceiling FID" in INTERVAL_NOTE
    with pytest.raises(KeyError, match="'MYSTERY'"):
        better_direction("MYSTERY")  # an unknown metric is not silently "higher is better"


def test_figure_titles_label_fid_infinity_and_the_frame_ceiling_lower_is_better() -> None:
    import pandas as pd

    from reports import figures
    from reports.runs import TABLE_METRICS
    from reports.tables import FLOOR_ROW, better_direction

    rng = np.random.default_rng(0)
    rows = [{"generator": g, **{m: float(v) for m, v in zip(TABLE_METRICS, rng.uniform(0.1, 1, len(TABLE_METRICS)),
                                                            strict=True)}} for g in ("real", "mitogen")]
    rows.append({"generator": FLOOR_ROW, "FID": 0.2})
    fig = figures.metric_bars(pd.DataFrame(rows))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == len(TABLE_METRICS)
    assert "FID∞ (lower is better)" in titles and "frame ceiling FID (lower is better)" in titles
    for title, name in zip(titles, TABLE_METRICS, strict=True):
        assert title.endswith(f"({better_direction(name)} is better)"), (title, name)
    sweep = pd.DataFrame([{"series": "t_first", "t_first": 100, "t_next": 10, "FID": 1.0, "SEG": 0.5},
                          {"series": "t_next", "t_first": 200, "t_next": 0, "FID": 2.0, "SEG": 0.4}])
    sweep_titles = {ax.get_title() for ax in figures.sweep_lines(sweep, ("SEG", "FID")).axes}
    assert sweep_titles == {"SEG (higher is better)", "FID (lower is better)"}


# ------------------------------------------------------------------ 5. realism: identical or overlapping inputs
def realism_args(real: Path, synthetic: Path, cache: Path, *extra: str) -> list:
    return ["metrics", "realism", "--real", real, "--synthetic", synthetic, "--no-fvd", "--max-crops", "8",
            "--n-bootstrap", "10", "--cache", cache, *extra]


def test_the_same_folder_on_both_sides_is_refused(gowt1_window: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(realism_args(gowt1_window / "02", gowt1_window / "02", tmp_path), capsys)
    assert code == 2 and out == ""
    one_error_line(err, f"{gowt1_window / '02'}: the same data as the real reference")


def test_a_copy_of_the_reference_elsewhere_is_refused(gowt1_window: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy" / GOWT1
    shutil.copytree(gowt1_window, copy)
    code, _, err = run_cli(realism_args(gowt1_window / "02", copy, tmp_path / "cache"), capsys)  # all of copy
    assert code == 2
    one_error_line(err, f"{copy / '02'}: the same data as the real reference {gowt1_window / '02'}")


def test_a_sequence_sharing_frames_with_the_reference_is_refused(gowt1_window: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    mixed = tmp_path / "mixed" / GOWT1
    for part in ("01", "01_GT"):
        shutil.copytree(gowt1_window / part, mixed / part)
    shutil.copyfile(gowt1_window / "02" / "t005.tif", mixed / "01" / "t007.tif")  # one frame of the reference
    code, _, err = run_cli(realism_args(gowt1_window / "02", mixed / "01", tmp_path / "cache"), capsys)
    assert code == 2
    one_error_line(err, f"{mixed / '01'}: 1 of 20 raw frames are identical to frames of the real reference",
                   "t007.tif = t005.tif")


# ------------------------------------------------------------------ 6. realism: frames that do not fit the frozen map
def converted(window: Path, out_root: Path, convert: Callable[[np.ndarray], np.ndarray],
              names: tuple[str, ...] = ("02",), dataset: str = GOWT1) -> Path:
    """A copy of ``window``'s sequences (with their GT) whose raw frames went through ``convert``."""
    out = out_root / dataset
    for name in names:
        shutil.copytree(window / f"{name}_GT", out / f"{name}_GT")
        for frame in sorted((window / name).glob("t*.tif")):
            write_tiff(out / name / frame.name, convert(read_tiff(frame)))
    return out


UNFIT = {  # conversion, what the line must name
    "uint16 x256": (lambda a: a.astype(np.uint16) * 256, ["uint16 with values 0..", "for uint8 data",
                                                         "whose values lie in 0..255"]),
    "int32 x256": (lambda a: a.astype(np.int32) * 256, ["int32 with values 0..", "whose values lie in 0..255"]),
    "float32 x256": (lambda a: a.astype(np.float32) * 256, ["float32 with values 0..", "0..255"]),
    "float32 normalised": (lambda a: a.astype(np.float32) / 255, ["float32 with values 0..", "maps to grey level"]),
    "int16 negative": (lambda a: a.astype(np.int16) - 200, ["int16 with values -200..", "0..255"]),
}


@pytest.mark.parametrize("case", sorted(UNFIT))
@pytest.mark.parametrize("side", ["synthetic", "real"])
def test_frames_that_do_not_fit_the_frozen_map_are_refused(case: str, side: str, gowt1_window: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    convert, needles = UNFIT[case]
    copy = converted(gowt1_window, tmp_path / "conv", convert, ("01", "02"))
    real, synthetic = (copy / "02", gowt1_window / "01") if side == "real" else (gowt1_window / "02", copy / "02")
    bad = real if side == "real" else synthetic
    code, out, err = run_cli(realism_args(real, synthetic, tmp_path / "cache"), capsys)
    assert code == 2 and out == ""
    one_error_line(err, f"{bad}: frames are ", "intensity map 0..123 (frozen for Fluo-N2DH-GOWT1)", *needles)


def test_an_unregistered_dataset_checks_against_the_dtype_of_its_real_frames(gowt1_window: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """No frozen map: the map comes from the real sequence, in its dtype; a x256 copy is refused the same way."""
    real = converted(gowt1_window, tmp_path / "a", lambda a: a, ("02",), dataset="my-data")
    copy = converted(gowt1_window, tmp_path / "b", lambda a: a.astype(np.uint16) * 256, ("01",), dataset="my-data")
    code, _, err = run_cli(realism_args(real / "02", copy / "01", tmp_path / "cache"), capsys)
    assert code == 2
    one_error_line(err, f"{copy / '01'}: frames are uint16", f"derived from {real / '02'}) is for uint8 data")


def test_frames_in_the_maps_own_dtype_are_scored_as_they_are(gowt1_window: Path, tmp_path: Path) -> None:
    """A dim or saturated uint8 sequence is a real (bad) generator output, not a unit mistake: not refused."""
    from benchmark.metrics.realism import check_intensity_units

    for convert in (lambda a: a // 16, lambda a: np.minimum(a.astype(np.uint16) * 4, 255).astype(np.uint8)):
        copy = converted(gowt1_window, tmp_path / str(id(convert)), convert)
        check_intensity_units(CTCSequence(copy, "02"), (0.0, 123.0), np.dtype(np.uint8), "test")


@pytest.fixture(scope="module")
def extractors():
    import torch

    from benchmark.assets import WeightError
    from benchmark.metrics.realism import Extractors

    torch.set_num_threads(2)
    ex = Extractors()
    try:
        ex.fid_weight  # noqa: B018 - resolve the weight now
    except WeightError as exc:
        pytest.skip(f"metric weights unavailable: {exc}")
    return ex


SAME_UNITS = {"uint16 small values": lambda a: a.astype(np.uint16), "int32": lambda a: a.astype(np.int32),
              "float32": lambda a: a.astype(np.float32)}


def test_another_dtype_in_the_same_units_scores_as_the_original(gowt1_window: Path, tmp_path: Path,
                                                               extractors) -> None:
    """Correct result, not a refusal: the frozen map gives the same 8-bit crops, so the same FID."""
    from benchmark.datasets import DATASETS
    from benchmark.metrics.realism import RealismConfig, realism_scores

    config = RealismConfig(intensity_range=DATASETS[GOWT1].intensity_map, max_crops=8, fvd=False, n_bootstrap=0,
                           fd_infinity=False, progress=False)
    real = CTCSequence(gowt1_window, "01")
    original = realism_scores(real, [CTCSequence(gowt1_window, "02")], config, tmp_path / "cache", extractors)
    assert original["fid"] > 0
    for case, convert in SAME_UNITS.items():
        copy = converted(gowt1_window, tmp_path / case.replace(" ", "-"), convert)
        scores = realism_scores(real, [CTCSequence(copy, "02")], config, tmp_path / "cache", extractors)
        assert scores["fid"] == pytest.approx(original["fid"], rel=1e-6), case


def test_shared_inputs_may_be_scored_only_when_flagged(gowt1_window: Path, tmp_path: Path, extractors,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The library refuses by default; ``on_shared_inputs="flag"`` scores, warns and says so in the result."""
    from benchmark.metrics.realism import RealismConfig, realism_scores

    config = RealismConfig(max_crops=8, fvd=False, n_bootstrap=0, fd_infinity=False, progress=False)
    seq = CTCSequence(gowt1_window, "02")
    with pytest.raises(ValueError, match="the same data as the real reference"):
        realism_scores(seq, [seq], config, tmp_path / "cache", extractors)
    with caplog.at_level("WARNING", logger="benchmark.metrics.realism"):
        scores = realism_scores(seq, [seq], config, tmp_path / "cache", extractors, on_shared_inputs="flag")
    assert "the same data as the real reference" in scores["shared_inputs"]
    assert any("the same data as the real reference" in r.getMessage() for r in caplog.records)
    assert abs(scores["fid"]) < 1e-6  # why it must never pass unflagged


def test_the_shipped_profiles_still_resolve() -> None:
    """Bare ``extends`` names (``base``, ``cpu``) still name the shipped files."""
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        if path.stem != "base":
            assert load_profile(path.stem) == load_profile(path)


# ------------------ Round 3 (issue 31): unclear or late failures
# Hostile input, round 3 (issue 31), unclear or late failures: each case ends in ONE clear line (exit 2) naming
# what the user gave, before any expensive work, or in a correct result.

ROOT = Path(__file__).resolve().parents[1]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: MLflow and the cache inside tmp_path."""
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "SYNTHVID_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1", **extra}


# ------------------------------------------------------------------ 1. --profile FILE.toml: one label everywhere
@pytest.fixture(scope="module")
def scored_runs(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoredData:
    return prepare_scored_data(gowt1, tmp_path_factory.getbasetemp() / "reports-data")


def test_a_profile_file_finds_its_runs_on_every_command(scored_runs: ScoredData, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``run --profile my/fast.toml`` tags its runs; ``check`` and ``report`` given the same value find them."""
    from benchmark.cli import build_parser

    profile = tmp_path / "my" / "fast.toml"
    profile.parent.mkdir()
    profile.write_text('extends = "ci"\n')
    config = build_run_config(profile, DATASET, "mitogen")  # what `run`/`oracle`/a sweep task tag their runs with
    assert config.profile == profile_label(profile) == profile_label(str(profile)) == "fast"
    assert profile_label("ci") == "ci" and profile_label(None) is None
    for argv in (["check", "--profile", str(profile)], ["report", "--profile", str(profile)],
                 ["report", "--extra-profile", str(profile)]):
        args = build_parser().parse_args(argv)
        assert (args.profile if "--profile" in argv else args.extra_profile[0]) == "fast", argv

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(scored_runs, tmp_path / "store"))
    run = log_scored_run("mitogen", config.profile, scored_runs.window, scored_runs.good_synthetic, scored_runs.good_res,
                         tmp_path / "stages", scored_runs.cache, realism=False)
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(f'[fast."{DATASET}".mitogen.min]\nSEG = {run["SEG"] * 0.5}\nTRA = {run["TRA"] * 0.5}\n')
    code, out, err = run_cli(["check", "--profile", profile, "--dataset", DATASET, "--thresholds", thresholds], capsys)
    assert code == 0, err
    assert run["run_id"][:8] in out and "NO RUN" not in out and "gate passed" in out
    code, out, err = run_cli(["report", "--dataset", DATASET, "--profile", profile, "--no-log",
                              "--out", tmp_path / "reports"], capsys)
    assert code == 0, err
    assert "mitogen" in out and (tmp_path / "reports" / "reports" / f"{DATASET}-fast" / "table1.md").is_file()


def test_a_sweep_tags_its_parent_with_the_profile_label(tmp_path: Path) -> None:
    from benchmark.sweep_spec import load_spec

    (tmp_path / "fast.toml").write_text('extends = "ci"\n')
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f'profile = "fast.toml"\ngenerators = ["mitogen"]\nseeds = [0]\ndatasets = ["{GOWT1}"]\n')
    spec = load_spec(spec_path)
    assert profile_label(spec.profile) == "fast"  # the parent's tag; tasks' runs: build_run_config
    assert build_run_config(spec.profile, GOWT1, "mitogen").profile == "fast"


# ------------------------------------------------------------------ 2. check --thresholds: malformed is exit 2
@pytest.mark.parametrize(("text", "needles"), [
    (f'[ci."{GOWT1}".bvdm]\nmin = 5\n', [f'[ci."{GOWT1}".bvdm.min]', "table of metric = number"]),
    (f'[ci."{GOWT1}".bvdm.amd.min]\nSEG = "high"\n', [f'[ci."{GOWT1}".bvdm.amd.min]', "SEG must be a number"]),
    (f'[ci."{GOWT1}".bvdm.amd.max]\nFID = true\n', ["FID must be a number"]),
    (f'[ci."{GOWT1}".bvdm.amd.min]\nSEG = nan\n', ["SEG must be a finite bound"]),
    (f'[ci."{GOWT1}".bvdm.amd]\nminimum = {{SEG = 0.5}}\n', [f'[ci."{GOWT1}".bvdm.amd]', "unknown key 'minimum'"]),
    (f'[ci."{GOWT1}".bvdm]\namd = 0.5\n', [f'[ci."{GOWT1}".bvdm.amd]', "must be a table"]),
    (f'[ci."{GOWT1}"]\nbvdm = [1, 2]\n', [f'[ci."{GOWT1}".bvdm]', "must be a table"]),
    (f'[ci]\n"{GOWT1}" = 3\n', [f'[ci."{GOWT1}"]', "must be a table of generators"]),
    ('ci = "strict"\n', ["[ci]", "must be a table of datasets"]),
    (f'[ci."{GOWT1}".bvdm.amd]\nsource_run = "42"\n', [f'[ci."{GOWT1}".bvdm.amd]', "unknown key 'source_run'",
                                                       "re-derive"]),
    (f'[ci."{GOWT1}".bvdm.amd.min]\nSEG = 0.0\n', [f'[ci."{GOWT1}".bvdm.amd.min]', "SEG = 0.0", "never fail"]),
    (f'[ci."{GOWT1}".bvdm.amd.min]\nTRA = -0.2\n', ["TRA = -0.2", "never fail"]),
    (f'[ci."{GOWT1}".bvdm.amd]\nprovenance = 3\n', ["provenance", "table of fields"]),
    (f'[ci."{GOWT1}".bvdm.amd.provenance]\nseed = [0]\n', ["unknown field(s) seed"]),
    (f'[ci."{GOWT1}".bvdm.amd.max_ratio]\ntime_fit_s = inf\n', ["time_fit_s must be a finite bound"]),
])
def test_malformed_thresholds_are_one_line_exit_2(text: str, needles: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(text)
    for extra in ([], ["--write-thresholds", "0.2"]):  # checking and writing both read the file first
        code, _, err = run_cli(["check", "--thresholds", thresholds, *extra], capsys)
        assert code == 2, err
        one_error_line(err, str(thresholds), *needles)
    assert thresholds.read_text() == text
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was read


def test_a_thresholds_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", "--thresholds", tmp_path], capsys)
    assert code == 2
    one_error_line(err, str(tmp_path), "is a folder")


def test_a_regression_stays_exit_1(scored_runs: ScoredData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(scored_runs, tmp_path / "store"))
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(f'[ci."{DATASET}".nosuchgen.min]\nSEG = 0.5\n')  # well-formed: no run is a failure
    code, out, err = run_cli(["check", "--thresholds", thresholds], capsys)
    assert code == 1 and "NO RUN" in out and "gate FAILED" in err


# ------------------------------------------------------------------ 3. sweep --address: fail fast, name it
@pytest.mark.parametrize(("address", "env", "needle"), [
    ("127.0.0.1:1", None, "--address 127.0.0.1:1"),
    ("ray://127.0.0.1:1", None, "--address ray://127.0.0.1:1"),
    (None, "127.0.0.1:1", "$RAY_ADDRESS=127.0.0.1:1"),
    ("127.0.0.1:notaport", None, "--address 127.0.0.1:notaport"),
    ("http://127.0.0.1:1", None, "--address http://127.0.0.1:1"),
])
def test_sweep_at_an_unreachable_address_fails_fast_naming_it(address: str | None, env: str | None, needle: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    start = time.monotonic()
    code, _, err = run_cli(["sweep", ROOT / "benchmark" / "sweeps" / "ci-seeds.toml", "--out", tmp_path / "runs",
                            *(["--address", address] if address else [])], capsys)
    assert code == 2
    line = one_error_line(err, needle)
    assert "Ray cluster" in line or "HOST:PORT" in line
    assert time.monotonic() - start < 60
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow parent run was opened (nor the store touched)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 4. a dataset folder not in CTC's layout
def _misnamed(window: Path, root: Path, names: dict[str, str]) -> Path:
    """A copy of the window dataset whose sequence folders are renamed (``01`` -> ``1``)."""
    ds = root / GOWT1
    ds.mkdir(parents=True)
    for old, new in names.items():
        shutil.copytree(window / old, ds / new)
    return ds


@pytest.mark.parametrize("names", [{"01": "1", "01_GT": "1_GT"}, {"01": "seq01", "02": "seq02"}, {}])
def test_a_dataset_folder_without_ctc_sequences_says_what_it_holds(names: dict[str, str], gowt1_window: Path,
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    ds = _misnamed(gowt1_window, tmp_path / "root", names)
    found = [f"{n}/" for n in sorted(names.values())] or ["nothing"]
    commands = [["data", "info", GOWT1, "--data-root", ds.parent],
                ["generate", "--generator", "real", "--dataset", GOWT1, "--data-root", ds.parent, "--frames", "3",
                 "--quiet", "--out", tmp_path / "out"],
                ["run", "--generator", "real", "--profile", "ci", "--dataset", GOWT1, "--data-root", ds.parent,
                 "--out", tmp_path / "runs"]]
    for command in commands:
        code, _, err = run_cli(command, capsys)
        assert code == 2, (command, err)
        line = one_error_line(err, str(ds), *found, "01/, 01_GT/, 02/, 02_GT/")
        assert "data fetch" not in line  # the data are here, misnamed: downloading would not help
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 5. every folder a command writes, probed first
def _block(cache: Path, part: str, how: str) -> None:
    """Make ``cache/part`` unwritable: a file in its place, or a link to a read-only place (/proc, even for root)."""
    cache.mkdir(parents=True, exist_ok=True)
    if how == "file":
        (cache / part).write_text("in the way")
    else:
        (cache / part).symlink_to("/proc", target_is_directory=True)


@pytest.mark.parametrize("how", ["file", "read-only"])
@pytest.mark.parametrize("part", ["generators", "locks"])
def test_generate_probes_the_cache_folders_before_the_fit(part: str, how: str, gowt1_window: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    if how == "read-only" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc: no read-only folder for root")
    cache = tmp_path / "cache"
    _block(cache, part, how)
    fitted = []
    from generators import fit_cache
    original = fit_cache.fitted_generator

    def recording(*args: object, **kwargs: object) -> object:
        fitted.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr("generators.cli.fitted_generator", recording)
    code, _, err = run_cli(generate_args(gowt1_window, cache, tmp_path / "out"), capsys)
    assert code == 2
    line = one_error_line(err, str(cache / part), "cache's")
    assert ".partial" not in line and ".synthvid-probe" not in line
    assert not fitted, "refused only after the fit"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("part", ["generators", "locks", "features"])
def test_run_probes_the_cache_folders_before_any_stage(part: str, gowt1_window: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cache = tmp_path / "cache"
    _block(cache, part, "file")
    for command in ("run", "oracle"):
        code, _, err = run_cli([command, "--generator", "mitogen", "--profile", "ci", "--dataset", GOWT1,
                                "--data-root", gowt1_window.parent, "--out", tmp_path / "runs", "--cache", cache],
                               capsys)
        assert code == 2, err
        one_error_line(err, str(cache / part), "cache's")
        assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 6. a full disk names the file
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from benchmark.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_write_past_the_file_size_limit_names_the_file(gowt1_window: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE gives EFBIG, ENOSPC's sibling: the line names the file under --out (not a temporary name)."""
    out = tmp_path / "syn"
    args = ["generate", "--generator", "real", "--dataset", GOWT1, "--data-root", str(gowt1_window.parent),
            "--frames", "3", "--quiet", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, "12000", *args], env=cli_env(tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr, f"{out}{os.sep}", "file too large")
    assert ".partial" not in line and ".tmp" not in line
    assert Path(line.removeprefix("error: ").split(": ")[0]).suffix == ".tif"
    assert not out.exists() and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".syn.")]


def test_an_out_of_room_error_without_a_name_gets_the_target(tmp_path: Path) -> None:
    """The writers name their target when the OS error has no file name (ENOSPC from ``write``)."""
    import errno

    from benchmark.cli import error_line
    from benchmark.io import atomic_directory, atomic_write

    def full(_tmp: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "scores.json", full)
    assert error_line(caught.value) == f"{tmp_path / 'scores.json'}: no space left on device while writing it"
    with pytest.raises(OSError) as caught, atomic_directory(tmp_path / "model") as staged:
        atomic_write(staged / "weights.npz", full)
    assert error_line(caught.value).startswith(f"{tmp_path / 'model' / 'weights.npz'}: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 7. an interval that cannot be computed says why
def _single_track_sequence(window: Path, out: Path) -> Path:
    """A synthetic dataset ``01``: the window's raw frames of 01 with ONE annotated cell (one track)."""
    import tifffile

    from benchmark.ctc import CTCSequence, write_sequence

    seq = CTCSequence(window, "01")
    frames = sorted(seq.tra_files)
    masks = [seq.tra(t) for t in frames]
    common = set.intersection(*({int(v) for v in np.unique(m) if v} for m in masks))
    keep = min(common)
    labels = [np.where(m == keep, 1, 0).astype(np.uint16) for m in masks]
    images = [tifffile.imread(seq.image_files[t]) for t in frames]
    write_sequence(out, "01", images, labels, {})
    return out


def test_a_single_track_sequence_prints_why_it_has_no_interval(gowt1_window: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    synthetic = _single_track_sequence(gowt1_window, tmp_path / "one-track")
    json_out = tmp_path / "scores.json"
    code, out, err = run_cli(["metrics", "realism", "--real", gowt1_window / "02", "--synthetic", synthetic / "01",
                              "--no-fvd", "--max-crops", "40", "--n-bootstrap", "20", "--cache", tmp_path / "cache",
                              "--json", json_out], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith(("FID", "KID"))}
    for metric in ("FID", "KID"):
        assert "nan" not in rows[metric].lower(), rows[metric]
        assert "n/a (1 track on a side" in rows[metric], rows[metric]
    import json

    result = json.loads(json_out.read_text())
    assert result["fid_ci_reason"].startswith("n/a (1 track on a side")
    assert result["fid"] is not None and np.isfinite(result["fid"])  # the point score is still given


def test_intervals_carry_a_reason_exactly_when_undefined() -> None:
    from benchmark.metrics.frechet import Samples
    from benchmark.metrics.intervals import frechet_interval, kernel_interval, paired_difference

    rng = np.random.default_rng(0)
    many = Samples(rng.normal(size=(60, 4)), np.repeat(np.arange(12), 5))
    one = Samples(rng.normal(size=(60, 4)), np.zeros(60, int))
    for interval in (frechet_interval(many, one, n_boot=8), kernel_interval(many, one),
                     paired_difference(many, one, many, n_boot=8), paired_difference(many, one, many, "kernel")):
        assert np.isnan(interval.low) and interval.reason.startswith("n/a (1 track on a side"), interval
    for interval in (frechet_interval(many, many, n_boot=8), kernel_interval(many, many)):
        assert np.isfinite(interval.low) and interval.reason == ""


# ------------------------------------------------------------------ 8. killed generate: leftovers and SIGTERM
def _start_generate(window: Path, tmp_path: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """``generate`` (mitogen, long enough to be caught writing) in a subprocess; returns it and its .partial."""
    cache = tmp_path / "cache"
    args = generate_args(window, cache, out)
    shape = args.index("--shape")
    args[args.index("--frames") + 1], args[shape + 1], args[shape + 2] = "40", "256", "256"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", *args], env=cli_env(tmp_path), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        partial = next(out.parent.glob(f".{out.name}.*.partial"), None)
        if partial is not None:
            return proc, partial
        assert proc.poll() is None, f"generate ended before it was caught writing: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_killed_generates_leftover_is_removed_by_the_next_success(gowt1_window: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "work" / "syn"
    out.parent.mkdir()
    proc, partial = _start_generate(gowt1_window, tmp_path, out)
    proc.kill()  # SIGKILL: nothing in the process can clean up
    proc.wait(timeout=60)
    proc.stderr.close()
    assert partial.is_dir() and not out.exists()
    live = out.parent / f".{out.name}.{partial.name.split('.')[2].split('-')[0]}-{os.getpid()}-keepme.partial"
    live.mkdir()  # a writer that is still running (this test process) keeps its folder
    other = out.parent / f".{out.name}.older-format.partial"
    other.mkdir()  # a name without an owner: nobody can tell whether its writer is alive, so it stays
    args = generate_args(gowt1_window, tmp_path / "cache", out)
    args[args.index("--frames") + 1] = "2"
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert (out / "01").is_dir() and not partial.exists()
    assert live.is_dir() and other.is_dir()


def test_sigterm_during_generate_exits_143_and_says_nothing_was_written(gowt1_window: Path, tmp_path: Path) -> None:
    out = tmp_path / "work" / "syn"
    out.parent.mkdir()
    out.mkdir()
    proc, _ = _start_generate(gowt1_window, tmp_path, out)  # an empty --out: allowed, and must stay as it was
    before = snapshot(out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143  # 128 + SIGTERM; Ctrl-C stays 130
    last = proc.stderr.read().strip().splitlines()[-1]
    proc.stderr.close()
    assert last.startswith("error: generate interrupted by SIGTERM; nothing was written to --out"), last
    assert snapshot(out) == before and not list(out.iterdir())
    assert not list(out.parent.glob(".syn.*"))


def test_ctrl_c_during_generate_stays_130_with_a_line_naming_the_command(gowt1_window: Path, tmp_path: Path) -> None:
    out = tmp_path / "work" / "syn"
    out.parent.mkdir()
    proc, _ = _start_generate(gowt1_window, tmp_path, out)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    last = proc.stderr.read().strip().splitlines()[-1]
    proc.stderr.close()
    assert last.startswith("error: generate interrupted by Ctrl-C; nothing was written to --out"), last
    assert not out.exists() and not list(out.parent.glob(".syn.*"))
