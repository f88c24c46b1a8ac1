"""Generators that learn nothing: ``folder`` (an existing CTC dataset) and ``real`` (the training sequence).

``folder`` lets any external synthetic data be benchmarked: it validates the folder and hands it on
unchanged; ``check_no_real_frames`` refuses one that holds real frames of the run (scoring the held-out
sequence as "synthetic" is a test-set leak). ``real`` re-writes the training sequence itself with full
nucleus masks (``benchmark.ctc.crops.full_masks``) as SEG and TRA for every annotated frame, so
downstream models train on the real video: the paper's "Real" row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmark.ctc import CTCFormatError, CTCSequence, list_sequences, validate_sequence, write_sequence
from benchmark.ctc.crops import annotated_frames, full_masks
from benchmark.ctc.validate import raise_for_errors
from generators.base import GenerateSpec, Generator, GeneratorConfig, register_generator


@dataclass
class FolderConfig(GeneratorConfig):
    path: str = ""  # a CTC dataset folder holding 01/, 01_GT/, ...


@register_generator("folder")
class FolderGenerator(Generator):
    """Wraps an existing CTC dataset folder; ``generate`` validates it and returns it (nothing is copied)."""

    config_class = FolderConfig
    needs_fit = False
    writes_output = False

    def __init__(self, config: FolderConfig | None = None) -> None:
        super().__init__(config)
        self.real: CTCSequence | None = None

    def fit(self, real: CTCSequence) -> FolderGenerator:
        self.real = real  # recorded only
        return self

    def source_folder(self) -> Path:
        """The wrapped folder (parameter ``path``); what ``generate`` hands back."""
        cfg: FolderConfig = self.config  # type: ignore[assignment]
        if not cfg.path:
            raise ValueError("folder generator: parameter 'path' (a CTC dataset folder) is required")
        return Path(cfg.path).expanduser()

    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        """Return the wrapped folder after validating EVERY sequence in it (downstream training and realism
        read them all, so ``spec`` does not choose among them).

        ``out_dir`` is ignored: the data already exist. Frame count and size are the folder's own.
        """
        folder = self.source_folder()
        names = list_sequences(folder)
        if not names:
            raise CTCFormatError(folder, "no sequence folders (01/, 02/, ...)")
        for name in names:
            raise_for_errors(validate_sequence(folder, name, require_complete=True))
        return folder


def frame_fingerprints(seq: CTCSequence) -> dict[str, int]:
    """A hash of each raw frame's pixels (shape and values, whatever the dtype or file encoding) -> its time
    index: a re-saved or renamed copy of a real frame has the same fingerprint as the original."""
    prints: dict[str, int] = {}
    for t in seq.frames:
        pixels = seq.image(t)
        values = pixels.astype(np.int64 if np.issubdtype(pixels.dtype, np.integer) else np.float64)
        digest = hashlib.sha256(repr(pixels.shape).encode())
        digest.update(np.ascontiguousarray(values).tobytes())
        prints.setdefault(digest.hexdigest(), t)
    return prints


def check_no_real_frames(folder: Path, real: Mapping[str, CTCSequence]) -> None:
    """Refuse (ValueError, one line) a folder of "synthetic" data any of whose raw frames is a frame of one
    of the ``real`` sequences (role -> sequence: the held-out reference, the training sequence): scoring the
    held-out video against itself, or training downstream models on it, is a test-set leak. Pixels are
    compared, not file bytes or names, so a copy of ``02`` renamed ``01`` or re-saved is caught too."""
    real_prints = {role: frame_fingerprints(seq) for role, seq in real.items()}
    for name in list_sequences(folder):
        mine = frame_fingerprints(CTCSequence(folder, name))
        for role, seq in real.items():
            shared = set(mine) & set(real_prints[role])
            if not shared:
                continue
            how = ("equals" if len(shared) == len(mine) == len(real_prints[role])
                   else f"shares {len(shared)} of its {len(mine)} raw frames with")
            raise ValueError(f"{folder}: sequence {name} {how} the real {role} sequence {seq.dataset_dir / seq.name} "
                             "(a test-set leak); external synthetic data must not contain real frames of the run")


@register_generator("real")
class RealGenerator(Generator):
    """The real training sequence re-written with full masks (SEG + TRA) on every annotated frame.

    Frames without TRA markers (partial HeLa copies) are skipped; the written sequence is the annotated
    frames in time order, so its time index is the rank of the real frame. Lineage follows the labels.
    """

    needs_fit = False

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__(config)
        self.real: CTCSequence | None = None

    def fit(self, real: CTCSequence) -> RealGenerator:
        self.real = real
        return self

    def _save_state(self, directory: Path) -> None:
        if self.real is not None:
            (directory / "real.txt").write_text(f"{self.real.dataset_dir}\n{self.real.name}\n")

    def _load_state(self, directory: Path) -> None:
        path = directory / "real.txt"
        if path.is_file():
            folder, name = path.read_text().split("\n")[:2]
            self.real = CTCSequence(folder, name)

    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        """Write the real sequence as ``01`` (one sequence whatever ``spec`` asks: there is only one)."""
        if self.real is None:
            raise RuntimeError("real: fit() on the training sequence before generate()")
        seq = self.real
        frames = annotated_frames(seq)
        if spec.n_frames and spec.n_frames < len(frames):
            frames = frames[: spec.n_frames]
        images, labels = [], []
        for t in tqdm(frames, desc="real", disable=not self.config.progress, leave=False):
            images.append(seq.image(t))
            labels.append(full_masks(seq, t))
        parents = {label: track.parent for label, track in seq.tracks.items() if track.parent}
        out_dir = Path(out_dir)
        write_sequence(out_dir, "01", images, [np.asarray(x, np.uint16) for x in labels], parents, overwrite=True,
                       progress=self.config.progress)
        return out_dir
