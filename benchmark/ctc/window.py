"""Cut a sub-region and a frame range out of a CTC sequence with consistent masks and lineage."""

from __future__ import annotations

from pathlib import Path

from benchmark.ctc.errors import CTCFormatError
from benchmark.ctc.io import Track
from benchmark.ctc.sequence import CTCSequence
from benchmark.ctc.validate import frame_ranges
from benchmark.ctc.writer import write_sequence


def check_window(seq: CTCSequence, frames: range,
                 box: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """The box ``(y0, x0, height, width)`` to cut, after checking that ``frames`` and ``box`` fit ``seq``
    (CTCFormatError naming the sequence's folder otherwise): cheap, so callers check before any work."""
    if frames.step != 1 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty contiguous range, got {frames}")
    missing = [t for t in frames if t not in seq.image_files or t not in seq.tra_files]
    if missing:
        raise CTCFormatError(seq.image_dir, f"cannot window frames {frames.start}-{frames.stop - 1}: "
                                            f"no raw image or TRA marker at t={frame_ranges(missing)}")
    height, width = seq.frame_shape
    y0, x0, h, w = box if box is not None else (0, 0, height, width)
    if y0 < 0 or x0 < 0 or h <= 0 or w <= 0 or y0 + h > height or x0 + w > width:
        raise CTCFormatError(seq.image_dir, f"window box (y0, x0, height, width) = {tuple(box or ())} does not "
                                            f"fit in its frames of {height} x {width} pixels")
    return y0, x0, h, w


def window_sequence(
    seq: CTCSequence,
    out_dataset_dir: str | Path,
    frames: range,
    box: tuple[int, int, int, int] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> dict[int, Track]:
    """Write frames ``frames`` (re-indexed from 0) inside ``box = (y0, x0, height, width)`` as a new sequence.

    Tracks keep their labels; B/E follow the cropped markers (a cell leaving the window ends its track,
    one re-entering becomes a child of its pre-gap part) and a parent outside the window is dropped.
    GT SEG frames inside the range are cropped and re-indexed too. Every frame in the range needs a raw
    image and a TRA marker frame.
    """
    y0, x0, h, w = check_window(seq, frames, box)
    crop = (slice(y0, y0 + h), slice(x0, x0 + w))
    images = [seq.image(t)[crop] for t in frames]
    labels = [seq.tra(t)[crop] for t in frames]
    seg = {t - frames.start: seq.seg(t)[crop] for t in frames if t in seq.seg_files}
    parents = {tr.label: tr.parent for tr in seq.tracks.values()}
    return write_sequence(out_dataset_dir, name or seq.name, images, labels, parents,
                          seg=seg, overwrite=overwrite)
