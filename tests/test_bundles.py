"""Result bundles (``python -m benchmark export`` / ``import``, ``report --results``) and stage versions, on runs
whose metrics and features come from real scoring of a real GOWT1 window (``test_reports_data``).

A run here is logged the way the pipeline logs one: a parent run with nested generate / floor / realism /
eval-real stage runs made by the pipeline's own ``Stages`` (so they carry ``stage_version`` tags and
``stage.json``), the floor and realism stages through their real scoring and ``realism_artifacts``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from test_reports_data import (
    DATASET,
    REFERENCE,
    ScoredData,
    fresh_store,
    prepare_scored_data,
    protocol,
    realism_config,
)

from benchmark import experiment
from benchmark.bundle_cli import export_run, import_bundles
from benchmark.bundles import (
    FEATURE_DTYPE,
    MAX_BUNDLE_BYTES,
    RECORD,
    SUMS,
    folder_bytes,
    read_bundle,
)
from benchmark.checksums import sign_folder
from benchmark.cli import main
from benchmark.ctc import CTCSequence
from benchmark.ctc.digest import sequence_digest
from benchmark.stages import Stages, realism_artifacts
from benchmark.versions import STAGE_VERSIONS, version_tags
from reports.report import build_report
from reports.tables import FLOOR_ROW

N_BOOT = 20


def log_pipeline_run(data: ScoredData, generator: str, synthetic_dir: Path, res_dir: Path, stage_root: Path) -> str:
    """One parent run with generate, floor, realism and eval-real stage runs (real scores); its id."""
    from benchmark.metrics.ctc import ctc_scores
    from benchmark.metrics.realism import real_floor, realism_scores
    from benchmark.stages import log_sample_frames

    train, reference = CTCSequence(data.window, "01"), CTCSequence(data.window, REFERENCE)
    config = {"generator": generator, "profile": "ci", "seed": 0, "dataset": DATASET}
    tags = {"generator": generator, "profile": "ci", "stage": "run", "tracker": "learned", **protocol(),
            **version_tags(), "dataset_checksum": sequence_digest(train)[:16],
            "reference_checksum": sequence_digest(reference)[:16]}
    with experiment.start_run(f"{generator}-s0-ci", DATASET, config=config, tags=tags) as parent:
        stages = Stages(stage_root, DATASET, log=lambda _msg: None)

        def generate(out: Path) -> dict[str, Any]:
            (out / "synthetic").symlink_to(synthetic_dir.resolve(), target_is_directory=True)
            return {}

        generated = stages.run("generate", (generator, str(synthetic_dir)), generate,
                               artifacts=lambda f: log_sample_frames(f / "synthetic", n=2)
                               if (f / "synthetic" / "01").is_dir() else None,
                               version=STAGE_VERSIONS["generate"])

        def floor(out: Path) -> dict[str, Any]:
            scores = real_floor(train, reference, realism_config(), data.cache, out / "features.npz")
            (out / "floor.json").write_text(json.dumps(scores, default=str))
            return scores

        stages.run("floor", "floor", floor, artifacts=realism_artifacts("floor.json"),
                   tags={"generator": "real-vs-real", "profile": "ci", **protocol(), **version_tags(),
                         "reference_checksum": tags["reference_checksum"]}, version=STAGE_VERSIONS["floor"])
        folder = generated.folder / "synthetic"
        synthetic = [CTCSequence(folder, p.name) for p in sorted(folder.iterdir()) if p.name.isdigit()]

        def score(out: Path) -> dict[str, Any]:
            scores = realism_scores(reference, synthetic, realism_config(), data.cache,
                                    features_out=out / "features.npz", on_shared_inputs="flag")
            (out / "realism.json").write_text(json.dumps(scores, default=str))
            return scores

        stages.run("realism", (generator, str(synthetic_dir)), score, artifacts=realism_artifacts("realism.json"),
                   tags=protocol(), version=STAGE_VERSIONS["realism"])
        stages.run("eval-real", str(res_dir), lambda _out: ctc_scores(res_dir, reference.gt_dir, ("SEG", "DET", "TRA")),
                   version=STAGE_VERSIONS["eval-real"])
        row: dict[str, Any] = {}
        for result in stages.results.values():
            prefix = "FLOOR_" if result.name == "floor" else ""
            row.update({f"{prefix}{k}": v for k, v in result.metrics.items()})
            row[f"time_{result.name}_s"] = result.seconds
        experiment.log_metrics(row)
    return parent.info.run_id


@pytest.fixture(scope="module")
def data(gowt1: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoredData:
    return prepare_scored_data(gowt1, tmp_path_factory.getbasetemp() / "reports-data")


@pytest.fixture(scope="module")
def source(data: ScoredData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Store A with a good (mitogen) and a broken (bvdm) run, their report and their exported bundles."""
    root = tmp_path_factory.mktemp("bundles")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", fresh_store(data, root / "store-a"))
    runs = {"mitogen": log_pipeline_run(data, "mitogen", data.good_synthetic, data.good_res, root / "stages"),
            "bvdm": log_pipeline_run(data, "bvdm", data.noise_synthetic, data.broken_res, root / "stages")}
    report = build_report(DATASET, "ci", root / "out-a", log=False, n_boot=N_BOOT)
    results = root / "results"
    bundles = {name: export_run(run_id, results) for name, run_id in runs.items()}
    mp.delenv("MLFLOW_TRACKING_URI")
    yield {"root": root, "runs": runs, "report": report, "results": results, "bundles": bundles}
    mp.undo()


def use_store(data: ScoredData, folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = fresh_store(data, folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def all_runs() -> pd.DataFrame:
    experiment.configure()
    return mlflow.search_runs(experiment_names=[experiment.experiment_name(DATASET)])


def number_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 without what names a store (run ids) or this machine's timing of the test."""
    keep = [c for c in table.columns if c not in ("run_id", "run_ids") and not c.startswith("time_")]
    return table[keep].reset_index(drop=True)


def test_export_writes_the_bundle_layout(source: dict[str, Any]) -> None:
    bundle = source["bundles"]["bvdm"]
    assert bundle.folder == source["results"] / DATASET / "ci" / "bvdm" / "0"
    names = sorted(p.relative_to(bundle.folder).as_posix() for p in bundle.folder.rglob("*") if p.is_file())
    assert names == [SUMS, "features/floor.json", "features/realism.json", RECORD, "sample.png"]
    record = bundle.record
    assert record["stage_versions"] == {k: STAGE_VERSIONS[k] for k in ("generate", "floor", "realism", "eval-real")}
    assert record["seed"] == 0 and record["machine_class"] and record["protocol_version"]
    assert set(record["digests"]) == {"training", "reference"} and all(record["digests"].values())
    parent = record["parent"]["metrics"]
    assert {"SEG", "DET", "TRA", "AOGM_FN", "fid", "fid_ci_low", "fid_ci_high", "n_fid", "FLOOR_fid"} <= set(parent)
    assert any(k.startswith("time_") for k in parent)
    assert bundle.sample is not None and bundle.sample.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = bundle.feature_arrays("realism")
    assert arrays["reference_crops_features"].dtype == FEATURE_DTYPE
    assert arrays["reference_crops_groups"].shape == arrays["reference_crops_features"].shape[:1]
    assert folder_bytes(bundle.folder) < MAX_BUNDLE_BYTES


def test_bundles_share_the_feature_arrays_they_have_in_common(source: dict[str, Any], tmp_path: Path) -> None:
    """The reference side is one array in the store for every bundle and stage, and so is the floor's real side:
    the second export of a dataset adds only its own synthetic features."""
    good, broken = source["bundles"]["mitogen"], source["bundles"]["bvdm"]
    manifests = {(name, stage): json.loads((bundle.folder / "features" / f"{stage}.json").read_text())["arrays"]
                 for name, bundle in (("good", good), ("broken", broken)) for stage in ("realism", "floor")}
    reference = {m["reference_crops_features"] for m in manifests.values()}
    assert len(reference) == 1
    assert manifests["good", "floor"] == manifests["broken", "floor"]
    assert manifests["good", "realism"]["synthetic_crops_features"] != manifests["broken", "realism"]["synthetic_crops_features"]
    store = source["results"] / "_features"
    named = {digest for manifest in manifests.values() for digest in manifest.values()}
    assert {p.stem for p in store.glob("*.npz")} == named  # each array once, nothing unnamed
    named_per_bundle = sum(len(manifest) for manifest in manifests.values())
    assert len(named) <= named_per_bundle - 8  # floor: all 8 arrays shared; realism: the 4 reference arrays


def test_the_committed_real_row_reads_its_floor_from_the_store() -> None:
    """The cpu Table 1 real row (rewritten as format 2) names its floor arrays, and the store in results/ has them."""
    from benchmark.bundles import read_bundle as read

    folder = Path(__file__).resolve().parents[1] / "results" / DATASET / "cpu" / "real" / "0"
    bundle = read(folder)
    assert bundle.record["bundle_format"] == 2 and bundle.feature_stages() == ["floor"]
    arrays = bundle.feature_arrays("floor")
    assert arrays["reference_crops_features"].shape == (1024, 2048) and arrays["synthetic_clips_features"].shape[1] == 400


def test_round_trip_fresh_store_gives_the_same_report(source: dict[str, Any], data: ScoredData,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_store(data, tmp_path / "store-b", monkeypatch)
    summary = import_bundles(source["results"])
    assert sorted(summary.imported) == [f"{DATASET}/ci/bvdm/0", f"{DATASET}/ci/mitogen/0"] and not summary.stale
    report = build_report(DATASET, "ci", tmp_path / "out-b", log=False, n_boot=N_BOOT)
    original = source["report"]
    assert list(report.table["generator"]) == list(original.table["generator"]) == ["mitogen", "bvdm", FLOOR_ROW]
    pd.testing.assert_frame_equal(number_columns(report.table), number_columns(original.table))
    # the paired differences are recomputed from the stored (float16) features: equal within that precision
    paired_a = pd.read_csv(original.folder / "table1b_paired.csv")
    paired_b = pd.read_csv(report.folder / "table1b_paired.csv")
    assert list(paired_b["comparison"]) == list(paired_a["comparison"]) and len(paired_a) >= 3
    for column in ("difference", "ci_low", "ci_high"):
        assert np.allclose(paired_b[column], paired_a[column], rtol=5e-3, atol=1e-3), column
    markdown = report.markdown.read_text()
    assert "Stale result bundles" not in markdown and "machine" in markdown


def test_float16_bound_on_store_a(source: dict[str, Any], data: ScoredData, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    """FID from the bundle's float16 features is within 0.05 % of FID from the stage's float64 ``features.npz``
    (real features: the broken generator vs the reference, and the real training vs the reference)."""
    from benchmark.metrics.frechet import frechet_distance
    from benchmark.metrics.realism import load_feature_sets

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{source['root'] / 'store-a' / 'mlflow.db'}")
    experiment.configure()
    client = mlflow.MlflowClient()
    for stage in ("realism", "floor"):
        runs = client.search_runs([client.get_experiment_by_name(experiment.experiment_name(DATASET)).experiment_id],
                                  f"tags.mlflow.parentRunId = '{source['runs']['bvdm']}' and tags.stage = '{stage}'")
        local = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="features.npz",
                                                    dst_path=str(tmp_path / stage))
        full = load_feature_sets(Path(local))
        low = source["bundles"]["bvdm"].feature_arrays(stage)
        exact = frechet_distance(full["reference_crops"].features, full["synthetic_crops"].features)
        approx = frechet_distance(low["reference_crops_features"].astype(np.float64),
                                  low["synthetic_crops_features"].astype(np.float64))
        assert exact > 0 and abs(approx - exact) / exact < 5e-4, (stage, exact, approx)


def test_import_twice_adds_nothing(source: dict[str, Any], data: ScoredData, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    use_store(data, tmp_path / "store", monkeypatch)
    assert main(["import", str(source["results"])]) == 0
    first = all_runs()
    assert main(["import", str(source["results"])]) == 0
    second = all_runs()
    assert len(second) == len(first) == 2 * 5  # two parents, each with generate/floor/realism/eval-real
    assert set(second["run_id"]) == set(first["run_id"])
    assert "0 imported, 2 already there" in capsys.readouterr().out


def test_a_tampered_bundle_is_refused_naming_the_file(source: dict[str, Any], data: ScoredData,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    shutil.copytree(source["results"], results)
    target = results / DATASET / "ci" / "bvdm" / "0" / "features" / "realism.json"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    use_store(data, tmp_path / "store", monkeypatch)
    assert main(["import", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {target}:") and "sha256" in err[0]
    assert all_runs().empty  # nothing of any bundle imported: every bundle is verified first


def test_a_changed_or_missing_feature_array_is_refused_naming_it(source: dict[str, Any], data: ScoredData,
                                                                monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The shared arrays are checked by their names (their content's sha256): a changed one, or one missing from
    the store, is one line naming it, before any bundle is imported."""
    from benchmark.bundles import store_array

    results = tmp_path / "results"
    shutil.copytree(source["results"], results)
    manifest = results / DATASET / "ci" / "bvdm" / "0" / "features" / "realism.json"
    digest = json.loads(manifest.read_text())["arrays"]["synthetic_crops_features"]
    target = results / "_features" / f"{digest}.npz"
    with np.load(target) as stored:
        changed = stored["a"].copy()
    changed[0, 0] += 1
    other, _ = store_array(tmp_path / "elsewhere", changed)
    shutil.copy(tmp_path / "elsewhere" / f"{other}.npz", target)  # a valid file under the wrong name
    use_store(data, tmp_path / "store", monkeypatch)
    assert main(["import", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {target}: its content does not match its name (a changed or corrupted feature array)"]
    target.unlink()
    assert main(["import", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {target}: missing from the feature store") and str(manifest) in err
    assert all_runs().empty


def test_a_stale_bundle_is_shown_apart_and_never_pooled(source: dict[str, Any], data: ScoredData,
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(source["results"], results)
    folder = results / DATASET / "ci" / "bvdm" / "0"
    record = json.loads((folder / RECORD).read_text())
    record["stage_versions"]["realism"] = STAGE_VERSIONS["realism"] + 1  # made by a newer (or older) realism stage
    (folder / RECORD).write_text(json.dumps(record))
    sign_folder(folder)
    assert read_bundle(folder).record["stage_versions"]["realism"] == STAGE_VERSIONS["realism"] + 1
    use_store(data, tmp_path / "store", monkeypatch)
    summary = import_bundles(results)
    assert summary.stale == [f"{DATASET}/ci/bvdm/0"]
    report = build_report(DATASET, "ci", tmp_path / "out", log=False, n_boot=N_BOOT)
    assert list(report.table["generator"]) == ["mitogen", FLOOR_ROW]
    paired = pd.read_csv(report.folder / "table1b_paired.csv")
    assert not paired["comparison"].str.contains("bvdm").any()
    stale = pd.read_csv(report.folder / "table1_stale.csv")
    assert list(stale["generator"]) == ["bvdm"] and list(stale["bundle"]) == [f"{DATASET}/ci/bvdm/0"]
    assert "realism v" in stale["stale_reason"].iloc[0]
    assert stale["SEG"].iloc[0] == pytest.approx(source["bundles"]["bvdm"].record["parent"]["metrics"]["SEG"])
    markdown = report.markdown.read_text()
    assert "## Stale result bundles" in markdown and f"`{DATASET}/ci/bvdm/0`" in markdown


def test_report_without_a_store_reads_the_bundles(source: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No MLFLOW_TRACKING_URI and no ./mlflow.db: ``report --results`` imports into a temporary store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["report", "--dataset", DATASET, "--profile", "ci", "--results", str(source["results"]), "--out",
                 str(out), "--no-log", "--n-bootstrap", str(N_BOOT)]) == 0
    table = pd.read_csv(out / "reports" / f"{DATASET}-ci" / "table1.csv")
    assert list(table["generator"]) == ["mitogen", "bvdm", FLOOR_ROW]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_stage_version_is_part_of_its_cache_key(tmp_path: Path, data: ScoredData,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage folder made by older code (lower version) is not served when the stage's version is raised."""
    use_store(data, tmp_path / "store", monkeypatch)
    stages = Stages(tmp_path / "stages", DATASET, log=lambda _msg: None)
    calls: list[int] = []

    def body(version: int):
        return lambda _out: calls.append(version) or {"value": float(version)}

    with experiment.start_run("versions", DATASET, tags={"stage": "test"}):
        first = stages.run("toy", "key", body(1), version=1)
        again = stages.run("toy", "key", body(1), version=1)
        newer = stages.run("toy", "key", body(2), version=2)
    assert calls == [1, 2] and again.cached and not newer.cached and newer.folder != first.folder
    assert json.loads((newer.folder / "stage.json").read_text())["version"] == 2
    tags = [r.data.tags for r in mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name(experiment.experiment_name(DATASET)).experiment_id], "tags.stage = 'toy'")]
    assert sorted(t["stage_version"] for t in tags) == ["1", "1", "2"]


def test_a_bundle_of_other_reference_data_is_not_compared(source: dict[str, Any], data: ScoredData,
                                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A row scored against other reference bytes (its digest differs from the floor's) is listed as excluded,
    not ranked: the paired differences need the same reference."""
    results = tmp_path / "results"
    shutil.copytree(source["results"], results)
    folder = results / DATASET / "ci" / "bvdm" / "0"
    record = json.loads((folder / RECORD).read_text())
    record["parent"]["tags"]["reference_checksum"] = "0" * 16
    (folder / RECORD).write_text(json.dumps(record))
    sign_folder(folder)
    use_store(data, tmp_path / "store", monkeypatch)
    import_bundles(results)
    report = build_report(DATASET, "ci", tmp_path / "out", log=False, n_boot=N_BOOT)
    assert list(report.table["generator"]) == ["mitogen", FLOOR_ROW]
    assert f"reference_checksum {'0' * 16} vs the floor's" in report.markdown.read_text()


def test_a_bundle_imported_before_the_code_changed_turns_stale(source: dict[str, Any], data: ScoredData,
                                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Imported while current, then the realism stage's version is raised: the next import (every ``report``
    does one) marks the runs already in the store stale, adding none."""
    use_store(data, tmp_path / "store", monkeypatch)
    assert not import_bundles(source["results"]).stale
    count = len(all_runs())
    monkeypatch.setitem(STAGE_VERSIONS, "realism", STAGE_VERSIONS["realism"] + 1)
    summary = import_bundles(source["results"])
    assert len(summary.stale) == 2 and not summary.imported and len(all_runs()) == count
    runs = all_runs()
    assert set(runs["tags.stale"]) == {"true"} and runs["tags.stale_reason"].str.contains("realism v1").all()
    with pytest.raises(ValueError, match="no finished benchmark runs"):
        build_report(DATASET, "ci", tmp_path / "out", log=False, n_boot=N_BOOT)


def test_an_export_over_budget_leaves_no_array_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused export takes back the arrays it had put into the shared store: nothing unnamed is left to commit."""
    from benchmark import bundles

    source = tmp_path / "features.npz"
    rng = np.random.default_rng(0)
    np.savez(source, reference_crops_features=rng.normal(size=(64, 32)), reference_crops_groups=np.arange(64))
    store = tmp_path / "results" / "_features"
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 1000)
    with pytest.raises(ValueError, match="over the 0 MiB budget of one bundle"):
        bundles.write_bundle(tmp_path / "results" / "b", {"bundle_format": bundles.BUNDLE_FORMAT}, {"realism": source},
                             store=store)
    assert not list(store.glob("*")) and not (tmp_path / "results" / "b").exists()
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 8 * 1024 * 1024)
    bundle = bundles.write_bundle(tmp_path / "results" / "b", {"bundle_format": bundles.BUNDLE_FORMAT}, {"realism": source},
                                  store=store)
    assert len(list(store.glob("*.npz"))) == 2 and bundle.feature_arrays("realism")["reference_crops_groups"].shape == (64,)
