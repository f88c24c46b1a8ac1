"""Tracker trained on a CTC dataset's lineage: a learned association model (our own, CPU-cheap).

Pipeline per frame pair t -> t+1 (``downstream.md`` 4.3):
1. detections = ``regionprops`` of the instance masks (centroid, area, intensity, shape);
2. candidates = k nearest centroids within a radius of a few nucleus diameters (plus overlaps);
3. pair features (distance, IoU, overlap fractions, area/intensity/shape deltas, candidate ranks);
4. a gradient-boosted link classifier and a division classifier on (mother, daughter, daughter)
   triples, both trained on the dataset's GT (TRA labels + ``man_track.txt``) from scratch;
5. Jaqaman-style augmented LAP (births, deaths) on -log p, then greedy division attachment;
6. gap closing (``downstream.tracker.gaps``, both trackers): a track broken by up to ``gap_frames`` missed
   detections is joined again and the missed frames filled with its shifted mask;
7. a CTC result written by ``benchmark.ctc.write_result`` (always valid).

Why it stays the default over trackastra (``downstream.md`` 4.2, now the second choice below): it trains in
seconds on 2 CPU cores, is deterministic and needs no torch in the tracking stage, which is what the
benchmark's question -- does training on a generator's lineage help? -- needs from a tracker in CI.

Measured against the untrained nearest-centroid LAP baseline (``track_nearest``) on the real held-out
GOWT1 02 (tracker trained on GOWT1 01 only, full masks grown from its TRA markers;
``scripts/downstream_real.py tracker``; 2 shared, heavily loaded CPU cores):
  GT-derived full masks:            learned TRA 0.99972 / DET 1.000   baseline TRA 0.99972 / DET 1.000
  same, 5 % of objects dropped:     learned TRA 0.9368                baseline TRA 0.9371
  same, 15 % of objects dropped:    learned TRA 0.8259                baseline TRA 0.8277
GOWT1 is an easy linking problem (slow nuclei, 2 mitoses per sequence, too few to fit a division
model from 01 alone), so the learned model only ties the baseline there. It is still the benchmark's
tracker because its quality follows the training lineage (the quantity being compared across
generators), and it learns divisions where the training data has them; the baseline stays as a
reference row. These figures are without gap closing (``gap_frames = 0``); with the default 2 frames
(``scripts/downstream_real.py gaps``) the 5 % / 15 % rows become learned 0.9891 / 0.9416, baseline
0.9947 / 0.9823. The learned tracker gains less at 15 %: with more cells missing it links 51 wrong edges
(the baseline 3), and a wrongly continued track leaves no end for gap closing to pair.

A second tracker, trackastra's association transformer trained from scratch by our own loop
(``downstream.tracker.trackastra_tracker``), is chosen per profile with ``[tracker] method = "trackastra"``
and configured in ``[tracker.trackastra]``; ``TRACKERS`` below maps each method to its config class and
its train/track functions, so the pipeline dispatches in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config import DEFAULT_TRACKER, config_from_dict, config_to_dict
from benchmark.ctc import CTCSequence
from downstream.tracker.baseline import track_nearest
from downstream.tracker.model import TrackerConfig, load_tracker, track_sequence, train_tracker
from downstream.tracker.trackastra_tracker import TrackastraConfig, track_with_trackastra, train_trackastra

DEFAULT_METHOD = DEFAULT_TRACKER  # benchmark.config: the one source


def _train_learned(dataset_dir: Path, config: Any, model_dir: Path) -> Path:
    from downstream.tracker import model  # looked up per call: a test may replace model.train_tracker

    return model.train_tracker(dataset_dir, config, model_dir)


def _track_learned(model_dir: Path, seq: CTCSequence, masks: list[np.ndarray], res_dir: Path) -> Path:
    from downstream.tracker import model

    return model.track_sequence(model_dir, seq, masks, res_dir)


def _train_trackastra(dataset_dir: Path, config: Any, model_dir: Path) -> Path:
    from downstream.tracker import trackastra_tracker

    return trackastra_tracker.train_trackastra(dataset_dir, config, model_dir)


def _track_trackastra(model_dir: Path, seq: CTCSequence, masks: list[np.ndarray], res_dir: Path) -> Path:
    from downstream.tracker import trackastra_tracker

    return trackastra_tracker.track_with_trackastra(model_dir, seq, masks, res_dir)


@dataclass(frozen=True)
class TrackerMethod:
    """One tracker the profile can choose: its config dataclass, where its table lives in ``[tracker]``
    (None: the flat keys of ``[tracker]`` itself, the learned tracker's since before there was a choice), and
    ``train(dataset_dir, config, model_dir) -> model_dir`` / ``track(model_dir, seq, masks, res_dir) -> res_dir``."""

    name: str
    config_class: type
    table: str | None
    train: Callable[[Path, Any, Path], Path]
    track: Callable[[Path, CTCSequence, list[np.ndarray], Path], Path]


TRACKERS: dict[str, TrackerMethod] = {
    "learned": TrackerMethod("learned", TrackerConfig, None, _train_learned, _track_learned),
    "trackastra": TrackerMethod("trackastra", TrackastraConfig, "trackastra", _train_trackastra, _track_trackastra),
}


def _split(section: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method, the flat keys, {table name: table}) of a profile's ``[tracker]`` section."""
    values = dict(section)
    method = values.pop("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method not in TRACKERS:
        raise ValueError(f"{where}: unknown method {method!r}; known: {', '.join(TRACKERS)}")
    tables = {m.table: values.pop(m.table) for m in TRACKERS.values() if m.table and m.table in values}
    return method, values, tables


def tracker_method(section: Mapping[str, Any], where: str = "tracker") -> TrackerMethod:
    """The tracker a profile's ``[tracker]`` section chooses (``method``, default ``learned``)."""
    return TRACKERS[_split(section, where)[0]]


def tracker_config(section: Mapping[str, Any], seed: int, where: str = "tracker") -> tuple[TrackerMethod, Any]:
    """The chosen tracker and its config, built from a profile's ``[tracker]`` section with the run's seed.

    Every tracker's keys are checked whichever is chosen (the flat keys as ``TrackerConfig``, the
    ``[tracker.trackastra]`` table as ``TrackastraConfig``), so that a typo fails before any stage runs,
    in one line naming the table: ``tracker.trackastra: unknown parameters ['widow'] ...``.
    """
    method, flat, tables = _split(section, where)
    configs = {}
    for m in TRACKERS.values():
        values = flat if m.table is None else tables.get(m.table, {})
        table = where if m.table is None else f"{where}.{m.table}"
        if m.table is not None and not isinstance(values, Mapping):
            raise ValueError(f"{table}: must be a table of parameters, got {values!r}")
        configs[m.name] = config_from_dict(m.config_class, {"seed": seed, **values}, table)
        check = getattr(configs[m.name], "check", None)
        if check is not None:
            check(table)
    return TRACKERS[method], configs[method]


def tracker_stage_key(section: Mapping[str, Any], seed: int) -> Any:
    """What the trained tracker depends on besides the training data. The learned tracker is keyed by the
    flat keys as written plus its saved model's format (``model.MODEL_FORMAT``: a stage saved as a pickle,
    ``tracker.joblib``, is not reused by the pickle-free loader); another method is keyed by its whole
    resolved config, so a changed default retrains it."""
    from downstream.tracker.model import MODEL_FORMAT

    method, config = tracker_config(section, seed)
    if method.table is None:
        return {**_split(section, "tracker")[1], "model_format": MODEL_FORMAT}
    return {"method": method.name, **config_to_dict(config)}


__all__ = ["TRACKERS", "TrackastraConfig", "TrackerConfig", "TrackerMethod", "load_tracker", "track_nearest",
           "track_sequence", "track_with_trackastra", "tracker_config", "tracker_method", "tracker_stage_key",
           "train_tracker", "train_trackastra"]
