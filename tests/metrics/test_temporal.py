"""Texture carry-over on real GOWT1: cells keep their texture from frame to frame, and the statistic sees it;
the same frames in shuffled time order (the masks left in place) carry nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.ctc import CTCSequence, write_sequence
from benchmark.metrics.temporal import texture_carry


def test_real_cells_carry_texture_and_shuffled_time_does_not(gowt1_window: Path, tmp_path: Path) -> None:
    seq = CTCSequence(gowt1_window, "01")
    real = texture_carry(seq)
    assert real.n_pairs >= 50 and real.mean > 0.05, real
    frames = sorted(seq.frames)
    order = np.random.default_rng(0).permutation(len(frames))
    shuffled_dir = tmp_path / "Fluo-N2DH-GOWT1"
    write_sequence(shuffled_dir, "01", [seq.image(frames[i]) for i in order], [seq.tra(t) for t in frames],
                   {k: v.parent for k, v in seq.tracks.items()})
    shuffled = texture_carry(CTCSequence(shuffled_dir, "01"))
    assert shuffled.n_pairs == real.n_pairs  # the same cells and pixels, only the textures no longer follow them
    # measured: 0.132 in time order, 0.040 shuffled (cells move little, so some texture of another frame remains)
    assert abs(shuffled.mean) < 0.5 * real.mean, (real, shuffled)


def test_no_persisting_cell_is_one_line_naming_the_sequence(gowt1_window: Path) -> None:
    seq = CTCSequence(gowt1_window, "02")
    with pytest.raises(ValueError, match=r"02: no cell persists over two consecutive frames"):
        texture_carry(seq, frames=range(0, 1))


def test_cli_prints_each_sequence_and_writes_json(gowt1_window: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from benchmark.cli import main

    out = tmp_path / "carry.json"
    assert main(["metrics", "texture-carry", str(gowt1_window), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    for name in ("01", "02"):
        carry = texture_carry(CTCSequence(gowt1_window, name))
        assert result[f"Fluo-N2DH-GOWT1/{name}/texture_carry"] == carry.mean
        assert f"Fluo-N2DH-GOWT1/{name}" in printed and f"({carry.n_pairs} cell-frame pairs)" in printed


def test_cli_refuses_a_folder_without_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main

    empty = tmp_path / "Empty"
    empty.mkdir()
    assert main(["metrics", "texture-carry", str(empty)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == f"error: {empty}: no NN sequence folder in it to measure"


def test_a_video_averages_its_sequences_and_leaves_out_one_without_tracks(gowt1_window: Path, tmp_path: Path) -> None:
    """``TC`` (what every run logs) weighs each sequence the same; a sequence whose TRA markers are gone has no
    cell ids to pair, so it is left out (a warning) instead of failing the run or scoring 0."""
    import shutil

    from benchmark.metrics.temporal import video_texture_carry

    sequences = [CTCSequence(gowt1_window, name) for name in ("01", "02")]
    per_sequence = [texture_carry(seq) for seq in sequences]
    video = video_texture_carry(sequences)
    assert video["TC"] == pytest.approx(np.mean([c.mean for c in per_sequence]))
    assert video["TC_pairs"] == sum(c.n_pairs for c in per_sequence)
    untracked = tmp_path / "Fluo-N2DH-GOWT1"
    shutil.copytree(gowt1_window / "02", untracked / "02")  # the images without 02_GT
    assert not CTCSequence(untracked, "02").tra_files
    assert video_texture_carry([sequences[0], CTCSequence(untracked, "02")]) == {
        "TC": per_sequence[0].mean, "TC_pairs": float(per_sequence[0].n_pairs)}
    assert video_texture_carry([CTCSequence(untracked, "02")]) == {}


def test_cli_keeps_every_folder_when_their_names_collide(gowt1_window: Path, tmp_path: Path) -> None:
    """Several runs' ``.../synthetic`` folders in one call: each keeps its own entries in the JSON."""
    import json
    import shutil

    from benchmark.cli import main

    copies = [tmp_path / run / "Fluo-N2DH-GOWT1" for run in ("a", "b")]
    for copy in copies:
        shutil.copytree(gowt1_window / "01", copy / "01")
        shutil.copytree(gowt1_window / "01_GT", copy / "01_GT")
    out = tmp_path / "carry.json"
    assert main(["metrics", "texture-carry", *map(str, copies), "--json", str(out)]) == 0
    keys = [k for k in json.loads(out.read_text()) if k.endswith("/texture_carry")]
    assert sorted(keys) == sorted(f"{copy / '01'}/texture_carry" for copy in copies)
