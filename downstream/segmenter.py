"""StarDist 2D instance segmenter trained from scratch on one CTC dataset folder.

Training data: every sequence ``NN`` of the dataset, every frame that has ``NN_GT/SEG`` (synthetic
datasets annotate every frame; the real-data export writes full nucleus masks as SEG). Images are
normalised per frame by percentiles (1, 99.8). Validation data (for the Keras validation loss and,
when asked for, StarDist's probability/NMS threshold optimisation) is held out from the TRAINING dataset
only: whole sequences when there are several, otherwise the last frames of each sequence. The real test
sequence is never used for any choice.

Detection thresholds (``SegmenterConfig.thresholds``): StarDist's own defaults (prob 0.5, NMS 0.4) unless
a profile asks for ``"optimize"``. Optimising on the held-out frames of ONE training video overfits: on
GOWT1 01's last 14 frames a model trained 1 500 steps misses no nucleus anywhere from prob 0.3 to 0.8, so
the optimiser climbs to where the last false positive vanishes (prob 0.82), and on the real held-out
sequence that threshold misses about one nucleus in eight: SEG 0.732 / TRA 0.870, against 0.842 / 0.971
at the defaults (``scripts/downstream_real.py thresholds``). The CTC measures the benchmark scores with
weight a missed cell ten times a spurious one, so a threshold chosen on frames where nothing is missed is
biased the costly way.

No pretrained model is used or available offline (``StarDist2D.from_pretrained`` downloads from
GitHub): the network starts from random weights, so its quality reflects the training dataset.

TensorFlow is imported lazily (inside the functions) so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from benchmark import mutants
from benchmark.ctc import CTCFormatError, CTCSequence, list_sequences
from benchmark.experiment import TrainingStream
from benchmark.io import replace_directory, staging_directory
from downstream.normalize import normalize_image
from downstream.split import holdout_split
from downstream.training_set import mix, read_manifest

HISTORY_FILE = "history.json"
TRAINING_FILE = "training.json"
BEST_WEIGHTS = "weights_best.h5"  # StarDist's checkpoint of the lowest validation loss
AVERAGE_WEIGHTS = "weights_average.h5"  # the mean over the last epochs (SegmenterConfig.average_last_epochs)
THRESHOLDS_FILE = "thresholds.json"  # StarDist's own file name: load_segmenter reads it back
MAX_LABEL = 65_000
#: StarDist's fallback thresholds (``StarDistBase`` uses them when ``thresholds.json`` is absent)
STARDIST_DEFAULT_THRESHOLDS = {"prob": 0.5, "nms": 0.4}
THRESHOLD_POLICIES = ("default", "optimize")


@dataclass
class SegmenterConfig:
    """StarDist training settings. ``patch_size`` is clipped to the frame size (multiple of 16*grid)."""

    n_rays: int = 32
    grid: tuple[int, int] = (2, 2)
    patch_size: int = 256
    batch_size: int = 4
    epochs: int = 50
    steps_per_epoch: int = 100
    learning_rate: float = 3e-4
    n_val: float = 0.15  # fraction of sequences (if >= 2 annotated) or of each sequence's last frames
    seed: int = 0
    max_train_frames: int | None = 400  # evenly spaced subset bounds RAM (float32 frames are held in memory)
    #: "default": StarDist's own thresholds (prob 0.5, NMS 0.4); "optimize": StarDist's optimize_thresholds
    #: on the validation frames (see the module docstring for why that is not the default)
    thresholds: str = "default"
    max_threshold_frames: int = 4  # validation frames used by "optimize" (prediction is slow on CPU)
    unet_n_filter_base: int = 32
    threads: int = 2  # TF intra-op threads (the CPU is shared)
    augment: bool = True
    #: which training augmenter (``augment`` on): "mild" (flips, 90-degree rotations, intensity x0.8-1.2
    #: +-0.1) or "stardist" (StarDist's example-notebook augmenter: the same flips and rotations, intensity
    #: x0.6-2 +-0.2 and Gaussian noise of SD up to 0.02). Why the second: a model trained on a short
    #: synthetic schedule has never seen the real background's level and noise, and some seeds' models
    #: then find nuclei all over it (hundreds of false positives on GOWT1 02); wider intensity and noise
    #: augmentation teaches it that a flat noisy region at any level is background.
    augmenter: str = "mild"
    #: rescale frames so the median nucleus diameter of the training masks becomes this many pixels
    #: (None: native resolution). GOWT1's ~60-90 px nuclei at 128-px patches learn far slower than
    #: HeLa-sized ones; predictions are resized back to the frame with nearest-neighbour labels.
    object_diameter: float | None = None
    #: predict with the mean of the weights after each of the last N epochs (0: StarDist's checkpoint of the
    #: lowest validation loss). Why: a short training ends wherever the last noisy steps left it, and the
    #: best-loss epoch is an argmin over noisy losses; both flip with the last bits of a kernel's arithmetic.
    #: An average over the final epochs (Polyak averaging, SWA) moves less between seeds and CPU classes.
    average_last_epochs: int = 0

    def __post_init__(self) -> None:
        if self.thresholds not in THRESHOLD_POLICIES:
            raise ValueError(f"thresholds must be one of {list(THRESHOLD_POLICIES)}, got {self.thresholds!r}")
        if self.augmenter not in AUGMENTERS:
            raise ValueError(f"augmenter must be one of {list(AUGMENTERS)}, got {self.augmenter!r}")
        if not 0 <= self.average_last_epochs <= self.epochs:
            raise ValueError(f"average_last_epochs must be in [0, epochs = {self.epochs}], "
                             f"got {self.average_last_epochs}")


@dataclass
class _Frames:
    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]  # "NN:t" for the log


def _annotated_sequences(dataset_dir: Path) -> list[CTCSequence]:
    seqs = [CTCSequence(dataset_dir, name) for name in list_sequences(dataset_dir)]
    seqs = [s for s in seqs if any(t in s.image_files for t in s.seg_files)]
    if not seqs:
        raise CTCFormatError(dataset_dir, "no sequence has NN_GT/SEG masks with matching images to train StarDist on")
    return seqs


Pairs = list[tuple[CTCSequence, int]]


def split_frames(dataset_dir: Path, n_val: float) -> tuple[Pairs, Pairs]:
    """(train, validation) lists of (sequence, t); whole sequences held out when there are >= 2. A training set
    of the low-data protocol (``downstream.training_set``) splits its real frames and its synthetic sequences
    apart, so that both have validation frames and the real frames split alike in every condition; its
    training list is then mixed to the manifest's ``real_fraction`` (``mixed_split``)."""
    real, synthetic, _ = mixed_split(dataset_dir, n_val)
    return [*real[0], *synthetic[0]], [*real[1], *synthetic[1]]


def mixed_split(dataset_dir: Path, n_val: float) -> tuple[tuple[Pairs, Pairs], tuple[Pairs, Pairs], float | None]:
    """((real train, real val), (synthetic train, synthetic val), real_fraction): a plain CTC folder is all
    "synthetic" (the generator's video, whatever it holds) with no fraction."""
    manifest = read_manifest(dataset_dir)
    seqs = _annotated_sequences(dataset_dir)
    real_names = set(manifest["real_sequences"]) if manifest else set()
    parts = []
    for kind in (True, False):
        group = [s for s in seqs if (s.name in real_names) == kind]
        frames = [[(s, t) for t in s.seg_files if t in s.image_files] for s in group]
        if not group:
            parts.append(([], []))
            continue
        if len(group) == 1 and len(frames[0]) < 2:
            raise CTCFormatError(group[0].gt_dir / "SEG", "need at least 2 annotated frames to hold one out for "
                                 "validation")
        parts.append(holdout_split(frames, n_val))
    return parts[0], parts[1], manifest.get("real_fraction") if manifest else None


def _evenly(items: list, limit: int | None) -> list:
    if limit is None or len(items) <= limit:
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


def median_diameter(pairs: list[tuple[CTCSequence, int]], n_frames: int = 4) -> float:
    """Median equivalent diameter (px) of the annotated objects in a few evenly spaced frames."""
    areas: list[np.ndarray] = []
    for seq, t in _evenly(pairs, n_frames):
        counts = np.bincount(seq.seg(t).ravel().astype(np.int64))[1:]
        areas.append(counts[counts > 0])
    return float(2 * np.sqrt(np.median(np.concatenate(areas)) / np.pi))


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    from skimage.transform import rescale

    return image if scale == 1.0 else rescale(image, scale, order=1, anti_aliasing=scale < 1,
                                               preserve_range=True).astype(np.float32)


def rescale_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    if labels.shape == tuple(shape):
        return labels
    return resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def load_frames(pairs: list[tuple[CTCSequence, int]], desc: str, progress: bool, scale: float = 1.0) -> _Frames:
    from stardist import fill_label_holes

    """Normalised images rescaled by ``scale`` and their label masks (holes filled), as StarDist trains on them."""
    out = _Frames([], [], [])
    for seq, t in tqdm(pairs, desc=desc, disable=not progress, leave=False):
        image, mask = seq.image(t), seq.seg(t)
        if image.shape != mask.shape:
            raise CTCFormatError(seq.seg_files[t], f"mask shape {mask.shape} != image shape {image.shape}")
        out.images.append(rescale_image(normalize_image(image), scale))
        small = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        out.masks.append(fill_label_holes(rescale_labels(mask.astype(np.int32), small)))
        out.names.append(f"{seq.name}:{t}")
    return out


def shift_labels(mask: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """``mask`` moved by ``shift`` (rows, columns) pixels, background coming in at the edges: a mis-registered
    annotation (the gate's ``shifted-masks`` mutant)."""
    out = np.zeros_like(mask)
    (dy, dx), (h, w) = shift, mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def effective_patch_size(config: SegmenterConfig, shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """Largest patch <= config.patch_size and <= the smallest frame, divisible by 2**3 * grid (U-Net depth 3)."""
    patch = []
    for axis in range(2):
        div = 8 * config.grid[axis]
        side = min([config.patch_size] + [s[axis] for s in shapes])
        side = (side // div) * div
        if side < div:
            raise ValueError(f"frames of shape {min(shapes)} are smaller than the minimum StarDist patch ({div} px)")
        patch.append(side)
    return patch[0], patch[1]


def _flip_rotate(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90-degree rotations (square patches only), applied to image and labels alike."""
    if x.shape[0] == x.shape[1]:
        k = np.random.randint(4)
        x, y = np.rot90(x, k), np.rot90(y, k)
    for axis in (0, 1):
        if np.random.rand() < 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    return x, y


def _mild_augmenter(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flips / rotations and a mild intensity scale and shift."""
    x, y = _flip_rotate(x, y)
    x = x * np.random.uniform(0.8, 1.2) + np.random.uniform(-0.1, 0.1)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


def _stardist_augmenter(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StarDist's example-notebook augmenter (2D training notebook): flips / rotations, intensity x0.6-2
    +-0.2, then additive Gaussian noise whose SD is drawn from [0, 0.02]."""
    x, y = _flip_rotate(x, y)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    x = x + 0.02 * np.random.uniform(0, 1) * np.random.normal(0, 1, x.shape)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


AUGMENTERS = {"mild": _mild_augmenter, "stardist": _stardist_augmenter}


def stardist_models() -> Any:
    """``stardist.models`` (and with it TensorFlow), imported after torch's compiler stack.

    torch imports ``torch._dynamo`` lazily (a torch optimizer's constructor does), and that loads triton's
    native library, which segfaults the process when TensorFlow is already loaded. A run trains StarDist and
    then, in the same process, a torch model (the trackastra tracker), so the loading order is fixed here, in
    the one place this project imports TensorFlow: torch's side first, which is harmless."""
    if importlib.util.find_spec("torch") is not None:
        importlib.import_module("torch._dynamo")
    return importlib.import_module("stardist.models")


def _configure_tensorflow(seed: int, threads: int) -> None:
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised in this process; thread counts can no longer change
    keras.utils.set_random_seed(seed)  # python, numpy and TF seeds
    tf.config.experimental.enable_op_determinism()


def library_output_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """What StarDist and Keras print goes to stderr while this is entered: Keras's per-epoch progress bar
    (``StarDist2D.train`` hard-wires ``verbose=1``, and Keras writes it with ``sys.stdout.write``) and
    StarDist's notices ("Using default values ...", "Loading network weights ..."). stdout holds only a
    command's results (README, Logging): a script reading ``run``'s summary must not get epoch bars with it.
    ``sys.stdout`` is process-wide, so anything printed by another thread meanwhile goes to stderr too;
    commands print their results after the stages, never during one."""
    return contextlib.redirect_stdout(sys.stderr)


def _weight_averager(first_epoch: int) -> Any:
    """A Keras callback holding the running mean of the weights after every epoch from ``first_epoch`` on
    (0-based): ``average_last_epochs``."""
    import keras

    class WeightAverager(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.total: list[np.ndarray] | None = None
            self.count = 0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch < first_epoch:
                return
            weights = [np.asarray(w, np.float64) for w in self.model.get_weights()]
            self.total = weights if self.total is None else [t + w for t, w in zip(self.total, weights, strict=True)]
            self.count += 1

        def average(self) -> list[np.ndarray]:
            if self.total is None:
                raise RuntimeError("no epoch reached the averaging window")
            return [(t / self.count).astype(np.float32) for t in self.total]

    return WeightAverager()


def _epoch_timer() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall seconds per epoch (the first includes graph building and validation set-up); streams each
        epoch's losses to MLflow."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0
            self.curve = TrainingStream("stardist_")  # live curves in the stage's MLflow run, if any

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)
            self.curve(epoch, {**(logs or {}), "epoch_seconds": self.seconds[-1]})

        def on_train_end(self, logs: dict | None = None) -> None:
            self.curve.flush()

    return EpochTimer()


def train_segmenter(dataset_dir: Path, config: SegmenterConfig, model_dir: Path, *, overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Train StarDist 2D from random weights on ``dataset_dir`` and write the model folder ``model_dir``.

    The folder (``config.json``, ``weights_best.h5``, ``weights_last.h5``, ``thresholds.json``,
    ``history.json`` = per-epoch Keras losses + epoch seconds, ``training.json`` = data split, patch,
    timings) appears atomically: training runs in a temporary sibling folder that is renamed at the end.
    """
    models = stardist_models()
    Config2D, StarDist2D = models.Config2D, models.StarDist2D  # noqa: N806 - StarDist's class names

    dataset_dir, model_dir = Path(dataset_dir), Path(model_dir)
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir}: already exists (pass overwrite=True to replace it)")
    started = time.perf_counter()
    (real_train, real_val), (synthetic_train, synthetic_val), real_fraction = mixed_split(dataset_dir, config.n_val)
    train_pairs = [*real_train, *_evenly(synthetic_train, config.max_train_frames)]
    val_pairs = [*real_val, *synthetic_val]
    scale = 1.0 if config.object_diameter is None else config.object_diameter / median_diameter(train_pairs)
    train = load_frames(train_pairs, "load train frames", progress, scale)
    if real_train:  # the low-data protocol: real frames repeated to their share of the patches (no copies in RAM)
        n_real = len(real_train)
        order = mix(list(range(n_real)), list(range(n_real, len(train_pairs))), real_fraction)
        train = _Frames([train.images[i] for i in order], [train.masks[i] for i in order],
                        [train.names[i] for i in order])
    if mutants.active("shifted-masks"):  # the gate's injected regression (benchmark.mutants)
        train.masks = [shift_labels(mask, mutants.SHIFT_PX) for mask in train.masks]
    val = load_frames(val_pairs, "load val frames", progress, scale)
    patch = effective_patch_size(config, [im.shape for im in train.images + val.images])

    _configure_tensorflow(config.seed, config.threads)
    conf = Config2D(
        n_rays=config.n_rays, grid=tuple(config.grid), n_channel_in=1, use_gpu=False,
        unet_n_filter_base=config.unet_n_filter_base,
        train_patch_size=patch, train_batch_size=config.batch_size, train_learning_rate=config.learning_rate,
        train_epochs=config.epochs, train_steps_per_epoch=config.steps_per_epoch,
        train_tensorboard=False, train_sample_cache=False,
    )
    with staging_directory(model_dir) as tmp, library_output_to_stderr():  # StarDist makes <basedir>/<name>
        model = StarDist2D(conf, name=model_dir.name, basedir=str(tmp))
        model.prepare_for_training()
        timer = _epoch_timer()
        model.callbacks.append(timer)
        averager = _weight_averager(config.epochs - config.average_last_epochs) if config.average_last_epochs else None
        if averager is not None:
            model.callbacks.append(averager)
        fit_started = time.perf_counter()
        history = model.train(train.images, train.masks, validation_data=(val.images, val.masks),
                              augmenter=AUGMENTERS[config.augmenter] if config.augment else None, seed=config.seed,
                              epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, workers=1)
        fit_seconds = time.perf_counter() - fit_started
        folder = tmp / model_dir.name
        weights_file = BEST_WEIGHTS
        if averager is not None:  # StarDist loaded its best checkpoint; predict with the average instead
            model.keras_model.set_weights(averager.average())
            weights_file = AVERAGE_WEIGHTS
            model.keras_model.save_weights(str(folder / weights_file))
        thresholds, thr_frames = choose_thresholds(model, config, val, folder)
        logs = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        logs["epoch_seconds"] = timer.seconds
        (folder / HISTORY_FILE).write_text(json.dumps(logs, indent=1))
        steady = timer.seconds[1:] or timer.seconds
        summary = {
            "config": asdict(config), "patch_size": list(patch), "scale": scale,
            "train_frames": train.names, "val_frames": val.names,
            "threshold_policy": config.thresholds, "threshold_frames": thr_frames, "thresholds": thresholds,
            "fit_seconds": fit_seconds, "total_seconds": time.perf_counter() - started,
            "seconds_per_step": float(np.median(steady)) / config.steps_per_epoch,
            "pretrained": False, "weights_file": weights_file,
        }
        (folder / TRAINING_FILE).write_text(json.dumps(summary, indent=1))
        replace_directory(folder, model_dir)
    return model_dir


def choose_thresholds(model: Any, config: SegmenterConfig, val: _Frames, folder: Path) -> tuple[dict[str, float], int]:
    """The probability and NMS thresholds the model predicts with, written to ``thresholds.json`` in
    ``folder`` either way (so the folder says which it uses); returns them and the number of validation
    frames they were fitted on (0 for StarDist's defaults)."""
    if config.thresholds == "optimize":
        pairs = _evenly(list(zip(val.images, val.masks, strict=True)), config.max_threshold_frames)
        found = model.optimize_thresholds([x for x, _ in pairs], [y for _, y in pairs], save_to_json=False)
        chosen, n_frames = {k: float(v) for k, v in found.items()}, len(pairs)
    else:
        chosen, n_frames = dict(STARDIST_DEFAULT_THRESHOLDS), 0
    (folder / THRESHOLDS_FILE).write_text(json.dumps(chosen, indent=1))
    return chosen, n_frames


def load_segmenter(model_dir: Path) -> Any:
    """Load a trained StarDist2D (best weights and the thresholds in its ``thresholds.json``) from its folder."""
    StarDist2D = stardist_models().StarDist2D  # noqa: N806 - StarDist's class name

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a StarDist model folder (config.json missing)")
    training = model_dir / TRAINING_FILE
    weights_file = json.loads(training.read_text()).get("weights_file", BEST_WEIGHTS) if training.is_file() else None
    with library_output_to_stderr():  # "Loading network weights from ..." and the thresholds it loads
        model = StarDist2D(None, name=model_dir.name, basedir=str(model_dir.parent))
        if weights_file not in (None, BEST_WEIGHTS):  # the averaged weights (average_last_epochs)
            model.load_weights(weights_file)
    return model


def segment_sequence(model_dir: Path, seq: CTCSequence, progress: bool = True,
                     thresholds: Mapping[str, float] | None = None) -> list[np.ndarray]:
    """Instance masks ``(H, W) uint16`` (per-frame labels, not tracked) for frames 0..n_frames-1 of ``seq``."""
    if seq.missing_frames:
        raise CTCFormatError(seq.image_dir, f"sequence is incomplete (missing frames {seq.missing_frames[:5]}...)")
    masks = segment_frames(model_dir, seq, range(seq.n_frames), progress, thresholds)
    return [masks[t] for t in range(seq.n_frames)]


def segment_frames(model_dir: Path, seq: CTCSequence, frames: Iterable[int], progress: bool = True,
                   thresholds: Mapping[str, float] | None = None) -> dict[int, np.ndarray]:
    """Instance masks ``{t: (H, W) uint16}`` for the given frames (which must have raw images): what a partial
    copy of a dataset (frames missing) can still be segmented and scored on. ``thresholds`` (``prob``, ``nms``)
    replace the model folder's own ``thresholds.json`` (a sensitivity study; the pipeline never passes them)."""
    model = load_segmenter(model_dir)
    scale = float(json.loads((Path(model_dir) / TRAINING_FILE).read_text()).get("scale", 1.0))
    chosen = {} if thresholds is None else {"prob_thresh": thresholds["prob"], "nms_thresh": thresholds["nms"]}
    out: dict[int, np.ndarray] = {}
    for t in tqdm(list(frames), desc=f"segment {seq.name}", disable=not progress):
        image = seq.image(t)
        with library_output_to_stderr():
            labels, _ = model.predict_instances(rescale_image(normalize_image(image), scale),
                                                show_tile_progress=False, verbose=False, **chosen)
        labels = rescale_labels(labels, image.shape)
        if labels.max() > MAX_LABEL:
            raise ValueError(f"{seq.image_files[t]}: {labels.max()} objects exceed the uint16-safe maximum")
        out[t] = labels.astype(np.uint16)
    return out
