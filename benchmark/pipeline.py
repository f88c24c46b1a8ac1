"""``python -m benchmark run``: fit -> generate -> realism -> train segmenter/tracker -> predict -> score.

Every stage writes into its own folder under ``<out>/<dataset>/stages/<stage>-<hash>/``, keyed by a
hash of its inputs and config; a finished stage holds ``stage.json`` and is skipped on a re-run, so a
killed run resumes where it stopped. Stages communicate only through CTC folders and model folders.
One MLflow parent run per (generator, seed, profile) with a nested run per stage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from benchmark import experiment
from benchmark.config import PROFILES, RunConfig, build_run_config, stable_hash
from benchmark.ctc import CTCSequence, window_sequence
from benchmark.datasets import DATASETS, DEFAULT_DATASET, resolve_dataset
from benchmark.paths import cache_dir

SUMMARY_COLUMNS = ("SEG", "DET", "TRA", "FID", "FVD", "KID", "KVD")


@dataclass
class StageResult:
    name: str
    folder: Path
    metrics: dict[str, float]
    seconds: float
    cached: bool


class Stages:
    """Runs stages with an on-disk cache; logs each as a nested MLflow run."""

    def __init__(self, root: Path, dataset: str, log: Callable[[str], None] = print) -> None:
        self.root = root
        self.dataset = dataset
        self.log = log
        self.results: dict[str, StageResult] = {}

    def run(self, name: str, key: Any, body: Callable[[Path], dict[str, Any]], params: dict[str, Any] | None = None,
            artifacts: Callable[[Path], None] | None = None) -> StageResult:
        folder = self.root / f"{name}-{stable_hash(name, key)}"
        record = folder / "stage.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            result = StageResult(name, folder, saved["metrics"], saved["seconds"], cached=True)
            self.log(f"[{name}] cached: {folder}")
        else:
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            self.log(f"[{name}] running -> {folder}")
            start = time.perf_counter()
            metrics = experiment.clean_metrics(body(partial) or {})
            seconds = time.perf_counter() - start
            (partial / "stage.json").write_text(json.dumps({"metrics": metrics, "seconds": seconds, "key": key},
                                                           indent=2, default=str))
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
            result = StageResult(name, folder, metrics, seconds, cached=False)
            self.log(f"[{name}] done in {seconds:.1f} s")
        with experiment.start_run(name, self.dataset, config=params, tags={"stage": name,
                                                                            "cached": str(result.cached).lower()},
                                  nested=True):
            experiment.log_metrics({**result.metrics, f"time_{name}_s": result.seconds})
            mlflow.log_dict({"folder": str(folder), "metrics": result.metrics}, "stage.json")
            if artifacts is not None:
                artifacts(folder)
        self.results[name] = result
        return result


def _prepare_real(config: RunConfig, data_root: str | None, stages: Stages) -> tuple[Path, str, str]:
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

    key = (str(source.resolve()), config.window, config.train_sequence, config.test_sequence)
    result = stages.run("window", key, body, params={"window": config.window})
    return result.folder / config.dataset, config.train_sequence, config.test_sequence


def run_benchmark(config: RunConfig, out_dir: Path, data_root: str | None = None) -> dict[str, Any]:
    """Run every stage for one generator; returns the summary row (metrics + stage times)."""
    from benchmark.metrics.ctc import score_tracking
    from benchmark.metrics.realism import RealismConfig, realism_scores
    from downstream.segmenter import SegmenterConfig, segment_sequence, train_segmenter
    from downstream.tracker.model import TrackerConfig, track_sequence, train_tracker
    from generators.base import GenerateSpec, config_from_dict
    from generators.registry import get_generator

    out_dir = Path(out_dir)
    stages_root = out_dir / config.dataset / "stages"
    experiment.configure()
    run_name = f"{config.generator}-s{config.seed}-{config.profile}"
    with experiment.start_run(run_name, config.dataset, config=config.to_dict(),
                              tags={"generator": config.generator, "profile": config.profile, "stage": "run"}) as parent:
        stages = Stages(stages_root, config.dataset)
        real_dir, train_name, test_name = _prepare_real(config, data_root, stages)
        train_seq, test_seq = CTCSequence(real_dir, train_name), CTCSequence(real_dir, test_name)
        mlflow.set_tag("dataset_checksum", experiment.folder_checksum(train_seq.image_dir)[:16])
        data_key = (str(real_dir.resolve()), train_name, experiment.folder_checksum(train_seq.gt_dir)[:16])

        generator_cls = get_generator(config.generator)
        fit_params = {k: v for k, v in config.generator_params.items() if k not in generator_cls.sampling_fields}
        # every sampling field, defaults included, so that a changed default re-generates
        resolved = config_from_dict(generator_cls.config_class, config.generator_params)
        sampling = {k: getattr(resolved, k) for k in sorted(generator_cls.sampling_fields)}
        gen_key = (data_key, config.generator, fit_params, config.seed)

        def fit(out: Path) -> dict[str, Any]:
            generator = generator_cls.from_params(fit_params)
            generator.fit(train_seq)
            generator.save(out / "model")
            return {}

        fitted = stages.run("fit", gen_key, fit, params={"generator": fit_params},
                            artifacts=lambda f: _log_small_artifacts(f / "model", "model"))
        n_frames = config.n_frames or train_seq.n_frames
        spec = GenerateSpec(n_sequences=config.n_sequences, n_frames=n_frames, shape=None, seed=config.seed)

        def generate(out: Path) -> dict[str, Any]:
            generator = generator_cls.load(fitted.folder / "model").with_sampling(sampling)
            generator.generate(spec, out / "synthetic")
            return {}

        generated = stages.run("generate", (gen_key, sampling, spec.__dict__), generate,
                               params={"spec": spec.__dict__, "sampling": sampling},
                               artifacts=lambda f: _log_sample_frames(f / "synthetic"))
        synthetic_dir = generated.folder / "synthetic"
        synthetic = [CTCSequence(synthetic_dir, p.name) for p in sorted(synthetic_dir.iterdir())
                     if p.is_dir() and p.name.isdigit()]

        if config.generator != "real":
            realism_config = config_from_dict(RealismConfig, config.realism)

            def realism(out: Path) -> dict[str, Any]:
                scores = realism_scores(train_seq, synthetic, realism_config, cache_dir() / "features")
                (out / "realism.json").write_text(json.dumps(scores, indent=2, default=str))
                return {_metric_name(k): v for k, v in scores.items()}

            stages.run("realism", (generated.folder.name, config.realism), realism, params=config.realism)

        seg_config = config_from_dict(SegmenterConfig, {"seed": config.seed, **config.segmenter})

        def train_seg(out: Path) -> dict[str, Any]:
            train_segmenter(synthetic_dir, seg_config, out / "stardist")
            history = json.loads((out / "stardist" / "history.json").read_text()) \
                if (out / "stardist" / "history.json").is_file() else {}
            return {k: v[-1] for k, v in history.items() if isinstance(v, list) and v}

        segmenter = stages.run("train-segmenter", (generated.folder.name, config.segmenter), train_seg,
                               params=config.segmenter, artifacts=lambda f: _log_history(f / "stardist"))
        tracker_config = config_from_dict(TrackerConfig, {"seed": config.seed, **config.tracker})

        def train_trk(out: Path) -> dict[str, Any]:
            train_tracker(synthetic_dir, tracker_config, out / "tracker")
            return {}

        tracker = stages.run("train-tracker", (generated.folder.name, config.tracker), train_trk,
                             params=config.tracker, artifacts=lambda f: _log_small_artifacts(f / "tracker", "tracker"))

        def evaluate(out: Path) -> dict[str, Any]:
            masks = segment_sequence(segmenter.folder / "stardist", test_seq)
            res_dir = out / f"{test_name}_RES"
            track_sequence(tracker.folder / "tracker", test_seq, masks, res_dir)
            return score_tracking(res_dir, test_seq.gt_dir)

        evaluated = stages.run("eval-real", (segmenter.folder.name, tracker.folder.name, str(test_seq.gt_dir)),
                               evaluate, params={"test_sequence": test_name},
                               artifacts=lambda f: mlflow.log_artifacts(str(f / f"{test_name}_RES"), "result"))
        row: dict[str, Any] = {}
        for result in stages.results.values():
            row.update(result.metrics)
            row[f"time_{result.name}_s"] = result.seconds
        experiment.log_metrics(row)
        row.update({"generator": config.generator, "run_id": parent.info.run_id,
                    "cached_stages": [r.name for r in stages.results.values() if r.cached],
                    "result_dir": str(evaluated.folder / f"{test_name}_RES")})
    return row


def _metric_name(key: str) -> str:
    """``fid``/``fid_ci_low`` -> ``FID``/``FID_ci_low``: the same case as SEG/DET/TRA in MLflow."""
    for name in ("fid", "fvd", "kid", "kvd"):
        if key == name or key.startswith(f"{name}_"):
            return name.upper() + key[len(name):]
    return key


def _log_small_artifacts(folder: Path, name: str, limit: int = 50_000_000) -> None:
    if folder.is_dir() and sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < limit:
        mlflow.log_artifacts(str(folder), name)


def _log_history(model_dir: Path) -> None:
    history = model_dir / "history.json"
    if history.is_file():
        for key, values in json.loads(history.read_text()).items():
            if isinstance(values, list):
                for step, value in enumerate(values):
                    experiment.log_metrics({key: value}, step=step)
        mlflow.log_artifact(str(history))


def _log_sample_frames(dataset_dir: Path, n: int = 3) -> None:
    """A few synthetic frames with mask outlines, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from skimage.segmentation import find_boundaries

    seq = CTCSequence(dataset_dir, "01")
    for t in np.linspace(0, seq.n_frames - 1, n).astype(int):
        image = seq.image(int(t)).astype(np.float32)
        lo, hi = np.percentile(image, (0.5, 99.9))
        fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
        ax.imshow(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray")
        ax.contour(find_boundaries(seq.tra(int(t))), levels=[0.5], colors="yellow", linewidths=0.5)
        ax.set_axis_off()
        mlflow.log_figure(fig, f"samples/frame_{int(t):03d}.png")
        plt.close(fig)


def format_summary(row: dict[str, Any]) -> str:
    lines = [f"generator {row['generator']}  (MLflow run {row['run_id']})"]
    metrics = "  ".join(f"{k} {row[k]:.4g}" if k in row else f"{k} -" for k in SUMMARY_COLUMNS)
    lines.append(metrics)
    times = "  ".join(f"{k[5:-2]} {v:.0f}s" for k, v in row.items() if k.startswith("time_"))
    lines.append(f"stage times: {times}")
    lines.append(f"result: {row['result_dir']}")
    return "\n".join(lines)


def _run_command(args: argparse.Namespace) -> int:
    overrides = dict(json.loads(args.param)) if args.param else {}
    config = build_run_config(args.profile, args.dataset, args.generator, args.seed, overrides)
    row = run_benchmark(config, Path(args.out), args.data_root)
    print(format_summary(row), file=sys.stdout)
    return 0


def add_run_command(sub: argparse._SubParsersAction) -> None:
    from generators.registry import available_generators

    run = sub.add_parser("run", help="fit, generate, train StarDist + tracker, score on real data, log to MLflow",
                         description="Run the whole benchmark for one generator. Finished stages are cached "
                         "under --out and skipped on a re-run.")
    run.add_argument("--generator", required=True, choices=available_generators())
    run.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS))
    run.add_argument("--data-root", help="folder holding <dataset>/ (default: $SYNTHVID_DATA_ROOT, then the cache)")
    run.add_argument("--profile", default="cpu", help=f"{', '.join(PROFILES)} or a TOML file")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="runs", help="stage outputs (default: ./runs)")
    run.add_argument("--param", help='generator parameter overrides as JSON, e.g. \'{"t_first": 400}\'')
    run.set_defaults(func=_run_command)
