"""Lazy, gap-aware readers for one CTC sequence (``NN/``, ``NN_GT``, ``NN_ST``) and one result folder.

Frames are indexed by their CTC time index ``t`` (the number in the file name), never by list
position, so copies with missing frames (the shared Fluo-N2DL-HeLa copy) are handled naturally.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

import numpy as np
import tifffile

from benchmark.ctc.errors import CTCFormatError
from benchmark.ctc.io import Track, read_tiff, read_tracks

_INDEX = re.compile(r"(\d+)\.tif$")


def indexed_files(folder: Path, prefix: str) -> dict[int, Path]:
    """Map t -> file for ``<prefix>TTT.tif`` in ``folder`` (3 or 4 digits); 2D only."""
    if not folder.is_dir():
        return {}
    files: dict[int, Path] = {}
    for path in folder.iterdir():
        name = path.name
        if not name.startswith(prefix) or not name.endswith(".tif"):
            continue
        match = _INDEX.search(name)
        rest = name[len(prefix) : -4]
        if match is None or not rest.isdigit():
            continue  # e.g. 3D slice files man_seg_TTT_ZZZ.tif are not handled here
        files[int(rest)] = path
    return dict(sorted(files.items()))




def list_sequences(dataset_dir: str | Path) -> list[str]:
    """Names of the sequences (``01``, ``02``, ...) that have a raw-image folder."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise CTCFormatError(root, "dataset folder is missing")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d\d", p.name))


class CTCSequence:
    """One sequence of a CTC dataset: raw frames plus optional GT (SEG, TRA) and ST (SEG) annotations."""

    def __init__(self, dataset_dir: str | Path, name: str = "01") -> None:
        self.dataset_dir = Path(dataset_dir)
        self.name = name
        self.image_dir = self.dataset_dir / name
        if not self.image_dir.is_dir():
            raise CTCFormatError(self.image_dir, "raw image folder of the sequence is missing")
        self.gt_dir = self.dataset_dir / f"{name}_GT"
        self.st_dir = self.dataset_dir / f"{name}_ST"

    def __repr__(self) -> str:
        return f"CTCSequence({str(self.dataset_dir)!r}, {self.name!r})"

    # --- which frames exist -------------------------------------------------------------
    @cached_property
    def image_files(self) -> dict[int, Path]:
        return indexed_files(self.image_dir, "t")

    @cached_property
    def seg_files(self) -> dict[int, Path]:
        return indexed_files(self.gt_dir / "SEG", "man_seg")

    @cached_property
    def tra_files(self) -> dict[int, Path]:
        return indexed_files(self.gt_dir / "TRA", "man_track")

    @cached_property
    def st_files(self) -> dict[int, Path]:
        return indexed_files(self.st_dir / "SEG", "man_seg")

    @property
    def track_file(self) -> Path:
        return self.gt_dir / "TRA" / "man_track.txt"

    @property
    def has_tracks(self) -> bool:
        return self.track_file.is_file()

    @cached_property
    def tracks(self) -> dict[int, Track]:
        return read_tracks(self.track_file)

    @cached_property
    def n_frames(self) -> int:
        """Length of the sequence: one past the last index seen in images, annotations or lineage."""
        last = -1
        for files in (self.image_files, self.tra_files, self.seg_files, self.st_files):
            if files:
                last = max(last, max(files))
        if self.has_tracks:
            try:
                last = max([last, *(t.end for t in self.tracks.values())])
            except CTCFormatError:
                pass  # a malformed track file is reported by validation, not here
        return last + 1

    @property
    def frames(self) -> list[int]:
        """Time indices with a raw image."""
        return list(self.image_files)

    @property
    def missing_frames(self) -> list[int]:
        present = set(self.image_files)
        return [t for t in range(self.n_frames) if t not in present]

    # --- frame access ---------------------------------------------------------------------
    def _read(self, files: dict[int, Path], t: int, what: str) -> np.ndarray:
        if t not in files:
            folder = {"image": self.image_dir, "SEG": self.gt_dir / "SEG", "TRA": self.gt_dir / "TRA",
                      "ST": self.st_dir / "SEG"}[what]
            raise CTCFormatError(folder, f"no {what} frame for t={t}")
        return read_tiff(files[t])

    def image(self, t: int) -> np.ndarray:
        """Raw frame ``(H, W)`` in its stored dtype (uint8 for GOWT1, uint16 for HeLa)."""
        return self._read(self.image_files, t, "image")

    def seg(self, t: int) -> np.ndarray:
        """GT instance segmentation (labels are NOT track ids)."""
        return self._read(self.seg_files, t, "SEG")

    def tra(self, t: int) -> np.ndarray:
        """GT tracking markers; labels are track ids of ``man_track.txt``."""
        return self._read(self.tra_files, t, "TRA")

    def st(self, t: int) -> np.ndarray:
        """Silver-truth instance segmentation."""
        return self._read(self.st_files, t, "ST")

    def masks(self, t: int, prefer: tuple[str, ...] = ("SEG", "ST", "TRA")) -> np.ndarray | None:
        """Best available full instance mask for frame t, or None."""
        for kind in prefer:
            files = {"SEG": self.seg_files, "ST": self.st_files, "TRA": self.tra_files}[kind]
            if t in files:
                return read_tiff(files[t])
        return None

    @cached_property
    def frame_shape(self) -> tuple[int, int]:
        first = next(iter(self.image_files.values()), None)
        if first is None:
            raise CTCFormatError(self.image_dir, "no raw frames tTTT.tif")
        with tifffile.TiffFile(first) as tif:
            return tuple(tif.pages[0].shape[-2:])  # type: ignore[return-value]

    @cached_property
    def dtype(self) -> np.dtype:
        first = next(iter(self.image_files.values()))
        with tifffile.TiffFile(first) as tif:
            return np.dtype(tif.pages[0].dtype)

    def contiguous_runs(self) -> list[range]:
        """Maximal runs of consecutive raw frames, e.g. for 16-frame clips."""
        runs: list[range] = []
        start = prev = None
        for t in self.frames:
            if prev is not None and t == prev + 1:
                prev = t
                continue
            if start is not None:
                runs.append(range(start, prev + 1))
            start = prev = t
        if start is not None:
            runs.append(range(start, prev + 1))
        return runs


class ResultSequence:
    """A CTC result folder ``NN_RES`` with ``maskTTT.tif`` and ``res_track.txt``."""

    def __init__(self, res_dir: str | Path) -> None:
        self.res_dir = Path(res_dir)
        if not self.res_dir.is_dir():
            raise CTCFormatError(self.res_dir, "result folder is missing")

    @cached_property
    def mask_files(self) -> dict[int, Path]:
        return indexed_files(self.res_dir, "mask")

    @property
    def track_file(self) -> Path:
        return self.res_dir / "res_track.txt"

    @cached_property
    def tracks(self) -> dict[int, Track]:
        return read_tracks(self.track_file)

    @property
    def n_frames(self) -> int:
        return max(self.mask_files) + 1 if self.mask_files else 0

    def mask(self, t: int) -> np.ndarray:
        if t not in self.mask_files:
            raise CTCFormatError(self.res_dir, f"no mask frame for t={t}")
        return read_tiff(self.mask_files[t])
