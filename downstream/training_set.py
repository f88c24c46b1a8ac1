"""What the downstream models train on under the low-data protocol: K annotated real frames, alone or mixed
with a generator's synthetic video (the ``[downstream]`` profile section).

Why: a biologist rarely replaces a fully annotated video with synthetic data; the usual case is a handful of
annotated frames, and the question is whether synthetic data helps then. Three kinds of condition come out
of one config:

- **synthetic only** (``real_frames = 0``, the default): the generator's video, as every row of Table 1;
- **real K only** (``synthetic = false``): K real frames for the segmenter, the real lineage for the tracker;
- **real K + synthetic**: both, the segmenter drawing ``real_fraction`` of its training patches from the K
  real frames (they are few: mixed by frame count, 2 real frames among ~50 synthetic ones would be 4 %).

The K frames are drawn per seed from the training sequence's frames with ground-truth SEG when the window
has at least K of them (pool ``gt-seg``), else from every frame with TRA markers (pool ``tra``); the manifest
says which. Their masks are the real row's (``benchmark.ctc.crops.full_masks``: GT SEG where annotated, TRA
markers grown elsewhere), so ``real_frames = "all"`` trains on exactly the real row's data. The same seed
draws the same frames for every generator, so a condition's gain over real-K-only is a paired difference.

The result is two CTC folders and a manifest, the interchange format every other stage uses:
``segmenter/`` (real frames as sequence ``01``, then the synthetic sequences) and ``tracker/`` (the real
lineage as ``01``, then the synthetic sequences), and ``training_set.json`` in each, which the segmenter
reads to split and mix (``downstream.segmenter.split_frames``). The tracker trains on every sequence of its
folder (the real lineage of the window: TRA annotation is cheap next to SEG, and both real-K conditions get
it, so it cancels from the paired gain).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.ctc import CTCSequence, list_sequences, write_sequence
from benchmark.ctc.crops import full_masks

MANIFEST = "training_set.json"
MANIFEST_FORMAT = 1
ALL = "all"
POOLS = ("auto", "gt-seg", "tra")
#: the fewest real frames a real condition takes: one is held out to validate (``downstream.split``)
MIN_REAL_FRAMES = 2


@dataclass(frozen=True)
class TrainingSetConfig:
    """``[downstream]``: ``real_frames`` K (0: none; ``"all"``: every annotated frame), ``synthetic`` (the
    generator's video in the training set), ``real_fraction`` (the share of segmenter training patches from
    the real frames when both are present), ``pool`` (where the K frames are drawn from: ``gt-seg``, ``tra``
    or ``auto``, GT SEG frames when there are at least K of them)."""

    real_frames: int | str = 0
    synthetic: bool = True
    real_fraction: float = 0.5
    pool: str = "auto"

    def __post_init__(self) -> None:
        k = self.real_frames
        if k != ALL and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"downstream.real_frames must be an integer >= 0 or {ALL!r}, got {k!r}")
        if k != ALL and 0 < k < MIN_REAL_FRAMES:
            raise ValueError(f"downstream.real_frames = {k}: a real condition needs >= {MIN_REAL_FRAMES} frames "
                             "(one is held out to validate on)")
        if k == 0 and not self.synthetic:
            raise ValueError("downstream.real_frames = 0 with downstream.synthetic = false: real-only with no real "
                             "frame trains on nothing")
        if isinstance(self.real_fraction, bool) or not 0 <= float(self.real_fraction) <= 1:
            raise ValueError(f"downstream.real_fraction must be in [0, 1], got {self.real_fraction!r}")
        if self.pool not in POOLS:
            raise ValueError(f"downstream.pool must be one of {', '.join(POOLS)}, got {self.pool!r}")

    @property
    def active(self) -> bool:
        """Whether the training set differs from the synthetic video alone (today's rows)."""
        return self.real_frames != 0 or not self.synthetic

    def condition(self) -> str:
        """``synthetic``, ``real-<K>`` or ``real-<K>+synthetic``, then ``@<fraction>`` and ``/<pool>`` where they
        are not the defaults: the run's ``condition`` tag and a level of its bundle path, so it must tell every
        training set apart."""
        if not self.active:
            return "synthetic"
        text = f"real-{self.real_frames}" + ("+synthetic" if self.synthetic else "")
        if self.synthetic and self.real_fraction != TrainingSetConfig.real_fraction:
            text += f"@{self.real_fraction:g}"
        return text + (f"/{self.pool}" if self.pool != TrainingSetConfig.pool else "")


def frame_pool(real: CTCSequence, k: int | str, policy: str = "auto") -> tuple[list[int], str]:
    """(frames the K are drawn from, the pool's name): frames with GT SEG (and TRA markers and an image) when
    ``policy`` asks for them, or (``auto``) when there are at least K of them; else every TRA-annotated frame."""
    annotated = [t for t in real.frames if t in real.tra_files]
    with_seg = [t for t in annotated if t in real.seg_files]
    if policy == "gt-seg" or (policy == "auto" and k != ALL and len(with_seg) >= int(k)):
        return with_seg, "gt-seg"
    return annotated, "tra"


def check_available(real: CTCSequence, config: TrainingSetConfig, where: str, frames: range | None = None) -> None:
    """Refuse a K the training sequence (within ``frames``, the profile's window) cannot give, before any work
    (one line naming the key)."""
    if config.real_frames in (0, ALL):
        return
    pool, name = frame_pool(real, config.real_frames, config.pool)
    pool = [t for t in pool if frames is None or t in frames]
    if config.real_frames > len(pool):
        raise ValueError(f"downstream.real_frames = {config.real_frames}: {where} has only {len(pool)} annotated "
                         f"frames in the {name} pool")


def draw_frames(pool: Sequence[int], k: int | str, seed: int) -> list[int]:
    """K frames of ``pool``, drawn by ``seed`` (all of them for ``"all"``), in time order. The draw depends on
    the seed and the pool only, so every generator's run of one seed trains on the same real frames."""
    if k == ALL:
        return sorted(pool)
    rng = np.random.default_rng([seed, 35])  # 35: a stream of its own, apart from every other use of the seed
    return sorted(int(t) for t in rng.choice(np.asarray(pool), size=int(k), replace=False))


def build_training_set(real: CTCSequence, synthetic_dir: Path | None, config: TrainingSetConfig, seed: int,
                       out: Path) -> dict[str, Any]:
    """Write ``out/segmenter`` and ``out/tracker`` (CTC folders with the manifest) and return the manifest.

    ``real`` is the (windowed) real training sequence: the K frames are drawn from its annotation and written
    with their full masks for the segmenter; the tracker gets the whole sequence (linked, not copied), whose
    TRA lineage it learns from. ``synthetic_dir`` is the generator's output, or None."""
    frames: list[int] = []
    pool_name = None
    if config.real_frames != 0:
        pool, pool_name = frame_pool(real, config.real_frames, config.pool)
        frames = draw_frames(pool, config.real_frames, seed)
    synthetic = list_sequences(synthetic_dir) if synthetic_dir is not None and config.synthetic else []
    manifest = {"format": MANIFEST_FORMAT, "config": asdict(config), "condition": config.condition(), "seed": seed,
                "real_sequences": ["01"] if frames else [],
                "synthetic_sequences": [f"{i:02d}" for i in range(2, 2 + len(synthetic))],
                "real_fraction": config.real_fraction if frames and synthetic else None,
                "real_frames": {"source": f"{real.dataset_dir}/{real.name}", "pool": pool_name, "frames": frames,
                                "k": len(frames), "masks": "full masks (GT SEG where annotated, TRA markers grown "
                                "elsewhere), as the real row trains on"}}
    segmenter, tracker = out / "segmenter", out / "tracker"
    for folder in (segmenter, tracker):
        folder.mkdir(parents=True)
        for i, name in enumerate(synthetic, start=2):
            link_sequence(Path(synthetic_dir), name, folder, f"{i:02d}")  # type: ignore[arg-type]
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if frames:
        write_sequence(segmenter, "01", [real.image(t) for t in frames],
                       [np.asarray(full_masks(real, t), np.uint16) for t in frames])
        link_sequence(real.dataset_dir, real.name, tracker, "01")
    return manifest


def link_sequence(source_dir: Path, name: str, target_dir: Path, new_name: str) -> None:
    """``source_dir/name`` (and ``name_GT``) visible as ``target_dir/new_name``, by relative symlinks: the
    training folder holds no copy of a video it reuses."""
    for suffix in ("", "_GT"):
        source = Path(source_dir) / f"{name}{suffix}"
        if source.is_dir():
            target = target_dir / f"{new_name}{suffix}"
            target.symlink_to(os.path.relpath(source.resolve(), target_dir.resolve()), target_is_directory=True)


def read_manifest(dataset_dir: Path) -> dict[str, Any] | None:
    """The folder's training-set manifest, None for a plain CTC folder (a generator's output)."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: training-set manifest format {manifest.get('format')!r}, this code reads "
                         f"{MANIFEST_FORMAT}")
    return manifest


def mix(real: Sequence[Any], synthetic: Sequence[Any], real_fraction: float | None) -> list[Any]:
    """The training list a segmenter samples patches from uniformly: every synthetic item once and the real
    items repeated (round-robin) so that they make up ``real_fraction`` of it (each real item at least once, so
    a tiny fraction can come out larger). ``real_fraction`` 1 drops the synthetic items, 0 the real ones; None
    (one kind only) concatenates."""
    if real_fraction is None or not real or not synthetic:
        return [*real, *synthetic]
    if real_fraction >= 1:
        return list(real)
    slots = max(len(real), round(real_fraction / (1 - real_fraction) * len(synthetic))) if real_fraction > 0 else 0
    return [real[i % len(real)] for i in range(slots)] + list(synthetic)
