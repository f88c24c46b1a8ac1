"""benchmark.io, the one atomic writer: complete output under the final name, or nothing new at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from benchmark.ctc.io import write_tiff
from benchmark.io import (
    atomic_directory,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    replace_directory,
    staging_directory,
)


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_text_and_bytes_land_under_the_final_name_only(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "report.md"
    assert atomic_write_text(target, "Ω table\n") == target  # parent folders are created
    assert target.read_bytes() == "Ω table\n".encode()
    assert atomic_write_bytes(target, b"\x89PNG") == target  # replaces
    assert target.read_bytes() == b"\x89PNG"
    assert _listing(tmp_path) == ["deep", "deep/report.md"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint-3.pt"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["checkpoint-3.pt"]


def test_the_temporary_name_is_hidden_beside_the_target_with_its_suffix(tmp_path: Path) -> None:
    """np.savez and plt.imsave pick a format from the name: the temporary keeps the target's suffix."""
    seen: list[Path] = []
    atomic_write(tmp_path / "features.npz", seen.append)
    tmp = seen[0]
    assert tmp.parent == tmp_path and tmp.name.startswith(".features.npz.") and tmp.suffix == ".npz"
    assert not tmp.exists() and (tmp_path / "features.npz").is_file()


def test_files_get_the_permissions_open_gives(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert written.stat().st_mode == plain.stat().st_mode


def test_write_tiff_writes_what_tifffile_writes(tmp_path: Path) -> None:
    frame = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    write_tiff(tmp_path / "t000.tif", frame)
    tifffile.imwrite(tmp_path / "direct.tif", frame, compression="zlib")
    assert (tmp_path / "t000.tif").read_bytes() == (tmp_path / "direct.tif").read_bytes()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "t000.tif"), frame)


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"v1")
    assert _listing(tmp_path) == ["model", "model/weights.bin"]
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_directory(target):
            pass
    with pytest.raises(ValueError, match="bad fit"):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            raise ValueError("bad fit")
    assert _listing(tmp_path) == ["model", "model/weights.bin"]
    assert (target / "weights.bin").read_bytes() == b"v1"
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "other.bin").write_bytes(b"v2")
    assert _listing(tmp_path) == ["model", "model/other.bin"]  # the old folder is gone, not merged


def test_staging_directory_is_removed_and_pieces_move_into_place(tmp_path: Path) -> None:
    """As write_sequence does: two folders staged together, each moved into place, the stage removed."""
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "stale.tif").write_bytes(b"old")
    with staging_directory(tmp_path / "01") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".01.") and tmp.name.endswith(".partial")
        for name in ("01", "01_GT"):
            (tmp / name).mkdir()
            (tmp / name / "t000.tif").write_bytes(name.encode())
            replace_directory(tmp / name, tmp_path / name)
    assert _listing(tmp_path) == ["01", "01/t000.tif", "01_GT", "01_GT/t000.tif"]
