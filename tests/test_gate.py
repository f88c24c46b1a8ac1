"""The CI regression gate: bounds derived from the seed spread of scored runs (noise RES against GOWT1 GT with
py-ctcmetrics, noise textures through FID) pass a good run and fail a broken one; an entry it cannot trust
(stale, another machine class, a missing generator or metric, a bound that cannot fail) is a failure of one
line; stage-time bounds are ratios to the real row, so a slower machine passes them."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from test_reports_data import DATASET, ScoredData, fresh_store, log_scored_run, prepare_scored_data

from benchmark.cli import main
from benchmark.gate import (
    DEFAULT_THRESHOLDS,
    GATED_METRICS,
    NOT_MEASURED,
    GateContext,
    Method,
    bound_from_seeds,
    check_generator,
    current_versions,
    load_thresholds,
    profile_digest,
    render_thresholds,
    write_thresholds,
)
from benchmark.machine import machine_class

MIN_WIDTH = 0.2
SEEDS = (0, 1, 2)


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


def _log(data: ScoredData, store: Path, generator: str = "mitogen", broken: bool = False, seed: int = 0,
         **kwargs: Any) -> dict:
    synthetic, res = (data.noise_synthetic, data.broken_res) if broken else (data.good_synthetic, data.good_res)
    realism = kwargs.pop("realism", generator != "real")
    return log_scored_run(generator, "ci", data.window, synthetic, res, store / "stages", data.cache,
                          realism=realism, seed=seed, **kwargs)


@pytest.fixture(scope="module")
def derived(data: ScoredData, store: Path) -> tuple[Path, dict[str, list[dict]]]:
    """Three seeds of the real row and of a good mitogen row, and thresholds derived from them."""
    runs = {generator: [_log(data, store, generator, seed=seed) for seed in SEEDS] for generator in ("real", "mitogen")}
    thresholds = store / "thresholds.toml"
    assert main(["check", "--profile", "ci", "--dataset", DATASET, "--thresholds", str(thresholds),
                 "--write-thresholds", str(MIN_WIDTH)]) == 0
    return thresholds, runs


def _check(thresholds: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["check", "--profile", "ci", "--dataset", DATASET, "--thresholds", str(thresholds), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(out: str, status: str) -> set[tuple[str, str]]:
    """(generator, metric) of the table rows with ``status`` (columns are separated by two spaces or more)."""
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines() if line.startswith(DATASET)]
    return {(cols[1], cols[3]) for cols in rows if cols[7] == status}


def test_bounds_come_from_the_seeds_and_record_where_they_came_from(derived: tuple[Path, dict]) -> None:
    thresholds, runs = derived
    entry = load_thresholds(thresholds)["ci"][DATASET]["mitogen"][machine_class()]  # the class it ran on
    good = runs["mitogen"][0]
    provenance = entry["provenance"]
    assert provenance["seeds"] == list(SEEDS)
    assert provenance["source_runs"] == [r["run_id"] for r in runs["mitogen"]]
    assert provenance["profile_digest"] == profile_digest("ci")
    assert provenance["stage_versions"] == current_versions()["stage_versions"]
    assert "--write-thresholds 0.2" in provenance["command"] and provenance["k"] == 4.0
    assert provenance["date"] and provenance["commit"] and provenance["cpu"]
    # identical data in every seed: SD 0, so the minimum width decides
    assert entry["sd"]["SEG"] == 0 and entry["mean"]["SEG"] == pytest.approx(good["SEG"], rel=1e-5)
    assert entry["min"]["SEG"] == pytest.approx(good["SEG"] * (1 - MIN_WIDTH), rel=1e-3)
    assert entry["min"]["TRA"] == pytest.approx(good["TRA"] * (1 - MIN_WIDTH), rel=1e-3)
    assert entry["max"]["FID"] == pytest.approx(max(good["fid"], 0) * (1 + MIN_WIDTH) or 0, abs=1e-3, rel=1e-3)
    assert "FVD" not in entry["max"]  # not measured -> no bound invented
    # stage times: ratios to the real row's total stage time of the same seed; bound mean + 4 SD, at least x2
    ratios = [m["time_eval-real_s"] / sum(v for k, v in r.items() if k.startswith("time_"))
              for m, r in zip(runs["mitogen"], runs["real"], strict=True)]
    mean, sd = statistics.fmean(ratios), statistics.stdev(ratios)
    assert entry["mean"]["time_eval-real_s"] == pytest.approx(mean, rel=1e-3)
    assert entry["sd"]["time_eval-real_s"] == pytest.approx(sd, rel=1e-3)
    assert entry["max_ratio"]["time_eval-real_s"] == pytest.approx(max(mean + 4 * sd, 2 * mean), rel=1e-3)
    assert set(load_thresholds(thresholds)["ci"][DATASET]["real"][machine_class()]["min"]) == {"SEG", "TRA"}


def test_the_gate_passes_good_runs_and_fails_a_broken_one(data: ScoredData, store: Path, derived: tuple[Path, dict],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    thresholds, _ = derived
    code, out, _ = _check(thresholds, capsys)
    assert code == 0 and "gate passed" in out
    broken = _log(data, store, broken=True)
    code, out, err = _check(thresholds, capsys)
    assert code == 1 and "gate FAILED" in err
    assert {("mitogen", "SEG"), ("mitogen", "TRA"), ("mitogen", "FID")} <= _rows(out, "FAIL")
    assert broken["run_id"][:8] in out
    _log(data, store)  # the newest run decides: a fixed generator passes again
    assert _check(thresholds, capsys)[0] == 0


def test_a_stale_entry_is_refused_and_not_compared(derived: tuple[Path, dict], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    thresholds, _ = derived
    digest = profile_digest("ci")
    for old, new, needle in ((f'profile_digest = "{digest}"', 'profile_digest = "0123456789abcdef"',
                              "profile digest 0123456789abcdef"),
                             ('\\"eval-real\\": 1', '\\"eval-real\\": 0', "stage_versions")):
        stale = tmp_path / "stale.toml"
        text = thresholds.read_text()
        assert old in text
        stale.write_text(text.replace(old, new))
        code, out, err = _check(stale, capsys)
        assert code == 1 and "gate FAILED" in err
        assert _rows(out, "STALE") == {("mitogen", "-"), ("real", "-")}
        assert not _rows(out, "ok")  # refused, not compared with
        notes = [line for line in out.splitlines() if line.startswith("STALE:")]
        assert len(notes) == 2 and all(needle in n and "re-derive" in n for n in notes), notes


def test_a_class_without_bounds_fails_unless_allowed_then_meets_the_nearest(
        data: ScoredData, store: Path, derived: tuple[Path, dict], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    thresholds, _ = derived
    tree = load_thresholds(thresholds)
    here = machine_class()
    for generator in ("real", "mitogen"):  # a second known class whose values lie far from this run's
        far = {k: dict(v) for k, v in tree["ci"][DATASET][generator][here].items()}
        far["mean"] = {k: v * 3 for k, v in far["mean"].items()}
        tree["ci"][DATASET][generator]["far-class"] = far
    tree[NOT_MEASURED] = {"unmeasured-class": {"why": "no session drew such a machine", "rederive": "derive-it-here"}}
    two = tmp_path / "two.toml"
    two.write_text(render_thresholds(tree))
    for generator in ("real", "mitogen"):
        _log(data, store, generator, tags={"machine_class": "unmeasured-class"})

    code, out, err = _check(two, capsys)
    assert code == 1 and _rows(out, "NO CLASS") == {("real", "-"), ("mitogen", "-")}
    assert all("unmeasured-class" in line and "far-class" in line and "no session drew such a machine" in line
               and "derive-it-here" in line for line in out.splitlines() if "NO CLASS:" in line)

    code, out, err = _check(two, capsys, "--allow-unknown-class")  # a warning, and the nearest class's bounds
    assert code == 0 and not _rows(out, "NO CLASS")
    assert _rows(out, "ok") >= {("mitogen", "SEG"), ("mitogen", "FID"), ("real", "TRA")}
    assert f" {here}~nearest " in out and "far-class~nearest" not in out
    assert err.count("warning: ") == 2 and f"nearest known class {here}" in err and "unmeasured-class" in err
    for generator in ("real", "mitogen"):  # back to this machine's class for the other tests
        _log(data, store, generator)


def test_unbounded_generators_and_metrics_fail(data: ScoredData, store: Path, derived: tuple[Path, dict],
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thresholds, _ = derived
    tree = load_thresholds(thresholds)
    del tree["ci"][DATASET]["real"]
    del tree["ci"][DATASET]["mitogen"][machine_class()]["min"]["TRA"]
    del tree["ci"][DATASET]["mitogen"][machine_class()]["max_ratio"]["time_generate_s"]
    partial = tmp_path / "partial.toml"
    partial.write_text(render_thresholds(tree))
    code, out, _ = _check(partial, capsys)
    assert code == 1
    assert _rows(out, "NO BOUNDS") == {("real", "-")}
    assert _rows(out, "NO BOUND") == {("mitogen", "TRA"), ("mitogen", "time_generate_s")}
    assert not _rows(out, "NO YARDSTICK")  # the real run is in the store: still the yardstick without an entry


def test_bounds_from_the_seed_spread() -> None:
    method = Method(k=4, min_width=0.05, time_margin=1.0)
    bound, mean, sd = bound_from_seeds([0.5, 0.6, 0.7], "min", method, "SEG")
    assert (mean, sd) == pytest.approx((0.6, 0.1)) and bound == pytest.approx(0.6 - 0.4)
    assert bound_from_seeds([0.6, 0.6, 0.6], "min", method, "SEG")[0] == pytest.approx(0.57)  # min width
    assert bound_from_seeds([100, 110, 120], "max", method, "FID")[0] == pytest.approx(150)
    assert bound_from_seeds([0.2, 0.22, 0.24], "max_ratio", method, "t")[0] == pytest.approx(0.44)  # x2 floor
    with pytest.raises(ValueError, match="lower bound would be .* never fail"):
        bound_from_seeds([0.1, 0.3, 0.5], "min", method, "bvdm SEG")
    assert bound_from_seeds([-1e-14, 0.0, 1e-14], "max", method, "FID")[0] >= 0  # round-off of identical features


def _row(run_id: str, machine: str = "amd-x", **values: float) -> dict[str, Any]:
    return {"run_id": run_id, "tags.machine_class": machine, **{f"metrics.{k}": v for k, v in values.items()}}


def test_time_bounds_are_ratios_to_the_real_row() -> None:
    entry = {"min": {"SEG": 0.5}, "max_ratio": {"time_generate_s": 0.5}}
    ctx = GateContext("ci", "d", current_versions(), yardstick=100.0)

    def verdict(yardstick: float | None, seconds: float) -> list[tuple[str, str]]:
        ctx.yardstick = yardstick
        run = _row("r1", SEG=0.6, **{"time_generate_s": seconds})
        return [(c.metric, c.status) for c in check_generator(DATASET, "bvdm", entry, run, ctx)]

    assert verdict(100.0, 55.0) == [("SEG", "ok"), ("time_generate_s", "ok")]  # allowed 0.5 * 100 + 10 s
    assert verdict(200.0, 110.0) == [("SEG", "ok"), ("time_generate_s", "ok")]  # a machine twice as slow
    assert verdict(100.0, 150.0) == [("SEG", "ok"), ("time_generate_s", "FAIL")]  # the stage itself slowed
    assert verdict(None, 55.0) == [("SEG", "ok"), ("time_generate_s", "NO YARDSTICK")]


def test_a_lower_bound_that_cannot_fail_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text(f'[ci."{DATASET}".mitogen.amd-x.min]\nSEG = 0.0\n')
    code, _, err = _check(bad, capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert str(bad) in err and "SEG = 0.0" in err and "never fail" in err
    ctx = GateContext("ci", "d", current_versions(), yardstick=None)  # a tree built in code, not loaded
    [check] = check_generator(DATASET, "mitogen", {"min": {"SEG": -0.1}}, _row("r", SEG=0.6), ctx)
    assert check.status == "BAD BOUND" and not check.passed


def test_classes_not_measured_are_checked_and_dropped_once_measured(derived: tuple[Path, dict],
                                                                   tmp_path: Path) -> None:
    """[classes_not_measured] names a class with why and the command that would measure it: malformed, it is
    one line naming the file; once --write-thresholds derives that class, it leaves the table."""
    thresholds, _ = derived
    tree = load_thresholds(thresholds)
    here = machine_class()
    bad = tmp_path / "bad.toml"
    bad.write_text(render_thresholds(tree) + f"\n[{NOT_MEASURED}.other-class]\nwhy = \"\"\nrederive = \"x\"\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}: \[{NOT_MEASURED}.other-class.why\] must be non-empty"):
        load_thresholds(bad)
    tree[NOT_MEASURED] = {name: {"why": "not drawn", "rederive": "cmd"} for name in (here, "other-class")}
    path = tmp_path / "t.toml"
    path.write_text(render_thresholds(tree))
    assert load_thresholds(path)[NOT_MEASURED] == tree[NOT_MEASURED]
    write_thresholds(path, "ci", {DATASET: {"mitogen": {here: tree["ci"][DATASET]["mitogen"][here]}}})
    assert load_thresholds(path)[NOT_MEASURED] == {"other-class": {"why": "not drawn", "rederive": "cmd"}}


def test_too_few_seeds_are_refused_with_one_line(data: ScoredData, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(data, tmp_path / "store"))
    for generator in ("real", "mitogen"):
        _log(data, tmp_path, generator, realism=False)
    thresholds = tmp_path / "t.toml"
    code, _, err = _check(thresholds, capsys, "--write-thresholds", "0.05")
    assert code == 2 and err.strip().count("\n") == 0 and not thresholds.exists()
    assert "1 seed(s) (0)" in err and ">= 3" in err and "CI_GATE_SEEDS" in err
    assert _check(thresholds, capsys, "--write-thresholds", "0.05", "--min-seeds", "1")[0] == 0


def test_a_mutant_run_is_never_exported(data: ScoredData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.bundle_cli import export_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(data, tmp_path / "store"))
    monkeypatch.setenv("SYNTHVID_MUTANT", "random-links")
    run = _log(data, tmp_path, "real", realism=False)
    with pytest.raises(ValueError, match="injected regression 'random-links'"):
        export_run(run["run_id"], tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_the_machine_class_names_vendor_and_widest_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import machine

    for vendor, flags, expected in [("GenuineIntel", "avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "intel-amx"),
                                    ("AuthenticAMD", "avx2 avx512f avx512_bf16", "amd-avx512_bf16"),
                                    ("AuthenticAMD", "avx2 fma", "amd-avx2")]:
        monkeypatch.setattr(machine, "_cpuinfo_fields", lambda v=vendor, f=flags: {"vendor_id": v, "flags": f})
        assert machine.machine_class() == expected


def test_shipped_thresholds_are_current_and_can_fail() -> None:
    """Every shipped entry comes from >= 3 seeds under today's ci profile and code, bounds every gated metric its
    generator has and every stage time, and holds no lower bound that could not fail."""
    tree = load_thresholds(DEFAULT_THRESHOLDS)
    digest, versions = profile_digest("ci"), current_versions()
    measured = {machine for generators in tree["ci"].values() for classes in generators.values() for machine in classes}
    assert measured and not measured & set(tree.get(NOT_MEASURED, {}))
    for dataset, generators in tree["ci"].items():
        assert {"real", "mitogen", "cellcyclegan", "bvdm"} <= set(generators)
        for generator, classes in generators.items():
            for machine, entry in classes.items():
                where = (dataset, generator, machine)
                provenance = entry["provenance"]
                assert len(provenance["seeds"]) >= 3 and len(provenance["source_runs"]) == len(provenance["seeds"])
                assert provenance["profile_digest"] == digest, where
                assert {k: provenance[k] for k in versions} == versions, where
                gated = {"SEG", "TRA", "TC"} | (set() if generator == "real" else {"FID", "FVD"})
                assert gated == set(entry["min"]) | set(entry.get("max", {})), where
                assert all(v > 0 and math.isfinite(v) for v in entry["min"].values()), where
                assert {f"time_{s}_s" for s in ("generate", "train-segmenter", "eval-real")} <= set(entry["max_ratio"])
                for name, kind in GATED_METRICS.items():  # the bound lies beyond the mean, on the failing side
                    if name in entry.get(kind, {}):
                        assert (entry[kind][name] < entry["mean"][name]) == (kind == "min"), (where, name)
