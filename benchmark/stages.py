"""The stages of a benchmark run, as one DAG: what each needs, what keys its cache, what it does, what it logs.

``RUN_DAG`` below is the whole pipeline in one place::

    window -> fit -> generate -> realism            (synthetic vs the held-out reference)
                             `-> texture-carry      (how much of a cell's texture the next frame keeps)
                  `-> oracle                        (real textures through the generator's frame path)
    floor                                            (real training vs the held-out reference)
    generate -> train-segmenter -> eval-real        (SEG/DET on the held-out sequence)
    generate -> train-tracker  --/                   (TRA, when the held-out sequence has full tracks)

Every stage writes into its own folder under ``<out>/<dataset>/stages/<stage>-<hash>/``, keyed by a hash
of what it reads (data by content digest, upstream stage folders, config); a finished stage holds
``stage.json`` and is skipped on a re-run, so a killed run resumes where it stopped. Stages communicate
only through CTC folders and model folders, and each is logged as a nested MLflow run of the parent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from benchmark import experiment, mutants
from benchmark.config import RunConfig, config_from_dict, config_to_dict, stable_hash
from benchmark.ctc import CTCSequence, list_sequences, window_sequence
from benchmark.ctc.digest import sequence_digest
from benchmark.datasets import resolve_dataset
from benchmark.io import folder_lock, replace_directory
from benchmark.paths import cache_dir
from benchmark.versions import STAGE_VERSIONS, version_tags
from generators.base import GenerateSpec
from generators.fit_cache import fit_key, fitted_generator
from generators.registry import get_generator

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

    def folder(self, name: str, key: Any, version: int = 1) -> Path:
        """The stage's cache folder: the code version is part of the hash, so a folder computed by older code
        is never found (and re-logged as current) after the stage's ``version`` is raised. Version 1 hashes
        as before versions existed, so folders of that code stay valid. An injected regression
        (``benchmark.mutants``) is part of every key: its results and unmutated ones never share a folder."""
        key = key if version == 1 else (version, key)
        mutant = mutants.current()
        return self.root / f"{name}-{stable_hash(name, key if mutant is None else ('mutant', mutant, key))}"

    def run(self, name: str, key: Any, body: Callable[[Path], dict[str, Any]], params: dict[str, Any] | None = None,
            artifacts: Callable[[Path], None] | None = None, tags: dict[str, str] | None = None,
            version: int = 1) -> StageResult:
        import mlflow  # here, not at module load: `python -m benchmark --help` stays fast

        folder = self.folder(name, key, version)
        with folder_lock(folder, on_wait=lambda line: self.log(f"[{name}] {line}")):
            cached = self._cached(name, folder, version)
            # the stage's run opens BEFORE it works, so its training curves stream into it (TrainingStream)
            # and the UI shows it RUNNING while it runs
            with experiment.start_run(name, self.dataset, config=params,
                                      tags={"stage": name, "cached": str(cached is not None).lower(),
                                            "stage_version": str(version), **(tags or {})},
                                      nested=True):
                result = cached or self._compute(name, key, folder, body, version)
                experiment.log_metrics({**result.metrics, f"time_{name}_s": result.seconds})
                mlflow.log_dict({"folder": str(folder), "metrics": result.metrics, "version": version}, "stage.json")
                if artifacts is not None:
                    artifacts(folder)
        self.results[name] = result
        return result


    def _cached(self, name: str, folder: Path, version: int = 1) -> StageResult | None:
        record = folder / "stage.json"
        if not record.is_file():
            return None
        saved = json.loads(record.read_text())
        if int(saved.get("version", 1)) != version:  # older code's output: recompute, never serve it as current
            self.log(f"[{name}] cached folder {folder} is of stage version {saved.get('version', 1)}, not {version}")
            return None
        self.log(f"[{name}] cached: {folder}")
        return StageResult(name, folder, saved["metrics"], saved["seconds"], cached=True)

    def _compute(self, name: str, key: Any, folder: Path, body: Callable[[Path], dict[str, Any]],
                 version: int = 1) -> StageResult:
        """Run ``body`` in ``<folder>.partial`` (under the stage lock) and move it into place when it returns."""
        partial = folder.with_name(folder.name + ".partial")
        # everything from creating the folder on is inside the try: a SIGTERM (KeyboardInterrupt) can land on any
        # line, and one landing between mkdir and the body would otherwise leave the half-made folder behind
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            self.log(f"[{name}] running -> {folder}")
            start = time.perf_counter()
            metrics = experiment.clean_metrics(body(partial) or {})
        except BaseException:  # killed or failed: no half-written folder is left (checkpoints live elsewhere)
            shutil.rmtree(partial, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        (partial / "stage.json").write_text(json.dumps({"metrics": metrics, "seconds": seconds, "key": key,
                                                        "version": version}, indent=2, default=str))
        replace_directory(partial, folder)
        self.log(f"[{name}] done in {seconds:.1f} s")
        return StageResult(name, folder, metrics, seconds, cached=False)


def prepare_real(config: RunConfig, data_root: str | None, stages: Stages) -> tuple[Path, str, str]:
    """The real dataset folder to use: the original, or (profile ``ci``) a window cut out of it."""
    source = resolve_dataset(config.dataset, data_root)
    cut = config.window_cut()
    if cut is None:
        return source, config.train_sequence, config.test_sequence
    frames, box = cut

    def body(out: Path) -> dict[str, Any]:
        for name in (config.train_sequence, config.test_sequence):
            window_sequence(CTCSequence(source, name), out / config.dataset, frames=frames, box=box)
        return {}

    # keyed on the bytes it reads, not the source path: a frame changed after a run re-cuts the window
    key = (config.window, [(name, sequence_digest(CTCSequence(source, name)))
                           for name in (config.train_sequence, config.test_sequence)])
    result = stages.run("window", key, body, params={"window": config.window}, version=STAGE_VERSIONS["window"])
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

    @cached_property
    def realism_config(self):
        from benchmark.metrics.realism import RealismConfig

        return config_from_dict(RealismConfig, {**self.config.realism, "intensity_range": self.intensity_map})

    def realism_key(self) -> tuple:
        """What a realism score depends on besides the synthetic data: reference, map and protocol (its config
        and the code's ``PROTOCOL_VERSION``, so a score of an older protocol is never served as current)."""
        from benchmark.metrics.realism import PROTOCOL_VERSION

        return (self.reference.name, self.reference_digest, self.intensity_map, self.config.realism,
                PROTOCOL_VERSION)

    def protocol_tags(self) -> dict[str, str]:
        from benchmark.metrics.realism import protocol_tags

        return protocol_tags(self.config.dataset, self.reference.name, self.intensity_map,
                             self.realism_config.clip_mode, self.map_source)

    @cached_property
    def generator_cls(self) -> type:
        return get_generator(self.config.generator)

    @cached_property
    def fit_params(self) -> dict[str, Any]:
        """The generator parameters the fit depends on (sampling fields excluded: they re-generate, not re-fit)."""
        cls = self.generator_cls
        return {k: v for k, v in self.config.generator_params.items() if k not in cls.sampling_fields}

    @cached_property
    def fit_key(self) -> str:
        """The one fit cache's key (``generators.fit_cache.fit_key``): resolved fit config, code versions and
        training data; the stage's key too, so the run's fit and ``generate``'s are one."""
        return fit_key(self.generator_cls, self.fit_params, self.train)

    @cached_property
    def sampling(self) -> dict[str, Any]:
        """Every sampling field with its default filled in, so that a changed default re-generates."""
        resolved = config_from_dict(self.generator_cls.config_class, self.config.generator_params)
        values = {k: getattr(resolved, k) for k in sorted(self.generator_cls.sampling_fields)}
        return {k: config_to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()}

    @cached_property
    def synthetic_source(self) -> Path | None:
        """The existing folder a generator that writes nothing (``folder``) hands on, or None."""
        return self.generator_cls.from_params(self.config.generator_params).source_folder()

    @cached_property
    def source_key(self) -> list[tuple[str, str]]:
        """What the generate stage reads of ``synthetic_source``, by content: (sequence, digest) of every
        sequence (downstream stages read them all). Empty for a generator that writes its own data."""
        source = self.synthetic_source
        if source is None:
            return []
        return [(name, sequence_digest(CTCSequence(source, name))) for name in list_sequences(source)]

    @cached_property
    def spec(self):
        n_frames = self.config.n_frames or self.train.n_frames
        return GenerateSpec(n_sequences=self.config.n_sequences, n_frames=n_frames, shape=None, seed=self.config.seed)

    @cached_property
    def training_set(self):
        """``[downstream]``: what the downstream models train on (``downstream.training_set``)."""
        from downstream.training_set import TrainingSetConfig

        return config_from_dict(TrainingSetConfig, self.config.downstream, "downstream")

    @cached_property
    def no_tracking(self) -> str | None:
        """Why TRA cannot be scored on the held-out sequence (a partial copy), or None."""
        from benchmark.metrics.ctc import tracking_unavailable

        return tracking_unavailable(self.reference)


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


def _metric_name(key: str) -> str:
    """``fid``/``fid_ci_low`` -> ``FID``/``FID_ci_low``: the same case as SEG/DET/TRA in MLflow."""
    for name in ("fid", "fvd", "kid", "kvd"):
        if key == name or key.startswith(f"{name}_"):
            return name.upper() + key[len(name):]
    return key


def log_small_artifacts(folder: Path, name: str, limit: int = 50_000_000) -> None:
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


Results = Mapping[str, StageResult]


#: what a GPU means to a stage: never used, used when the cluster has one, or required (``device = "cuda"``)
GPU_NONE, GPU_IF_AVAILABLE, GPU_REQUIRED = "none", "if-available", "required"


@dataclass(frozen=True)
class Resources:
    """What one stage reserves on a worker of a distributed sweep (Ray's ``num_cpus``, ``num_gpus``,
    ``memory``). The scheduler packs tasks by these numbers, so they are declared where the work is known:
    a stage that trains a network on a GPU gets one to itself, and a memory-hungry stage (StarDist, the
    Inception/I3D features) is not packed beside another onto a node that cannot hold both. The numbers
    are hints for the scheduler, measured loosely on the ``cpu`` profile; nothing enforces them."""

    cpus: float = 1.0
    gpu: str = GPU_NONE
    memory_gb: float = 1.0

    def merge(self, other: Resources) -> Resources:
        """A task running both stages one after the other needs the larger of each."""
        order = (GPU_NONE, GPU_IF_AVAILABLE, GPU_REQUIRED)
        return Resources(max(self.cpus, other.cpus), max(self.gpu, other.gpu, key=order.index),
                         max(self.memory_gb, other.memory_gb))


def generator_device(config: RunConfig) -> str:
    """The torch device the profile (or an override) gives the generator: ``cpu`` unless it says otherwise."""
    return str(config.generator_params.get("device", "cpu"))


def _fit_resources(config: RunConfig) -> Resources:
    """A generator whose fit trains a network (``Generator.fit_accelerator``: BVDM's DDPM and flow,
    CellCycleGAN's GAN) takes a GPU when the cluster has one; a profile that puts it on CUDA requires one."""
    if generator_device(config).startswith("cuda"):
        return Resources(gpu=GPU_REQUIRED, memory_gb=4.0)
    accelerated = get_generator(config.generator).fit_accelerator
    return Resources(gpu=GPU_IF_AVAILABLE if accelerated else GPU_NONE, memory_gb=4.0 if accelerated else 2.0)


def _sampling_resources(config: RunConfig) -> Resources:
    """Generating (and rendering the oracle) runs on the generator's configured device."""
    return Resources(gpu=GPU_REQUIRED if generator_device(config).startswith("cuda") else GPU_NONE, memory_gb=3.0)


@dataclass(frozen=True)
class Stage:
    """One node of the DAG. ``key`` (with the stage name) names its cache folder: everything the output
    depends on, upstream stages by their folder names (which hash their own keys). ``body`` writes into
    the stage's temporary folder and returns its metrics. ``when`` leaves a stage out of a run.
    ``resources`` is what a distributed sweep reserves for it (from the config alone: a sweep plans its
    tasks before any data is read). ``version`` is the code version of ``body``: raise it when a change to
    the code changes the stage's output; it is part of the cache key, the ``stage_version`` tag and every
    result bundle (``benchmark.bundles``), so an output of older code is recomputed, never served as current."""

    name: str
    needs: tuple[str, ...]
    key: Callable[[RunContext, Results], Any]
    body: Callable[[RunContext, Results, Path], dict[str, Any]]
    params: Callable[[RunContext], dict[str, Any] | None] = lambda ctx: None
    artifacts: Callable[[RunContext, Path], None] | None = None
    tags: Callable[[RunContext], dict[str, str] | None] = lambda ctx: None
    when: Callable[[RunContext], bool] = lambda ctx: True
    resources: Callable[[RunConfig], Resources] = lambda config: Resources()
    version: int = 1  # set from benchmark.versions.STAGE_VERSIONS below


def dag_resources(dag: Sequence[Stage], config: RunConfig) -> Resources:
    """What one task that runs every stage of ``dag`` in turn must reserve: the largest need of each kind."""
    total = Resources()
    for stage in dag:
        total = total.merge(stage.resources(config))
    return total


def run_stage(ctx: RunContext, stage: Stage, results: Results) -> StageResult:
    """Run (or reuse) one stage whose ``needs`` are in ``results``."""
    missing = [n for n in stage.needs if n not in results]
    if missing:
        raise RuntimeError(f"stage {stage.name!r} needs {missing}, which did not run (DAG order)")
    artifacts = stage.artifacts
    return ctx.stages.run(stage.name, stage.key(ctx, results), lambda out: stage.body(ctx, results, out),
                          params=stage.params(ctx), tags=stage.tags(ctx), version=stage.version,
                          artifacts=(lambda folder: artifacts(ctx, folder)) if artifacts is not None else None)


def run_dag(ctx: RunContext, dag: Sequence[Stage]) -> dict[str, StageResult]:
    """Every stage of ``dag`` whose ``when`` holds, in order (the order is a topological one)."""
    results: dict[str, StageResult] = {}
    for stage in dag:
        if stage.when(ctx):
            results[stage.name] = run_stage(ctx, stage, results)
    return results


def synthetic_sequences(generated: StageResult) -> list[CTCSequence]:
    folder = generated.folder / "synthetic"
    return [CTCSequence(folder, name) for name in list_sequences(folder)]


# ------------------------------------------------------------------------------------------- bodies
def _fit(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """The fitted state from the one fit cache (fitted there when new, resumable from its checkpoints),
    saved into the stage folder that the generate and oracle stages read."""
    fitted_generator(ctx.config.generator, ctx.fit_params, ctx.train).save(out / "model")
    return {}


def _generate(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """Generate into ``synthetic/``; a generator that writes nothing (``folder``) hands back its existing
    folder instead, which ``synthetic`` then links to (every later stage and the report read ``synthetic``),
    after refusing one that holds frames of this run's real sequences (a test-set leak)."""
    generator = ctx.generator_cls.load(results["fit"].folder / "model").with_sampling(ctx.sampling)
    if ctx.generator_cls.writes_output:
        generator.generate(ctx.spec, out / "synthetic")
        return {}
    from generators.folder import check_no_real_frames

    source = Path(generator.generate(ctx.spec, out / "synthetic")).resolve()
    check_no_real_frames(source, {"held-out reference": ctx.reference, "training": ctx.train})
    (out / "synthetic").symlink_to(source, target_is_directory=True)
    return {}


def _generate_key(ctx: RunContext, results: Results) -> Any:
    """The fit, sampling and spec; for external data (``folder``) also its content digest, so a changed folder
    is a new stage (and an empty stage saved as done under the old key is never reused)."""
    key = (ctx.fit_key, ctx.sampling, ctx.spec.__dict__)
    return (*key, ("source", ctx.source_key)) if ctx.synthetic_source is not None else key


def _floor(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """The real-vs-real floor: the real training sequence scored exactly like a generator."""
    from benchmark.metrics.realism import real_floor

    scores = real_floor(ctx.train, ctx.reference, ctx.realism_config, cache_dir(), out / "features.npz")
    (out / "floor.json").write_text(json.dumps(scores, indent=2, default=str))
    return _upper_realism(scores)


def _realism(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    from benchmark.metrics.realism import realism_scores

    scores = realism_scores(ctx.reference, synthetic_sequences(results["generate"]), ctx.realism_config, cache_dir(),
                            features_out=out / "features.npz")
    (out / "realism.json").write_text(json.dumps(scores, indent=2, default=str))
    return _upper_realism(scores)


def _texture_carry(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """Texture carry-over (``TC``) of the run's video: a property of the video alone (no reference), so the real
    row has one too (its training window), the yardstick a generator's value is read against."""
    from benchmark.metrics.temporal import video_texture_carry

    scores = video_texture_carry(synthetic_sequences(results["generate"]))
    (out / "texture_carry.json").write_text(json.dumps(scores, indent=2))
    return scores


def _oracle(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """The frame ceiling: the REAL training textures rendered through the generator's own frame path, scored
    like its synthetic videos (``ORACLE_FID`` ...): what a perfect texture model would reach in this frame model."""
    from benchmark.metrics.realism import realism_scores

    generator = ctx.generator_cls.load(results["fit"].folder / "model")
    generator.render_oracle(ctx.train, out / "oracle")
    rendered = [CTCSequence(out / "oracle", name) for name in list_sequences(out / "oracle")]
    scores = realism_scores(ctx.reference, rendered, ctx.realism_config, cache_dir(), features_out=out / "features.npz")
    (out / "oracle.json").write_text(json.dumps(scores, indent=2, default=str))
    return _upper_realism(scores, "ORACLE_")


def segmenter_params(ctx: RunContext) -> dict[str, Any]:
    """The segmenter's whole config, every default included: the stage key and the logged params, so that a
    changed default (e.g. the threshold policy) is a new stage, not a stale cached model."""
    from downstream.segmenter import SegmenterConfig

    params = config_to_dict(config_from_dict(SegmenterConfig, {"seed": ctx.config.seed, **ctx.config.segmenter},
                                             where="segmenter"))
    # fields added after models were cached, at the default that reproduces those models, stay out of the key
    return {k: v for k, v in params.items() if (k, v) not in KEY_NEUTRAL_SEGMENTER_DEFAULTS}


#: (field, value) pairs of the segmenter config that leave a model as it was before the field existed
KEY_NEUTRAL_SEGMENTER_DEFAULTS = {("average_last_epochs", 0), ("augmenter", "mild")}


def training_folder(results: Results, model: str) -> Path:
    """The CTC folder the ``model`` ("segmenter" or "tracker") trains on: the low-data protocol's training set
    when the run has one, else the generator's video."""
    if "training-set" in results:
        return results["training-set"].folder / model
    return results["generate"].folder / "synthetic"


def _training_key(results: Results) -> str:
    """The downstream stages' key part for their training data: the training set's folder when there is one
    (it hashes the generator's video with the [downstream] config and seed), else the video's; runs without
    a training set keep their keys as before it existed."""
    return (results["training-set"] if "training-set" in results else results["generate"]).folder.name


def _training_set(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """K real frames of the training sequence, alone or beside the synthetic video (``downstream.training_set``)."""
    from downstream.training_set import build_training_set

    config = ctx.training_set
    manifest = build_training_set(ctx.train, results["generate"].folder / "synthetic" if config.synthetic else None,
                                  config, ctx.config.seed, out)
    return {"real_frames_k": manifest["real_frames"]["k"],
            "real_fraction": manifest["real_fraction"] if manifest["real_fraction"] is not None else float("nan")}


def _train_segmenter(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    from downstream.segmenter import SegmenterConfig, train_segmenter

    config = config_from_dict(SegmenterConfig, segmenter_params(ctx))
    train_segmenter(training_folder(results, "segmenter"), config, out / "stardist")
    history_file = out / "stardist" / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else {}
    return {k: v[-1] for k, v in history.items() if isinstance(v, list) and v}


def _train_tracker(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """The profile's tracker (``[tracker] method``: the learned association model or trackastra) trained on the
    synthetic lineage into ``tracker/``."""
    from downstream.tracker import tracker_config

    method, config = tracker_config(ctx.config.tracker, ctx.config.seed)
    method.train(training_folder(results, "tracker"), config, out / "tracker")
    return {}


def _eval_real(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """Segment and track the held-out sequence; SEG/DET/TRA with py-ctcmetrics."""
    from benchmark.metrics.ctc import score_tracking
    from downstream.segmenter import segment_sequence
    from downstream.tracker import tracker_method

    masks = segment_sequence(results["train-segmenter"].folder / "stardist", ctx.reference)
    res_dir = out / f"{ctx.reference.name}_RES"
    tracker_method(ctx.config.tracker).track(results["train-tracker"].folder / "tracker", ctx.reference, masks,
                                             res_dir)
    return score_tracking(res_dir, ctx.reference.gt_dir)


def _eval_partial(ctx: RunContext, results: Results, out: Path) -> dict[str, Any]:
    """On a partial copy of the held-out sequence (frames missing): the segmenter on every raw frame that
    exists, SEG on those with GT (and silver-truth) SEG, DET on those with GT TRA; no tracking."""
    from benchmark.metrics.ctc import score_partial
    from downstream.segmenter import segment_frames

    reference = ctx.reference
    masks = segment_frames(results["train-segmenter"].folder / "stardist", reference, sorted(reference.image_files))
    return score_partial(masks, reference, out)


# ------------------------------------------------------------------------------------------- the DAG
def _needs_fit(ctx: RunContext) -> bool:
    return bool(ctx.generator_cls.needs_fit)  # `real` IS the floor's training side; `folder` has no frame model


def _renders_oracle(ctx: RunContext) -> bool:
    """A frame ceiling needs a fitted frame model that can render real textures (``Generator.renders_oracle``);
    a plug-in without one runs every other stage (its report row shows no ceiling)."""
    return _needs_fit(ctx) and ctx.generator_cls.renders_oracle()


def _scores_realism(ctx: RunContext) -> bool:
    """Realism for every generator but ``real`` (the floor is its score): external data (``folder``) too."""
    return _needs_fit(ctx) or ctx.synthetic_source is not None


FIT = Stage("fit", (), key=lambda ctx, r: ctx.fit_key, body=_fit,
            params=lambda ctx: {"generator": ctx.fit_params},
            artifacts=lambda ctx, folder: log_small_artifacts(folder / "model", "model"), resources=_fit_resources,
            version=STAGE_VERSIONS["fit"])
GENERATE = Stage("generate", ("fit",), key=_generate_key,
                 body=_generate, params=lambda ctx: {"spec": ctx.spec.__dict__, "sampling": ctx.sampling},
                 artifacts=lambda ctx, folder: (log_sample_frames(folder / "synthetic"),
                                                log_synthetic_inputs(folder / "synthetic", ctx.config.generator)),
                 resources=_sampling_resources, version=STAGE_VERSIONS["generate"])
FLOOR = Stage("floor", (), key=lambda ctx, r: (ctx.data_key, ctx.realism_key()), body=_floor,
              params=lambda ctx: ctx.config.realism, artifacts=lambda ctx, folder: realism_artifacts("floor.json")(folder),
              tags=lambda ctx: {"generator": "real-vs-real", "profile": ctx.config.profile, **ctx.protocol_tags(),
                                "reference_checksum": ctx.reference_digest[:16],
                                "protocol_version": version_tags()["protocol_version"]},
              resources=lambda config: Resources(memory_gb=3.0), version=STAGE_VERSIONS["floor"])
REALISM = Stage("realism", ("generate",), key=lambda ctx, r: (r["generate"].folder.name, ctx.realism_key()),
                body=_realism, params=lambda ctx: ctx.config.realism,
                artifacts=lambda ctx, folder: realism_artifacts("realism.json")(folder),
                tags=lambda ctx: ctx.protocol_tags(), when=_scores_realism, resources=lambda config: Resources(memory_gb=3.0),
                version=STAGE_VERSIONS["realism"])
TEXTURE_CARRY = Stage("texture-carry", ("generate",), key=lambda ctx, r: r["generate"].folder.name,
                      body=_texture_carry, version=STAGE_VERSIONS["texture-carry"])
ORACLE = Stage("oracle", ("fit",), key=lambda ctx, r: (r["fit"].folder.name, ctx.realism_key(), ctx.train.name),
               body=_oracle, params=lambda ctx: ctx.config.realism,
               artifacts=lambda ctx, folder: realism_artifacts("oracle.json")(folder),
               tags=lambda ctx: ctx.protocol_tags(), when=lambda ctx: _renders_oracle(ctx) and ctx.config.oracle,
               resources=_sampling_resources, version=STAGE_VERSIONS["oracle"])
TRAINING_SET = Stage("training-set", ("generate",),
                     key=lambda ctx, r: (r["generate"].folder.name if ctx.training_set.synthetic else None,
                                         ctx.data_key, dataclasses.asdict(ctx.training_set), ctx.config.seed),
                     body=_training_set, params=lambda ctx: {"downstream": dataclasses.asdict(ctx.training_set)},
                     tags=lambda ctx: {"condition": ctx.training_set.condition()},
                     when=lambda ctx: ctx.training_set.active, version=STAGE_VERSIONS["training-set"])
#: train-segmenter and train-tracker read the training set when it runs (before them), else the video
TRAIN_SEGMENTER = Stage("train-segmenter", ("generate",),
                        key=lambda ctx, r: (_training_key(r), segmenter_params(ctx)), body=_train_segmenter,
                        params=segmenter_params,
                        artifacts=lambda ctx, folder: log_history(folder / "stardist"),
                        resources=lambda config: Resources(memory_gb=3.0),
                        version=STAGE_VERSIONS["train-segmenter"])
def _tracker_key(ctx: RunContext, results: Results) -> Any:
    from downstream.tracker import tracker_stage_key

    return _training_key(results), tracker_stage_key(ctx.config.tracker, ctx.config.seed)


def tracker_name(config: RunConfig) -> str:
    """The ``[tracker] method`` a run uses (``learned`` unless the profile chooses another): the ``tracker`` tag."""
    from downstream.tracker import tracker_method

    return tracker_method(config.tracker).name


def _gap_key(ctx: RunContext) -> tuple[str, int, float]:
    """The gap closing the tracking step applies (``downstream.tracker.gaps``): part of the eval key, so that a
    result tracked before gap closing existed (same trained tracker) is not served from the cache."""
    from downstream.tracker import tracker_config

    config = tracker_config(ctx.config.tracker, ctx.config.seed)[1]
    return "gaps", config.gap_frames, config.gap_diameters


TRAIN_TRACKER = Stage("train-tracker", ("generate",), key=_tracker_key,
                      body=_train_tracker, params=lambda ctx: ctx.config.tracker,
                      artifacts=lambda ctx, folder: log_small_artifacts(folder / "tracker", "tracker"),
                      tags=lambda ctx: {"tracker": tracker_name(ctx.config)},
                      when=lambda ctx: ctx.no_tracking is None, version=STAGE_VERSIONS["train-tracker"])
EVAL_REAL = Stage("eval-real", ("train-segmenter", "train-tracker"),
                  key=lambda ctx, r: (r["train-segmenter"].folder.name, r["train-tracker"].folder.name,
                                      ctx.reference.name, ctx.reference_digest, _gap_key(ctx)),
                  body=_eval_real, params=lambda ctx: {"test_sequence": ctx.reference.name},
                  artifacts=lambda ctx, folder: _log_result(folder / f"{ctx.reference.name}_RES"),
                  when=lambda ctx: ctx.no_tracking is None, version=STAGE_VERSIONS["eval-real"])
EVAL_PARTIAL = Stage("eval-real", ("train-segmenter",),
                     key=lambda ctx, r: (r["train-segmenter"].folder.name, ctx.reference.name, ctx.reference_digest,
                                         "partial"),
                     body=_eval_partial, params=lambda ctx: {"test_sequence": ctx.reference.name, "partial": True},
                     when=lambda ctx: ctx.no_tracking is not None, version=STAGE_VERSIONS["eval-real"])

#: ``python -m benchmark run``: every stage, in a topological order
RUN_DAG: tuple[Stage, ...] = (FIT, GENERATE, FLOOR, REALISM, TEXTURE_CARRY, ORACLE, TRAINING_SET, TRAIN_SEGMENTER, TRAIN_TRACKER,
                              EVAL_REAL, EVAL_PARTIAL)
#: ``python -m benchmark oracle``: the frame ceiling beside the floor, whatever the profile's ``oracle`` says
ORACLE_DAG: tuple[Stage, ...] = (FIT, FLOOR, dataclasses.replace(ORACLE, when=_renders_oracle))
#: the stages a distributed sweep runs once and shares: per distinct fit config (every seed and sampling-only
#: grid point of it) the fit and its frame ceiling (the oracle renders the real textures: no seed, no sampling
#: field), per dataset and realism protocol the floor; every other stage of ``RUN_DAG`` depends on a seed or
#: a sampling field and runs in a per-run task that finds these cached
SHARED_DAGS: dict[str, tuple[Stage, ...]] = {"fit": (FIT, ORACLE), "floor": (FLOOR,)}


def _log_result(res_dir: Path) -> None:
    import mlflow

    mlflow.log_artifacts(str(res_dir), "result")
