"""Low-level CTC file I/O: TIFF frames and ``L B E P`` track tables, written atomically (``benchmark.io``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from benchmark.ctc.errors import CTCFormatError
from benchmark.io import atomic_write, atomic_write_bytes


@dataclass(frozen=True, order=True)
class Track:
    """One line of ``man_track.txt`` / ``res_track.txt``: label, first and last frame (inclusive), parent."""

    label: int
    begin: int
    end: int
    parent: int = 0

    def __len__(self) -> int:
        return self.end - self.begin + 1


def read_tracks(path: str | Path) -> dict[int, Track]:
    """Read an ``L B E P`` table (spaces or tabs). Raises CTCFormatError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise CTCFormatError(path, "track file is missing")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as some Windows editors write, is not content
    except UnicodeDecodeError as exc:  # a binary or mis-encoded file: the table holds digits and blanks only
        raise CTCFormatError(path, f"not a text table of integers (byte {exc.object[exc.start]:#04x} at "
                                   f"offset {exc.start})") from None
    tracks: dict[int, Track] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise CTCFormatError(path, f"line {number}: expected 4 integers 'L B E P', got {line.strip()!r}")
        try:
            label, begin, end, parent = (int(f) for f in fields)
        except ValueError:
            raise CTCFormatError(path, f"line {number}: non-integer field in {line.strip()!r}") from None
        if label <= 0 or begin < 0 or end < begin or parent < 0:
            raise CTCFormatError(path, f"line {number}: invalid track {line.strip()!r} (need L>0, 0<=B<=E, P>=0)")
        if label in tracks:
            raise CTCFormatError(path, f"line {number}: label {label} is listed twice (labels must not be reused)")
        tracks[label] = Track(label, begin, end, parent)
    return tracks


def format_tracks(tracks: Mapping[int, Track]) -> str:
    return "".join(f"{t.label} {t.begin} {t.end} {t.parent}\n" for t in sorted(tracks.values()))


def write_tracks(path: str | Path, tracks: Mapping[int, Track]) -> None:
    """Write an ``L B E P`` table atomically, sorted by label."""
    atomic_write_bytes(Path(path), format_tracks(tracks).encode())


def read_tiff(path: str | Path) -> np.ndarray:
    """Read one 2D frame; any decoding failure becomes a CTCFormatError naming the file."""
    path = Path(path)
    try:
        array = tifffile.imread(path)
    except FileNotFoundError:
        raise CTCFormatError(path, "file is missing") from None
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise CTCFormatError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise CTCFormatError(path, f"expected a 2D frame, got shape {array.shape}")
    return array


def write_tiff(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a 2D frame atomically (temporary name in the same folder, then rename)."""
    frame = np.ascontiguousarray(array)
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, frame, compression="zlib" if compress else None))


def frame_name(prefix: str, t: int, digits: int = 3) -> str:
    return f"{prefix}{t:0{digits}d}.tif"
