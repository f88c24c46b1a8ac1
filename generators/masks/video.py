"""A synthetic mask video: per frame, per cell a canonical centred crop and its pose in the frame.

Texturing generators (BVDM, CellCycleGAN-style) work on the canonical crops cell by cell, then
``generators.masks.compose`` places crops (and textures) into full frames at their poses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.ctc import Track


@dataclass
class CellState:
    """One cell in one frame.

    ``crop``: ``(S, S)`` bool canonical (unrotated, centred) mask; ``centre``: ``(y, x)`` in frame pixels
    of the crop centre; ``angle``: rotation in radians applied to the crop when placing it;
    ``stage``: pseudo cell-cycle stage (0 interphase, 1 pre-division/mitotic, 2 just after division);
    ``intensity``: relative brightness factor (1 = the track's typical interphase level).
    """

    label: int
    crop: np.ndarray
    centre: tuple[float, float]
    angle: float = 0.0
    stage: int = 0
    intensity: float = 1.0


@dataclass
class MaskVideo:
    """A whole synthetic video's masks. ``frames[t]`` lists the cells present at time t.

    ``parents`` maps a track label to its mother's label (0 for roots). Lineage (B/E) is derived
    from the rendered labels by the CTC writer, so it always follows what is actually visible.
    """

    shape: tuple[int, int]
    crop_size: int
    frames: list[list[CellState]]
    parents: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def labels(self) -> list[int]:
        return sorted({c.label for cells in self.frames for c in cells})

    def tracks_by_label(self) -> dict[int, list[tuple[int, CellState]]]:
        """label -> [(t, cell), ...] in time order: what a texturing generator iterates over."""
        out: dict[int, list[tuple[int, CellState]]] = {}
        for t, cells in enumerate(self.frames):
            for cell in cells:
                out.setdefault(cell.label, []).append((t, cell))
        return out

    def nominal_tracks(self) -> dict[int, Track]:
        """Tracks as simulated (before occlusion); the written lineage comes from the rendered labels."""
        spans = self.tracks_by_label()
        return {label: Track(label, s[0][0], s[-1][0], self.parents.get(label, 0)) for label, s in spans.items()}
