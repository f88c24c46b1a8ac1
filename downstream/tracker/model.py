"""Training the link and division classifiers on a dataset's GT lineage, and tracking with them.

Training data: every sequence ``NN`` with ``NN_GT/TRA`` + ``man_track.txt``. Detections are the TRA
labels (synthetic datasets write full masks there) or, with ``detections="full"``, full nucleus masks
grown from the TRA markers (``benchmark.ctc.crops.full_masks``; for real GT whose markers are small).
Positive link = same track at t and t+1, or mother -> daughter (association); positive division
triple = a mother and both of its daughters. The link threshold tau and the division threshold are
chosen on held-out data of the same (synthetic) dataset -- whole sequences when there are several,
otherwise the last frame pairs -- by the AOGM edge cost (1.5 EA + 1 ED + 1 EC) on GT detections,
then both classifiers are refitted on all the data.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import combinations, product
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier
from skops.io.exceptions import UntrustedTypesFoundException
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from benchmark import mutants
from benchmark.checksums import record_sha256, verify_recorded
from benchmark.ctc import CTCFormatError, CTCSequence, Track, list_sequences, write_result
from benchmark.ctc.crops import full_masks
from benchmark.io import atomic_directory
from downstream.split import holdout_split
from downstream.tracker.features import (
    DIVISION_FEATURES,
    PAIR_FEATURES,
    Detections,
    FramePair,
    candidates_of,
    detect,
    division_features,
    frame_pair,
)
from downstream.tracker.gaps import bridge_gaps, check_gap_settings
from downstream.tracker.linking import PairDecision, build_tracks, decide, random_decisions

MODEL_FILE = "tracker.skops"  # the two classifiers, skops (no pickle)
PARAMS_FILE = "tracker-model.json"  # thresholds, config, feature names
SUMMARY_FILE = "tracker.json"
#: bumped when the saved model's files change; part of the training stage's key (``tracker_stage_key``)
MODEL_FORMAT = 2  # 1: tracker.joblib (a pickle); 2: tracker.skops + tracker-model.json + SHA256SUMS
#: the only types outside skops' default trust (numpy, scikit-learn estimators) a tracker file may hold
TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


@dataclass
class TrackerConfig:
    """Candidate search, classifier and threshold-search settings (distances in median nucleus diameters)."""

    k_candidates: int = 6
    radius: float = 3.0  # wide enough to give the link classifier negatives
    k_division: int = 4  # nearest candidates of a mother considered as daughters
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    link_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
    division_thresholds: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8)
    n_val: float = 0.2  # fraction of sequences (if >= 2) or of the last frame pairs held out for the thresholds
    detections: str = "tra"  # "tra": TRA labels are the masks; "full": grow full masks from TRA markers
    min_division_examples: int = 2  # fewer positive division triples: no division model
    refit_on_all: bool = True
    seed: int = 0
    threads: int = 1  # OpenMP threads of the classifiers; more is ~10x SLOWER on a shared, oversubscribed CPU
    gap_frames: int = 2  # gap closing (``downstream.tracker.gaps``): missed frames bridged; 0 = off
    gap_diameters: float = 1.0  # gap closing: farthest centroid jump, in median nucleus diameters

    def check(self, where: str = "TrackerConfig") -> None:
        """Refuse a gap-closing setting the tracking stage would fail on after the segmenter has trained."""
        check_gap_settings(self.gap_frames, self.gap_diameters, where)


@dataclass
class _PairData:
    """One GT frame pair: candidates, features and the truth as row-index edges."""

    fp: FramePair
    link_y: np.ndarray
    triples: list[tuple[int, int, int]]
    triple_x: np.ndarray
    triple_y: np.ndarray
    truth: PairDecision


def gt_masks(seq: CTCSequence, t: int, mode: str) -> np.ndarray:
    """A training frame's detections: the GT TRA labels ("tra") or full masks grown from them ("full")."""
    if mode == "tra":
        return seq.tra(t)
    if mode == "full":
        return full_masks(seq, t)
    raise ValueError(f"TrackerConfig.detections must be 'tra' or 'full', got {mode!r}")


def lineage_sequences(dataset_dir: Path, trainee: str) -> list[CTCSequence]:
    """The sequences of a CTC folder that a tracker can learn from (GT TRA masks and ``man_track.txt``)."""
    seqs = [CTCSequence(dataset_dir, n) for n in list_sequences(dataset_dir)]
    seqs = [s for s in seqs if s.has_tracks and s.tra_files]
    if not seqs:
        raise CTCFormatError(dataset_dir, f"no sequence with NN_GT/TRA and man_track.txt to train {trainee} on")
    return seqs


def gt_decision(fp: FramePair, tracks: dict[int, Track], t: int) -> PairDecision:
    """The GT links and divisions between t and t+1 as row indices (detections labelled by track id)."""
    la, lb = fp.a.labels, fp.b.labels
    row_b = {int(lab): j for j, lab in enumerate(lb)}
    truth = PairDecision()
    for i, lab in enumerate(la):
        lab = int(lab)
        if lab in row_b:
            truth.links[i] = row_b[lab]
        daughters = [row_b[c.label] for c in tracks.values()
                     if c.parent == lab and c.begin == t + 1 and c.label in row_b]
        if len(daughters) == 2 and lab not in row_b:
            truth.links[i] = daughters[0]
            truth.divisions[i] = (daughters[0], daughters[1])
    return truth


def _pair_data(seq: CTCSequence, t: int, masks: tuple[np.ndarray, np.ndarray],
               dets: tuple[Detections, Detections], config: TrackerConfig) -> _PairData:
    fp = frame_pair(dets[0], dets[1], masks[0], masks[1], config.k_candidates, config.radius)
    tracks = seq.tracks
    la, lb = fp.a.labels[fp.pairs[:, 0]], fp.b.labels[fp.pairs[:, 1]]
    mother_of = {lab: tr.parent for lab, tr in tracks.items() if tr.begin == t + 1}
    ends_here = {lab for lab, tr in tracks.items() if tr.end == t}
    link_y = np.array([int(a == b or (mother_of.get(int(b)) == a and int(a) in ends_here))
                       for a, b in zip(la, lb, strict=True)], dtype=int)
    triples: list[tuple[int, int, int]] = []
    for i in range(len(fp.a)):
        triples += [(i, j1, j2) for j1, j2 in combinations(candidates_of(fp, i, config.k_division), 2)]
    x = np.stack([division_features(fp, *h) for h in triples]) if triples else np.zeros((0, len(DIVISION_FEATURES)))
    y = np.array([int(mother_of.get(int(fp.b.labels[j1])) == fp.a.labels[i] == mother_of.get(int(fp.b.labels[j2])))
                  for i, j1, j2 in triples], dtype=int)
    return _PairData(fp, link_y, triples, x, y, gt_decision(fp, tracks, t))


def sequence_pairs(seq: CTCSequence, config: TrackerConfig, progress: bool) -> list[_PairData]:
    """The training data of every consecutive annotated frame pair of ``seq`` (features and GT labels)."""
    frames = [t for t in seq.frames if t in seq.tra_files]
    out: list[_PairData] = []
    previous: tuple[int, np.ndarray, Detections] | None = None
    for t in tqdm(frames, desc=f"tracker features {seq.name}", disable=not progress, leave=False):
        mask = gt_masks(seq, t, config.detections)
        current = (t, mask, detect(mask, seq.image(t)))
        if previous is not None and previous[0] == t - 1:
            out.append(_pair_data(seq, t - 1, (previous[1], mask), (previous[2], current[2]), config))
        previous = current
    return out


def _classifier(config: TrackerConfig) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=config.max_iter, learning_rate=config.learning_rate,
                                          max_leaf_nodes=config.max_leaf_nodes, early_stopping=False,
                                          random_state=config.seed)


def fit_classifiers(data: list[_PairData], config: TrackerConfig, where: Path) -> tuple[Any, Any, dict[str, int]]:
    """The link classifier, the division classifier (None with too few division examples) and the sample
    counts, fitted on ``data`` (``sequence_pairs``); ``where`` names the data in the error of a one-class set."""
    x = np.concatenate([d.fp.features for d in data])
    y = np.concatenate([d.link_y for d in data])
    if len(np.unique(y)) < 2:
        raise ValueError(f"{where}: link training data has a single class ({len(y)} pairs, {int(y.sum())} positive);"
                         " widen TrackerConfig.radius / k_candidates")
    link = _classifier(config).fit(x, y)
    dx = np.concatenate([d.triple_x for d in data])
    dy = np.concatenate([d.triple_y for d in data])
    division = None
    if dy.sum() >= config.min_division_examples and len(np.unique(dy)) == 2:
        division = _classifier(config).fit(dx, dy)
    counts = {"pairs": len(y), "positive_pairs": int(y.sum()), "triples": len(dy), "positive_triples": int(dy.sum())}
    return link, division, counts


def _proba(model: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    return None if model is None else (lambda x: model.predict_proba(x)[:, 1])


def _edge_cost(pred: PairDecision, truth: PairDecision) -> tuple[float, int]:
    """AOGM edge part 1.5 EA + 1 ED + 1 EC for one frame pair on GT detections, and |E_ref|."""
    p = {(i, j): parent for i, j, parent in pred.edges()}
    g = {(i, j): parent for i, j, parent in truth.edges()}
    missing = sum(1 for e in g if e not in p)
    redundant = sum(1 for e in p if e not in g)
    wrong = sum(1 for e in g if e in p and p[e] != g[e])
    return 1.5 * missing + redundant + wrong, len(g)


def link_probabilities(model: Any, fps: list[FramePair]) -> list[np.ndarray]:
    """Link probabilities of every candidate pair of every frame pair, predicted in one batched call."""
    rows = [fp.features for fp in fps]
    probs = model.predict_proba(np.concatenate(rows))[:, 1] if sum(len(r) for r in rows) else np.zeros(0)
    bounds = np.cumsum([0] + [len(r) for r in rows])
    return [probs[bounds[n]:bounds[n + 1]] for n in range(len(fps))]


def _tune(val: list[_PairData], link: Any, division: Any, config: TrackerConfig) -> dict[str, Any]:
    """Grid search of (tau_link, tau_division) by the summed AOGM edge cost on held-out frame pairs."""
    fps = [d.fp for d in val]
    probs = link_probabilities(link, fps)
    div_grid = config.division_thresholds if division is not None else (1.0,)
    best: dict[str, Any] = {}
    for tau_link, tau_div in product(config.link_thresholds, div_grid):
        decisions = decide(fps, probs, tau_link, tau_div, config.k_division, _proba(division))
        costs = [_edge_cost(pred, d.truth) for pred, d in zip(decisions, val, strict=True)]
        cost, n_edges = sum(c for c, _ in costs), sum(n for _, n in costs)
        if not best or cost < best["edge_cost"]:
            best = {"tau_link": tau_link, "tau_division": tau_div, "edge_cost": cost,
                    "edge_score": 1.0 - cost / max(1.5 * n_edges, 1e-9), "val_edges": n_edges}
    return best


def train_tracker(dataset_dir: Path, config: TrackerConfig, model_dir: Path, *, overwrite: bool = False,
                  progress: bool = True) -> Path:
    """Fit the link and division classifiers on ``dataset_dir``'s GT lineage; write ``model_dir`` atomically.

    ``model_dir`` holds ``tracker.skops`` (the classifiers), ``tracker-model.json`` (thresholds, config,
    feature names), ``SHA256SUMS`` (both files' sha256, checked before loading) and ``tracker.json``
    (sample counts, chosen thresholds, validation edge score, timings).
    """
    dataset_dir, model_dir = Path(dataset_dir), Path(model_dir)
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir}: already exists (pass overwrite=True to replace it)")
    started = time.perf_counter()
    seqs = lineage_sequences(dataset_dir, "the tracker")
    per_seq = [sequence_pairs(s, config, progress) for s in seqs]
    per_seq = [p for p in per_seq if p]
    if not per_seq or sum(len(p) for p in per_seq) < 2:
        raise CTCFormatError(dataset_dir, "fewer than 2 consecutive annotated frame pairs to train the tracker on")
    features_seconds = time.perf_counter() - started
    train, val = holdout_split(per_seq, config.n_val)
    with threadpool_limits(limits=config.threads):
        link, division, counts = fit_classifiers(train, config, dataset_dir)
        chosen = _tune(val, link, division, config)
        if config.refit_on_all:
            link, division, counts = fit_classifiers(train + val, config, dataset_dir)
    fit_seconds = time.perf_counter() - started - features_seconds
    params = {"format": MODEL_FORMAT, "tau_link": chosen["tau_link"], "tau_division": chosen["tau_division"],
              "config": asdict(config), "pair_features": PAIR_FEATURES, "division_features": DIVISION_FEATURES,
              "sklearn": sklearn.__version__}
    summary = {"config": asdict(config), "sequences": [s.name for s in seqs], "counts": counts,
               "validation": chosen, "division_model": division is not None,
               "features_seconds": features_seconds, "fit_seconds": fit_seconds, "total_seconds": time.perf_counter() - started}
    with atomic_directory(model_dir, overwrite=True) as tmp:
        save_classifiers({"link": link, "division": division}, params, tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return model_dir


def save_classifiers(models: dict[str, Any], params: dict[str, Any], model_dir: Path) -> None:
    """The classifiers to ``tracker.skops``, everything else to JSON, both sha256-recorded in SHA256SUMS."""
    skops.io.dump(models, model_dir / MODEL_FILE)
    (model_dir / PARAMS_FILE).write_text(json.dumps(params, indent=1))
    record_sha256([model_dir / MODEL_FILE, model_dir / PARAMS_FILE], model_dir)


def load_tracker(model_dir: Path) -> dict[str, Any]:
    """The trained tracker: classifiers, thresholds and config, as ``train_tracker`` saved them.

    Nothing is unpickled: each file must match its recorded sha256, and the skops file may hold no type
    beyond skops' trusted defaults and ``TRUSTED_TYPES`` (a file naming any other is refused unread).
    """
    model_dir = Path(model_dir)
    path, params_path = model_dir / MODEL_FILE, model_dir / PARAMS_FILE
    if not path.is_file():
        old = " (saved by an older version as tracker.joblib: retrain it)" if (model_dir / "tracker.joblib").exists() else ""
        raise FileNotFoundError(f"{path}: tracker model file is missing{old}")
    verify_recorded(path)
    verify_recorded(params_path)
    try:
        models = skops.io.load(path, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as error:
        raise ValueError(f"{path}: refusing a tracker model holding untrusted types ({error})") from None
    except (zipfile.BadZipFile, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a skops tracker model ({type(error).__name__}: {error})") from None
    params = json.loads(params_path.read_text())
    if not isinstance(models, dict) or set(models) != {"link", "division"}:
        raise ValueError(f"{path}: not a tracker model (expected the link and division classifiers)")
    if tuple(params.get("pair_features", ())) != PAIR_FEATURES:
        raise ValueError(f"{params_path}: trained with other pair features; retrain the tracker")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in params["config"].items()}  # JSON: tuples
    return {**params, **models, "config": config}


def _check_masks(seq: CTCSequence, masks: list[np.ndarray]) -> None:
    if len(masks) != seq.n_frames:
        raise ValueError(f"{seq.image_dir}: {len(masks)} mask frames for a sequence of {seq.n_frames} frames")
    if seq.missing_frames:
        raise CTCFormatError(seq.image_dir, f"sequence is incomplete (missing frames {seq.missing_frames[:5]}...)")


def sequence_detections(seq: CTCSequence, masks: list[np.ndarray], progress: bool = False) -> list[Detections]:
    _check_masks(seq, masks)
    return [detect(m, seq.image(t)) for t, m in tqdm(enumerate(masks), total=len(masks), desc="detections",
                                                      disable=not progress, leave=False)]


def track_sequence(model_dir: Path, seq: CTCSequence, masks: list[np.ndarray], res_dir: Path, *,
                   overwrite: bool = False, progress: bool = False) -> Path:
    """Link per-frame instance masks of ``seq`` (frames 0..n-1) into a validated CTC result ``res_dir``."""
    payload = load_tracker(model_dir)
    config = TrackerConfig(**payload["config"])
    dets = sequence_detections(seq, masks, progress)
    fps = [frame_pair(dets[t], dets[t + 1], masks[t], masks[t + 1], config.k_candidates, config.radius)
           for t in range(len(masks) - 1)]
    if mutants.active("random-links"):  # the gate's injected regression (benchmark.mutants)
        decisions = random_decisions(fps)
    else:
        with threadpool_limits(limits=config.threads):
            decisions = decide(fps, link_probabilities(payload["link"], fps), payload["tau_link"],
                               payload["tau_division"], config.k_division, _proba(payload["division"]))
    frames, parents = build_tracks(masks, [d.labels for d in dets], decisions)
    frames, parents = bridge_gaps(frames, parents, config.gap_frames, config.gap_diameters)
    write_result(res_dir, frames, parents, overwrite=overwrite)
    return Path(res_dir)
