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
    real_sha = digest._sha256
    monkeypatch.setattr(digest, "_sha256", lambda p: hashed.append(p) or real_sha(p))
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
    assert proc.wait(timeout=300) == 130
    last = lines[-1].strip()
    assert last == "error: interrupted by SIGTERM; finished stages are kept and the same command resumes"
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
