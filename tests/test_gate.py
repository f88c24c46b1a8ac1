"""The CI regression gate: thresholds derived from a measured good run pass it; a broken generator's run
(scored for real: noise RES against GOWT1 GT with py-ctcmetrics, noise textures through FID) fails it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_reports_data import DATASET, ScoredData, fresh_store, log_scored_run, prepare_scored_data

from benchmark.cli import main
from benchmark.gate import DEFAULT_THRESHOLDS, check_runs, load_thresholds
from benchmark.machine import machine_class

MARGIN = 0.2


@pytest.fixture(scope="module")
def data(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoredData:
    return prepare_scored_data(gowt1, tmp_path_factory.getbasetemp() / "reports-data")


@pytest.fixture(scope="module")
def store(data: ScoredData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", fresh_store(data, root))
    yield root
    mp.undo()


def _log(data: ScoredData, store: Path, broken: bool) -> dict:
    synthetic, res = (data.noise_synthetic, data.broken_res) if broken else (data.good_synthetic, data.good_res)
    return log_scored_run("mitogen", "ci", data.window, synthetic, res, store / "stages", data.cache)


def test_gate_passes_good_and_fails_broken_generator(data: ScoredData, store: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = _log(data, store, broken=False)
    thresholds = store / "thresholds.toml"
    thresholds.write_text(f'[ci."{DATASET}".other.min]\nSEG = 0.5\n')  # a generator this store did not run
    assert main(["check", "--profile", "ci", "--dataset", DATASET, "--thresholds", str(thresholds),
                 "--write-thresholds", str(MARGIN), "--time-margin", "1.0"]) == 0
    assert load_thresholds(thresholds)["ci"][DATASET]["other"] == {"min": {"SEG": 0.5}}  # kept, not dropped
    thresholds.write_text(thresholds.read_text().replace(f'[ci."{DATASET}".other.min]\nSEG = 0.5\n', ""))
    written = load_thresholds(thresholds)["ci"][DATASET]["mitogen"][machine_class()]  # the class it ran on
    assert written["source_run"] == good["run_id"]
    assert written["min"]["SEG"] == pytest.approx(good["SEG"] * (1 - MARGIN), rel=1e-3)
    assert written["min"]["TRA"] == pytest.approx(good["TRA"] * (1 - MARGIN), rel=1e-3)
    assert written["max"]["FID"] == pytest.approx(good["fid"] * (1 + MARGIN), rel=1e-3)
    assert written["max"]["time_eval-real_s"] == pytest.approx(good["time_eval-real_s"] * 2 + 10, rel=1e-3)
    assert "FVD" not in written["max"]  # not measured -> no bound invented

    capsys.readouterr()
    assert main(["check", "--profile", "ci", "--thresholds", str(thresholds)]) == 0
    assert "gate passed" in capsys.readouterr().out

    broken = _log(data, store, broken=True)
    assert broken["TRA"] < good["TRA"] and broken["fid"] > good["fid"]  # the scoring itself tells them apart
    assert main(["check", "--profile", "ci", "--thresholds", str(thresholds)]) == 1
    out = capsys.readouterr()
    assert "gate FAILED" in out.err
    failed = {line.split()[3] for line in out.out.splitlines() if line.rstrip().endswith(broken["run_id"][:8])
              and " FAIL " in line}
    assert {"SEG", "TRA", "FID"} <= failed

    _log(data, store, broken=False)  # the newest run decides: a fixed generator passes again
    assert main(["check", "--profile", "ci", "--thresholds", str(thresholds)]) == 0


def test_gate_reports_missing_runs_and_bad_files(data: ScoredData, store: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    thresholds = tmp_path / "t.toml"
    thresholds.write_text(f'[ci."{DATASET}".nosuchgen.min]\nSEG = 0.5\n')
    checks = check_runs(load_thresholds(thresholds), "ci")
    assert [(c.generator, c.status, c.passed) for c in checks] == [("nosuchgen", "NO RUN", False)]
    assert main(["check", "--profile", "ci", "--thresholds", str(thresholds)]) == 1
    assert "NO RUN" in capsys.readouterr().out

    thresholds.write_text("[ci\n")
    assert main(["check", "--thresholds", str(thresholds)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(thresholds) in err and "\n" not in err
    assert main(["check", "--profile", "paper", "--thresholds", str(DEFAULT_THRESHOLDS)]) == 2


def test_each_run_is_held_to_the_bounds_of_its_machine_class(data: ScoredData, store: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Bounds per machine class: a run meets its own class's bounds; a class without bounds of its own meets
    the loosest of the known ones; writing bounds for one class keeps the others'."""
    thresholds = tmp_path / "t.toml"
    thresholds.write_text(f'[ci."{DATASET}".mitogen.strict-class.min]\nSEG = 0.99\n'
                          f'[ci."{DATASET}".mitogen.lenient-class.min]\nSEG = 0.0\n')

    def check(machine: str) -> list:
        log_scored_run("mitogen", "ci", data.window, data.good_synthetic, data.good_res, store / "stages",
                       data.cache, realism=False, tags={"machine_class": machine})
        return [(c.machine, c.metric, c.passed) for c in check_runs(load_thresholds(thresholds), "ci", [DATASET])]

    assert check("strict-class") == [("strict-class", "SEG", False)]
    assert check("lenient-class") == [("lenient-class", "SEG", True)]
    assert check("unmeasured-class") == [("loosest", "SEG", True)]
    assert main(["check", "--profile", "ci", "--dataset", DATASET, "--thresholds", str(thresholds)]) == 0
    assert " loosest " in capsys.readouterr().out

    assert main(["check", "--profile", "ci", "--dataset", DATASET, "--thresholds", str(thresholds),
                 "--write-thresholds", str(MARGIN)]) == 0
    written = load_thresholds(thresholds)["ci"][DATASET]["mitogen"]
    assert set(written) == {"strict-class", "lenient-class", "unmeasured-class"}
    assert written["strict-class"] == {"min": {"SEG": 0.99}}


def test_the_machine_class_names_vendor_and_widest_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import machine

    for vendor, flags, expected in [("GenuineIntel", "avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "intel-amx"),
                                    ("AuthenticAMD", "avx2 avx512f avx512_bf16", "amd-avx512_bf16"),
                                    ("AuthenticAMD", "avx2 fma", "amd-avx2")]:
        monkeypatch.setattr(machine, "_cpuinfo_fields", lambda v=vendor, f=flags: {"vendor_id": v, "flags": f})
        assert machine.machine_class() == expected


def test_shipped_thresholds_are_valid() -> None:
    tree = load_thresholds(DEFAULT_THRESHOLDS)
    assert "ci" in tree
    for dataset, generators in tree["ci"].items():
        for generator, classes in generators.items():
            assert {"intel-amx", "amd-avx512_bf16"} <= set(classes), (dataset, generator)  # both CI machine kinds
            for entry in classes.values():
                bounds = {**entry.get("min", {}), **entry.get("max", {})}
                assert bounds, (dataset, generator)
                assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds.values())
                assert set(entry.get("min", {})) <= {"SEG", "TRA", "DET"}
