"""Mask-video synthesis shared by every generator: shape model, scene model, compositing."""

from generators.masks.synth import MaskVideoConfig, MaskVideoModel
from generators.masks.video import CellState, MaskVideo

__all__ = ["CellState", "MaskVideo", "MaskVideoConfig", "MaskVideoModel"]
