"""``python -m benchmark run``: fit -> generate -> realism -> train segmenter/tracker -> predict -> score.

Every stage writes into its own folder under ``<out>/<dataset>/stages/<stage>-<hash>/``, keyed by a
hash of its inputs and config; a finished stage holds ``stage.json`` and is skipped on a re-run, so a
killed run resumes where it stopped. Stages communicate only through CTC folders and model folders.
One MLflow parent run per (generator, seed, profile) with a nested run per stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import experiment
from benchmark.config import PROFILES, RunConfig, build_run_config, seed_int, stable_hash
from benchmark.ctc import CTCSequence, list_sequences, window_sequence
from benchmark.ctc.digest import sequence_digest
from benchmark.ctc.validate import check_input_sequence
from benchmark.ctc.window import check_window
from benchmark.datasets import DATASETS, DEFAULT_DATASET, resolve_dataset
from benchmark.io import folder_lock, replace_directory
from benchmark.paths import cache_dir, require_writable

logger = logging.getLogger(__name__)


@dataclass
class StageResult:
    name: str
    folder: Path
    metrics: dict[str, float]
    seconds: float
    cached: bool


class Stages:
    """Runs stages with an on-disk cache; logs each as a nested MLflow run. Progress lines ("[fit] running
    -> folder", "cached", "done in") go to ``log``: this module's logger at INFO unless a caller (a test)
    collects them itself."""

    def __init__(self, root: Path, dataset: str, log: Callable[[str], None] = logger.info) -> None:
        self.root = root
        self.dataset = dataset
        self.log = log
        self.results: dict[str, StageResult] = {}

    def folder(self, name: str, key: Any) -> Path:
        return self.root / f"{name}-{stable_hash(name, key)}"

    def resume_folder(self, name: str, key: Any) -> Path:
        """A folder that survives a killed stage (checkpoints to resume from); removed once the stage finishes."""
        return self.folder(name, key).with_name(self.folder(name, key).name + ".resume")

    def run(self, name: str, key: Any, body: Callable[[Path], dict[str, Any]], params: dict[str, Any] | None = None,
            artifacts: Callable[[Path], None] | None = None, tags: dict[str, str] | None = None) -> StageResult:
        import mlflow  # here, not at module load: `python -m benchmark --help` stays fast

        folder = self.folder(name, key)
        with folder_lock(folder, on_wait=lambda line: self.log(f"[{name}] {line}")):
            cached = self._cached(name, folder)
            # the stage's run opens BEFORE it works, so its training curves stream into it (TrainingStream)
            # and the UI shows it RUNNING while it runs
            with experiment.start_run(name, self.dataset, config=params,
                                      tags={"stage": name, "cached": str(cached is not None).lower(), **(tags or {})},
                                      nested=True):
                result = cached or self._compute(name, key, folder, body)
                experiment.log_metrics({**result.metrics, f"time_{name}_s": result.seconds})
                mlflow.log_dict({"folder": str(folder), "metrics": result.metrics}, "stage.json")
                if artifacts is not None:
                    artifacts(folder)
        self.results[name] = result
        return result


    def _cached(self, name: str, folder: Path) -> StageResult | None:
        record = folder / "stage.json"
        if not record.is_file():
            return None
        saved = json.loads(record.read_text())
        self.log(f"[{name}] cached: {folder}")
        return StageResult(name, folder, saved["metrics"], saved["seconds"], cached=True)

    def _compute(self, name: str, key: Any, folder: Path, body: Callable[[Path], dict[str, Any]]) -> StageResult:
        """Run ``body`` in ``<folder>.partial`` (under the stage lock) and move it into place when it returns."""
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.log(f"[{name}] running -> {folder}")
        start = time.perf_counter()
        try:
            metrics = experiment.clean_metrics(body(partial) or {})
        except BaseException:  # killed or failed: no half-written folder is left (checkpoints live elsewhere)
            shutil.rmtree(partial, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        (partial / "stage.json").write_text(json.dumps({"metrics": metrics, "seconds": seconds, "key": key},
                                                       indent=2, default=str))
        replace_directory(partial, folder)
        shutil.rmtree(self.resume_folder(name, key), ignore_errors=True)
        self.log(f"[{name}] done in {seconds:.1f} s")
        return StageResult(name, folder, metrics, seconds, cached=False)


def prepare_real(config: RunConfig, data_root: str | None, stages: Stages) -> tuple[Path, str, str]:
    """The real dataset folder to use: the original, or (profile ``ci``) a window cut out of it."""
    source = resolve_dataset(config.dataset, data_root)
    if not config.window:
        return source, config.train_sequence, config.test_sequence
    frames = range(*config.window["frames"])
    box = tuple(config.window["box"]) if config.window.get("box") else None

    def body(out: Path) -> dict[str, Any]:
        for name in (config.train_sequence, config.test_sequence):
            window_sequence(CTCSequence(source, name), out / config.dataset, frames=frames, box=box)
        return {}

    # keyed on the bytes it reads, not the source path: a frame changed after a run re-cuts the window
    key = (config.window, [(name, sequence_digest(CTCSequence(source, name)))
                           for name in (config.train_sequence, config.test_sequence)])
    result = stages.run("window", key, body, params={"window": config.window})
    return result.folder / config.dataset, config.train_sequence, config.test_sequence


@dataclass
class RunContext:
    """What every stage of one run shares: the config, the stage cache, the real data and the realism protocol.

    ``reference`` is the real HELD-OUT sequence: downstream models are tested on it, and every generator,
    the oracle and the real-vs-real floor are scored for realism against it, under ONE intensity map.
    """

    config: RunConfig
    stages: Stages
    train: CTCSequence
    reference: CTCSequence
    data_key: tuple
    intensity_map: tuple[float, float]
    map_source: str
    reference_digest: str

    @property
    def realism_config(self):
        from benchmark.metrics.realism import RealismConfig
        from generators.base import config_from_dict

        return config_from_dict(RealismConfig, {**self.config.realism, "intensity_range": self.intensity_map})

    def realism_key(self) -> tuple:
        """What a realism score depends on besides the synthetic data: reference, map and protocol."""
        return (self.reference.name, self.reference_digest, self.intensity_map, self.config.realism)

    def protocol_tags(self) -> dict[str, str]:
        from benchmark.metrics.realism import protocol_tags

        return protocol_tags(self.config.dataset, self.reference.name, self.intensity_map,
                             self.realism_config.clip_mode, self.map_source)


def prepare_context(config: RunConfig, stages: Stages, data_root: str | None) -> RunContext:
    from benchmark.metrics.realism import reference_intensity_map

    real_dir, train_name, test_name = prepare_real(config, data_root, stages)
    train, reference = CTCSequence(real_dir, train_name), CTCSequence(real_dir, test_name)
    # what the fit reads (raw frames + GT, by content) is its key; where the files live is not
    data_key = (train_name, sequence_digest(train))
    intensity_map, source = reference_intensity_map(config.dataset, [train, reference])
    return RunContext(config, stages, train, reference, data_key, intensity_map, source, sequence_digest(reference))


WEIGHT_FIELDS = ("fid_weight_sha256", "fvd_weight_sha256", "fid_weight_route", "fvd_weight_route")


def realism_artifacts(json_name: str) -> Callable[[Path], None]:
    """Log a realism-type stage's scores and equal-N feature sets (the report's paired comparisons read
    them back), and tag the stage run with the metric weights it used (a report never mixes them)."""
    import mlflow


    def log(folder: Path) -> None:
        for name in ("features.npz", json_name):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name))
        if (folder / json_name).is_file():
            scores = json.loads((folder / json_name).read_text())
            mlflow.set_tags({k: str(scores[k]) for k in WEIGHT_FIELDS if scores.get(k)})

    return log


def _upper_realism(scores: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Realism scores as stage metrics: upper-case names (``FID_ci_low``), flags as 0/1 so they are logged."""
    return {f"{prefix}{_metric_name(k)}": int(v) if isinstance(v, bool) else v for k, v in scores.items()}


def floor_stage(ctx: RunContext) -> StageResult:
    """The real-vs-real floor: the real training sequence scored exactly like a generator (cached, shared)."""
    from benchmark.metrics.realism import real_floor

    def body(out: Path) -> dict[str, Any]:
        scores = real_floor(ctx.train, ctx.reference, ctx.realism_config, cache_dir(), out / "features.npz")
        (out / "floor.json").write_text(json.dumps(scores, indent=2, default=str))
        return _upper_realism(scores)

    return ctx.stages.run("floor", (ctx.data_key, ctx.realism_key()), body, params=ctx.config.realism,
                          artifacts=realism_artifacts("floor.json"),
                          tags={"generator": "real-vs-real", "profile": ctx.config.profile, **ctx.protocol_tags()})


def realism_stage(ctx: RunContext, generated: StageResult, synthetic: list[CTCSequence]) -> StageResult:
    from benchmark.metrics.realism import realism_scores

    def body(out: Path) -> dict[str, Any]:
        scores = realism_scores(ctx.reference, synthetic, ctx.realism_config, cache_dir(), features_out=out / "features.npz")
        (out / "realism.json").write_text(json.dumps(scores, indent=2, default=str))
        return _upper_realism(scores)

    return ctx.stages.run("realism", (generated.folder.name, ctx.realism_key()), body, params=ctx.config.realism,
                          artifacts=realism_artifacts("realism.json"), tags=ctx.protocol_tags())


def oracle_stage(ctx: RunContext, generator_cls: type, fitted: StageResult) -> StageResult:
    """The frame ceiling: the REAL training textures rendered through the generator's own frame path, scored
    like its synthetic videos (``ORACLE_FID`` ...): what a perfect texture model would reach in this frame model."""
    from benchmark.metrics.realism import realism_scores

    def body(out: Path) -> dict[str, Any]:
        generator = generator_cls.load(fitted.folder / "model")
        generator.render_oracle(ctx.train, out / "oracle")
        rendered = [CTCSequence(out / "oracle", name) for name in list_sequences(out / "oracle")]
        scores = realism_scores(ctx.reference, rendered, ctx.realism_config, cache_dir(),
                                features_out=out / "features.npz")
        (out / "oracle.json").write_text(json.dumps(scores, indent=2, default=str))
        return _upper_realism(scores, "ORACLE_")

    return ctx.stages.run("oracle", (fitted.folder.name, ctx.realism_key(), ctx.train.name), body,
                          params=ctx.config.realism, artifacts=realism_artifacts("oracle.json"),
                          tags=ctx.protocol_tags())


def partial_eval_stage(ctx: RunContext, segmenter: StageResult) -> StageResult:
    """Evaluation on a partial copy of the held-out sequence (frames missing): the segmenter on every raw frame
    that exists, SEG on those with GT (and silver-truth) SEG, DET on those with GT TRA; no tracking."""
    from benchmark.metrics.ctc import score_partial
    from downstream.segmenter import segment_frames

    reference = ctx.reference

    def body(out: Path) -> dict[str, Any]:
        frames = sorted(reference.image_files)
        masks = segment_frames(segmenter.folder / "stardist", reference, frames)
        return score_partial(masks, reference, out)

    return ctx.stages.run("eval-real", (segmenter.folder.name, reference.name, ctx.reference_digest, "partial"), body,
                          params={"test_sequence": reference.name, "partial": True})


def fit_stage(ctx: RunContext, generator_cls: type) -> StageResult:
    config = ctx.config
    fit_params = {k: v for k, v in config.generator_params.items() if k not in generator_cls.sampling_fields}
    key = (ctx.data_key, config.generator, fit_params, config.seed)
    resumable = "checkpoint_dir" in {f.name for f in dataclasses.fields(generator_cls.config_class)}

    def fit(out: Path) -> dict[str, Any]:
        params = dict(fit_params)
        if resumable and not params.get("checkpoint_dir"):  # checkpoints outside the stage's .partial folder
            params["checkpoint_dir"] = str(ctx.stages.resume_folder("fit", key))
        generator = generator_cls.from_params(params)
        generator.fit(ctx.train)
        generator.save(out / "model")
        return {}

    return ctx.stages.run("fit", key, fit, params={"generator": fit_params},
                          artifacts=lambda f: _log_small_artifacts(f / "model", "model"))


def check_inputs(config: RunConfig, data_root: str | None, out_dir: Path) -> None:
    """Everything a run can be refused for, checked before a run is logged or the first stage is touched:
    the stage configs (``check_run_config``), --out, the MLflow store, both real sequences and the profile's
    window on them, so a broken input fails naming its own file, never a stage's copy of it
    (``window-*.partial``) nor after stages have run."""
    check_run_config(config)
    require_writable(out_dir / config.dataset / "stages", "the stage outputs of --out")
    experiment.configure()  # an unwritable or broken MLflow store, before any data is read
    source = resolve_dataset(config.dataset, data_root)
    names = list(dict.fromkeys((config.train_sequence, config.test_sequence)))
    for name in names:
        check_input_sequence(source, name)
    for name in names if config.window else []:  # the profile's window must fit the data, before any stage
        box = tuple(config.window["box"]) if config.window.get("box") else None
        try:
            check_window(CTCSequence(source, name), range(*config.window["frames"]), box)
        except ValueError as exc:  # CTCFormatError included: it names the sequence's folder
            raise ValueError(f"profile {config.profile!r} [window]: {exc}") from None


def check_run_config(config: RunConfig) -> None:
    """Build every stage's config dataclass from ``config`` once, before the first stage: an unknown or
    ill-typed parameter (``--param '{"max_fit_frames": "abc"}'``) fails now with one line, not after the
    stages before the one that uses it have run."""
    from benchmark.metrics.realism import RealismConfig
    from downstream.segmenter import SegmenterConfig
    from downstream.tracker.model import TrackerConfig
    from generators.base import MAX_SEQUENCES, config_from_dict
    from generators.registry import get_generator

    config_from_dict(get_generator(config.generator).config_class, config.generator_params)
    config_from_dict(SegmenterConfig, {"seed": config.seed, **config.segmenter})
    config_from_dict(TrackerConfig, {"seed": config.seed, **config.tracker})
    config_from_dict(RealismConfig, config.realism)
    for name, low, high in (("n_sequences", 1, MAX_SEQUENCES), ("n_frames", 0, None)):
        value = getattr(config, name)
        if value < low or (high is not None and value > high):
            raise ValueError(f"profile {config.profile!r}: run.{name} = {value} is out of range")


def parse_param_json(text: str | None) -> dict[str, Any]:
    """``--param`` of ``run``/``oracle``: a JSON object of generator parameters (one line naming it otherwise)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--param {text!r}: not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--param {text!r}: expected a JSON object of generator parameters, "
                         "e.g. '{\"t_first\": 400}'")
    return value


def run_benchmark(config: RunConfig, out_dir: Path, data_root: str | None = None) -> dict[str, Any]:
    """Run every stage for one generator; returns the summary row (metrics + stage times)."""
    import mlflow

    from benchmark.metrics.ctc import score_tracking, tracking_unavailable
    from downstream.segmenter import SegmenterConfig, segment_sequence, train_segmenter
    from downstream.tracker.model import TrackerConfig, track_sequence, train_tracker
    from generators.base import GenerateSpec, config_from_dict
    from generators.registry import get_generator

    out_dir = Path(out_dir)
    check_inputs(config, data_root, out_dir)
    stages_root = out_dir / config.dataset / "stages"
    experiment.configure()
    run_name = f"{config.generator}-s{config.seed}-{config.profile}"
    with experiment.start_run(run_name, config.dataset, config=config.to_dict(),
                              tags={"generator": config.generator, "profile": config.profile, "stage": "run"}) as parent:
        stages = Stages(stages_root, config.dataset)
        ctx = prepare_context(config, stages, data_root)
        train_seq, test_seq, test_name = ctx.train, ctx.reference, ctx.reference.name
        mlflow.set_tags({"dataset_checksum": ctx.data_key[1][:16], "reference_checksum": ctx.reference_digest[:16]})
        for seq, digest, context in ((train_seq, ctx.data_key[1], "training"), (test_seq, ctx.reference_digest, "testing")):
            experiment.log_dataset(seq.image_dir, f"{config.dataset}/{seq.name}", digest, context)
        mlflow.set_tags(ctx.protocol_tags())

        generator_cls = get_generator(config.generator)
        fit_params = {k: v for k, v in config.generator_params.items() if k not in generator_cls.sampling_fields}
        # every sampling field, defaults included, so that a changed default re-generates
        resolved = config_from_dict(generator_cls.config_class, config.generator_params)
        sampling = {k: getattr(resolved, k) for k in sorted(generator_cls.sampling_fields)}
        gen_key = (ctx.data_key, config.generator, fit_params, config.seed)
        fitted = fit_stage(ctx, generator_cls)
        n_frames = config.n_frames or train_seq.n_frames
        spec = GenerateSpec(n_sequences=config.n_sequences, n_frames=n_frames, shape=None, seed=config.seed)

        def generate(out: Path) -> dict[str, Any]:
            generator = generator_cls.load(fitted.folder / "model").with_sampling(sampling)
            generator.generate(spec, out / "synthetic")
            return {}

        generated = stages.run("generate", (gen_key, sampling, spec.__dict__), generate,
                               params={"spec": spec.__dict__, "sampling": sampling},
                               artifacts=lambda f: (log_sample_frames(f / "synthetic"),
                                                    log_synthetic_inputs(f / "synthetic", config.generator)))
        synthetic_dir = generated.folder / "synthetic"
        synthetic = [CTCSequence(synthetic_dir, p.name) for p in sorted(synthetic_dir.iterdir())
                     if p.is_dir() and p.name.isdigit()]

        floor = floor_stage(ctx)
        if ctx.realism_config.fvd and not floor.metrics.get("n_fvd_real_total"):
            length = ctx.realism_config.clip_length
            mlflow.set_tags({f"unavailable_{m}": f"{config.dataset}/{test_seq.name} has no {length} consecutive "
                             "annotated frames of one cell (no reference clip)" for m in ("FVD", "KVD")})
        if generator_cls.needs_fit:  # `real` IS the floor's training side; `folder` has no frame model
            realism_stage(ctx, generated, synthetic)
            if config.oracle:
                oracle_stage(ctx, generator_cls, fitted)

        seg_config = config_from_dict(SegmenterConfig, {"seed": config.seed, **config.segmenter})

        def train_seg(out: Path) -> dict[str, Any]:
            train_segmenter(synthetic_dir, seg_config, out / "stardist")
            history = json.loads((out / "stardist" / "history.json").read_text()) \
                if (out / "stardist" / "history.json").is_file() else {}
            return {k: v[-1] for k, v in history.items() if isinstance(v, list) and v}

        segmenter = stages.run("train-segmenter", (generated.folder.name, config.segmenter), train_seg,
                               params=config.segmenter, artifacts=lambda f: log_history(f / "stardist"))
        no_tracking = tracking_unavailable(test_seq)
        if no_tracking is not None:  # a partial copy: SEG and DET on the frames that exist, TRA marked unavailable
            mlflow.set_tags({"unavailable_TRA": no_tracking, "unavailable_LNK": no_tracking})
            evaluated = partial_eval_stage(ctx, segmenter)
            res_name = "frames_RES"
        else:
            tracker_config = config_from_dict(TrackerConfig, {"seed": config.seed, **config.tracker})

            def train_trk(out: Path) -> dict[str, Any]:
                train_tracker(synthetic_dir, tracker_config, out / "tracker")
                return {}

            tracker = stages.run("train-tracker", (generated.folder.name, config.tracker), train_trk,
                                 params=config.tracker,
                                 artifacts=lambda f: _log_small_artifacts(f / "tracker", "tracker"))

            def evaluate(out: Path) -> dict[str, Any]:
                masks = segment_sequence(segmenter.folder / "stardist", test_seq)
                res_dir = out / f"{test_name}_RES"
                track_sequence(tracker.folder / "tracker", test_seq, masks, res_dir)
                return score_tracking(res_dir, test_seq.gt_dir)

            evaluated = stages.run("eval-real", (segmenter.folder.name, tracker.folder.name, test_name,
                                                 ctx.reference_digest),
                                   evaluate, params={"test_sequence": test_name},
                                   artifacts=lambda f: mlflow.log_artifacts(str(f / f"{test_name}_RES"), "result"))
            res_name = f"{test_name}_RES"
        row: dict[str, Any] = {}
        for result in stages.results.values():
            if result.name == "floor":
                row.update({f"FLOOR_{k}": v for k, v in result.metrics.items()})
            else:
                row.update(result.metrics)
            row[f"time_{result.name}_s"] = result.seconds
        experiment.log_metrics(row)
        row.update({"generator": config.generator, "run_id": parent.info.run_id,
                    "cached_stages": [r.name for r in stages.results.values() if r.cached],
                    "result_dir": str(evaluated.folder / res_name)})
        if no_tracking is not None:
            row["unavailable_TRA"] = no_tracking
    return row


def _metric_name(key: str) -> str:
    """``fid``/``fid_ci_low`` -> ``FID``/``FID_ci_low``: the same case as SEG/DET/TRA in MLflow."""
    for name in ("fid", "fvd", "kid", "kvd"):
        if key == name or key.startswith(f"{name}_"):
            return name.upper() + key[len(name):]
    return key


def _log_small_artifacts(folder: Path, name: str, limit: int = 50_000_000) -> None:
    import mlflow

    if folder.is_dir() and sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < limit:
        mlflow.log_artifacts(str(folder), name)


def log_history(model_dir: Path) -> None:
    """StarDist's per-epoch history as ``stardist_<key>`` metrics in one batch, unless the training streamed
    them into this run already (a cached stage's new run gets them here), and as a file."""
    import mlflow

    history = model_dir / "history.json"
    run = mlflow.active_run()
    streamed = run is not None and any(k.startswith("stardist_") for k in
                                       mlflow.MlflowClient().get_run(run.info.run_id).data.metrics)
    if history.is_file() and not streamed:
        with experiment.TrainingStream("stardist_", every_s=float("inf")) as stream:
            for key, values in json.loads(history.read_text()).items():
                if isinstance(values, list):
                    for step, value in enumerate(values):
                        stream(step, {key: value})
    if history.is_file():
        mlflow.log_artifact(str(history))


def log_synthetic_inputs(dataset_dir: Path, generator: str) -> None:
    """``mlflow.log_input`` of every generated sequence (context ``synthetic``), by content digest."""
    for name in list_sequences(dataset_dir):
        seq = CTCSequence(dataset_dir, name)
        experiment.log_dataset(seq.image_dir, f"{generator}/{name}", sequence_digest(seq), "synthetic")


def log_sample_frames(dataset_dir: Path, n: int = 3) -> None:
    """A few synthetic frames with their TRA mask outlines, as PNGs (``samples/frame_TTT.png``): the report
    shows them when the stage folder is gone. Drawn by the report's own overlay drawer, each frame
    under its own intensity window."""
    import mlflow
    import numpy as np

    from benchmark.ctc.overlay import overlay_frames  # skimage: not on the CLI's startup path

    seq = CTCSequence(dataset_dir, "01")
    for t in np.linspace(0, seq.n_frames - 1, n).astype(int):
        (rgb,) = overlay_frames(seq, [int(t)], prefer=("TRA",))
        mlflow.log_image(rgb, f"samples/frame_{int(t):03d}.png")


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


def _run_command(args: argparse.Namespace) -> int:
    overrides = parse_param_json(args.param)
    config = build_run_config(args.profile, args.dataset, args.generator, args.seed, overrides)
    row = run_benchmark(config, Path(args.out), args.data_root)
    print(format_summary(row), file=sys.stdout)  # the command's result: stdout, whatever -q says
    return 0


def run_oracle(config: RunConfig, out_dir: Path, data_root: str | None = None) -> dict[str, Any]:
    """Fit (or reuse the run's cached fit), render the real training textures through the generator's frame
    path and score them like its synthetic videos, beside the floor; logged as an ``oracle-run`` parent."""
    import mlflow

    from generators.registry import get_generator

    generator_cls = get_generator(config.generator)
    if not generator_cls.needs_fit:
        raise ValueError(f"generator {config.generator!r} has no frame model of its own: nothing to render")
    check_inputs(config, data_root, Path(out_dir))
    experiment.configure()
    with experiment.start_run(f"{config.generator}-oracle-s{config.seed}-{config.profile}", config.dataset,
                              config=config.to_dict(), tags={"generator": config.generator, "profile": config.profile,
                                                             "stage": "oracle-run"}) as parent:
        stages = Stages(Path(out_dir) / config.dataset / "stages", config.dataset)
        ctx = prepare_context(config, stages, data_root)
        mlflow.set_tags(ctx.protocol_tags())
        fitted = fit_stage(ctx, generator_cls)
        floor = floor_stage(ctx)
        oracle = oracle_stage(ctx, generator_cls, fitted)
        row = {**oracle.metrics, **{f"FLOOR_{k}": v for k, v in floor.metrics.items()}}
        experiment.log_metrics(row)
        for result in stages.results.values():
            row[f"time_{result.name}_s"] = result.seconds
        row.update({"generator": config.generator, "run_id": parent.info.run_id,
                    "result_dir": str(oracle.folder / "oracle")})
    return row


def _oracle_command(args: argparse.Namespace) -> int:
    overrides = parse_param_json(args.param)
    config = build_run_config(args.profile, args.dataset, args.generator, args.seed, overrides)
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
    from generators.registry import available_generators

    parser.add_argument("--generator", required=True, choices=available_generators())
    parser.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    parser.add_argument("--data-root", help="folder holding <dataset>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    parser.add_argument("--profile", default="cpu", help=f"{', '.join(PROFILES)} or a TOML file")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--out", default="runs", help="stage outputs (default: ./runs)")
    parser.add_argument("--param", help='generator parameter overrides as JSON, e.g. \'{"t_first": 400}\'')


def add_run_command(sub: argparse._SubParsersAction) -> None:

    run = sub.add_parser("run", help="fit, generate, train StarDist + tracker, score on real data, log to MLflow",
                         description="Run the whole benchmark for one generator. Finished stages are cached "
                         "under --out and skipped on a re-run.")
    _add_run_arguments(run)
    run.set_defaults(func=_run_command)

    oracle = sub.add_parser("oracle", help="frame ceiling: real training textures through a generator's frame path",
                            description="Render the real training sequence's own textures at the real masks through "
                            "the generator's frame model (compositing, background, blur, noise) and score FID/KID/FVD/"
                            "KVD against the held-out sequence, beside the real-vs-real floor. Shares the fit cache "
                            "with `run` (same --out, profile and seed).")
    _add_run_arguments(oracle)
    oracle.set_defaults(func=_oracle_command)
