"""``python -m benchmark export`` and ``import``: finished runs from the MLflow store into result bundles
(``benchmark.bundles``) and back.

``export`` reads a finished parent run and its stage runs (tags, params, metrics, the score JSONs, the
realism/floor/oracle ``features.npz`` and one sample frame) and writes one bundle under ``--out``.
``import`` recreates every bundle under a folder as a parent run with its stage runs, carrying the same tags,
metrics and artifacts the pipeline logs, so that ``report`` and the MLflow UI show them beside the user's own
runs. Each imported run is tagged ``bundle=<path>``, ``bundle_sha256=<digest of SHA256SUMS>`` (a second import
of the same bundle adds nothing) and ``stale=true|false``: stale when the code versions the bundle records
differ from the current code's (``benchmark.versions``); the report never pools a stale row with current ones.

Not orchestration: it only moves records between the store and bundle folders, so ``report`` may import
bundles before it reads the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmark import experiment, shipped
from benchmark.bundles import (
    BUNDLE_FORMAT,
    FEATURE_STAGES,
    FEATURE_STORE,
    MAX_RESULTS_BYTES,
    Bundle,
    bundle_path,
    folder_bytes,
    read_bundle,
    write_bundle,
)
from benchmark.config import seed_int
from benchmark.datasets import DATASETS, DEFAULT_DATASET
from benchmark.paths import refuse_output_overlapping_inputs
from benchmark.shipped import registry_root
from benchmark.versions import version_differences

logger = logging.getLogger(__name__)

#: tags of a run that belong to the process or the store it ran in, not to the result
LOCAL_TAGS = frozenset({experiment.HOST_TAG, experiment.PID_TAG, "bundle", "bundle_sha256", "stale", "stale_reason"})
#: the score file each feature stage logs beside ``features.npz``
SCORE_FILES = {"realism": "realism.json", "floor": "floor.json", "oracle": "oracle.json"}
MLFLOW_BATCH = 100  # MLflow's per-request limit of params and tags (metrics: 1000)


# ------------------------------------------------------------------------------------------- export
def run_entry(run: Any) -> dict[str, Any]:
    """What a bundle keeps of one MLflow run: name, times, tags (MLflow's own and the process's dropped),
    params and the latest value of every metric."""
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k not in LOCAL_TAGS}
    return {"run_name": run.info.run_name, "start_time": run.info.start_time, "end_time": run.info.end_time,
            "tags": tags, "params": dict(run.data.params), "metrics": dict(run.data.metrics)}


def stage_runs_of(client: Any, parent: Any) -> dict[str, Any]:
    """The newest nested run of each stage of ``parent``."""
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1000)
    out: dict[str, Any] = {}
    for run in runs:
        out.setdefault(run.data.tags.get("stage", run.info.run_name), run)
    return out


def find_parent_run(dataset: str, profile: str, generator: str, seed: int, tracker: str | None = None,
                    condition: str = "synthetic") -> str:
    """The newest finished parent run of (dataset, profile, generator, seed[, tracker]) trained under
    ``condition`` (the low-data protocol's; a run from before the tag existed is ``synthetic``) in the store."""
    from mlflow import MlflowClient

    experiment.configure()
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment.experiment_name(dataset))
    clauses = ["tags.stage = 'run'", f"tags.profile = '{profile}'", f"tags.generator = '{generator}'",
               f"params.seed = '{seed}'", "attributes.status = 'FINISHED'"]
    if tracker:
        clauses.append(f"tags.tracker = '{tracker}'")
    runs = [] if found is None else client.search_runs([found.experiment_id], " and ".join(clauses),
                                                       order_by=["attributes.start_time DESC"], max_results=200)
    runs = [r for r in runs if r.data.tags.get("condition", "synthetic") == condition]
    if not runs:
        under = "" if condition == "synthetic" else f", condition {condition}"
        raise ValueError(f"no finished run of {generator} (seed {seed}, profile {profile}{under}) for {dataset} in "
                         f"{experiment.tracking_uri()}")
    return runs[0].info.run_id


def _download(run: Any, path: str, dst: Path) -> Path | None:
    """One artifact of ``run`` into ``dst``; None when the run did not log it."""
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=path,
                                                        dst_path=str(dst)))
    except Exception:  # noqa: BLE001 - MLflow raises several types for an absent artifact
        return None


def _versions(parent: Any, stages: dict[str, Any]) -> tuple[dict[str, int] | None, str | None]:
    """The stage versions and protocol version a run was produced with: the parent's tags, else each stage
    run's ``stage_version`` tag; None where the run predates them."""
    tags = parent.data.tags
    if tags.get("stage_versions"):
        versions = {k: int(v) for k, v in json.loads(tags["stage_versions"]).items()}
        versions = {k: v for k, v in versions.items() if k in stages}
    elif stages and all("stage_version" in run.data.tags for run in stages.values()):
        versions = {name: int(run.data.tags["stage_version"]) for name, run in stages.items()}
    else:
        versions = None
    return versions, tags.get("protocol_version")


def refuse_overlap(target: Path) -> None:
    """An export must not write where the store it reads lives: a bundle folder replaced on export would take
    the store (or its artifacts beside a SQLite store) with it."""
    uri = experiment.tracking_uri()
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    artifacts = store.parent / "mlartifacts" if store is not None else None
    refuse_output_overlapping_inputs(target, [store, artifacts], "--out (the bundle folder)")


def export_run(run_id: str, out_root: Path, replace: bool = False) -> Bundle:
    """Write the bundle of finished parent run ``run_id`` under ``out_root``; returns it."""
    import mlflow
    from mlflow import MlflowClient

    experiment.configure()
    client = MlflowClient()
    try:
        parent = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MlflowException for an unknown id, with a long message
        raise ValueError(f"--run-id {run_id}: no such run in {experiment.tracking_uri()}") from None
    tags = parent.data.tags
    if tags.get("stage") != "run" or parent.info.status != "FINISHED":
        raise ValueError(f"--run-id {run_id}: not a finished benchmark run (stage={tags.get('stage')!r}, "
                         f"status {parent.info.status})")
    if tags.get("mutant"):
        raise ValueError(f"--run-id {run_id}: ran with the injected regression {tags['mutant']!r} "
                         "(SYNTHVID_MUTANT, scripts/gate_mutants.sh); it is not a result")
    stages = stage_runs_of(client, parent)
    config = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/config.json")
    dataset, seed = tags.get("dataset") or config.get("dataset"), config.get("seed", parent.data.params.get("seed"))
    grid = tags.get("grid_point")
    point = ",".join(f"{k}={v}" for k, v in json.loads(grid).items()) if grid else None
    relative = bundle_path(dataset, tags["profile"], tags["generator"], seed, tags.get("tracker"), point,
                           tags.get("condition"))
    target = Path(out_root) / relative
    refuse_overlap(target)
    stage_versions, protocol = _versions(parent, stages)
    record: dict[str, Any] = {
        "bundle_format": BUNDLE_FORMAT, "dataset": dataset, "profile": tags["profile"],
        "generator": tags["generator"], "seed": seed, "tracker": tags.get("tracker"), "grid_point": grid,
        "config": config, "digests": {"training": tags.get("dataset_checksum"),
                                      "reference": tags.get("reference_checksum")},
        "machine_class": tags.get("machine_class"), "cpu": tags.get("cpu"), "git_commit": tags.get("git_commit"),
        "protocol_version": protocol, "stage_versions": stage_versions, "source_run_id": run_id,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"), "parent": run_entry(parent), "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        features: dict[str, Path] = {}
        for name, run in stages.items():
            entry = run_entry(run)
            if name in FEATURE_STAGES:
                local = _download(run, "features.npz", Path(tmp) / name)
                if local is not None:
                    features[name] = local
            if name in SCORE_FILES:
                score = _download(run, SCORE_FILES[name], Path(tmp) / name)
                if score is not None:
                    entry["files"] = {SCORE_FILES[name]: json.loads(score.read_text())}
            record["stages"][name] = entry
        sample, sample_name = None, None
        if "generate" in stages:
            folder = _download(stages["generate"], "samples", Path(tmp) / "samples")
            pngs = sorted(folder.glob("*.png")) if folder is not None else []
            if pngs:
                sample, sample_name = pngs[len(pngs) // 2].read_bytes(), f"samples/{pngs[len(pngs) // 2].name}"
        record["sample"] = sample_name
        bundle = write_bundle(target, record, features, sample, overwrite=replace,
                              store=Path(out_root) / FEATURE_STORE)
    logger.info("exported run %s to %s", run_id, target)
    total = folder_bytes(Path(out_root))
    if total > MAX_RESULTS_BYTES:
        logger.warning("%s: holds %.0f MiB of result bundles, over the %.0f MiB budget of results/", out_root,
                       total / 2**20, MAX_RESULTS_BYTES / 2**20)
    return bundle


# ------------------------------------------------------------------------------------------- import
@dataclass
class ImportSummary:
    """What ``import_bundles`` did: bundles imported (with their new parent run ids) and bundles already there."""

    imported: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def _create_run(client: Any, experiment_id: str, entry: dict[str, Any], tags: dict[str, str]) -> str:
    """A finished run holding ``entry``'s tags, params and metrics (times as recorded); returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(experiment_id, start_time=entry.get("start_time"),
                            run_name=entry.get("run_name"))
    run_id = run.info.run_id
    all_tags = [RunTag(k, str(v)) for k, v in {**entry.get("tags", {}), **tags}.items()]
    params = [Param(k, str(v)) for k, v in entry.get("params", {}).items()]
    stamp = int(entry.get("end_time") or entry.get("start_time") or 0)
    metrics = [Metric(k, float(v), stamp, 0) for k, v in entry.get("metrics", {}).items()]
    for start in range(0, max(len(all_tags), len(params), 1), MLFLOW_BATCH):
        client.log_batch(run_id, params=params[start:start + MLFLOW_BATCH], tags=all_tags[start:start + MLFLOW_BATCH])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    return run_id


def _log_stage_artifacts(client: Any, run_id: str, bundle: Bundle, name: str, entry: dict[str, Any],
                         tmp: Path) -> None:
    """The artifacts the report reads of a stage run: ``stage.json``, the score JSON, ``features.npz``
    (float64 again) and, for ``generate``, the sample frame under ``samples/``."""
    version = (bundle.record.get("stage_versions") or {}).get(name)
    client.log_dict(run_id, {"metrics": entry.get("metrics", {}), "version": version}, "stage.json")
    for file_name, content in entry.get("files", {}).items():
        client.log_dict(run_id, content, file_name)
    if name in bundle.feature_stages():
        folder = tmp / name
        folder.mkdir()
        client.log_artifact(run_id, str(bundle.write_features(name, folder / "features.npz")))
    sample_name = bundle.record.get("sample")
    if name == "generate" and bundle.sample is not None and sample_name:
        folder = tmp / "samples"
        folder.mkdir()
        (folder / Path(sample_name).name).write_bytes(bundle.sample.read_bytes())
        client.log_artifact(run_id, str(folder / Path(sample_name).name), "samples")


def imported_runs(client: Any, experiment_id: str, digest: str) -> list[Any]:
    """The runs (parent and stages) an earlier import of the bundle with this ``SHA256SUMS`` digest made."""
    return client.search_runs([experiment_id], f"tags.bundle_sha256 = '{digest}'", max_results=1000)


def mark_stale(client: Any, runs: list[Any], marks: dict[str, str]) -> None:
    """Bring the ``stale`` tags of already imported runs up to date: the code may have changed since the import,
    and a bundle current then must not stay marked current."""
    for run in runs:
        tags = run.data.tags
        if tags.get("stale") == marks["stale"] and tags.get("stale_reason") == marks.get("stale_reason"):
            continue
        client.set_tag(run.info.run_id, "stale", marks["stale"])
        if "stale_reason" in marks:
            client.set_tag(run.info.run_id, "stale_reason", marks["stale_reason"])
        elif "stale_reason" in tags:
            client.delete_tag(run.info.run_id, "stale_reason")


def import_bundle(client: Any, bundle: Bundle, relative: str) -> tuple[str | None, list[str]]:
    """One verified bundle into the store (its parent run id, or None when it was there already) and the
    reasons it is stale (empty: current). A failure part-way deletes the runs it created."""
    record = bundle.record
    experiment_id = experiment.ensure_experiment(experiment.experiment_name(record["dataset"]))
    reasons = version_differences(record.get("stage_versions"), record.get("protocol_version"))
    marks = {"bundle": relative, "bundle_sha256": bundle.digest, "stale": str(bool(reasons)).lower()}
    if reasons:
        marks["stale_reason"] = "; ".join(reasons)[:4000]
    existing = imported_runs(client, experiment_id, bundle.digest)
    if existing:
        mark_stale(client, existing, marks)
        return None, reasons
    created: list[str] = []
    try:
        parent_id = _create_run(client, experiment_id, record["parent"], marks)
        created.append(parent_id)
        client.log_dict(parent_id, record.get("config", {}), "config.json")
        with tempfile.TemporaryDirectory() as tmp:
            for name, entry in record.get("stages", {}).items():
                run_id = _create_run(client, experiment_id, entry, {**marks, "mlflow.parentRunId": parent_id})
                created.append(run_id)
                _log_stage_artifacts(client, run_id, bundle, name, entry, Path(tmp))
                client.set_terminated(run_id, "FINISHED", end_time=entry.get("end_time"))
        client.set_terminated(parent_id, "FINISHED", end_time=record["parent"].get("end_time"))
    except BaseException:
        for run_id in created:
            client.delete_run(run_id)
        raise
    return parent_id, reasons


def import_bundles(root: Path) -> ImportSummary:
    """Every bundle under ``root`` into the configured store; each verified first (a changed file is refused,
    naming it, before anything of that bundle is written); idempotent."""
    from mlflow import MlflowClient

    experiment.configure()
    client = MlflowClient()
    summary = ImportSummary()
    root = Path(root)
    listed = shipped.entries("bundle", root)  # the one discovery of bundles
    bundles = [(e.name, read_bundle(shipped.bundle_folder(e))) for e in listed]  # all verified before any is written
    for _, bundle in bundles:
        bundle.verify_features()  # the shared feature arrays too
    for relative, bundle in bundles:
        run_id, reasons = import_bundle(client, bundle, relative)
        if reasons:
            summary.stale.append(relative)
            logger.warning("%s: stale (%s)", bundle.folder, "; ".join(reasons))
        if run_id is None:
            summary.skipped.append(relative)
        else:
            summary.imported[relative] = run_id
    return summary


@contextmanager
def report_store(results: Path | None) -> Iterator[str]:
    """The store ``report`` reads, with the bundles under ``results`` imported into it: the configured store,
    or, when there is none (no ``MLFLOW_TRACKING_URI``, no ``./mlflow.db``) and bundles are to be read, a
    temporary SQLite store for the command's duration. Yields its URI."""
    if results is None or os.environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / "mlflow.db").exists():
        if results is not None:
            import_bundles(results)
        yield experiment.tracking_uri()
        return
    with tempfile.TemporaryDirectory(prefix="synthvid-report-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        try:
            import_bundles(results)
            yield experiment.tracking_uri()
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]


def default_results() -> Path | None:
    """``results/`` of the shipped-artefact registry (this checkout, or ``$SYNTHVID_SHIPPED_ROOT``), when it exists."""
    folder = registry_root() / "results"
    return folder if folder.is_dir() else None


# ------------------------------------------------------------------------------------------- commands
def _export_command(args: argparse.Namespace) -> int:
    if args.run_id:
        run_id = args.run_id
    elif args.generator is not None and args.seed is not None and args.profile:
        run_id = find_parent_run(args.dataset, args.profile, args.generator, args.seed, args.tracker)
    else:
        raise ValueError("export: give --run-id, or --profile, --generator and --seed (with --dataset)")
    bundle = export_run(run_id, Path(args.out), replace=args.replace)
    print(bundle.folder)  # the command's result: the bundle's folder
    return 0


def _import_command(args: argparse.Namespace) -> int:
    summary = import_bundles(Path(args.results))
    for relative, run_id in summary.imported.items():
        print(f"imported {relative} as run {run_id}" + (" (stale)" if relative in summary.stale else ""))
    for relative in summary.skipped:
        print(f"already in the store: {relative}")
    print(f"{len(summary.imported)} imported, {len(summary.skipped)} already there; store {experiment.tracking_uri()}",
          file=sys.stdout)
    return 0


def add_bundle_commands(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a finished run's result bundle (results/...)",
                            description="Write the result bundle of a finished run (by MLflow run id, or the newest "
                            "run of --dataset/--profile/--generator/--seed) under --out: "
                            "<out>/<dataset>/<profile>/<generator>/<seed>[/<tracker>][/<grid point>]/ with run.json, "
                            "the realism feature sets, a sample frame and SHA256SUMS.")
    export.add_argument("--run-id", help="MLflow id of the parent run (tag stage=run)")
    export.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    export.add_argument("--profile")
    export.add_argument("--generator")
    export.add_argument("--seed", type=seed_int)
    export.add_argument("--tracker", help="the run's [tracker] method (default: any)")
    export.add_argument("--out", default="results", help="results root (default: ./results)")
    export.add_argument("--replace", action="store_true", help="replace an existing bundle (refreshing a stale one)")
    export.set_defaults(func=_export_command)

    load = sub.add_parser("import", help="load result bundles into the MLflow store",
                          description="Verify every bundle under RESULTS (SHA256SUMS) and create its parent and "
                          "stage runs in the MLflow store; a bundle already imported is skipped.")
    load.add_argument("results", help="folder of result bundles (e.g. results/)")
    load.set_defaults(func=_import_command)
