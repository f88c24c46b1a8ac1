"""``python -m benchmark run`` and ``oracle``: check the inputs, open the parent MLflow run, run the stage DAG
(``benchmark.stages.RUN_DAG``: fit -> generate -> realism / oracle, floor, train segmenter/tracker -> eval-real)
and print the summary. One MLflow parent run per (generator, seed, profile) with a nested run per stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import experiment
from benchmark.config import (
    DEFAULT_TRACKER,
    PARAM_HELP,
    PROFILES,
    RunConfig,
    build_run_config,
    config_from_dict,
    parse_params,
    seed_int,
)
from benchmark.ctc import CTCSequence
from benchmark.ctc.validate import check_input_sequence
from benchmark.ctc.window import check_window
from benchmark.datasets import DATASETS, DEFAULT_DATASET, DatasetNotFound, resolve_dataset
from benchmark.paths import (
    add_cache_argument,
    refuse_output_overlapping_inputs,
    require_cache_writable,
    require_writable,
)
from benchmark.stages import (
    ORACLE_DAG,
    RUN_DAG,
    SHARED_DAGS,
    RunContext,
    Stages,
    prepare_context,
    run_dag,
    tracker_name,
)
from benchmark.versions import version_tags
from generators.base import MAX_SEQUENCES, GenerateSpec
from generators.fit_cache import fitted_generator
from generators.registry import available_generators, get_generator

if TYPE_CHECKING:
    from downstream.training_set import TrainingSetConfig

logger = logging.getLogger(__name__)


def check_inputs(config: RunConfig, data_root: str | None, out_dir: Path) -> None:
    """Everything a run can be refused for, checked before a run is logged or the first stage is touched:
    the stage configs (``check_run_config``), --out, the MLflow store, both real sequences and the profile's
    window on them, so a broken input fails naming its own file, never a stage's copy of it
    (``window-*.partial``) nor after stages have run."""
    check_run_config(config)
    refuse_out_over_inputs(config, data_root, out_dir)  # first: no probe, no lock, nothing inside the data
    require_writable(out_dir / config.dataset / "stages", "the stage outputs of --out")
    require_cache_writable()  # fitted generators, locks, features: a read-only one fails now, not after the fit
    experiment.configure()  # an unwritable or broken MLflow store, before any data is read
    source = resolve_dataset(config.dataset, data_root, fetch=True)
    names = list(dict.fromkeys((config.train_sequence, config.test_sequence)))
    for name in names:
        check_input_sequence(source, name)
    cut = config.window_cut()
    for name in names if cut is not None else []:  # the profile's window must fit the data, before any stage
        try:
            check_window(CTCSequence(source, name), *cut)
        except ValueError as exc:  # CTCFormatError included: it names the sequence's folder
            raise ValueError(f"profile {config.profile!r} [window]: {exc}") from None
    check_external_data(config, source)
    training = training_set_config(config)
    if training.active:  # K within what the (windowed) training sequence has annotated
        from downstream.training_set import check_available

        train = CTCSequence(source, config.train_sequence)
        check_available(train, training, f"{config.dataset}/{config.train_sequence}" + (" in the window" if cut else ""),
                        cut[0] if cut is not None else None)


def _profile_as_overridden(config: RunConfig) -> str:
    """How an invalid value's error names where it came from: the profile, as ``--param`` and ``--downstream``
    (``run``), a sweep's grid or a campaign's spec overrode it."""
    return f"profile {config.profile!r} (with its overrides: --param, --downstream, a sweep's grid)"


def check_local_devices(config: RunConfig) -> None:
    """``run`` and ``oracle`` on this machine: refuse a generator ``device`` (nested sections included) naming an
    accelerator it lacks, before any stage rather than in the middle of a fit. Not part of ``check_run_config``:
    a sweep's driver plans for workers that may have the GPU it lacks (``benchmark.cluster`` checks those)."""
    where = f"generators.{config.generator}"
    try:
        check_devices(config_from_dict(get_generator(config.generator).config_class, config.generator_params, where),
                      where)
    except ValueError as exc:
        raise ValueError(f"{_profile_as_overridden(config)}: {exc}") from None


def check_devices(section: Any, where: str) -> None:
    """Refuse a ``device`` field of ``section`` (nested sections included) naming an accelerator this machine
    lacks."""
    for field in dataclasses.fields(section) if dataclasses.is_dataclass(section) else ():
        value = getattr(section, field.name)
        if dataclasses.is_dataclass(value):
            check_devices(value, f"{where}.{field.name}")
        elif field.name == "device" and isinstance(value, str) and value != "cpu":
            import torch

            kind = value.split(":")[0]
            present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind, False)
            if not present:
                raise ValueError(f"{where}.device = {value!r}: this machine has no such device "
                                 f"(torch sees {'CUDA' if torch.cuda.is_available() else 'no CUDA'}); use \"cpu\"")


def training_tags(config: RunConfig) -> dict[str, str]:
    """The parent run's ``condition`` (``synthetic``, ``real-K``, ``real-K+synthetic``) and, for a low-data
    condition, its K and real fraction: the report's Table 3 groups by them, Table 1 and the gate keep
    ``synthetic`` only (``reports.runs.parent_runs``)."""
    training = training_set_config(config)
    tags = {"condition": training.condition()}
    if training.active:
        tags.update({"real_frames": str(training.real_frames), "synthetic": str(training.synthetic).lower(),
                     "real_fraction": f"{training.real_fraction:g}"})
    return tags


def training_set_config(config: RunConfig) -> TrainingSetConfig:
    """``[downstream]`` (with ``--downstream`` overrides) as a checked ``TrainingSetConfig``."""
    from downstream.training_set import TrainingSetConfig

    return config_from_dict(TrainingSetConfig, config.downstream, "downstream")


def synthetic_source(config: RunConfig) -> Path | None:
    """The existing folder the run's generator hands on as its synthetic data (``folder``), or None."""
    return get_generator(config.generator).from_params(config.generator_params).source_folder()


def refuse_out_over_inputs(config: RunConfig, data_root: str | None, out_dir: Path) -> None:
    """``--out`` (stage outputs land in ``<out>/<dataset>/stages``) must not be, hold or lie inside the real
    dataset or the external synthetic folder the run reads."""
    try:
        source: Path | None = resolve_dataset(config.dataset, data_root)
    except DatasetNotFound:  # fetched into the cache later (or refused then): nothing of the user's here yet
        source = None
    refuse_output_overlapping_inputs(out_dir, [source, synthetic_source(config)], "--out")


def check_external_data(config: RunConfig, source: Path) -> None:
    """For external synthetic data (``folder``): validate the folder now, and refuse one holding frames of
    the real training or held-out sequence (a test-set leak), before any run is logged."""
    external = synthetic_source(config)
    if external is None:
        return
    from generators.folder import check_no_real_frames

    validated = get_generator(config.generator).from_params(config.generator_params).generate(GenerateSpec(), external)
    check_no_real_frames(Path(validated), {"held-out reference": CTCSequence(source, config.test_sequence),
                                           "training": CTCSequence(source, config.train_sequence)})


def generator_label(config: RunConfig) -> str:
    """The run's ``generator`` tag, i.e. its row in the report: the generator's name, and for external data
    (``folder``) the folder's name too (``folder:NAME``), so two external datasets are two rows."""
    external = synthetic_source(config)
    return config.generator if external is None else f"{config.generator}:{external.resolve().name}"


def check_run_config(config: RunConfig) -> None:
    """Build every stage's config dataclass from ``config`` once, before the first stage: an unknown or
    ill-typed parameter (``--param '{"max_fit_frames": "abc"}'``) fails now with one line, not after the
    stages before the one that uses it have run."""
    from benchmark.metrics.realism import RealismConfig
    from downstream.segmenter import SegmenterConfig
    from downstream.tracker import tracker_config

    sections = ((f"generators.{config.generator}", get_generator(config.generator).config_class,
                 config.generator_params), ("segmenter", SegmenterConfig, {"seed": config.seed, **config.segmenter}),
                ("realism", RealismConfig, config.realism))
    for where, config_class, values in sections:  # errors name the table: "generators.bvdm.ddpm: unknown ..."
        try:
            config_from_dict(config_class, values, where)
        except ValueError as exc:
            raise ValueError(f"{_profile_as_overridden(config)}: {exc}") from None
    try:  # [tracker]: the method, the learned tracker's flat keys and [tracker.trackastra], all checked
        tracker_config(config.tracker, config.seed)
        training_set_config(config)
    except ValueError as exc:
        raise ValueError(f"{_profile_as_overridden(config)}: {exc}") from None
    for name, low, high in (("n_sequences", 1, MAX_SEQUENCES), ("n_frames", 0, None)):
        value = getattr(config, name)
        if value < low or (high is not None and value > high):
            raise ValueError(f"profile {config.profile!r}: run.{name} = {value} is out of range")


def run_benchmark(config: RunConfig, out_dir: Path, data_root: str | None = None, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Run every stage of ``RUN_DAG`` for one generator; returns the summary row (metrics + stage times).
    ``parent_run_id`` and ``tags``: a sweep nests the run under its own parent run and tags it."""
    import mlflow

    out_dir = Path(out_dir)
    check_inputs(config, data_root, out_dir)
    tracker = tracker_name(config)
    label = generator_label(config)
    run_name = f"{label}-s{config.seed}-{config.profile}" + ("" if tracker == DEFAULT_TRACKER else f"-{tracker}")
    condition = training_tags(config)["condition"]
    run_name += "" if condition == "synthetic" else f"-{condition}"
    with experiment.start_run(run_name, config.dataset, config=config.to_dict(), parent_run_id=parent_run_id,
                              tags={**(tags or {}), "generator": label, "profile": config.profile,
                                    "tracker": tracker, "stage": "run", **training_tags(config)}) as parent:
        ctx = prepare_context(config, Stages(out_dir / config.dataset / "stages", config.dataset), data_root)
        log_run_inputs(ctx)
        if ctx.no_tracking is not None:  # a partial copy: SEG and DET on the frames that exist, TRA marked unavailable
            mlflow.set_tags({"unavailable_TRA": ctx.no_tracking, "unavailable_LNK": ctx.no_tracking})
        results = run_dag(ctx, RUN_DAG)
        if ctx.realism_config.fvd and not results["floor"].metrics.get("n_fvd_real_total"):
            length = ctx.realism_config.clip_length
            mlflow.set_tags({f"unavailable_{m}": f"{config.dataset}/{ctx.reference.name} has no {length} consecutive "
                             "annotated frames of one cell (no reference clip)" for m in ("FVD", "KVD")})
        row = summary_row(ctx.stages)
        experiment.log_metrics(row)
        res_name = "frames_RES" if ctx.no_tracking is not None else f"{ctx.reference.name}_RES"
        row.update({"generator": label, "run_id": parent.info.run_id,
                    "cached_stages": [r.name for r in ctx.stages.results.values() if r.cached],
                    "result_dir": str(results["eval-real"].folder / res_name)})
        if ctx.no_tracking is not None:
            row["unavailable_TRA"] = ctx.no_tracking
    return row


def run_shared_stages(config: RunConfig, out_dir: Path, data_root: str | None, kind: str,
                      parent_run_id: str | None = None, tags: dict[str, str] | None = None,
                      fit_device: str | None = None) -> dict[str, Any]:
    """Run the stages a sweep shares between its runs (``SHARED_DAGS[kind]``: the fit and its oracle, or the
    floor) on their own, under one MLflow run tagged ``stage=<kind>-task``, so that every run needing them
    finds them in the stage cache. ``fit_device``: fit on this device (a GPU the task was given) into the one fit cache first;
    the device is a runtime field, outside the fit key, so the fit stage then finds that fit and saves it
    with the profile's own device, as a later run on any machine expects."""
    out_dir = Path(out_dir)
    check_inputs(config, data_root, out_dir)
    run_tags = {**(tags or {}), "profile": config.profile, "stage": f"{kind}-task"}
    name = f"{kind}-{config.profile}"
    if kind == "fit":  # a floor task belongs to no generator (its config is any run's of that dataset)
        run_tags["generator"], name = config.generator, f"fit-{config.generator}-{config.profile}"
    with experiment.start_run(name, config.dataset, config=config.to_dict(), parent_run_id=parent_run_id,
                              tags=run_tags) as run:
        ctx = prepare_context(config, Stages(out_dir / config.dataset / "stages", config.dataset), data_root)
        if fit_device is not None and kind == "fit" and ctx.generator_cls.needs_fit:
            fitted_generator(config.generator, {**ctx.fit_params, "device": fit_device}, ctx.train)
        results = run_dag(ctx, SHARED_DAGS[kind])
        row: dict[str, Any] = {f"time_{r.name}_s": r.seconds for r in ctx.stages.results.values()}
        row.update({"run_id": run.info.run_id, "folders": {name: str(r.folder) for name, r in results.items()},
                    "cached_stages": [r.name for r in ctx.stages.results.values() if r.cached]})
    return row


def log_run_inputs(ctx: RunContext) -> None:
    """The parent run's data: content digests as tags and ``log_input`` records, and the realism protocol."""
    import mlflow

    mlflow.set_tags({"dataset_checksum": ctx.data_key[1][:16], "reference_checksum": ctx.reference_digest[:16]})
    for seq, digest, context in ((ctx.train, ctx.data_key[1], "training"),
                                 (ctx.reference, ctx.reference_digest, "testing")):
        experiment.log_dataset(seq.image_dir, f"{ctx.config.dataset}/{seq.name}", digest, context)
    mlflow.set_tags({**ctx.protocol_tags(), **version_tags()})


def summary_row(stages: Stages) -> dict[str, Any]:
    """Every stage's metrics (the floor's as ``FLOOR_*``) and wall time (``time_<stage>_s``)."""
    row: dict[str, Any] = {}
    for result in stages.results.values():
        if result.name == "floor":
            row.update({f"FLOOR_{k}": v for k, v in result.metrics.items()})
        else:
            row.update(result.metrics)
        row[f"time_{result.name}_s"] = result.seconds
    return row


def _score_text(row: dict[str, Any], name: str, prefix: str = "") -> str:
    value = row.get(f"{prefix}{name}")
    if value is None:
        return f"{name} -"
    text = f"{name} {value:.4g}"
    low, high = row.get(f"{prefix}{name}_ci_low"), row.get(f"{prefix}{name}_ci_high")
    if low is not None and high is not None:
        text += f" [{low:.4g}, {high:.4g}]"
    if row.get(f"{prefix}{name}_rank_deficient"):
        text += " (rank-deficient N)"
    return text


def format_summary(row: dict[str, Any]) -> str:
    """The end-of-run summary: scores with their intervals and flags, the floor, the frame ceiling, timings."""
    lines = [f"generator {row['generator']}  (MLflow run {row['run_id']})"]
    lines.append("  ".join(f"{k} {row[k]:.4g}" if k in row else f"{k} -" for k in ("SEG", "DET", "TRA")))
    if row.get("unavailable_TRA"):
        lines.append(f"TRA not available: {row['unavailable_TRA']}")
    for label, prefix in (("realism", ""), ("floor (real training vs held-out)", "FLOOR_"),
                          ("frame ceiling (oracle)", "ORACLE_")):
        if any(f"{prefix}{k}" in row for k in ("FID", "FVD")):
            parts = [_score_text(row, k, prefix) for k in ("FID", "KID", "FVD", "KVD")]
            if row.get(f"{prefix}FID_inf") is not None:
                parts.append(f"FID_inf {row[f'{prefix}FID_inf']:.4g}")
            lines.append(f"{label}: " + "  ".join(parts))
    times = "  ".join(f"{k[5:-2]} {v:.0f}s" for k, v in row.items() if k.startswith("time_"))
    lines.append(f"stage times: {times}")
    lines.append(f"result: {row['result_dir']}")
    lines.append(f"MLflow: {experiment.tracking_uri()} (open: mlflow ui --backend-store-uri {experiment.tracking_uri()}); "
                 "Table 1: python -m benchmark report --dataset DATASET --profile PROFILE")
    return "\n".join(lines)


def with_tracker(config: RunConfig, method: str | None) -> RunConfig:
    """``config`` with ``[tracker] method`` set to ``method`` (None: as the profile says). The rest of the
    profile's ``[tracker]`` section is kept, so a run with another tracker reuses every stage before
    train-tracker from the cache and stands beside the profile's row in the report (Table 1d)."""
    if method is None:
        return config
    return dataclasses.replace(config, tracker={**config.tracker, "method": method})


def _run_command(args: argparse.Namespace) -> int:
    overrides = parse_params(args.param)
    config = with_tracker(build_run_config(args.profile, args.dataset, args.generator, args.seed, overrides,
                                           parse_params(args.downstream)), args.tracker)
    check_local_devices(config)
    row = run_benchmark(config, Path(args.out), args.data_root)
    print(format_summary(row), file=sys.stdout)  # the command's result: stdout, whatever -q says
    return 0


def run_oracle(config: RunConfig, out_dir: Path, data_root: str | None = None) -> dict[str, Any]:
    """Fit (or reuse the run's cached fit), render the real training textures through the generator's frame
    path and score them like its synthetic videos, beside the floor (``ORACLE_DAG``); logged as an
    ``oracle-run`` parent."""
    import mlflow


    if not get_generator(config.generator).needs_fit:
        raise ValueError(f"generator {config.generator!r} has no frame model of its own: nothing to render")
    if not get_generator(config.generator).renders_oracle():
        raise ValueError(f"generator {config.generator!r} does not implement render_oracle: no frame ceiling to "
                         "render (its `run` leaves the oracle stage out)")
    check_inputs(config, data_root, Path(out_dir))
    with experiment.start_run(f"{config.generator}-oracle-s{config.seed}-{config.profile}", config.dataset,
                              config=config.to_dict(), tags={"generator": config.generator, "profile": config.profile,
                                                             "stage": "oracle-run"}) as parent:
        ctx = prepare_context(config, Stages(Path(out_dir) / config.dataset / "stages", config.dataset), data_root)
        mlflow.set_tags(ctx.protocol_tags())
        results = run_dag(ctx, ORACLE_DAG)
        row = {**results["oracle"].metrics, **{f"FLOOR_{k}": v for k, v in results["floor"].metrics.items()}}
        experiment.log_metrics(row)
        for result in ctx.stages.results.values():
            row[f"time_{result.name}_s"] = result.seconds
        row.update({"generator": config.generator, "run_id": parent.info.run_id,
                    "result_dir": str(results["oracle"].folder / "oracle")})
    return row


def _oracle_command(args: argparse.Namespace) -> int:
    overrides = parse_params(args.param)
    config = build_run_config(args.profile, args.dataset, args.generator, args.seed, overrides)
    check_local_devices(config)
    row = run_oracle(config, Path(args.out), args.data_root)
    lines = [f"oracle of {row['generator']} (MLflow run {row['run_id']}): real training textures through its frame path"]
    for label, prefix in (("frame ceiling", "ORACLE_"), ("floor", "FLOOR_")):
        lines.append(f"{label}: " + "  ".join(_score_text(row, k, prefix) for k in ("FID", "KID", "FVD", "KVD")))
    fid, floor = row.get("ORACLE_FID"), row.get("FLOOR_FID")
    if fid is not None and floor:
        lines.append(f"ceiling / floor FID ratio: {fid / floor:.3f}")
    lines.append(f"rendered: {row['result_dir']}")
    print("\n".join(lines))  # the command's result
    return 0



def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``run`` and ``oracle`` (same values -> same cached fit stage)."""
    parser.add_argument("--generator", required=True, choices=available_generators())
    parser.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    parser.add_argument("--data-root", help="folder holding <dataset>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    parser.add_argument("--profile", default="cpu", help=f"{', '.join(PROFILES)} or a TOML file")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--out", default="runs", help="stage outputs (default: ./runs)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE|JSON", help=PARAM_HELP)
    add_cache_argument(parser)


def add_run_command(sub: argparse._SubParsersAction) -> None:

    run = sub.add_parser("run", help="fit, generate, train StarDist + tracker, score on real data, log to MLflow",
                         description="Run the whole benchmark for one generator. Finished stages are cached "
                         "under --out and skipped on a re-run.")
    _add_run_arguments(run)
    run.add_argument("--downstream", action="append", metavar="KEY=VALUE",
                     help="the low-data protocol (the profile's [downstream] section): real_frames=K (annotated real "
                     "frames of the training sequence, or \"all\"), synthetic=false (real frames only), "
                     "real_fraction=F (share of segmenter patches from them), pool=gt-seg|tra|auto; repeatable")
    # no `choices`: the registry (downstream.tracker.TRACKERS) is not imported for --help; an unknown name is
    # refused with the profile's other errors, in one line, before any stage
    run.add_argument("--tracker", metavar="NAME",
                     help="tracker to train and score with: learned or trackastra (default: the profile's [tracker] "
                     "method, else learned); the stages before train-tracker come from the profile run's cache")
    run.set_defaults(func=_run_command)

    oracle = sub.add_parser("oracle", help="frame ceiling: real training textures through a generator's frame path",
                            description="Render the real training sequence's own textures at the real masks through "
                            "the generator's frame model (compositing, background, blur, noise) and score FID/KID/FVD/"
                            "KVD against the held-out sequence, beside the real-vs-real floor. Shares the fit cache "
                            "with `run` (same --out, profile and seed).")
    _add_run_arguments(oracle)
    oracle.set_defaults(func=_oracle_command)
