"""Trackastra (weigertlab, ECCV'24) as a second tracker: its association transformer trained FROM SCRATCH on the
dataset's GT lineage by our own loop, then linked greedily (``downstream.md`` 4.2).

Why our own loop: trackastra's training script (``scripts/train.py`` in its repository) is not in the wheel
and needs lightning, wandb and kornia; the wheel has the building blocks, which is all we use:

- ``trackastra.data.wrfeat.WRFeatures``: per-object region features (equivalent diameter, mean intensity,
  inertia tensor, border distance) and centroids of one frame's instance masks, the model's tokens;
- ``trackastra.model.TrackingTransformer``: encoder/decoder over the tokens of a window of ``window``
  frames; its output is an (N, N) association logit matrix, normalised causally (``normalize_output``:
  per object, a "quiet" softmax over the objects of each other frame, so an object may link to nothing);
- ``trackastra.data.build_windows`` / ``trackastra.model.predict.predict_windows``: sliding windows at
  inference, scores of every (t, t+1) pair averaged over the windows that contain it;
- ``trackastra.tracking.build_graph`` / ``track_greedy``: a candidate graph from the scores and greedy
  linking (highest score first; at most one parent and two children per object).

The pretrained models are never loaded: they were trained on the CTC datasets the benchmark scores on,
and the question the benchmark asks is what a tracker learns from each generator's lineage.

Training target (the trackastra paper's): entry (i, j) of a window is 1 when objects i and j belong to the
same track or j descends from i (a mother and her daughters), for objects 1..``delta_cutoff`` frames
apart; loss = binary cross-entropy on the causally normalised scores plus 1 % of it on the raw logits
(numerically steadier), positive continuation entries weighted x2 and division entries
x(1 + ``division_weight``), averaged per window and weighted by (entries)^0.2 across a batch.

Measured on real GOWT1 (``scripts/downstream_real.py trackastra``: trained on 01 only, full masks grown from
its TRA markers; linking GT-derived full masks of 02; 2 shared CPU cores):
  defaults (0.17 M parameters, 360 steps):  train 13 s, track 5 s, TRA 0.99923 / DET 1.000 (AOGM 20.5)
  d_model 128, 3+3 layers, window 6, 1000 steps of 8 windows (0.94 M): train 217 s, TRA 0.99938 (AOGM 16.5)
  learned tracker / nearest-neighbour baseline:                          TRA 0.99972 (AOGM 7.5) both
GOWT1 is an easy linking problem, so it does not separate the trackers; what trackastra adds is a
tracker of a different kind (a transformer over windows of frames) whose quality also follows the
training lineage.

Deterministic for a given config and seed on CPU: seeded torch/numpy generators and ``threads`` intra-op
threads (``torch_session``); the caller's torch RNG state and thread count are restored.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.ctc import CTCFormatError, CTCSequence, Track, write_result
from benchmark.io import replace_directory, staging_directory
from downstream.normalize import normalize_image
from downstream.split import holdout_split
from downstream.tracker.gaps import bridge_gaps, check_gap_settings
from downstream.tracker.linking import PairDecision, build_tracks
from downstream.tracker.model import gt_masks, lineage_sequences

if TYPE_CHECKING:
    import torch
    from trackastra.data.wrfeat import WRFeatures
    from trackastra.model import TrackingTransformer

logger = logging.getLogger(__name__)

SUMMARY_FILE = "trackastra.json"
#: what ``TrackingTransformer.save`` writes (and ``Trackastra.from_folder`` reads back, with TRAIN_CONFIG_FILE)
WEIGHTS_FILE, MODEL_CONFIG_FILE, TRAIN_CONFIG_FILE = "model.pt", "config.yaml", "train_config.yaml"
LINKING_MODES = ("greedy", "greedy_nodiv")
DETECTION_MODES = ("tra", "full")


@dataclass
class TrackastraConfig:
    """Model size, training schedule and linking of the trackastra tracker (lengths in pixels, times in frames).

    The defaults are the ``cpu`` size: 0.17 M parameters, ~15 s of training on 2 CPU cores for GOWT1's 92
    frames (longer on denser videos: attention grows with the square of the objects per window);
    trackastra's published models are ~1-10 M parameters, trained on GPUs for hours.
    """

    window: int = 4  # frames per transformer window (trackastra: 4-10)
    d_model: int = 64
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    pos_embed_per_dim: int = 16
    feat_embed_per_dim: int = 4
    dropout: float = 0.0
    spatial_pos_cutoff: int = 256  # px: objects farther apart neither attend to nor link to each other
    causal_norm: str = "quiet_softmax"
    epochs: int = 6
    steps_per_epoch: int = 60
    batch_size: int = 4  # windows per step
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 30  # linear warm-up, then cosine decay to 1 % over the remaining steps
    delta_cutoff: int = 2  # the loss sees pairs up to this many frames apart
    division_weight: float = 2.0  # extra weight of mother -> daughter entries (trackastra's div_upweight)
    augment: bool = True  # random rotation/flip/shift of the window's geometry, intensity scale, jitter
    detections: str = "tra"  # "tra": TRA labels are the masks; "full": grow full masks from TRA markers
    n_val: float = 0.1  # validation windows (whole sequences when there are several): loss curve only
    linking: str = "greedy"  # "greedy" (with divisions) or "greedy_nodiv"; both deterministic, no ILP solver
    edge_threshold: float = 0.05  # scores below this are not candidate edges
    link_threshold: float = 0.5  # greedy linking accepts candidate edges with at least this score
    max_distance: float = 128.0  # px: longest candidate edge
    max_neighbors: int = 10  # candidate edges per object
    predict_batch_size: int = 4  # windows per forward pass when tracking
    threads: int = 1  # torch intra-op threads; more is slower on a shared, oversubscribed 2-core machine
    gap_frames: int = 2  # gap closing (``downstream.tracker.gaps``): missed frames bridged; 0 = off
    gap_diameters: float = 1.0  # gap closing: farthest centroid jump, in median nucleus diameters
    seed: int = 0

    def check(self, where: str = "TrackastraConfig") -> None:
        """Refuse values the model or the linker would fail on late (or silently misuse), one line each."""
        choices = {"linking": LINKING_MODES, "detections": DETECTION_MODES,
                   "causal_norm": ("quiet_softmax", "softmax", "linear")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{where}: {name} = {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if self.window < 2:
            raise ValueError(f"{where}: window = {self.window}; a window needs at least 2 frames")
        if self.d_model % self.nhead or self.d_model < 8:
            raise ValueError(f"{where}: d_model = {self.d_model} must be >= 8 and a multiple of nhead = {self.nhead}")
        for name in ("epochs", "steps_per_epoch", "batch_size", "delta_cutoff", "threads", "predict_batch_size",
                     "max_neighbors", "pos_embed_per_dim", "feat_embed_per_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}: {name} = {getattr(self, name)} must be >= 1")
        if not 0.0 <= self.n_val < 1.0:
            raise ValueError(f"{where}: n_val = {self.n_val} must be in [0, 1)")
        check_gap_settings(self.gap_frames, self.gap_diameters, where)


@dataclass
class _Window:
    """One training sample: the objects of ``window`` consecutive frames, their GT associations and loss weights."""

    coords: np.ndarray  # (N, 2) float32 (y, x) px
    features: np.ndarray  # (N, F) float32, WRFeatures.features_stacked
    timepoints: np.ndarray  # (N,) int64 frame index, non-decreasing
    target: np.ndarray  # (N, N) float32: 1 = same track or descendant (either direction)
    weight: np.ndarray  # (N, N) float32 per-entry loss weight
    columns: dict[str, slice] = field(default_factory=dict)  # feature name -> columns of ``features``


# ------------------------------------------------------------------------------------------- trackastra
def _trackastra() -> Any:
    """Import trackastra without its import-time side effects on logging.

    ``trackastra.model`` runs ``logging.basicConfig(level=INFO)`` when imported, which would give a library
    user's root logger a handler, and several of its modules pin their loggers at INFO, which would bypass
    the CLI's levels (``benchmark.logs``): the root handlers are restored and those loggers follow
    ``trackastra``'s level again.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import trackastra.data
    import trackastra.model
    import trackastra.model.predict
    import trackastra.tracking

    root.handlers[:], root.level = handlers, level
    for name, item in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("trackastra.") and isinstance(item, logging.Logger):
            item.setLevel(logging.NOTSET)
    return trackastra


def _quiet(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``progbar_class`` for trackastra's helpers that shows nothing (the stages log their own progress)."""

    class _Bar:
        def __init__(self, items: Any) -> None:
            self.items = items

        def __iter__(self) -> Iterator[Any]:
            return iter(self.items)

        def set_description(self, *_: Any, **__: Any) -> None:
            pass

    return _Bar(iterable)


@contextmanager
def torch_session(seed: int, threads: int) -> Iterator[None]:
    """Seeded, ``threads``-threaded torch for one training or tracking call; the caller's RNG state and thread
    count come back afterwards (torch keeps them process-wide). Same seed, same bytes: on the CPU with a fixed
    thread count torch's kernels are deterministic (``test_tracker_trackastra`` checks it).

    ``torch.use_deterministic_algorithms`` is NOT called: it imports torch._inductor and with it triton, whose
    native library segfaults when TensorFlow is already loaded, which it is in a run (train-segmenter comes
    first in the same process)."""
    import torch

    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)


def frame_features(mask: np.ndarray, image: np.ndarray, t: int) -> WRFeatures:
    """trackastra's region features of one frame's instance masks on its normalised image (the downstream's one
    per-frame percentile normalisation, at training and at tracking alike)."""
    ta = _trackastra()
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {image.shape}")
    return ta.data.wrfeat.WRFeatures.from_mask_img(mask=np.asarray(mask, np.int32)[None], img=normalize_image(image)[None],
                                    t_start=t)


def _columns(feat: WRFeatures) -> dict[str, slice]:
    out, start = {}, 0
    for name, values in feat.features.items():
        out[name] = slice(start, start + values.shape[1])
        start += values.shape[1]
    return out


def _feature_dim(feat: WRFeatures) -> int:
    return sum(v.shape[1] for v in feat.features.values())


# ------------------------------------------------------------------------------------------- training data
def _lineage(tracks: Mapping[int, Track]) -> dict[int, set[int]]:
    """Track id -> itself and all its ancestors (from ``man_track.txt`` parents)."""
    out: dict[int, set[int]] = {}
    for label in tracks:
        chain, current = {label}, tracks[label].parent
        while current and current in tracks and current not in chain:
            chain.add(current)
            current = tracks[current].parent
        out[label] = chain
    return out


def _annotated_runs(seq: CTCSequence, min_length: int) -> list[list[int]]:
    """Maximal runs of consecutive frames that have both an image and GT TRA, at least ``min_length`` long."""
    frames = sorted(t for t in seq.tra_files if t in seq.image_files)
    runs: list[list[int]] = []
    for t in frames:
        if runs and runs[-1][-1] == t - 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    return [r for r in runs if len(r) >= min_length]


def _window(feats: Sequence[WRFeatures], ancestry: dict[int, set[int]], config: TrackastraConfig) -> _Window:
    """Concatenate one window's frames; labels are GT track ids (CTC TRA), so the target is the lineage relation."""
    from trackastra.data.wrfeat import WRFeatures

    feat = WRFeatures.concat(list(feats))
    labels = feat.labels.astype(np.int64)
    t = feat.timepoints.astype(np.int64)
    tracks, index = np.unique(labels, return_inverse=True)
    kin = np.array([[int(a) in ancestry.get(int(b), ()) or int(b) in ancestry.get(int(a), ()) for b in tracks]
                    for a in tracks], dtype=bool).reshape(len(tracks), len(tracks))
    related = kin[index][:, index]
    target = related.astype(np.float32)
    # per positive entry: successors of i in j's frame + predecessors of j in i's frame (2 = a plain link)
    same_t = t[:, None] == t[None, :]
    successors = related.astype(np.int64) @ same_t.astype(np.int64)  # (i, j): relatives of i in j's frame
    predecessors = same_t.astype(np.int64) @ related.astype(np.int64)  # (i, j): relatives of j in i's frame
    block = related * (successors + predecessors)
    weight = 1.0 + 1.0 * (block == 2) + config.division_weight * (block > 2)
    features = feat.features_stacked
    if features is None or not len(labels):
        features = np.zeros((len(labels), _feature_dim(feat)), np.float32)
    return _Window(feat.coords.astype(np.float32).reshape(-1, 2), features.astype(np.float32), t, target,
                   weight.astype(np.float32), _columns(feat))


def _sequence_windows(seq: CTCSequence, config: TrackastraConfig, progress: bool) -> list[_Window]:
    from tqdm.auto import tqdm

    ancestry = _lineage(seq.tracks)
    windows: list[_Window] = []
    for run in _annotated_runs(seq, config.window):
        feats = [frame_features(gt_masks(seq, t, config.detections), seq.image(t), t)
                 for t in tqdm(run, desc=f"trackastra features {seq.name}", disable=not progress, leave=False)]
        for start in range(len(run) - config.window + 1):
            w = _window(feats[start:start + config.window], ancestry, config)
            if len(w.timepoints):
                windows.append(w)
    return windows


def _augment(w: _Window, rng: np.random.Generator) -> _Window:
    """Random rotation and flip of the window's geometry about its centre (inertia tensors rotate with it), a
    shift of the absolute positions (the positional encoding is absolute), +-2 px jitter and an intensity
    scale: the model should learn motion and appearance change, not where in the frame a cell sits."""
    theta = rng.uniform(0.0, 2.0 * np.pi)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    flip = np.diag([1.0, -1.0]) if rng.random() < 0.5 else np.eye(2)
    m = rotation @ flip
    centre = w.coords.mean(axis=0) if len(w.coords) else np.zeros(2)
    coords = (w.coords - centre) @ m.T + centre + rng.uniform(-256.0, 256.0, 2)
    coords += rng.uniform(-2.0, 2.0, coords.shape)
    features = w.features.copy()
    if "inertia_tensor" in w.columns:
        cols = w.columns["inertia_tensor"]
        tensor = features[:, cols].reshape(-1, 2, 2)
        features[:, cols] = np.einsum("ab,nbc,dc->nad", m, tensor, m).reshape(len(features), 4)
    if "intensity_mean" in w.columns:
        features[:, w.columns["intensity_mean"]] *= rng.uniform(0.7, 1.4)
    return _Window(coords.astype(np.float32), features.astype(np.float32), w.timepoints, w.target, w.weight,
                   w.columns)


def _batch(windows: Sequence[_Window]) -> dict[str, torch.Tensor]:
    """Pad a list of windows to one tensor batch (padding: timepoint -1, ``padding_mask`` True)."""
    import torch

    n = max(len(w.timepoints) for w in windows)
    b = len(windows)
    out = {"coords": torch.zeros(b, n, 3), "features": torch.zeros(b, n, windows[0].features.shape[1]),
           "timepoints": torch.full((b, n), -1, dtype=torch.long), "target": torch.zeros(b, n, n),
           "weight": torch.zeros(b, n, n), "padding_mask": torch.ones(b, n, dtype=torch.bool)}
    for k, w in enumerate(windows):
        m = len(w.timepoints)
        out["coords"][k, :m, 0] = torch.from_numpy(w.timepoints.astype(np.float32))
        out["coords"][k, :m, 1:] = torch.from_numpy(w.coords)
        out["features"][k, :m] = torch.from_numpy(w.features)
        out["timepoints"][k, :m] = torch.from_numpy(w.timepoints)
        out["target"][k, :m, :m] = torch.from_numpy(w.target)
        out["weight"][k, :m, :m] = torch.from_numpy(w.weight)
        out["padding_mask"][k, :m] = False
    return out


def association_loss(model: TrackingTransformer, batch: dict[str, torch.Tensor], delta_cutoff: int) -> torch.Tensor:
    """The windowed association loss (module docstring) of one padded batch; a scalar tensor."""
    import torch
    import torch.nn.functional as F

    padding = batch["padding_mask"]
    logits = model(batch["coords"], batch["features"], padding_mask=padding)
    invalid = padding[:, :, None] | padding[:, None, :]
    logits = logits.masked_fill(invalid, 0.0)
    t = batch["timepoints"]
    dt = t[:, None, :] - t[:, :, None]  # (b, i, j): t_j - t_i
    mask = (dt > 0) & (dt <= delta_cutoff) & ~invalid
    target, weight = batch["target"], batch["weight"]
    probs = model.normalize_output(logits, t, batch["coords"])
    probs = torch.where(mask, probs, torch.zeros_like(probs)).clamp(0.0, 1.0)  # padded rows may be nan
    entries = F.binary_cross_entropy(probs, target, reduction="none")
    entries = entries + 0.01 * F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    entries = torch.where(mask, entries * weight, torch.zeros_like(entries))
    count = mask.sum(dim=(1, 2)).float()
    per_window = entries.sum(dim=(1, 2)) / count.clamp(min=1.0)
    share = count.pow(0.2)
    return (per_window * share).sum() / share.sum().clamp(min=1e-9)


def _schedule(step: int, config: TrackastraConfig) -> float:
    """Learning-rate factor: linear warm-up from 1 %, then cosine decay to 1 % at the last step."""
    total = config.epochs * config.steps_per_epoch
    warmup = min(config.warmup_steps, max(total - 1, 0))
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _build_model(config: TrackastraConfig, feat_dim: int) -> TrackingTransformer:
    ta = _trackastra()
    return ta.model.TrackingTransformer(
        coord_dim=2, feat_dim=feat_dim, d_model=config.d_model, nhead=config.nhead,
        num_encoder_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
        dropout=config.dropout, pos_embed_per_dim=config.pos_embed_per_dim,
        feat_embed_per_dim=config.feat_embed_per_dim, window=config.window,
        spatial_pos_cutoff=config.spatial_pos_cutoff, causal_norm=config.causal_norm)


def _mean_loss(model: TrackingTransformer, windows: Sequence[_Window], config: TrackastraConfig) -> float:
    import torch

    if not windows:
        return float("nan")
    model.eval()
    with torch.no_grad():
        losses = [float(association_loss(model, _batch(windows[k:k + config.batch_size]), config.delta_cutoff))
                  for k in range(0, len(windows), config.batch_size)]
    model.train()
    return float(np.mean(losses))


def train_trackastra(dataset_dir: Path, config: TrackastraConfig, model_dir: Path, *, overwrite: bool = False,
                     progress: bool = True) -> Path:
    """Train a TrackingTransformer from random weights on every annotated sequence of ``dataset_dir`` (images,
    ``NN_GT/TRA`` + ``man_track.txt``); write ``model_dir`` atomically.

    ``model_dir`` holds ``config.yaml`` + ``model.pt`` (``TrackingTransformer.save``; with
    ``train_config.yaml`` trackastra's own ``Trackastra.from_folder`` loads it too) and ``trackastra.json``
    (config, losses per epoch, window counts, timings, parameter count, ``pretrained: false``).
    """
    import torch

    dataset_dir, model_dir = Path(dataset_dir), Path(model_dir)
    config.check()
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir}: already exists (pass overwrite=True to replace it)")
    started = time.perf_counter()
    seqs = lineage_sequences(dataset_dir, "trackastra")
    per_seq = [w for w in (_sequence_windows(s, config, progress) for s in seqs) if w]
    n_windows = sum(len(w) for w in per_seq)
    if n_windows < 1:
        raise CTCFormatError(dataset_dir, f"no run of {config.window} consecutive annotated frames with objects "
                                          "to train trackastra on (TrackastraConfig.window)")
    if config.n_val > 0 and n_windows >= 2:
        train, val = holdout_split(per_seq, config.n_val)
    else:
        train, val = [w for g in per_seq for w in g], []
    features_seconds = time.perf_counter() - started
    rng = np.random.default_rng(config.seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "learning_rate": []}
    with torch_session(config.seed, config.threads):
        model = _build_model(config, train[0].features.shape[1])
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, config))
        generator = torch.Generator().manual_seed(config.seed)
        model.train()
        for epoch in range(config.epochs):
            losses = []
            for _ in range(config.steps_per_epoch):
                picks = torch.randint(len(train), (config.batch_size,), generator=generator).tolist()
                batch = [_augment(train[k], rng) if config.augment else train[k] for k in picks]
                loss = association_loss(model, _batch(batch), config.delta_cutoff)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            history["train_loss"].append(float(np.mean(losses)))
            history["val_loss"].append(_mean_loss(model, val, config))
            history["learning_rate"].append(float(scheduler.get_last_lr()[0]))
            logger.info("trackastra epoch %d/%d: train loss %.4f, val loss %.4f", epoch + 1, config.epochs,
                        history["train_loss"][-1], history["val_loss"][-1])
        n_parameters = sum(p.numel() for p in model.parameters())
        fit_seconds = time.perf_counter() - started - features_seconds
        summary = {"config": asdict(config), "pretrained": False, "trackastra": _trackastra().__version__,
                   "torch": torch.__version__, "sequences": [s.name for s in seqs], "n_parameters": n_parameters,
                   "windows": {"train": len(train), "val": len(val)}, "history": history,
                   "features_seconds": features_seconds, "fit_seconds": fit_seconds,
                   "total_seconds": time.perf_counter() - started}
        with staging_directory(model_dir) as tmp:
            folder = tmp / model_dir.name
            model.save(folder)
            train_config = {"features": "wrfeat", "window": config.window, "pretrained": False,
                            "causal_norm": config.causal_norm}
            (folder / TRAIN_CONFIG_FILE).write_text(json.dumps(train_config, indent=1))  # JSON is valid YAML
            (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
            replace_directory(folder, model_dir)
    return model_dir


# ------------------------------------------------------------------------------------------- tracking
def load_trackastra(model_dir: Path) -> tuple[TrackastraConfig, TrackingTransformer]:
    """The config and the trained transformer (on CPU, eval mode) of a ``train_trackastra`` folder."""
    model_dir = Path(model_dir)
    summary_file = model_dir / SUMMARY_FILE
    for path in (summary_file, model_dir / WEIGHTS_FILE, model_dir / MODEL_CONFIG_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: trackastra model file is missing")
    summary = json.loads(summary_file.read_text())
    if summary.get("pretrained") is not False:
        raise ValueError(f"{summary_file}: not a from-scratch model of train_trackastra")
    config = TrackastraConfig(**summary["config"])
    model = _trackastra().model.TrackingTransformer.from_folder(model_dir, map_location="cpu")
    model.eval()
    return config, model


def _decisions(solution: Any, labels: Sequence[np.ndarray]) -> list[PairDecision]:
    """Frame-pair decisions (row indices of ``labels[t]``) from trackastra's solution graph (nodes carry
    ``time`` and mask ``label``; edges go t -> t+1; two out-edges are a division)."""
    rows = [{int(lab): k for k, lab in enumerate(frame)} for frame in labels]
    decisions = [PairDecision() for _ in range(max(len(labels) - 1, 0))]
    for node in sorted(solution.nodes):
        children = sorted(solution.successors(node), key=lambda c: int(solution.nodes[c]["label"]))
        if not children:
            continue
        t = int(solution.nodes[node]["time"])
        i = rows[t][int(solution.nodes[node]["label"])]
        js = [rows[t + 1][int(solution.nodes[c]["label"])] for c in children]
        if any(int(solution.nodes[c]["time"]) != t + 1 for c in children):
            raise ValueError(f"trackastra linked frame {t} beyond frame {t + 1}; only delta_t = 1 is written")
        decisions[t].links[i] = js[0]
        if len(js) == 2:
            decisions[t].divisions[i] = (js[0], js[1])
    return decisions


def track_with_trackastra(model_dir: Path, seq: CTCSequence, masks: list[np.ndarray], res_dir: Path, *,
                          overwrite: bool = False, progress: bool = False) -> Path:
    """Link per-frame instance masks of ``seq`` (frames 0..n-1) with a trained trackastra model; write a
    validated CTC result ``res_dir``. Objects the greedy linker leaves without an edge stay as one-frame
    tracks (trackastra's own solution graph would drop them, and DET with them)."""
    from tqdm.auto import tqdm

    if len(masks) != seq.n_frames:
        raise ValueError(f"{seq.image_dir}: {len(masks)} mask frames for a sequence of {seq.n_frames} frames")
    if seq.missing_frames:
        raise CTCFormatError(seq.image_dir, f"sequence is incomplete (missing frames {seq.missing_frames[:5]}...)")
    config, model = load_trackastra(model_dir)
    ta = _trackastra()
    feats = [frame_features(m, seq.image(t), t)
             for t, m in tqdm(enumerate(masks), total=len(masks), desc="trackastra features", disable=not progress,
                              leave=False)]
    labels = [np.unique(np.asarray(m))[1:] if np.asarray(m).any() else np.zeros(0, np.int64) for m in masks]
    decisions = [PairDecision() for _ in range(max(len(masks) - 1, 0))]
    if len(masks) >= 2 and any(len(f) for f in feats):
        with torch_session(config.seed, config.threads):
            windows = ta.data.build_windows(list(feats), window_size=config.window, progbar_class=_quiet,
                                            as_torch=True)
            predictions = ta.model.predict.predict_windows(
                windows=windows, features=list(feats), model=model, edge_threshold=config.edge_threshold,
                spatial_dim=2, batch_size=config.predict_batch_size, progbar_class=_quiet)
        graph = ta.tracking.build_graph(nodes=predictions["nodes"], weights=predictions["weights"],
                                        use_distance=False, max_distance=config.max_distance,
                                        max_neighbors=config.max_neighbors, delta_t=1)
        solution = ta.tracking.track_greedy(graph, allow_divisions=config.linking == "greedy",
                                            threshold=config.link_threshold)
        decisions = _decisions(solution, labels)
    frames, parents = build_tracks(masks, labels, decisions)
    frames, parents = bridge_gaps(frames, parents, config.gap_frames, config.gap_diameters)
    write_result(res_dir, frames, parents, overwrite=overwrite)
    return Path(res_dir)
