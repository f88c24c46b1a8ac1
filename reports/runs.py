"""Reading benchmark runs back from MLflow: parent runs per generator, their stage runs, the real floor.

Conventions (set by ``benchmark.pipeline``): one parent run per (generator, seed, profile) tagged
``stage=run``, ``generator``, ``profile``; nested stage runs tagged ``stage=<name>`` that log
``stage.json`` (``{"folder": ..., "metrics": ...}``). Sweep runs carry ``sweep=<name>`` and are left
out of Table 1. The real-vs-real floor is a run tagged ``stage=floor`` (see ``log_floor``).
Metric names are matched case-insensitively (the realism layer logs ``fid``, tables say ``FID``).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from benchmark import experiment
from benchmark.config import (
    DEFAULT_TRACKER,  # the tracker of every table but 1d; runs without the tag used it
)
from benchmark.versions import STAGE_VERSIONS

#: Table 1 columns, in the paper's order, then FD_inf (N-extrapolated FID) and the frame ceiling (oracle FID)
TABLE_METRICS = ("SEG", "DET", "TRA", "FVD", "FID", "KVD", "KID", "FID_inf", "ORACLE_FID")
#: realism metrics and the N (per side) that each is computed on
REALISM_N = {"FID": "n_fid", "KID": "n_fid", "FVD": "n_fvd", "KVD": "n_fvd"}
#: tags that define the realism protocol of a run (set by the pipeline on parent and floor runs); rows of
#: one table must agree on all of them, or their numbers are not comparable
PROTOCOL_TAGS = ("realism_reference", "realism_intensity_map", "realism_clip_mode")
#: weight tags the realism stages set: one report never mixes weight files or routes
WEIGHT_TAGS = ("fid_weight_sha256", "fvd_weight_sha256")
#: row order of the comparison table; other generators follow alphabetically
GENERATOR_ORDER = ("real", "mitogen", "cellcyclegan", "bvdm")
#: the stages in pipeline order: the code versions' one list (benchmark.versions), not a copy of the DAG's names
STAGES = tuple(STAGE_VERSIONS)
FLOOR_STAGE = "floor"
#: the ``condition`` tag of a run trained on the generator's video alone (``downstream.training_set``)
SYNTHETIC_CONDITION = "synthetic"


def search(dataset: str, filter_string: str = "", order_by: list[str] | None = None) -> pd.DataFrame:
    """``mlflow.search_runs`` on the dataset's experiment (empty frame when it does not exist)."""
    experiment.configure()
    if mlflow.get_experiment_by_name(experiment.experiment_name(dataset)) is None:
        return pd.DataFrame()
    return mlflow.search_runs(experiment_names=[experiment.experiment_name(dataset)], filter_string=filter_string,
                              order_by=order_by or ["attributes.start_time DESC"], output_format="pandas")


def run_column(runs: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of a runs frame, all None when no run has it (MLflow omits tags no run set)."""
    return runs[name] if name in runs.columns else pd.Series([None] * len(runs), index=runs.index, dtype=object)



def is_stale(runs: pd.DataFrame) -> pd.Series:
    """Which runs came from a result bundle of other code versions (tag ``stale=true``, set on import by
    ``benchmark.bundle_cli``): shown apart, never pooled with current rows."""
    return run_column(runs, "tags.stale").astype(str).str.lower() == "true"


def parent_runs(dataset: str, profile: str | None = None, sweep: str | None = None,
                finished_only: bool = True, tracker: str | None = DEFAULT_TRACKER, stale: bool = False,
                condition: str | None = SYNTHETIC_CONDITION) -> pd.DataFrame:
    """Parent runs (``tags.stage='run'``), newest first. ``sweep=None`` excludes sweep runs, a name keeps
    only that sweep's runs. ``tracker`` keeps the runs scored with that tracker (None: every tracker), so a
    newer run with another tracker never replaces a generator's row in the main tables. ``stale``: only the
    runs of stale result bundles (``is_stale``) instead of only the others. ``condition``: the low-data
    protocol's training condition (``downstream.training_set``; default the synthetic video alone, the
    condition of Table 1 and the gate; None: every condition)."""
    clauses = ["tags.stage = 'run'"]
    if profile:
        clauses.append(f"tags.profile = '{profile}'")
    if finished_only:
        clauses.append("attributes.status = 'FINISHED'")
    runs = search(dataset, " and ".join(clauses))
    if runs.empty:
        return runs
    sweep_tag = run_column(runs, "tags.sweep")
    keep = sweep_tag.isna() if sweep is None else sweep_tag == sweep
    keep &= is_stale(runs) if stale else ~is_stale(runs)
    if tracker is not None:
        tracker_tag = run_column(runs, "tags.tracker")
        keep &= (tracker_tag == tracker) | (tracker_tag.isna() & (tracker == DEFAULT_TRACKER))
    if condition is not None:
        condition_tag = run_column(runs, "tags.condition")
        keep &= (condition_tag == condition) | (condition_tag.isna() & (condition == SYNTHETIC_CONDITION))
    return runs[keep.to_numpy()].reset_index(drop=True)


def generator_sort_key(name: str) -> tuple[int, str]:
    return (GENERATOR_ORDER.index(name), name) if name in GENERATOR_ORDER else (len(GENERATOR_ORDER), name)


def latest_per(runs: pd.DataFrame, keys: Sequence[str], defaults: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The newest run of every combination of ``keys`` (columns; a missing column or value takes its entry of
    ``defaults``), in table order: by generator (real, mitogen, cellcyclegan, bvdm, others), then a default
    tracker before the others, then newest first. The one rule behind Table 1's rows, its seeds and Table 1d."""
    if runs.empty:
        return runs
    ordered = runs.sort_values("start_time", ascending=False)
    filled = {k: run_column(ordered, k).fillna(v) for k, v in (defaults or {}).items()}
    ordered = ordered.assign(**filled, **{k: run_column(ordered, k) for k in keys if k not in filled})
    latest = ordered.drop_duplicates(subset=["tags.generator", *keys], keep="first")
    trackers = latest["tags.tracker"] if "tags.tracker" in keys else [DEFAULT_TRACKER] * len(latest)
    order = [(generator_sort_key(g), t != DEFAULT_TRACKER, t) for g, t in zip(latest["tags.generator"], trackers,
                                                                             strict=True)]
    return latest.iloc[sorted(range(len(latest)), key=order.__getitem__)].reset_index(drop=True)


def latest_per_generator(runs: pd.DataFrame) -> pd.DataFrame:
    """The newest run of every generator (Table 1's row when seeds are not aggregated)."""
    return latest_per(runs, [])


def latest_per_tracker(runs: pd.DataFrame) -> pd.DataFrame:
    """The newest run of every (generator, tracker) (runs without the tag: the default tracker): Table 1d."""
    return latest_per(runs, ["tags.tracker"], {"tags.tracker": DEFAULT_TRACKER})


def latest_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """The newest run of every (generator, seed): the runs a seed-aggregated Table 1 averages (a re-run of one
    seed replaces it, never counts twice)."""
    return latest_per(runs, ["params.seed"])


def metric(row: Mapping[str, Any], name: str) -> float | None:
    """``metrics.<name>`` of a run row, trying the name as given, upper- and lower-case; None if absent/NaN."""
    for key in (name, name.upper(), name.lower()):
        for variant in {key, _ci_case(key)}:
            value = row.get(f"metrics.{variant}")
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                return float(value)
    return None


def _ci_case(key: str) -> str:
    """``FID_CI_LOW`` -> ``FID_ci_low`` (metric upper, suffix lower)."""
    for suffix in ("_ci_low", "_ci_high", "_std"):
        if key.lower().endswith(suffix):
            return key[: -len(suffix)] + suffix
    return key


def stage_runs(dataset: str, parent_run_id: str) -> dict[str, pd.Series]:
    """Newest nested run of each stage under ``parent_run_id``, keyed by stage name."""
    runs = search(dataset, f"tags.mlflow.parentRunId = '{parent_run_id}'")
    out: dict[str, pd.Series] = {}
    for _, row in runs.iterrows():
        out.setdefault(str(row.get("tags.stage")), row)
    return out


def stage_record(run: pd.Series) -> dict[str, Any] | None:
    """The ``stage.json`` a stage run logged (``folder`` and ``metrics``), or None."""
    try:
        return mlflow.artifacts.load_dict(f"{run['artifact_uri']}/stage.json")
    except Exception:  # noqa: BLE001 - a missing artifact is an ordinary condition here
        return None


def synthetic_folder(dataset: str, parent_run_id: str) -> Path | None:
    """The generate stage's synthetic CTC dataset folder for a parent run, if it still exists on disk."""
    generate = stage_runs(dataset, parent_run_id).get("generate")
    record = stage_record(generate) if generate is not None else None
    if not record or "folder" not in record:
        return None
    folder = Path(record["folder"]) / "synthetic"
    return folder if folder.is_dir() else None


def stage_times(row: Mapping[str, Any]) -> dict[str, float]:
    """``time_<stage>_s`` metrics of a parent run, in pipeline order."""
    times = {key[len("metrics.time_"):-2]: float(v) for key, v in row.items()
             if isinstance(key, str) and key.startswith("metrics.time_") and key.endswith("_s")
             and v is not None and not (isinstance(v, float) and math.isnan(v))}
    order = {name: i for i, name in enumerate(STAGES)}
    return dict(sorted(times.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def latest_floor(dataset: str, profile: str | None = None) -> pd.Series | None:
    """Newest real-vs-real floor run (profile-specific first, then any)."""
    runs = search(dataset, f"tags.stage = '{FLOOR_STAGE}'")
    runs = runs if runs.empty else runs[~is_stale(runs).to_numpy()]
    if runs.empty:
        return None
    if profile and "tags.profile" in runs.columns:
        same = runs[runs["tags.profile"] == profile]
        if not same.empty:
            return same.iloc[0]
    return runs.iloc[0]


def log_floor(dataset: str, scores: Mapping[str, Any], profile: str | None = None,
              source: str | None = None, features: Path | None = None) -> str:
    """Log a ``benchmark.metrics.realism.real_floor`` result as the dataset's floor run; returns its id.

    ``features``: the ``features.npz`` that ``real_floor(..., features_out=)`` wrote, for paired comparisons.
    """
    from benchmark.metrics.realism import protocol_tags

    tags = {"stage": FLOOR_STAGE, "generator": "real-vs-real"}
    reference = Path(str(scores.get("real", "")))
    if scores.get("intensity_lo") is not None and reference.name:
        tags.update(protocol_tags(dataset, reference.name, (float(scores["intensity_lo"]), float(scores["intensity_hi"])),
                                  str(scores.get("clip_mode", "track")), str(scores.get("intensity_source", ""))))
        tags.update({k: str(scores[k]) for k in WEIGHT_TAGS if scores.get(k)})
    if profile:
        tags["profile"] = profile
    if source:
        tags["source"] = source
    with experiment.start_run(f"real-floor-{profile or 'any'}", dataset, tags=tags) as run:
        experiment.log_metrics(scores)
        mlflow.log_dict({k: v for k, v in scores.items()}, "floor.json")
        if features is not None:  # under the name the paired comparisons read
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copyfile(features, Path(tmp) / "features.npz")
                mlflow.log_artifact(str(Path(tmp) / "features.npz"))
    return run.info.run_id


def protocol_of(row: Mapping[str, Any]) -> dict[str, str | None]:
    """The realism protocol tags of a run row (None where a run predates them)."""
    out: dict[str, str | None] = {}
    for tag in PROTOCOL_TAGS:
        value = row.get(f"tags.{tag}")
        out[tag] = None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return out


def stage_artifact_uri(dataset: str, parent_run_id: str, stage: str) -> str | None:
    """Artifact URI of a parent run's newest nested ``stage`` run, when it logged ``features.npz``."""
    run = stage_runs(dataset, parent_run_id).get(stage)
    return None if run is None else str(run["artifact_uri"])


def weight_tags(dataset: str, parent_run_id: str, stage: str = "realism") -> dict[str, str]:
    """The weight sha256 tags of a parent run's realism (or oracle) stage run."""
    run = stage_runs(dataset, parent_run_id).get(stage)
    if run is None:
        return {}
    return {t: str(run[f"tags.{t}"]) for t in WEIGHT_TAGS
            if isinstance(run.get(f"tags.{t}"), str) and run.get(f"tags.{t}")}


def latest_oracle(dataset: str, generator: str, profile: str | None = None) -> pd.Series | None:
    """Newest standalone ``python -m benchmark oracle`` parent run of a generator (profile-specific)."""
    clauses = ["tags.stage = 'oracle-run'", f"tags.generator = '{generator}'", "attributes.status = 'FINISHED'"]
    if profile:
        clauses.append(f"tags.profile = '{profile}'")
    runs = search(dataset, " and ".join(clauses))
    runs = runs if runs.empty else runs[~is_stale(runs).to_numpy()]
    return None if runs.empty else runs.iloc[0]
