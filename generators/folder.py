"""Generators that learn nothing: ``folder`` (an existing CTC dataset) and ``real`` (the training sequence).

``folder`` lets any external synthetic data be benchmarked: it validates the folder and hands it on
unchanged. ``real`` re-writes the training sequence itself with full nucleus masks
(``benchmark.ctc.crops.full_masks``) as SEG and TRA for every annotated frame, so downstream models
train on the real video: the paper's "Real" row.
"""

from __future__ import annotations

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

    def generate(self, spec: GenerateSpec, out_dir: str | Path) -> Path:
        """Return the wrapped folder after validating its first ``spec.n_sequences`` sequences.

        ``out_dir`` is ignored: the data already exist. Frame count and size are the folder's own.
        """
        cfg: FolderConfig = self.config  # type: ignore[assignment]
        if not cfg.path:
            raise ValueError("folder generator: parameter 'path' (a CTC dataset folder) is required")
        folder = Path(cfg.path).expanduser()
        names = list_sequences(folder)
        if not names:
            raise CTCFormatError(folder, "no sequence folders (01/, 02/, ...)")
        for name in names[: spec.n_sequences]:
            raise_for_errors(validate_sequence(folder, name, require_complete=True))
        return folder


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
