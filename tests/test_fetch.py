"""A fresh machine with internet: a command without --data-root downloads the dataset once (checksummed).

The download is real (``urllib``), from a ``file://`` URL standing in for the CTC server: an archive the
test builds from the real GOWT1 cut, laid out as the CTC zips are (``<name>/01``, ``01_GT``, ...).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from benchmark import datasets
from benchmark.cli import main
from benchmark.ctc import CTCSequence
from benchmark.ctc.digest import sequence_digest

GOWT1 = "Fluo-N2DH-GOWT1"


@pytest.fixture
def server(gowt1_window: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder serving ``<name>.zip``; the cache in tmp_path, no data root in the environment."""
    served = tmp_path / "server"
    served.mkdir()
    with zipfile.ZipFile(served / f"{GOWT1}.zip", "w") as zf:
        for path in sorted(gowt1_window.rglob("*")):
            if path.is_file():
                zf.write(path, f"{GOWT1}/{path.relative_to(gowt1_window)}")
    monkeypatch.setattr(datasets, "CTC_URL", served.as_uri() + "/{name}.zip")
    monkeypatch.setenv("SYNTHVID_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr(datasets, "SHARED_DATA", tmp_path / "no-shared-folder")
    return served


def test_a_missing_dataset_is_fetched_once_and_checksummed(server: Path, gowt1_window: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = datasets.resolve_dataset(GOWT1, fetch=True)
    assert folder == tmp_path / "cache" / "datasets" / GOWT1
    for name in ("01", "02"):
        assert sequence_digest(CTCSequence(folder, name)) == sequence_digest(CTCSequence(gowt1_window, name))
    recorded = json.loads((folder.parent / "sha256.json").read_text())
    assert set(recorded) == {GOWT1} and len(recorded[GOWT1]) == 64

    def no_network(*args: object, **kwargs: object) -> str:
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(datasets, "_download", no_network)
    assert datasets.resolve_dataset(GOWT1, fetch=True) == folder


def test_a_changed_archive_is_refused(server: Path, tmp_path: Path) -> None:
    folder = datasets.resolve_dataset(GOWT1, fetch=True)
    shutil.rmtree(folder)  # fetched again, from an archive whose bytes changed since it was recorded
    with zipfile.ZipFile(server / f"{GOWT1}.zip", "a") as zf:
        zf.writestr(f"{GOWT1}/extra.txt", "not in the first download")
    with pytest.raises(ValueError, match="sha256 .* differs from the recorded"):
        datasets.resolve_dataset(GOWT1, fetch=True)
    assert not folder.exists()


def test_an_explicit_data_root_is_never_replaced_by_a_download(server: Path, tmp_path: Path) -> None:
    with pytest.raises(datasets.DatasetNotFound, match="not found"):
        datasets.resolve_dataset(GOWT1, tmp_path / "elsewhere", fetch=True)
    assert not (tmp_path / "cache" / "datasets" / GOWT1).exists()


def test_generate_without_data_root_fetches_and_runs(server: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--generator", "real", "--dataset", GOWT1, "--frames", "3", "--quiet",
                 "--out", str(tmp_path / "out")]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["fitted_on"] == str(tmp_path / "cache" / "datasets" / GOWT1 / "01")
    assert (tmp_path / "out" / "01").is_dir()


def test_the_shared_folder_beside_the_checkout_is_the_offline_route(server: Path, gowt1_window: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "SHARED_DATA", gowt1_window.parent)
    assert datasets.resolve_dataset(GOWT1, fetch=True) == gowt1_window  # found, not downloaded
